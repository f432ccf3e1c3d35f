import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { Code, ConnectError, createConnectRouter } from "@connectrpc/connect";
import type { UniversalServerResponse } from "@connectrpc/connect/protocol";
import { compressionGzip, universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import { FunctionService, InvokeResponseSchema } from "./gen/twinflow/v1/function_pb.js";
import { ProtocolVersion } from "./gen/twinflow/v1/types_pb.js";
import { create } from "@bufbuild/protobuf";
import { requestProblem, type Registry } from "./registry.js";
import { SignatureVerifier, parseVerifyKeys, signatureHeader, verifyKeyEnv, type VerifyKey } from "./signature.js";

/** The path prefix the handler serves: "/twinflow.v1.FunctionService/". */
export const handlerPath = `/${FunctionService.typeName}/`;

/** Responses smaller than this are not compressed, even when the client asks for gzip; bytes are cheaper than CPU between a runtime and its endpoints. */
export const defaultCompressMinBytes = 64 << 10;

/** The largest request body accepted by default, as large as the runtime sends. */
export const defaultReadMaxBytes = 64 << 20;

/** Options of {@link createHandler}. */
export interface HandlerOptions {
  /**
   * Public keys of the runtimes whose signed calls to serve (raw 32 bytes
   * or standard base64). When given, or when TWINFLOW_VERIFY_KEY holds
   * some (comma-separated), every call must carry a valid
   * Twinflow-Signature made within 300 s of this endpoint's clock, checked
   * before the body is decoded; others are refused with HTTP 401 and the
   * unauthenticated code. An empty list checks nothing, whatever the
   * environment says.
   */
  readonly verifyKeys?: readonly VerifyKey[];
  /** Largest request body, in bytes; default 64 MiB. */
  readonly readMaxBytes?: number;
  /** See {@link defaultCompressMinBytes}. */
  readonly compressMinBytes?: number;
  /** The clock of signature checks, in milliseconds since the epoch; for tests. */
  readonly now?: () => number;
}

/** A request listener for node:http's createServer. */
export type NodeHandler = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * Returns a request listener serving the registry as the
 * twinflow.v1.FunctionService over HTTP/1.1, with the Connect protocol
 * (what the runtime speaks) and gRPC-Web. It answers 404 outside
 * {@link handlerPath}.
 *
 * A request with a protocol version other than PROTOCOL_VERSION_1 fails
 * with failed_precondition; a malformed one with invalid_argument, and no
 * batch runs. Otherwise the batches run concurrently and each gets its own
 * result, as Registry.runBatch describes.
 */
export function createHandler(reg: Registry, options: HandlerOptions = {}): NodeHandler {
  const keys = options.verifyKeys ?? parseVerifyKeys(process.env[verifyKeyEnv] ?? "");
  const verifier = keys.length > 0 ? new SignatureVerifier(keys, options.now) : undefined;
  const readMaxBytes = options.readMaxBytes ?? defaultReadMaxBytes;
  const router = createConnectRouter({
    acceptCompression: [compressionGzip],
    compressMinBytes: options.compressMinBytes ?? defaultCompressMinBytes,
    readMaxBytes,
    grpc: false, // needs HTTP/2, which this HTTP/1.1 handler does not serve
  });
  router.service(FunctionService, {
    async invoke(req, ctx) {
      if (req.protocolVersion !== ProtocolVersion.PROTOCOL_VERSION_1) {
        const v = req.protocolVersion;
        throw new ConnectError(
          `unsupported protocol version ${ProtocolVersion[v] ?? v} (${v}): this endpoint supports PROTOCOL_VERSION_1 (${ProtocolVersion.PROTOCOL_VERSION_1})`,
          Code.FailedPrecondition,
        );
      }
      const p = requestProblem(req);
      if (p !== undefined) {
        throw new ConnectError(p, Code.InvalidArgument);
      }
      const results = await Promise.all(req.batches.map((b) => reg.runValidBatch(b, ctx.signal)));
      return create(InvokeResponseSchema, { protocolVersion: ProtocolVersion.PROTOCOL_VERSION_1, results });
    },
  });
  const handlers = new Map(router.handlers.map((h) => [h.requestPath, h]));

  return (req, res) => {
    const path = (req.url ?? "").split("?", 1)[0];
    const h = handlers.get(path);
    if (h === undefined) {
      res.writeHead(404).end();
      return;
    }
    readBody(req, readMaxBytes)
      .then(async (body) => {
        if (body === undefined) {
          writeError(res, 429, "resource_exhausted", `the request body exceeds ${readMaxBytes} bytes`);
          return;
        }
        // The body is verified before anything decodes it.
        const refused = verifier?.verify(req.headers[signatureHeader.toLowerCase()], path, body);
        if (refused !== undefined) {
          writeError(res, 401, "unauthenticated", refused);
          return;
        }
        const uReq = universalRequestFromNodeRequest(req, res, undefined, undefined);
        const uRes = await h({ ...uReq, body: once(body) });
        await universalResponseToNodeResponse(await undecodableAsInvalid(uRes), res);
      })
      .catch(() => {
        // The connection failed (a client gone); nothing can be answered.
        if (!res.headersSent) {
          res.writeHead(500);
        }
        res.end();
      });
  };
}

/**
 * Returns an HTTP/1.1 server for the handler, with a header read timeout so
 * that idle half-open connections do not pile up:
 *
 *     createServer(reg).listen(8000, "127.0.0.1");
 */
export function createServer(reg: Registry, options: HandlerOptions = {}): Server {
  const srv = createHttpServer(createHandler(reg, options));
  srv.headersTimeout = 10_000;
  srv.keepAliveTimeout = 90_000;
  return srv;
}

/** Reads the whole body, or returns undefined when it exceeds max bytes. */
async function readBody(req: IncomingMessage, max: number): Promise<Uint8Array | undefined> {
  const chunks: Buffer[] = [];
  let n = 0;
  // Read to the end even past max, so that the connection can carry the answer.
  for await (const chunk of req) {
    n += (chunk as Buffer).length;
    if (n <= max) {
      chunks.push(chunk as Buffer);
    }
  }
  return n > max ? undefined : Buffer.concat(chunks);
}

/**
 * Connect-ES answers a binary request body that does not decode with the
 * internal code (a JSON one with invalid_argument); the protocol, and
 * connect-go, say invalid_argument. This rewrites that one answer.
 */
async function undecodableAsInvalid(uRes: UniversalServerResponse): Promise<UniversalServerResponse> {
  if (uRes.status !== 500 || uRes.body === undefined) {
    return uRes;
  }
  const chunks: Uint8Array[] = [];
  for await (const chunk of uRes.body) {
    chunks.push(chunk);
  }
  const body = Buffer.concat(chunks);
  let e: { code?: unknown; message?: unknown } = {};
  try {
    e = JSON.parse(body.toString("utf8"));
  } catch {
    // not a Connect error body: pass it on as it is
  }
  if (e.code !== "internal" || typeof e.message !== "string" || !e.message.startsWith("parse binary: ")) {
    return { ...uRes, body: once(body) };
  }
  const rewritten = Buffer.from(JSON.stringify({ code: "invalid_argument", message: `the request does not decode: ${e.message.slice("parse binary: ".length)}` }));
  const header = new Headers(uRes.header);
  header.delete("Content-Length");
  return { ...uRes, status: 400, header, body: once(rewritten) };
}

async function* once(b: Uint8Array): AsyncIterable<Uint8Array> {
  yield b;
}

/** Writes an error in the Connect protocol's unary form. */
function writeError(res: ServerResponse, status: number, code: string, message: string): void {
  const body = JSON.stringify({ code, message });
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}
