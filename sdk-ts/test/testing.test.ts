import { test } from "node:test";
import assert from "node:assert/strict";
import { Int64Type, Registry, StringType, TerminalError, ValueSpec, encode } from "../src/index.js";
import { Harness, InvocationFailure } from "../src/testing.js";

const seen = new ValueSpec({ name: "seen", type: Int64Type, expiry: { mode: "afterInvoke", afterMillis: 60_000 } });
const person = { type: "greeter/person", id: "ada" };

function registry(): Registry {
  return new Registry().register(
    "greeter/person",
    (ctx, msg) => {
      const name = msg.as(StringType);
      if (name === "nobody") {
        throw new TerminalError("no one to greet");
      }
      const n = (seen.get(ctx) ?? 0n) + 1n;
      seen.set(ctx, n);
      ctx.egress("greetings", StringType, `hello ${name}, visit ${n}`, { key: ctx.self.id });
      ctx.sendAfter(1000, ctx.self, StringType, name, { cancellationToken: "again" });
      if (msg.replyTo !== "") {
        ctx.reply(Int64Type, n);
      }
    },
    seen,
  );
}

test("the harness negotiates state, applies it, and reports the other effects", async () => {
  const h = new Harness(registry());
  let res = await h.invoke(person, encode(StringType, "ada"));
  assert.equal(h.stateOf(person, seen), 1n);
  assert.deepEqual(res.egress.map((e) => [e.egress, e.key, new TextDecoder().decode(e.value.bytes)]), [["greetings", "ada", `"hello ada, visit 1"`]]);
  assert.deepEqual(res.delayed.map((d) => [d.delayMillis, d.cancellationToken]), [[1000, "again"]]);
  res = await h.invoke(person, encode(StringType, "ada"), { replyTo: "_INBOX.1" });
  assert.equal(h.stateOf(person, seen), 2n);
  assert.deepEqual(res.replies.map((r) => [r.replyTo, new TextDecoder().decode(r.value.bytes)]), [["_INBOX.1", "2"]]);
});

test("a failure throws InvocationFailure and changes nothing", async () => {
  const h = new Harness(registry());
  h.setState(person, seen, 41n);
  await assert.rejects(h.invoke(person, encode(StringType, "nobody")), (e: unknown) => e instanceof InvocationFailure && e.terminal && e.index === 0 && e.reason === "no one to greet");
  await assert.rejects(h.invoke(person, encode(Int64Type, 5n)), (e: unknown) => e instanceof InvocationFailure && e.terminal && /message: value has typename "twinflow\/int64"/.test(e.reason));
  assert.equal(h.stateOf(person, seen), 41n);
  h.clearState(person, "seen");
  assert.equal(h.stateOf(person, seen), undefined);
});
