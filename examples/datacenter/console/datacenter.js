// The data-center example's page. It uses only the console's generic API:
// the addresses of datacenter/rack and datacenter/server with their state,
// and a request to datacenter/datacenter through the ingress. It refreshes
// when the platform's live samples show the twins at work.

import { call, live, num } from "/ui/static/js/api.js";
import { fmtTime, h, replace, table } from "/ui/static/js/dom.js";

const dc = new URLSearchParams(location.search).get("dc") || "dc";
const $ = (id) => document.getElementById(id);
$("dc-id").textContent = dc;

const twin = (type, id) => "/ui/#/twins/" + encodeURIComponent(type) + "/" + encodeURIComponent(id);
const json = (entry) => (entry && entry.json ? JSON.parse(entry.json) : null);

let seen = null; // what the last refresh saw: alerts and incidents by key
let unhealthyKey = null;
let busy = false;
let again = false;

async function load() {
  const [racks, servers] = await Promise.all([
    call("ListAddresses", { type: "datacenter/rack", limit: 1000, stateNames: ["rack"] }),
    call("ListAddresses", { type: "datacenter/server", limit: 1000, stateNames: ["health"] }),
  ]);
  const byRack = new Map();
  for (const r of racks.addresses || []) {
    const st = json((r.values || [])[0]) || {};
    byRack.set(r.id, { id: r.id, servers: new Map(Object.entries(st.servers || {})), alert: st.alert || null });
  }
  const incidents = [];
  for (const s of servers.addresses || []) {
    const health = json((s.values || [])[0]);
    if (!health) continue;
    const rack = byRack.get(health.rackId) || { id: health.rackId, servers: new Map(), alert: null };
    byRack.set(rack.id, rack);
    if (!rack.servers.has(s.id)) rack.servers.set(s.id, Object.keys(health.incidents || {}).sort());
    for (const [kind, inc] of Object.entries(health.incidents || {})) {
      incidents.push({ server: s.id, rack: health.rackId, kind, reason: inc.reason, openedAt: inc.openedAt });
    }
  }
  return { racks: [...byRack.values()].sort((a, b) => a.id.localeCompare(b.id, "en", { numeric: true })), incidents };
}

function render({ racks, incidents }) {
  const unhealthyRacks = racks.filter((r) => r.alert);
  const failing = racks.reduce((n, r) => n + [...r.servers.values()].filter((k) => k.length).length, 0);
  const total = racks.reduce((n, r) => n + r.servers.size, 0);
  replace($("summary"),
    stat("Racks", racks.length), stat("Servers", total),
    stat("Servers with incidents", failing), stat("Unhealthy racks", unhealthyRacks.length));
  replace($("racks"), racks.length ? racks.map((r) => h("section", {
    class: "card", "data-rack": r.id, "data-health": r.alert ? "unhealthy" : "healthy", "aria-labelledby": "rack-" + r.id,
  },
  h("h3", { id: "rack-" + r.id }, h("a", { href: twin("datacenter/rack", r.id) }, r.id), " ",
    r.alert ? h("span", { class: "badge bad" }, r.alert.kind) : h("span", { class: "badge ok" }, "healthy")),
  r.alert ? h("p", { class: "muted" }, r.alert.reason) : null,
  h("div", { class: "grid" }, [...r.servers.entries()].sort(([a], [b]) => a.localeCompare(b, "en", { numeric: true })).map(([id, kinds]) =>
    h("a", {
      class: "cell " + (kinds.length ? "bad" : "ok"), href: twin("datacenter/server", id), "data-server": id,
      "data-health": kinds.length ? "incident" : "healthy",
    }, id, h("span", { class: "kinds" }, kinds.length ? kinds.join(" ") : "healthy")))))) : h("p", {}, "No rack twin yet."));
  replace($("alerts"), unhealthyRacks.length ? table(null, ["Rack", "Kind", "Servers", "Reason", "Since"],
    unhealthyRacks.map((r) => [h("a", { href: twin("datacenter/rack", r.id) }, r.id), r.alert.kind, (r.alert.servers || []).join(", "),
      r.alert.reason, fmtTime(Date.parse(r.alert.openedAt))]))
    : h("p", { id: "no-alerts" }, "No rack alert: every rack is healthy."));
  replace($("incidents"), incidents.length ? table(null, ["Server", "Rack", "Incident", "Reason", "Since"],
    incidents.map((i) => [h("a", { href: twin("datacenter/server", i.server) }, i.server), i.rack, i.kind, i.reason, fmtTime(Date.parse(i.openedAt))]))
    : h("p", {}, "No open incident."));
  logChanges(racks, incidents);
  const key = unhealthyRacks.map((r) => r.id + ":" + r.alert.kind).join(",");
  if (key !== unhealthyKey) {
    unhealthyKey = key;
    ask();
  }
}

function logChanges(racks, incidents) {
  const now = new Map();
  for (const r of racks) if (r.alert) now.set("rack " + r.id + " " + r.alert.kind, "rack alert: " + r.id + " " + r.alert.kind + ", " + r.alert.reason);
  for (const i of incidents) now.set("server " + i.server + " " + i.kind, "incident: " + i.server + " " + i.kind);
  if (seen) {
    const at = fmtTime(Date.now());
    for (const [k, text] of now) if (!seen.has(k)) $("log").prepend(h("li", {}, at + " opened " + text));
    for (const [k, text] of seen) if (!now.has(k)) $("log").prepend(h("li", {}, at + " cleared " + text));
  }
  seen = now;
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("span", { class: "value" }, String(value)), h("span", { class: "label" }, label));
}

async function ask() {
  try {
    const r = await call("SendMessage", { address: { type: "datacenter/datacenter", id: dc }, typename: "proto/datacenter.v1.GetUnhealthyRacks", request: true });
    if (r.replyError) throw new Error(r.replyError);
    const racks = (JSON.parse(r.replyJson || "{}").racks) || [];
    replace($("answer"), racks.length
      ? h("ul", { id: "unhealthy-racks" }, racks.map((x) => h("li", { "data-rack": x.rackId }, x.rackId + ": " + x.kind.replace("RACK_INCIDENT_KIND_", "") + ", " + x.reason)))
      : h("p", { id: "unhealthy-racks" }, "No unhealthy rack."));
  } catch (e) {
    replace($("answer"), h("p", { class: "error" }, "Asking failed: " + (e.message || e)));
  }
}

async function refresh() {
  if (busy) {
    again = true;
    return;
  }
  busy = true;
  try {
    render(await load());
    $("error").hidden = true;
  } catch (e) {
    $("error").hidden = false;
    $("error").textContent = String(e.message || e);
  } finally {
    busy = false;
    if (again) {
      again = false;
      refresh();
    }
  }
}

$("ask").addEventListener("click", ask);
live((sample) => {
  if ((sample.functions || []).some((f) => f.type.startsWith("datacenter/") && num(f.invocationsPerSecond) > 0)) refresh();
}, (state) => {
  $("live").className = "live " + state;
  $("live").textContent = state === "on" ? "live" : "reconnecting";
});
refresh();
