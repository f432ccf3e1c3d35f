// The console's shell: navigation between views by the URL's fragment, the
// live feed's indicator, and the application pages in the navigation.

import { getSession, live, logout } from "./api.js";
import { h, replace } from "./dom.js";
import * as twins from "./twins.js";
import * as platform from "./platform.js";
import * as deadletters from "./deadletters.js";

const main = document.getElementById("main");
const liveEl = document.getElementById("live");

// The view shown, and what it does with each live sample.
let current = null;

const views = {
  twins: (parts, params) => twins.render(main, parts, params),
  platform: () => platform.render(main),
  deadletters: () => deadletters.render(main),
};

function route() {
  const [path, query] = (location.hash.replace(/^#\/?/, "") || "twins").split("?");
  const parts = path.split("/").map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  const name = views[parts[0]] ? parts[0] : "twins";
  for (const a of document.querySelectorAll("#nav a[data-view]")) {
    if (a.dataset.view === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (current && current.stop) current.stop();
  replace(main);
  current = views[name](parts.slice(1), params) || null;
}

async function start() {
  document.getElementById("logout").addEventListener("click", () => logout());
  const s = await getSession();
  const nav = document.getElementById("nav");
  for (const app of s.apps) {
    nav.append(h("li", {}, h("a", { href: "/ui/apps/" + encodeURIComponent(app) + "/" }, app + " (app)")));
  }
  live(
    (sample) => {
      if (current && current.sample) current.sample(sample);
    },
    (state) => {
      liveEl.className = "live " + state;
      liveEl.textContent = state === "on" ? "live" : "reconnecting";
    },
  );
  window.addEventListener("hashchange", route);
  route();
}

start().catch((e) => replace(main, h("p", { class: "error", role: "alert" }, String(e.message || e))));
