import { test } from "node:test";
import assert from "node:assert/strict";
import { ExpiryMode } from "../src/gen/twinflow/v1/types_pb.js";
import { InvocationError_Kind, StateMutation_Kind } from "../src/gen/twinflow/v1/function_pb.js";
import { Int64Type, Registry, StringType, TerminalError, ValueSpec, terminal, type Context, type Message } from "../src/index.js";
import { batch, effectsOf, errorOf, inv, text, tv } from "./helpers.js";

const count = new ValueSpec({ name: "count", type: Int64Type });
const name = new ValueSpec({ name: "name", type: StringType, expiry: { mode: "afterWrite", afterMillis: 3_600_000 } });
const visits = new ValueSpec({ name: "visits", type: Int64Type, expiry: { mode: "afterInvoke", afterMillis: 1.5 } });

function registry(fn: (ctx: Context, msg: Message) => void | Promise<void>) {
  return new Registry().register("test/counter", fn, count, name, visits);
}

const allState = (c?: bigint) => [{ name: "count", value: c === undefined ? undefined : tv(Int64Type, c) }, { name: "name" }, { name: "visits" }];
const self = { type: "test/counter", id: "a" };

test("a batch runs its invocations in order over one copy of the state", async () => {
  const reg = registry(async (ctx, msg) => {
    await new Promise((r) => setTimeout(r, 1)); // awaits inside a function keep the order
    const n = (count.get(ctx) ?? 0n) + msg.as(Int64Type);
    count.set(ctx, n);
    ctx.send({ type: "test/sink", id: ctx.self.id }, Int64Type, n);
  });
  const e = effectsOf(await reg.runBatch(batch(self, allState(10n), inv(tv(Int64Type, 1n)), inv(tv(Int64Type, 2n)), inv(tv(Int64Type, 3n)))));
  assert.deepEqual(e.outgoing.map((m) => text(m.argument?.value)), ["11", "13", "16"]);
  assert.equal(e.stateMutations.length, 1);
  assert.equal(text(e.stateMutations[0].value?.value), "16");
});

test("missing states lists exactly the undeclared, in declaration order, and runs nothing", async () => {
  let ran = 0;
  const reg = registry(() => {
    ran++;
  });
  const r = await reg.runBatch(batch(self, [{ name: "visits" }, { name: "retired", value: tv(StringType, "x") }], inv(tv(Int64Type, 1n))));
  assert.equal(r.outcome.case, "missingStates");
  const specs = r.outcome.case === "missingStates" ? r.outcome.value.specs : [];
  assert.deepEqual(
    specs.map((s) => [s.name, s.typename, s.expiryMode, s.expireAfterMillis]),
    [
      ["count", "twinflow/int64", ExpiryMode.NONE_UNSPECIFIED, 0n],
      ["name", "twinflow/string", ExpiryMode.AFTER_WRITE, 3_600_000n],
    ],
  );
  assert.equal(ran, 0);
  // The expiry of visits was rounded up to whole milliseconds.
  const all = await reg.runBatch(batch(self, [], inv(tv(Int64Type, 1n))));
  assert.equal(all.outcome.case === "missingStates" && all.outcome.value.specs[2].expireAfterMillis, 2n);
});

test("mutations: one per written state, in declaration order, with its final value", async () => {
  const reg = registry((ctx, msg) => {
    const cmd = msg.as(StringType);
    if (cmd === "name") name.set(ctx, "n");
    if (cmd === "count") count.set(ctx, 7n);
    if (cmd === "clear") count.clear(ctx);
  });
  const e = effectsOf(await reg.runBatch(batch(self, allState(3n), inv(tv(StringType, "name")), inv(tv(StringType, "count")), inv(tv(StringType, "clear")))));
  assert.deepEqual(
    e.stateMutations.map((m) => [m.name, m.kind]),
    [
      ["count", StateMutation_Kind.DELETE],
      ["name", StateMutation_Kind.SET],
    ],
  );
});

test("error kinds: thrown errors retry, terminal ones do not, and the batch's effects go", async () => {
  const reg = registry((ctx, msg) => {
    ctx.send({ type: "test/sink", id: "x" }, StringType, "lost");
    switch (msg.as(StringType)) {
      case "fail":
        throw new Error("asked to fail");
      case "fatal":
        throw new TerminalError("asked to fail for good");
      case "wrapped":
        throw new Error("outer", { cause: terminal(new Error("inner")) });
      case "not-an-error":
        throw "a string";
      case "bad-send":
        try {
          ctx.send({ type: "no-slash", id: "x" }, StringType, "x");
        } catch {
          // caught, yet still a misuse
        }
        return;
      case "bad-delay":
        ctx.sendAfter(-1, self, StringType, "x");
        return;
      case "clear-undeclared":
        try {
          new ValueSpec({ name: "other", type: StringType }).clear(ctx);
        } catch {
          // caught, yet still a misuse
        }
    }
  });
  for (const [cmd, kind, message] of [
    ["fail", InvocationError_Kind.RETRYABLE, "asked to fail"],
    ["fatal", InvocationError_Kind.TERMINAL, "asked to fail for good"],
    ["wrapped", InvocationError_Kind.TERMINAL, "outer"],
    ["not-an-error", InvocationError_Kind.RETRYABLE, "a string"],
    ["bad-send", InvocationError_Kind.TERMINAL, `misuse of the Context: send to no-slash/x: function type "no-slash": want "namespace/name" with both parts non-empty`],
    ["bad-delay", InvocationError_Kind.TERMINAL, "misuse of the Context: send to test/counter/a after -1ms: the delay must be"],
    ["clear-undeclared", InvocationError_Kind.TERMINAL, `misuse of the Context: state "other" is not declared by function type test/counter`],
  ] as const) {
    const e = errorOf(await reg.runBatch(batch(self, allState(), inv(tv(StringType, "ok")), inv(tv(StringType, cmd)))));
    assert.equal(e.kind, kind, cmd);
    assert.equal(e.invocationIndex, 1, cmd);
    assert.ok(e.message.startsWith(message), `${cmd}: ${e.message}`);
  }
});

test("a state of another typename fails the read, retryably, naming both", async () => {
  const reg = registry((ctx) => {
    count.get(ctx);
  });
  const e = errorOf(await reg.runBatch(batch(self, [{ name: "count", value: tv(StringType, "ten") }, { name: "name" }, { name: "visits" }], inv(tv(Int64Type, 1n)))));
  assert.equal(e.kind, InvocationError_Kind.RETRYABLE);
  assert.equal(e.message, `state "count" of test/counter/a holds a value of typename "twinflow/string", but its spec declares "twinflow/int64"`);
});

test("effects requested after the function returned are refused", async () => {
  let late: Promise<unknown> | undefined;
  const reg = registry((ctx) => {
    late = new Promise((resolve) => setTimeout(() => resolve(attempt(() => ctx.send(self, StringType, "late"))), 5));
  });
  const e = effectsOf(await reg.runBatch(batch(self, allState(), inv(tv(Int64Type, 1n)))));
  assert.match(String(await late), /the invocation is over/);
  assert.equal(e.outgoing.length, 0);
});

test("a cancellation drops the batch's own delayed message with the token", async () => {
  const reg = registry((ctx) => {
    ctx.sendAfter(10.2, self, StringType, "d1", { cancellationToken: "t" });
    ctx.sendAfter(5, self, StringType, "d2", { cancellationToken: "u" });
    ctx.cancelDelayed("t");
  });
  const e = effectsOf(await reg.runBatch(batch(self, allState(), inv(tv(Int64Type, 1n)))));
  assert.deepEqual(e.delayed.map((d) => [text(d.argument?.value), d.delayMillis, d.cancellationToken]), [[`"d2"`, 5n, "u"]]);
  assert.deepEqual(e.cancellations.map((c) => c.cancellationToken), ["t"]);
});

test("an unknown function type and an aborted call", async () => {
  const reg = registry(() => {});
  const e = errorOf(await reg.runBatch(batch({ type: "test/nothing", id: "a" }, [], inv(tv(Int64Type, 1n)))));
  assert.equal(e.kind, InvocationError_Kind.TERMINAL);
  assert.equal(e.invocationIndex, -1);
  const ac = new AbortController();
  ac.abort(new Error("the runtime gave up"));
  const a = errorOf(await reg.runBatch(batch(self, allState(), inv(tv(Int64Type, 1n))), ac.signal));
  assert.equal(a.kind, InvocationError_Kind.RETRYABLE);
  assert.equal(a.message, "batch interrupted before this invocation: the runtime gave up");
});

test("register refuses what cannot work", () => {
  const reg = new Registry();
  assert.throws(() => reg.register("a/b/c", () => {}), /want exactly one '\/'/);
  assert.throws(() => reg.register("a/b", () => {}, count, count), /state "count" is declared twice/);
  assert.throws(() => reg.register("a/b", () => {}, new ValueSpec({ name: "x", type: Int64Type, expiry: { mode: "afterWrite", afterMillis: 0 } })), /afterMillis is 0/);
  reg.register("a/b", () => {});
  assert.throws(() => reg.register("a/b", () => {}), /already registered/);
});

function attempt(f: () => void): unknown {
  try {
    f();
    return "no error";
  } catch (e) {
    return e;
  }
}
