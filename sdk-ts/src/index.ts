/**
 * The TypeScript SDK for Twinflow functions.
 *
 * A function is a plain (async) function over a {@link Context}: it reads
 * and writes the typed state of its address through {@link ValueSpec}s, and
 * sends messages, delayed messages and egress records through the Context.
 * Functions are registered in a {@link Registry} with the state they
 * declare, and {@link createHandler} serves the registry to the Twinflow
 * runtime over Connect, from Node's HTTP server.
 *
 *     const count = new ValueSpec({ name: "count", type: Int64Type });
 *     const reg = new Registry().register("example/counter", (ctx) => {
 *       count.set(ctx, (count.get(ctx) ?? 0n) + 1n);
 *     }, count);
 *     createServer(reg).listen(8000, "127.0.0.1");
 *
 * The runtime ships the state of an address with every call and applies
 * the returned effects atomically, so a function keeps nothing in memory
 * between calls. Thrown errors are retryable unless they are a
 * {@link TerminalError}. The package "@twinflow/sdk/testing" runs functions
 * in unit tests without a runtime.
 */
export { type Address, addressString } from "./address.js";
export { TerminalError, terminal, isTerminal } from "./errors.js";
export {
  type Type,
  type TypedValue,
  Int64Type,
  Float64Type,
  StringType,
  BoolType,
  BytesType,
  jsonType,
  protoType,
  encode,
  decode,
} from "./types.js";
export { ValueSpec, type ValueSpecOptions, type Expiry } from "./state.js";
export { type Context, type Message, type SendAfterOptions, type EgressOptions, NoReplyToError, replyEgress } from "./context.js";
export { Registry, type FunctionHandler } from "./registry.js";
export { createHandler, createServer, handlerPath, defaultCompressMinBytes, defaultReadMaxBytes, type HandlerOptions, type NodeHandler } from "./handler.js";
export { signatureHeader, verifyKeyEnv, maxClockSkewSeconds, keyIdOf, parseVerifyKeys, SignatureVerifier, type VerifyKey } from "./signature.js";
