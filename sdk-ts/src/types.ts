import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { typenameProblem, quote } from "./address.js";

/**
 * A payload with the name of its type. Messages, state values and egress
 * records are all typed values. Build one with {@link encode}; read one
 * with {@link decode}.
 */
export interface TypedValue {
  /** "namespace/name", e.g. "datacenter/ServerMetricReport". */
  readonly typename: string;
  /** The payload, encoded as the typename says. */
  readonly bytes: Uint8Array;
}

/**
 * A typename plus the codec for values of T. Messages and state values
 * carry the typename on the wire, so that a receiver can tell what it got
 * before decoding it.
 */
export interface Type<T> {
  /** The "namespace/name" the values travel under. */
  readonly typename: string;
  /** Serializes v; throws when it cannot. */
  encode(v: T): Uint8Array;
  /** Parses b; throws when it cannot. */
  decode(b: Uint8Array): T;
}

/** Reports whether x is a {@link Type} rather than a {@link TypedValue}. */
export function isType(x: unknown): x is Type<unknown> {
  return typeof x === "object" && x !== null && typeof (x as Type<unknown>).encode === "function" && typeof (x as Type<unknown>).decode === "function";
}

const utf8 = new TextEncoder();
// Like Go's encoding/json, invalid UTF-8 inside a JSON string becomes
// U+FFFD rather than an error.
const utf8Decoder = new TextDecoder();

/**
 * Serializes v as JSON exactly as Go's encoding/json escapes it: <, > and &
 * and U+2028, U+2029 as \u escapes. Outside strings none of them can occur
 * in JSON text, so replacing them everywhere is safe.
 */
export function goJSON(v: unknown): string {
  const s = JSON.stringify(v);
  if (s === undefined) {
    throw new Error(`cannot encode ${typeof v} as JSON`);
  }
  return s.replace(/[<>&\u2028\u2029]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

function parseJSON(typename: string, b: Uint8Array): unknown {
  try {
    return JSON.parse(utf8Decoder.decode(b));
  } catch (e) {
    throw new Error(`decode ${typename}: ${(e as Error).message}`);
  }
}

/**
 * The type of values of T encoded as JSON under the given typename
 * ("namespace/name"), with JSON.stringify and JSON.parse (and Go's escaping
 * of <, > and &). The typename is checked where the type is used: by
 * Registry.register and {@link encode}.
 */
export function jsonType<T>(typename: string): Type<T> {
  return {
    typename,
    encode: (v: T) => utf8.encode(goJSON(v)),
    decode: (b: Uint8Array) => parseJSON(typename, b) as T,
  };
}

const int64Min = -(1n << 63n);
const int64Max = (1n << 63n) - 1n;
const jsonInteger = /^-?(0|[1-9][0-9]*)$/;

/**
 * "twinflow/int64": a 64-bit integer as a bigint, JSON-encoded (42). Values
 * beyond 2^53 keep every digit.
 */
export const Int64Type: Type<bigint> = {
  typename: "twinflow/int64",
  encode(v: bigint): Uint8Array {
    if (typeof v !== "bigint") {
      throw new TypeError(`encode twinflow/int64: ${typeof v} ${String(v)} is not a bigint`);
    }
    if (v < int64Min || v > int64Max) {
      throw new RangeError(`encode twinflow/int64: ${v} does not fit in 64 bits`);
    }
    return utf8.encode(v.toString());
  },
  decode(b: Uint8Array): bigint {
    const s = utf8Decoder.decode(b).trim();
    if (s === "null") {
      return 0n; // as Go's encoding/json: null leaves the zero value
    }
    if (!jsonInteger.test(s)) {
      throw new Error(`decode twinflow/int64: ${quote(s)} is not a JSON integer`);
    }
    const v = BigInt(s);
    if (v < int64Min || v > int64Max) {
      throw new RangeError(`decode twinflow/int64: ${s} does not fit in 64 bits`);
    }
    return v;
  },
};

/**
 * "twinflow/float64": a number, JSON-encoded as Go formats a float64
 * (1.5, 1e-7, 1e+21, -0). NaN and infinities cannot be encoded.
 */
export const Float64Type: Type<number> = {
  typename: "twinflow/float64",
  encode(v: number): Uint8Array {
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new TypeError(`encode twinflow/float64: unsupported value ${String(v)}`);
    }
    // JavaScript's number formatting is the one Go's encoding/json copies,
    // except for the sign of zero.
    return utf8.encode(Object.is(v, -0) ? "-0" : JSON.stringify(v));
  },
  decode(b: Uint8Array): number {
    const v = parseJSON("twinflow/float64", b);
    if (v === null) {
      return 0;
    }
    if (typeof v !== "number") {
      throw new Error(`decode twinflow/float64: ${typeof v} is not a number`);
    }
    return v;
  },
};

/** "twinflow/string": a string, JSON-encoded ("x"). */
export const StringType: Type<string> = {
  typename: "twinflow/string",
  encode(v: string): Uint8Array {
    if (typeof v !== "string") {
      throw new TypeError(`encode twinflow/string: ${typeof v} is not a string`);
    }
    return utf8.encode(goJSON(v));
  },
  decode(b: Uint8Array): string {
    const v = parseJSON("twinflow/string", b);
    if (v === null) {
      return "";
    }
    if (typeof v !== "string") {
      throw new Error(`decode twinflow/string: ${typeof v} is not a string`);
    }
    return v;
  },
};

/** "twinflow/bool": true or false, JSON-encoded. */
export const BoolType: Type<boolean> = {
  typename: "twinflow/bool",
  encode(v: boolean): Uint8Array {
    if (typeof v !== "boolean") {
      throw new TypeError(`encode twinflow/bool: ${typeof v} is not a boolean`);
    }
    return utf8.encode(v ? "true" : "false");
  },
  decode(b: Uint8Array): boolean {
    const v = parseJSON("twinflow/bool", b);
    if (v === null) {
      return false;
    }
    if (typeof v !== "boolean") {
      throw new Error(`decode twinflow/bool: ${typeof v} is not a boolean`);
    }
    return v;
  },
};

/** "twinflow/bytes": raw bytes, not encoded at all. Both ways copy. */
export const BytesType: Type<Uint8Array> = {
  typename: "twinflow/bytes",
  encode: (v: Uint8Array) => Uint8Array.from(v),
  decode: (b: Uint8Array) => Uint8Array.from(b),
};

/**
 * The type of the protobuf message of schema (generated by protoc-gen-es),
 * encoded in the protobuf binary format under the typename "proto/" + the
 * message's full name, e.g. "proto/datacenter.v1.ServerMetricReport".
 */
export function protoType<Desc extends DescMessage>(schema: Desc): Type<MessageShape<Desc>> {
  const typename = "proto/" + schema.typeName;
  return {
    typename,
    encode: (v: MessageShape<Desc>) => toBinary(schema, v),
    decode(b: Uint8Array): MessageShape<Desc> {
      try {
        return fromBinary(schema, b);
      } catch (e) {
        throw new Error(`decode ${typename}: ${(e as Error).message}`);
      }
    },
  };
}

/** Encodes v with type; throws when the typename is malformed or encoding fails. */
export function encode<T>(type: Type<T>, v: T): TypedValue {
  const p = typenameProblem(type.typename);
  if (p !== undefined) {
    throw new Error(`encode: ${p}`);
  }
  return { typename: type.typename, bytes: type.encode(v) };
}

/**
 * Decodes v with type. Throws, naming both typenames, when v's typename is
 * not type's: values of different types must never be decoded into each
 * other just because their bytes happen to parse.
 */
export function decode<T>(type: Type<T>, v: TypedValue): T {
  if (v.typename !== type.typename) {
    throw new Error(`value has typename ${quote(v.typename)}, want ${quote(type.typename)}`);
  }
  return type.decode(v.bytes);
}
