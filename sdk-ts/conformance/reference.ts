/**
 * The TypeScript implementation of the conformance reference functions
 * (conformance/README.md), written with the SDK. The conformance suite
 * checks an endpoint serving them through the wire protocol alone.
 */
import {
  BoolType,
  BytesType,
  Float64Type,
  Int64Type,
  Registry,
  StringType,
  TerminalError,
  ValueSpec,
  jsonType,
  protoType,
  terminal,
  type Address,
  type Context,
  type Message,
  type Type,
} from "../src/index.js";
import { AddressSchema } from "../src/gen/twinflow/v1/types_pb.js";
import { create } from "@bufbuild/protobuf";

export const counterFunction = "conformance/counter";
export const actorFunction = "conformance/actor";
export const codecFunction = "conformance/codec";
export const sinkFunction = "conformance/sink";

export const count = new ValueSpec({ name: "count", type: Int64Type });
export const last = new ValueSpec({ name: "last", type: Int64Type, expiry: { mode: "afterWrite", afterMillis: 60_000 } });
export const note = new ValueSpec({ name: "note", type: StringType, expiry: { mode: "afterInvoke", afterMillis: 30 * 60_000 } });

interface Step {
  op: string;
  to?: Address;
  value?: string;
  delayMillis?: number;
  token?: string;
  egress?: string;
  key?: string;
  message?: string;
}

const scriptType = jsonType<{ steps?: Step[] }>("conformance/Script");
const pairType = jsonType<{ a: number; b: number }>("conformance/Pair");
const sumType = jsonType<{ sum: number }>("conformance/Sum");
const addressType = protoType(AddressSchema);

/** Adds the reference functions to reg. */
export function register(reg: Registry): Registry {
  return reg
    .register(counterFunction, counter, count, last, note)
    .register(actorFunction, actor)
    .register(codecFunction, codec);
}

const sink = (ctx: Context): Address => ({ type: sinkFunction, id: ctx.self.id });

function counter(ctx: Context, msg: Message): void {
  if (msg.is(Int64Type)) {
    const n = msg.as(Int64Type);
    const sum = (count.get(ctx) ?? 0n) + n;
    count.set(ctx, sum);
    last.set(ctx, n);
    ctx.send(sink(ctx), Int64Type, sum);
    return;
  }
  if (msg.is(StringType)) {
    const s = msg.as(StringType);
    if (s === "reset") {
      count.clear(ctx);
      last.clear(ctx);
      return;
    }
    note.set(ctx, s);
    return;
  }
  throw new TerminalError(`${counterFunction} does not handle ${msg.typename}`);
}

function actor(ctx: Context, msg: Message): void {
  const steps = msg.as(scriptType).steps ?? [];
  steps.forEach((s, i) => {
    switch (s.op) {
      case "fail":
        throw new Error(s.message ?? "");
      case "failTerminal":
        throw new TerminalError(s.message ?? "");
    }
    try {
      step(ctx, s);
    } catch (e) {
      throw terminal(new Error(`step ${i} (${s.op}): ${(e as Error).message}`));
    }
  });
}

function step(ctx: Context, s: Step): void {
  const to = (): Address => {
    if (s.to === undefined) {
      throw new Error(`"to" is missing`);
    }
    return s.to;
  };
  const value = s.value ?? "";
  switch (s.op) {
    case "send":
      return ctx.send(to(), StringType, value);
    case "forward":
      return ctx.forward(to(), StringType, value);
    case "sendAfter":
      return ctx.sendAfter(s.delayMillis ?? 0, to(), StringType, value, { cancellationToken: s.token ?? "" });
    case "cancel":
      return ctx.cancelDelayed(s.token ?? "");
    case "egress":
      return ctx.egress(s.egress ?? "", StringType, value, { key: s.key ?? "" });
    case "reply":
      return ctx.reply(StringType, value);
    case "toCaller":
      if (ctx.caller === undefined) {
        throw new Error("the message has no caller");
      }
      return ctx.send(ctx.caller, StringType, value);
  }
  throw new Error(`unknown op ${JSON.stringify(s.op)}`);
}

function codec(ctx: Context, msg: Message): void {
  const to = sink(ctx);
  const changed = <T>(type: Type<T>, change: (v: T) => T) => ctx.send(to, type, change(msg.as(type)));
  switch (msg.typename) {
    case Int64Type.typename:
      return changed(Int64Type, (n) => n + 1n);
    case Float64Type.typename:
      return changed(Float64Type, (x) => x * 2);
    case StringType.typename:
      return changed(StringType, (s) => s + "!");
    case BoolType.typename:
      return changed(BoolType, (b) => !b);
    case BytesType.typename:
      return changed(BytesType, (b) => b.reverse());
    case pairType.typename: {
      const p = msg.as(pairType);
      if (!Number.isSafeInteger(p.a) || !Number.isSafeInteger(p.b)) {
        throw new TerminalError(`decode ${pairType.typename}: a and b must be integers`);
      }
      return ctx.send(to, sumType, { sum: p.a + p.b });
    }
    case addressType.typename:
      return changed(addressType, (a) => create(AddressSchema, { type: a.id, id: a.type }));
  }
  throw new TerminalError(`${codecFunction} does not handle ${msg.typename}`);
}
