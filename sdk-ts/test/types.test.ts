import { test } from "node:test";
import assert from "node:assert/strict";
import { BoolType, BytesType, Float64Type, Int64Type, StringType, decode, encode, jsonType, protoType } from "../src/index.js";
import { AddressSchema } from "../src/gen/twinflow/v1/types_pb.js";
import { create } from "@bufbuild/protobuf";

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const bytes = (s: string) => new TextEncoder().encode(s);

// The expected bytes are what the Go SDK's encoding/json writes.
test("primitives encode as the Go SDK does", () => {
  const cases: [Uint8Array, string][] = [
    [Int64Type.encode(42n), "42"],
    [Int64Type.encode((1n << 62n) + 1n), "4611686018427387905"],
    [Int64Type.encode(-(1n << 63n)), "-9223372036854775808"],
    [Float64Type.encode(1.5), "1.5"],
    [Float64Type.encode(1e-7), "1e-7"],
    [Float64Type.encode(0.000001), "0.000001"],
    [Float64Type.encode(1e21), "1e+21"],
    [Float64Type.encode(123456789012345680000), "123456789012345680000"],
    [Float64Type.encode(-0), "-0"],
    [StringType.encode(`<a & b> "é" \u2028 \n`), `"\\u003ca \\u0026 b\\u003e \\"é\\" \\u2028 \\n"`],
    [BoolType.encode(true), "true"],
    [jsonType<{ a: string }>("test/A").encode({ a: "<" }), `{"a":"\\u003c"}`],
  ];
  for (const [got, want] of cases) {
    assert.equal(text(got), want);
  }
});

test("primitives decode what the Go SDK writes, exactly", () => {
  assert.equal(Int64Type.decode(bytes("9223372036854775807")), 9223372036854775807n);
  assert.equal(Int64Type.decode(bytes(" -5 ")), -5n);
  assert.equal(Int64Type.decode(bytes("null")), 0n);
  assert.equal(Float64Type.decode(bytes("2e-7")), 2e-7);
  assert.equal(StringType.decode(bytes(`"\\u003ca"`)), "<a");
  assert.equal(BoolType.decode(bytes("false")), false);
  const b = Uint8Array.of(1, 2, 3);
  const copy = BytesType.decode(b);
  b[0] = 9;
  assert.deepEqual(copy, Uint8Array.of(1, 2, 3), "bytes are copied");
});

test("values that are not of the type fail to decode or encode, saying why", () => {
  assert.throws(() => Int64Type.decode(bytes("1.5")), /"1.5" is not a JSON integer/);
  assert.throws(() => Int64Type.decode(bytes("9223372036854775808")), /does not fit in 64 bits/);
  assert.throws(() => Int64Type.encode(1n << 63n), /does not fit in 64 bits/);
  assert.throws(() => Int64Type.encode(5 as unknown as bigint), /not a bigint/);
  assert.throws(() => Float64Type.encode(NaN), /unsupported value NaN/);
  assert.throws(() => StringType.decode(bytes("42")), /number is not a string/);
  assert.throws(() => BoolType.decode(bytes("yes")), /decode twinflow\/bool/);
});

test("protobuf types travel under proto/ + the full name", () => {
  const t = protoType(AddressSchema);
  assert.equal(t.typename, "proto/twinflow.v1.Address");
  const v = encode(t, create(AddressSchema, { type: "a/b", id: "c" }));
  assert.equal(decode(t, v).id, "c");
  assert.throws(() => t.decode(Uint8Array.of(0xff)), /decode proto\/twinflow.v1.Address/);
});

test("decode refuses a value of another typename, naming both", () => {
  assert.throws(() => decode(Int64Type, encode(StringType, "x")), /value has typename "twinflow\/string", want "twinflow\/int64"/);
  assert.throws(() => encode(jsonType("nonamespace"), 1), /typename "nonamespace": want "namespace\/name"/);
});
