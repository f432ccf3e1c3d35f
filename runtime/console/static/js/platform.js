// The platform: throughput, queues and spilled backlogs, ingress lag, key
// groups and shards, endpoints, function latencies and errors, checkpoints;
// live from the runtime's samples of itself.

import { call, num } from "./api.js";
import { fmtBytes, fmtDateTime, fmtMillis, fmtNum, fmtRate, h, replace, table } from "./dom.js";
import { barChart, lineChart } from "./charts.js";

const KEEP = 300;

export function render(main) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  replace(main, h("h1", {}, "Platform"), body);
  let samples = [];
  let info = null;
  let pending = false;
  const draw = () => {
    if (info) replace(body, view(info, samples));
  };
  (async () => {
    info = await call("GetPlatform");
    samples = info.samples || [];
    draw();
  })().catch((e) => replace(body, h("p", { class: "error", role: "alert" }, String(e.message || e))));
  return {
    sample(s) {
      samples.push(s);
      if (samples.length > KEEP) samples = samples.slice(-KEEP);
      if (pending) return;
      pending = true;
      // New checkpoints come with GetPlatform; ask again now and then.
      const refresh = samples.length % 5 === 0 ? call("GetPlatform").then((r) => { info = r; }) : Promise.resolve();
      refresh.catch(() => {}).finally(() => {
        pending = false;
        draw();
      });
    },
  };
}

function view(info, samples) {
  const last = samples[samples.length - 1] || {};
  const times = samples.map((s) => num(s.atUnixMillis));
  const shards = info.shards || [];
  const problems = last.problems || [];
  const ckpts = info.checkpoints || [];
  return [
    h("div", { class: "stats" },
      stat("Ingress", fmtRate(num(last.ingressPerSecond)) + "/s"),
      stat("Applied", fmtRate(num(last.invocationsPerSecond)) + "/s"),
      stat("Egress", fmtRate(num(last.egressPerSecond)) + "/s"),
      stat("Dead letters", fmtRate(num(last.deadLettersPerSecond)) + "/s"),
      stat("Ready", problems.length ? h("span", { class: "badge bad" }, "no") : h("span", { class: "badge ok" }, "yes")),
      stat("Key groups", fmtNum(num(info.keyGroups))),
      stat("Started", fmtDateTime(info.startedUnixMillis))),
    problems.length ? h("section", { "aria-labelledby": "problems-h" }, h("h2", { id: "problems-h" }, "Not ready"),
      h("ul", {}, problems.map((p) => h("li", { class: "error" }, p)))) : null,
    h("div", { class: "cards" },
      card("Throughput (messages per second)", lineChart({
        label: "Throughput, messages per second", times, format: fmtRate,
        series: [
          { name: "ingress in", values: samples.map((s) => num(s.ingressPerSecond)) },
          { name: "applied", values: samples.map((s) => num(s.invocationsPerSecond)) },
          { name: "egress out", values: samples.map((s) => num(s.egressPerSecond)) },
          { name: "dead letters", values: samples.map((s) => num(s.deadLettersPerSecond)), color: 3 },
        ],
      })),
      card("Queued in memory (bytes, by shard)", lineChart({
        label: "Queued bytes by shard", times, format: fmtBytes,
        series: shards.map((sh, i) => ({ name: "shard " + num(sh.shard), values: samples.map((s) => num(((s.shards || [])[i] || {}).queuedBytes)) })),
      })),
      card("Spilled backlogs (messages, by shard)", lineChart({
        label: "Spilled messages by shard", times, format: (v) => fmtNum(v),
        series: shards.map((sh, i) => ({ name: "shard " + num(sh.shard), values: samples.map((s) => num(((s.shards || [])[i] || {}).spilledMessages)) })),
      })),
      card("Ingress lag (messages stored, not yet read)", lineChart({
        label: "Ingress lag by stream", times, format: (v) => fmtNum(v),
        series: (last.streams || []).map((st) => ({ name: st.stream, values: samples.map((s) => num(((s.streams || []).find((x) => x.stream === st.stream) || {}).lag)) })),
      })),
      card("Checkpoints: duration and pause", barChart({
        label: "Checkpoint duration and pause in milliseconds, by checkpoint id", items: ckpts.map((c) => "#" + num(c.id)), format: fmtMillis,
        series: [
          { name: "duration", values: ckpts.map((c) => num(c.durationMillis)) },
          { name: "longest shard pause", values: ckpts.map((c) => num(c.pauseMillis)), color: 4 },
        ],
      })),
      card("Checkpoints: bytes written", barChart({
        label: "Checkpoint bytes, by checkpoint id", items: ckpts.map((c) => "#" + num(c.id)), format: fmtBytes,
        series: [{ name: "bytes", values: ckpts.map((c) => num(c.bytes)), color: 2 }],
      }))),
    h("h2", {}, "Shards and key groups"),
    table(null, ["Shard", "Key groups", "Queued", "Active addresses", "Spilled", "Failing addresses", "Intake"],
      shards.map((sh, i) => {
        const s = (last.shards || [])[i] || {};
        return ["shard " + num(sh.shard), "[" + num(sh.keyGroupLo) + ", " + num(sh.keyGroupHi) + ")", fmtBytes(num(s.queuedBytes)),
          fmtNum(num(s.activeAddresses)), fmtNum(num(s.spilledMessages)) + " (" + fmtBytes(num(s.spilledBytes)) + ")",
          fmtNum(num(s.failingAddresses)), s.saturated ? h("span", { class: "badge warn" }, "waiting") : h("span", { class: "badge ok" }, "flowing")];
      }), { numeric: [2, 3, 4, 5] }),
    h("h2", {}, "Ingress streams"),
    table(null, ["Stream", "Last sequence", "Read up to", "Lag"],
      (last.streams || []).map((s) => [s.stream, fmtNum(num(s.lastSequence)), fmtNum(num(s.readSequence)), fmtNum(num(s.lag))]), { numeric: [1, 2, 3] }),
    h("h2", {}, "Endpoints"),
    table(null, ["Endpoint", "Functions", "Health", "Calls/s", "p50 (10 s)", "p99 (10 s)"],
      (last.endpoints || []).map((e) => [e.url, (e.functions || []).join(", "),
        e.reachable ? h("span", { class: "badge ok" }, "reachable") : h("span", { class: "badge bad", title: e.lastError || "" }, "unreachable"),
        fmtRate(num(e.callsPerSecond)), fmtMillis(num(e.p50Millis)), fmtMillis(num(e.p99Millis))]), { numeric: [3, 4, 5] }),
    h("h2", {}, "Functions"),
    table(null, ["Function type", "Applied/s", "Calls/s", "p50 (10 s)", "p99 (10 s)", "Retries/s", "Dead letters/s", "Errors"],
      (last.functions || []).map((f) => [h("a", { href: "#/twins/" + encodeURIComponent(f.type) }, f.type), fmtRate(num(f.invocationsPerSecond)),
        fmtRate(num(f.callsPerSecond)), fmtMillis(num(f.p50Millis)), fmtMillis(num(f.p99Millis)), fmtRate(num(f.retriesPerSecond)),
        fmtRate(num(f.deadLettersPerSecond)), fmtNum(100 * num(f.errorRatio), 1) + " %"]), { numeric: [1, 2, 3, 4, 5, 6, 7] }),
    h("h2", {}, "Recent checkpoints"),
    table(null, ["Id", "Completed", "Duration", "Pause", "Bytes"],
      ckpts.slice(-10).reverse().map((c) => [fmtNum(num(c.id)), fmtDateTime(c.completedAtUnixMillis), fmtMillis(num(c.durationMillis)),
        fmtMillis(num(c.pauseMillis)), fmtBytes(num(c.bytes))]), { numeric: [0, 2, 3, 4] }),
  ];
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("span", { class: "value" }, value), h("span", { class: "label" }, label));
}

function card(title, content) {
  return h("section", { class: "card" }, h("h2", {}, title), content);
}
