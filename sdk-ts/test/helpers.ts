import { create } from "@bufbuild/protobuf";
import { AddressBatchSchema, InvocationSchema, type AddressResult, type Effects, type InvocationError } from "../src/gen/twinflow/v1/function_pb.js";
import type { Address } from "../src/index.js";
import { encode, type Type } from "../src/index.js";
import assert from "node:assert/strict";

export function tv<T>(type: Type<T>, v: T) {
  const x = encode(type, v);
  return { typename: x.typename, value: x.bytes };
}

export function inv(argument: { typename: string; value: Uint8Array }, more: { replyTo?: string; caller?: Address } = {}) {
  return create(InvocationSchema, { argument, replyTo: more.replyTo ?? "", caller: more.caller });
}

export function batch(target: Address, state: { name: string; value?: { typename: string; value: Uint8Array } }[], ...invocations: ReturnType<typeof inv>[]) {
  return create(AddressBatchSchema, { target, state, invocations });
}

export function effectsOf(r: AddressResult): Effects {
  assert.equal(r.outcome.case, "effects", `want effects, got ${r.outcome.case}: ${JSON.stringify(r.outcome.value, (_, v) => (typeof v === "bigint" ? String(v) : v))}`);
  return r.outcome.value as Effects;
}

export function errorOf(r: AddressResult): InvocationError {
  assert.equal(r.outcome.case, "error", `want an error, got ${r.outcome.case}`);
  return r.outcome.value as InvocationError;
}

export const text = (b: Uint8Array | undefined) => new TextDecoder().decode(b);
