// Small helpers to build the pages' DOM and format values.

// h creates an element: h("a", {href: "#"}, "text", child, ...). Attributes
// starting with "on" are event handlers; null and false attributes are left
// out; children may be strings, nodes, arrays or null.
export function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "path", "line", "polyline", "rect", "text", "g", "title", "circle"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

// replace puts children in place of el's.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

// table builds a table from column headers and rows of cells.
export function table(caption, headers, rows, { numeric = [] } = {}) {
  return h("table", {},
    caption ? h("caption", { class: "muted" }, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((x, i) => h("th", { scope: "col", class: numeric.includes(i) ? "num" : null }, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((x, i) => h("td", { class: numeric.includes(i) ? "num" : null }, x))))));
}

export function fmtNum(n, digits = 0) {
  if (!isFinite(n)) return "–";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function fmtRate(n) {
  return n >= 100 ? fmtNum(n) : fmtNum(n, n >= 10 ? 1 : 2);
}

export function fmtBytes(n) {
  n = Number(n) || 0;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return fmtNum(n, i === 0 ? 0 : 1) + " " + units[i];
}

export function fmtMillis(ms) {
  ms = Number(ms) || 0;
  if (ms >= 1000) return fmtNum(ms / 1000, 2) + " s";
  return fmtNum(ms, ms < 10 ? 2 : 1) + " ms";
}

export function fmtTime(unixMillis) {
  const ms = Number(unixMillis);
  if (!ms) return "–";
  const d = new Date(ms);
  return d.toLocaleTimeString("en-GB", { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

export function fmtDateTime(unixMillis) {
  const ms = Number(unixMillis);
  if (!ms) return "–";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

// addressText writes an address as type/id.
export function addressText(a) {
  return a && a.type ? a.type + "/" + a.id : "";
}

// twinLink links to an address's page.
export function twinLink(type, id, text) {
  return h("a", { href: "#/twins/" + encodeURIComponent(type) + "/" + encodeURIComponent(id) }, text || id);
}
