import { test } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { FunctionService, InvokeRequestSchema } from "../src/gen/twinflow/v1/function_pb.js";
import { ProtocolVersion } from "../src/gen/twinflow/v1/types_pb.js";
import { Int64Type, Registry, ValueSpec, createServer, keyIdOf, type HandlerOptions } from "../src/index.js";
import { batch, effectsOf, inv, text, tv } from "./helpers.js";

const count = new ValueSpec({ name: "count", type: Int64Type });
const self = { type: "test/counter", id: "a" };
const path = "/twinflow.v1.FunctionService/Invoke";

function registry(): Registry {
  return new Registry().register("test/counter", (ctx, msg) => count.set(ctx, (count.get(ctx) ?? 0n) + msg.as(Int64Type)), count);
}

async function serve(t: { after(fn: () => void): void }, options: HandlerOptions = {}): Promise<string> {
  const srv: Server = createServer(registry(), options);
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  t.after(() => {
    srv.closeAllConnections();
    srv.close();
  });
  return `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
}

function client(url: string, grpcWeb = false): Client<typeof FunctionService> {
  const transport = grpcWeb ? createGrpcWebTransport({ baseUrl: url, httpVersion: "1.1" }) : createConnectTransport({ baseUrl: url, httpVersion: "1.1" });
  return createClient(FunctionService, transport);
}

const request = (version = ProtocolVersion.PROTOCOL_VERSION_1) =>
  create(InvokeRequestSchema, { protocolVersion: version, batches: [batch(self, [{ name: "count", value: tv(Int64Type, 1n) }], inv(tv(Int64Type, 2n)))] });

async function code(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (e) {
    return ConnectError.from(e).code;
  }
}

test("serves Connect and gRPC-Web over HTTP/1.1", async (t) => {
  const url = await serve(t);
  for (const grpcWeb of [false, true]) {
    const resp = await client(url, grpcWeb).invoke(request());
    assert.equal(resp.protocolVersion, ProtocolVersion.PROTOCOL_VERSION_1);
    assert.equal(text(effectsOf(resp.results[0]).stateMutations[0].value?.value), "3");
  }
});

test("an unsupported protocol version is failed_precondition; a malformed request invalid_argument", async (t) => {
  const c = client(await serve(t));
  try {
    await c.invoke(request(ProtocolVersion.PROTOCOL_VERSION_UNSPECIFIED));
    assert.fail("version 0 was served");
  } catch (e) {
    const err = ConnectError.from(e);
    assert.equal(err.code, Code.FailedPrecondition);
    assert.match(err.rawMessage, /unsupported protocol version PROTOCOL_VERSION_UNSPECIFIED \(0\): this endpoint supports PROTOCOL_VERSION_1 \(1\)/);
  }
  assert.equal(await code(c.invoke(create(InvokeRequestSchema, { protocolVersion: 1 }))), Code.InvalidArgument);
});

test("bytes that are not a request are invalid_argument, other paths 404, large bodies resource_exhausted", async (t) => {
  const url = await serve(t, { readMaxBytes: 1000 });
  const post = (body: Uint8Array, p = path) => fetch(url + p, { method: "POST", headers: { "Content-Type": "application/proto" }, body });
  let resp = await post(Uint8Array.of(0xff, 0xff, 0xff));
  assert.equal(resp.status, 400);
  assert.equal(((await resp.json()) as { code: string }).code, "invalid_argument");
  resp = await post(Uint8Array.of(1), "/other");
  assert.equal(resp.status, 404);
  resp = await post(new Uint8Array(2000));
  assert.equal(resp.status, 429);
  assert.equal(((await resp.json()) as { code: string }).code, "resource_exhausted");
});

// Signing as the runtime does, with node:crypto.
function keyPair(): { privateKey: KeyObject; raw: Uint8Array } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const raw = Buffer.from(publicKey.export({ format: "jwk" }).x as string, "base64url");
  return { privateKey, raw };
}

function signature(key: { privateKey: KeyObject; raw: Uint8Array }, t: number, p: string, body: Uint8Array): string {
  const sig = sign(null, Buffer.concat([Buffer.from(`twinflow-v1\n${t}\n${p}\n`), body]), key.privateKey);
  return `t=${t},k=${keyIdOf(key.raw)},v1=${sig.toString("base64url")}`;
}

test("signed calls: only valid, fresh signatures of known keys are served, checked before decoding", async (t) => {
  const key = keyPair();
  const other = keyPair();
  const now = 1_800_000_000;
  const url = await serve(t, { verifyKeys: [Buffer.from(other.raw).toString("base64"), key.raw], now: () => now * 1000 });
  const body = toBinary(InvokeRequestSchema, request());
  const call = async (header: string | undefined, b: Uint8Array = body) => {
    const resp = await fetch(url + path, {
      method: "POST",
      headers: { "Content-Type": "application/proto", ...(header === undefined ? {} : { "Twinflow-Signature": header }) },
      body: b,
    });
    if (resp.status === 200) {
      return "served";
    }
    const e = (await resp.json()) as { code: string; message: string };
    return `${resp.status} ${e.code}: ${e.message}`;
  };
  const stranger = keyPair();
  assert.equal(await call(signature(key, now, path, body)), "served");
  assert.equal(await call(signature(other, now - 300, path, body)), "served");
  for (const [header, b, want] of [
    [undefined, body, "the call has no Twinflow-Signature header"],
    [undefined, Uint8Array.of(0xff), "the call has no Twinflow-Signature header"],
    ["garbage", body, "malformed Twinflow-Signature header"],
    [`t=x,k=${keyIdOf(key.raw)},v1=${"A".repeat(86)}`, body, "is not a time in unix seconds"],
    [signature(stranger, now, path, body), body, `unknown key id "${keyIdOf(stranger.raw)}"`],
    [signature(key, now - 301, path, body), body, "301 s from this endpoint's clock"],
    [signature(key, now + 3600, path, body), body, "3600 s from this endpoint's clock"],
    [signature(key, now, "/other", body), body, "does not match the request"],
    [signature(key, now, path, body), Uint8Array.of(0xff), "does not match the request"],
  ] as const) {
    const got = await call(header, b);
    assert.ok(got.startsWith("401 unauthenticated: ") && got.includes(want), `${header}: ${got}`);
  }
});

test("verify keys come from TWINFLOW_VERIFY_KEY when not given; an empty list checks nothing", async (t) => {
  const key = keyPair();
  process.env.TWINFLOW_VERIFY_KEY = ` ${Buffer.from(keyPair().raw).toString("base64")}, ${Buffer.from(key.raw).toString("base64")}`;
  t.after(() => delete process.env.TWINFLOW_VERIFY_KEY);
  const body = toBinary(InvokeRequestSchema, request());
  const status = async (url: string, header?: string) =>
    (await fetch(url + path, { method: "POST", headers: { "Content-Type": "application/proto", ...(header ? { "Twinflow-Signature": header } : {}) }, body })).status;
  const fromEnv = await serve(t);
  assert.equal(await status(fromEnv), 401);
  assert.equal(await status(fromEnv, signature(key, Math.floor(Date.now() / 1000), path, body)), 200);
  assert.equal(await status(await serve(t, { verifyKeys: [] })), 200);
  process.env.TWINFLOW_VERIFY_KEY = "not base64!";
  assert.throws(() => createServer(registry()), /verify key "not base64!" is not standard base64/);
  assert.throws(() => createServer(registry(), { verifyKeys: [new Uint8Array(31)] }), /31 bytes, want the 32 bytes/);
});
