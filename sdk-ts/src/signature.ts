import { createHash, createPublicKey, verify, type KeyObject } from "node:crypto";

/**
 * The request header carrying a call's signature:
 *
 *     Twinflow-Signature: t=<unix seconds>,k=<key id>,v1=<signature>
 *
 * The key id is the first 16 lowercase hex characters of the SHA-256 of the
 * raw 32-byte Ed25519 public key; the signature is the unpadded base64url
 * Ed25519 signature of "twinflow-v1\n" + t + "\n" + the request's URL path
 * + "\n" + the raw request body.
 */
export const signatureHeader = "Twinflow-Signature";

/** The environment variable with the public keys, comma-separated, when no verifyKeys option is given. */
export const verifyKeyEnv = "TWINFLOW_VERIFY_KEY";

/** How far a signature's time may be from the endpoint's clock, either way, in seconds. */
export const maxClockSkewSeconds = 300;

/** A public key: the raw 32 bytes, or their standard base64 encoding. */
export type VerifyKey = Uint8Array | string;

/** Returns the key id of a raw 32-byte Ed25519 public key. */
export function keyIdOf(publicKey: Uint8Array): string {
  return createHash("sha256").update(publicKey).digest("hex").slice(0, 16);
}

/** Parses the comma-separated standard base64 public keys of TWINFLOW_VERIFY_KEY. */
export function parseVerifyKeys(text: string): Uint8Array[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")
    .map((s) => rawKey(s));
}

const base64Std = /^[A-Za-z0-9+/]*={0,2}$/;
const base64Url = /^[A-Za-z0-9_-]+$/;
const decimal = /^[0-9]{1,15}$/;

function rawKey(k: VerifyKey): Uint8Array {
  let raw: Uint8Array;
  if (typeof k === "string") {
    if (!base64Std.test(k) || k.length % 4 !== 0) {
      throw new Error(`verify key ${JSON.stringify(k)} is not standard base64`);
    }
    raw = Buffer.from(k, "base64");
  } else {
    raw = k;
  }
  if (raw.length !== 32) {
    throw new Error(`verify key has ${raw.length} bytes, want the 32 bytes of an Ed25519 public key`);
  }
  return Uint8Array.from(raw);
}

/**
 * Verifies the signatures of calls against a set of Ed25519 public keys.
 * verify returns why a call must be refused, or undefined to serve it.
 */
export class SignatureVerifier {
  private readonly keys = new Map<string, KeyObject>();

  constructor(
    keys: readonly VerifyKey[],
    private readonly now: () => number = Date.now,
  ) {
    if (keys.length === 0) {
      throw new Error("no verify keys: give at least one public key");
    }
    for (const k of keys) {
      const raw = rawKey(k);
      const jwk = { kty: "OKP", crv: "Ed25519", x: Buffer.from(raw).toString("base64url") };
      this.keys.set(keyIdOf(raw), createPublicKey({ key: jwk, format: "jwk" }));
    }
  }

  /** The ids of the keys, for messages. */
  get keyIds(): string[] {
    return [...this.keys.keys()];
  }

  verify(header: string | string[] | undefined, path: string, body: Uint8Array): string | undefined {
    const want = "want t=<unix seconds>,k=<key id>,v1=<signature>";
    if (header === undefined || header === "") {
      return `the call has no ${signatureHeader} header: this endpoint serves only calls signed by the runtime`;
    }
    if (Array.isArray(header)) {
      return `the call has ${header.length} ${signatureHeader} headers, want one`;
    }
    const fields = new Map<string, string>();
    for (const part of header.split(",")) {
      const eq = part.indexOf("=");
      if (eq <= 0) {
        return `malformed ${signatureHeader} header ${JSON.stringify(header)}: ${want}`;
      }
      const name = part.slice(0, eq).trim();
      if (fields.has(name)) {
        return `malformed ${signatureHeader} header: ${name} appears twice`;
      }
      fields.set(name, part.slice(eq + 1).trim());
    }
    const t = fields.get("t");
    const k = fields.get("k");
    const v1 = fields.get("v1");
    if (t === undefined || k === undefined || v1 === undefined) {
      return `malformed ${signatureHeader} header ${JSON.stringify(header)}: ${want}`;
    }
    if (!decimal.test(t)) {
      return `malformed ${signatureHeader} header: t=${JSON.stringify(t)} is not a time in unix seconds`;
    }
    if (!base64Url.test(v1)) {
      return `malformed ${signatureHeader} header: v1 is not unpadded base64url`;
    }
    const sig = Buffer.from(v1, "base64url");
    if (sig.length !== 64) {
      return `malformed ${signatureHeader} header: v1 holds ${sig.length} bytes, want a 64-byte Ed25519 signature`;
    }
    const key = this.keys.get(k);
    if (key === undefined) {
      return `${signatureHeader}: unknown key id ${JSON.stringify(k)}; this endpoint verifies ${this.keyIds.join(", ")}`;
    }
    const skew = Math.abs(this.now() / 1000 - Number(t));
    if (skew > maxClockSkewSeconds) {
      return `${signatureHeader}: signed at t=${t}, ${Math.round(skew)} s from this endpoint's clock (at most ${maxClockSkewSeconds} s allowed): check both clocks`;
    }
    const signed = Buffer.concat([Buffer.from(`twinflow-v1\n${t}\n${path}\n`), body]);
    if (!verify(null, signed, key, sig)) {
      return `${signatureHeader}: the signature of key ${k} does not match the request (path ${path}, ${body.length} body bytes)`;
    }
    return undefined;
  }
}
