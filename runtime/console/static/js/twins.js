// The twins: function types, the addresses of one type (a page at a time,
// by id prefix, from the address index), and one address: its state, its
// pending delayed messages, its recent activity, and a form to message it.

import { call, num, pretty, textOf } from "./api.js";
import { addressText, fmtDateTime, fmtNum, fmtTime, h, replace, table, twinLink } from "./dom.js";

const PAGE = 50;

export function render(main, parts, params) {
  if (parts.length >= 2 && parts[1] !== "") return renderAddress(main, parts[0], parts.slice(1).join("/"));
  if (parts.length >= 1 && parts[0] !== "") return renderList(main, parts[0], params);
  return renderTypes(main);
}

function failure(e) {
  return h("p", { class: "error", role: "alert" }, String(e.message || e));
}

function renderTypes(main) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  replace(main, h("h1", {}, "Twins"), h("p", { class: "muted" }, "The function types the runtime knows, and how many addresses of each have state."), body);
  (async () => {
    const { functionTypes = [] } = await call("ListFunctionTypes");
    const rows = await Promise.all(functionTypes.map(async (f) => {
      const { total } = await call("ListAddresses", { type: f.type, limit: 1 });
      return [
        h("a", { href: "#/twins/" + encodeURIComponent(f.type) }, f.type),
        fmtNum(num(total)),
        (f.stateSpecs || []).map((s) => s.name + " (" + s.typename + ")").join(", ") || h("span", { class: "muted" }, "none"),
        f.endpointUrl || "–",
      ];
    }));
    replace(body, rows.length ? table(null, ["Function type", "Addresses with state", "State", "Endpoint"], rows, { numeric: [1] })
      : h("p", {}, "No function type yet: send a message to one."));
  })().catch((e) => replace(body, failure(e)));
}

function listHash(type, prefix, after, back) {
  const q = new URLSearchParams();
  if (prefix) q.set("prefix", prefix);
  if (after) q.set("after", after);
  if (back.length) q.set("back", back.join("\u0000"));
  const s = q.toString();
  return "#/twins/" + encodeURIComponent(type) + (s ? "?" + s : "");
}

function renderList(main, type, params) {
  const prefix = params.get("prefix") || "";
  const after = params.get("after") || "";
  // The cursors of the pages before this one, to go back.
  const back = params.get("back") ? params.get("back").split("\u0000") : [];
  const input = h("input", { id: "prefix", name: "prefix", value: prefix, placeholder: "e.g. srv-1", autocomplete: "off" });
  const form = h("form", { class: "row", role: "search", onsubmit: (e) => {
    e.preventDefault();
    location.hash = listHash(type, input.value.trim(), "", []);
  } },
  h("div", { class: "field" }, h("label", { for: "prefix" }, "Id prefix"), input),
  h("button", { type: "submit" }, "Filter"));
  const body = h("div", { "aria-live": "polite" }, h("p", { class: "muted" }, "Loading…"));
  replace(main,
    h("p", { class: "breadcrumb" }, h("a", { href: "#/twins" }, "Twins"), " / ", type),
    h("h1", {}, type), form, body);
  (async () => {
    const r = await call("ListAddresses", { type, prefix, after, limit: PAGE });
    const ids = (r.addresses || []).map((a) => a.id);
    const first = back.length === 0 && !after;
    const prev = back.length ? listHash(type, prefix, back[back.length - 1], back.slice(0, -1)) : null;
    const next = r.nextAfter ? listHash(type, prefix, r.nextAfter, [...back, after]) : null;
    replace(body,
      h("p", {}, fmtNum(num(r.total)) + " addresses of " + type + " have state" + (prefix ? "; showing those whose id starts with “" + prefix + "”" : "") + "."),
      ids.length ? h("ul", { class: "ids" }, ids.map((id) => h("li", {}, twinLink(type, id)))) : h("p", {}, "No address on this page."),
      h("nav", { class: "pager", "aria-label": "Pages" },
        first ? null : h("a", { href: prev || listHash(type, prefix, "", []) }, "Previous page"),
        next ? h("a", { href: next }, "Next page") : h("span", { class: "muted" }, "Last page")));
  })().catch((e) => replace(body, failure(e)));
}

// valueView shows a state value; the block scrolls, so it takes the focus
// to be scrolled with the keyboard.
function valueView(v) {
  return h("pre", { tabindex: "0" }, v.json ? pretty(v.json) : textOf(v.value && v.value.value));
}

function activityRows(entries, received) {
  return entries.slice().reverse().map((e) => [
    fmtTime(e.atUnixMillis),
    e.kind,
    received ? (e.peer ? twinLink(e.peer.type, e.peer.id, addressText(e.peer)) : h("span", { class: "muted" }, "ingress or itself"))
      : e.egress ? "egress " + e.egress : e.peer ? twinLink(e.peer.type, e.peer.id, addressText(e.peer)) : "–",
    e.typename || "–",
    h("code", {}, e.json ? e.json : textOf(e.preview)),
    e.note || "",
  ]);
}

function renderAddress(main, type, id) {
  const state = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const delayed = h("div");
  const activity = h("div");
  const where = h("p", { class: "muted" });
  let busy = false;
  const refresh = async () => {
    if (busy) return;
    busy = true;
    try {
      const r = await call("DescribeAddress", { address: { type, id } });
      where.textContent = "Key group " + num(r.keyGroup) + ", shard " + num(r.shard) + ".";
      const values = r.values || [];
      replace(state, values.length ? values.map((v) => h("section", { class: "value", "data-name": v.name },
        h("h3", {}, v.name, " ", h("span", { class: "muted" }, v.value.typename + (num(v.expiresAtUnixMillis) ? ", expires " + fmtDateTime(v.expiresAtUnixMillis) : ""))),
        valueView(v))) : h("p", {}, "No state."));
      const ds = r.delayed || [];
      replace(delayed, ds.length ? table(r.delayedTruncated ? "Among the first delayed messages of its key group only." : null,
        ["Due", "Target", "Typename", "Token", "Message"],
        ds.map((d) => [fmtDateTime(d.dueUnixMillis), twinLink(d.target.type, d.target.id, addressText(d.target)), d.argument.typename,
          d.cancellationToken || "–", h("code", {}, d.json || textOf(d.argument.value))]))
        : h("p", {}, "No pending delayed message."));
      if (!r.activityKnown) {
        replace(activity, h("p", {}, "No recent activity recorded: the runtime keeps it, in memory, for the addresses active last since it started."));
      } else {
        replace(activity,
          h("h3", {}, "Received"),
          table(null, ["At", "What", "From", "Typename", "Payload", "Note"], activityRows(r.received || [], true)),
          h("h3", {}, "Sent"),
          table(null, ["At", "What", "To", "Typename", "Payload", "Note"], activityRows(r.sent || [], false)));
      }
    } catch (e) {
      replace(state, failure(e));
    } finally {
      busy = false;
    }
  };
  replace(main,
    h("p", { class: "breadcrumb" }, h("a", { href: "#/twins" }, "Twins"), " / ", h("a", { href: "#/twins/" + encodeURIComponent(type) }, type), " / ", id),
    h("h1", {}, type + "/" + id), where,
    h("div", { class: "cards" },
      h("section", { class: "card", "aria-labelledby": "state-h" }, h("h2", { id: "state-h" }, "State"), state),
      h("section", { class: "card", "aria-labelledby": "send-h" }, h("h2", { id: "send-h" }, "Send a message"), sendForm(type, id, refresh))),
    h("section", { "aria-labelledby": "delayed-h" }, h("h2", { id: "delayed-h" }, "Pending delayed messages"), delayed),
    h("section", { "aria-labelledby": "activity-h" }, h("h2", { id: "activity-h" }, "Recent activity"), activity));
  refresh();
  return { sample: (s) => { if (num(s.invocationsPerSecond) > 0) refresh(); } };
}

function sendForm(type, id, refresh) {
  const typename = h("input", { id: "send-typename", name: "typename", value: "twinflow/json", autocomplete: "off" });
  const payload = h("textarea", { id: "send-payload", name: "payload", spellcheck: "false" }, "{}");
  const asRequest = h("input", { id: "send-request", type: "checkbox", name: "request" });
  const out = h("div", { class: "output", role: "status" });
  const button = h("button", { type: "submit" }, "Send");
  const form = h("form", { onsubmit: async (e) => {
    e.preventDefault();
    button.disabled = true;
    replace(out, h("span", { class: "muted" }, "Sending…"));
    try {
      const r = await call("SendMessage", { address: { type, id }, typename: typename.value.trim(), json: payload.value, request: asRequest.checked });
      const lines = [h("p", {}, "Published (sequence " + num(r.sequence) + ").")];
      if (r.replyError) lines.push(h("p", { class: "error" }, "The reply is an error: " + r.replyError));
      else if (r.reply) lines.push(h("p", {}, "Reply (" + r.reply.typename + "):"), h("pre", { tabindex: "0" }, r.replyJson ? pretty(r.replyJson) : textOf(r.reply.value)));
      replace(out, lines);
      setTimeout(refresh, 300);
    } catch (err) {
      replace(out, failure(err));
    } finally {
      button.disabled = false;
    }
  } },
  h("div", { class: "field" }, h("label", { for: "send-typename" }, "Typename"), typename),
  h("div", { class: "field" }, h("label", { for: "send-payload" }, "Payload (JSON; protobuf typenames the runtime knows are encoded for you)"), payload),
  h("label", { class: "check", for: "send-request" }, asRequest, "As a request: wait for the reply"),
  h("div", { class: "row" }, button), out);
  return form;
}
