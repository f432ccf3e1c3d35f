// Hand-written SVG charts: lines over time, and bars. Each is an image with
// a text alternative that says what it shows and its latest values.

import { h } from "./dom.js";

const W = 640;
const H = 180;
const PAD = { l: 56, r: 12, t: 10, b: 22 };

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// ticks are the fractions of the top the axis is labelled at: a half only
// when it is not below one, so that counts and bytes get no half labels.
function ticks(top) {
  return top >= 2 ? [0, 0.5, 1] : [0, 1];
}

function legend(series) {
  return h("div", { class: "legend" }, series.map((s, i) =>
    h("span", {}, h("span", { class: "swatch s" + (s.color ?? i), "aria-hidden": "true" }), s.name)));
}

// lineChart draws series of values at times (Unix ms) with their format.
export function lineChart({ label, times, series, format = String }) {
  const n = times.length;
  const all = series.flatMap((s) => s.values);
  const top = niceMax(Math.max(0, ...all));
  const t0 = times[0] ?? 0;
  const t1 = times[n - 1] ?? 1;
  const x = (t) => PAD.l + ((t - t0) / Math.max(t1 - t0, 1)) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - (v / top) * (H - PAD.t - PAD.b);
  const latest = series.map((s) => s.name + " " + format(s.values[s.values.length - 1] ?? 0)).join(", ");
  const svg = h("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${label}: latest ${latest}` },
    h("title", {}, label),
    ticks(top).map((f) => [
      h("line", { class: "axis", x1: PAD.l, x2: W - PAD.r, y1: y(top * f), y2: y(top * f) }),
      h("text", { x: PAD.l - 6, y: y(top * f) + 4, "text-anchor": "end" }, format(top * f)),
    ]),
    n > 0 ? h("text", { x: PAD.l, y: H - 6 }, new Date(t0).toLocaleTimeString("en-GB", { hour12: false })) : null,
    n > 0 ? h("text", { x: W - PAD.r, y: H - 6, "text-anchor": "end" }, new Date(t1).toLocaleTimeString("en-GB", { hour12: false })) : null,
    series.map((s, i) => h("polyline", {
      class: "line s" + (s.color ?? i),
      points: s.values.map((v, j) => `${x(times[j]).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
    })));
  return h("figure", { class: "figure" }, legend(series), svg);
}

// barChart draws one bar group per item, a bar per series.
export function barChart({ label, items, series, format = String }) {
  const all = series.flatMap((s) => s.values);
  const top = niceMax(Math.max(0, ...all));
  const n = Math.max(items.length, 1);
  const group = (W - PAD.l - PAD.r) / n;
  const bw = Math.max(1, (group * 0.8) / series.length);
  const y = (v) => H - PAD.b - (v / top) * (H - PAD.t - PAD.b);
  const latest = series.map((s) => s.name + " " + format(s.values[s.values.length - 1] ?? 0)).join(", ");
  const svg = h("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${label}: ${items.length} shown, the last ${latest}` },
    h("title", {}, label),
    ticks(top).map((f) => [
      h("line", { class: "axis", x1: PAD.l, x2: W - PAD.r, y1: y(top * f), y2: y(top * f) }),
      h("text", { x: PAD.l - 6, y: y(top * f) + 4, "text-anchor": "end" }, format(top * f)),
    ]),
    items.length ? h("text", { x: PAD.l, y: H - 6 }, String(items[0])) : null,
    items.length > 1 ? h("text", { x: W - PAD.r, y: H - 6, "text-anchor": "end" }, String(items[items.length - 1])) : null,
    series.map((s, si) => s.values.map((v, i) => h("rect", {
      class: "s" + (s.color ?? si),
      x: (PAD.l + i * group + group * 0.1 + si * bw).toFixed(1),
      y: y(v).toFixed(1),
      width: bw.toFixed(1),
      height: Math.max(0, H - PAD.b - y(v)).toFixed(1),
    }))));
  return h("figure", { class: "figure" }, legend(series), svg);
}
