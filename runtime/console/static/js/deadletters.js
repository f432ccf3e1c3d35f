// Dead letters: browse the stream TWINFLOW_DLQ, newest first, and replay a
// selection to the ingress they were meant for, each at most once.

import { call, num, pretty, textOf } from "./api.js";
import { fmtDateTime, fmtNum, h, replace, table } from "./dom.js";

const PAGE = 50;

export function render(main) {
  const summary = h("p", { id: "dlq-summary", role: "status" });
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const results = h("div", { class: "output", role: "status", "aria-live": "polite" });
  const replayButton = h("button", { type: "button", id: "replay", disabled: true }, "Replay selected");
  const cursors = [0]; // the before of each page seen, to go back
  let page = 0;
  let selected = new Set();
  let lastTotal = -1;

  const load = async () => {
    const r = await call("ListDeadLetters", { before: cursors[page], limit: PAGE });
    lastTotal = num(r.total);
    const total = num(r.total);
    summary.textContent = fmtNum(total) + (total === 1 ? " dead letter, " : " dead letters, ") + fmtNum(num(r.replayed)) + " replayed.";
    const dls = r.deadLetters || [];
    selected = new Set([...selected].filter((s) => dls.some((d) => num(d.sequence) === s)));
    replayButton.disabled = selected.size === 0;
    if (r.nextBefore && cursors.length === page + 1) cursors.push(num(r.nextBefore));
    replace(list,
      dls.length ? table(null, ["Select", "Sequence", "When", "Subject", "Reason", "For", "Typename", "Payload", "Replay"],
        dls.map((d) => {
          const seq = num(d.sequence);
          const box = h("input", { type: "checkbox", id: "dl-" + seq, "aria-label": "Select dead letter " + seq,
            disabled: !d.replaySubject || num(d.replayedAtUnixMillis) > 0, checked: selected.has(seq), onchange: (e) => {
              if (e.target.checked) selected.add(seq);
              else selected.delete(seq);
              replayButton.disabled = selected.size === 0;
            } });
          return [
            box, fmtNum(seq), fmtDateTime(d.timeUnixMillis), d.subject,
            h("span", {}, d.reason ? h("span", { class: "badge warn" }, d.reason) : null, " ", d.error || ""),
            d.target || d.originalSubject || d.source || "–",
            d.typename || "–",
            h("code", {}, d.json ? pretty(d.json) : textOf(d.preview)),
            num(d.replayedAtUnixMillis) ? h("span", {}, h("span", { class: "badge ok" }, "replayed"), " " + fmtDateTime(d.replayedAtUnixMillis))
              : d.replaySubject ? "to " + d.replaySubject : h("span", { class: "muted" }, d.notReplayable || "no"),
          ];
        }), { numeric: [1] })
        : h("p", {}, "No dead letters."),
      h("nav", { class: "pager", "aria-label": "Pages" },
        page > 0 ? h("button", { type: "button", class: "quiet", onclick: () => { page--; load().catch(show); } }, "Newer") : null,
        cursors.length > page + 1 ? h("button", { type: "button", class: "quiet", onclick: () => { page++; load().catch(show); } }, "Older") : null));
  };
  const show = (e) => replace(list, h("p", { class: "error", role: "alert" }, String(e.message || e)));

  replayButton.addEventListener("click", async () => {
    replayButton.disabled = true;
    try {
      const seqs = [...selected].sort((a, b) => a - b);
      const r = await call("ReplayDeadLetters", { sequences: seqs });
      selected.clear();
      replace(results, h("ul", {}, (r.results || []).map((x) => h("li", { "data-outcome": x.outcome },
        "Dead letter " + num(x.sequence) + ": " + outcomeText(x.outcome) + (x.subject ? " to " + x.subject : "") + (x.detail ? " (" + x.detail + ")" : "")))));
      await load();
    } catch (e) {
      replace(results, h("p", { class: "error", role: "alert" }, String(e.message || e)));
    }
  });

  replace(main, h("h1", {}, "Dead letters"),
    h("p", { class: "muted" }, "Messages that could not be routed, whose function failed for good, or egress records NATS refused. " +
      "Replaying publishes a dead letter again to its ingress with a message id of its own, so a repeated replay is dropped."),
    summary, h("div", { class: "row" }, replayButton), results, list);
  load().catch(show);
  // A dead letter is counted before its record reaches the stream, so a
  // sample that counts new ones reloads the page for the next few samples
  // too.
  let reloads = 0;
  return {
    sample(s) {
      if (num(s.deadLettersPerSecond) > 0) reloads = 3;
      if (reloads > 0 && page === 0) {
        reloads--;
        load().catch(show);
      }
    },
  };
}

function outcomeText(o) {
  return {
    REPLAY_OUTCOME_REPLAYED: "replayed",
    REPLAY_OUTCOME_ALREADY_REPLAYED: "already replayed",
    REPLAY_OUTCOME_NOT_REPLAYABLE: "not replayable",
    REPLAY_OUTCOME_NOT_FOUND: "not found",
    REPLAY_OUTCOME_FAILED: "failed",
  }[o] || o;
}
