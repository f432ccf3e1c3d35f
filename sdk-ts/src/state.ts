import { ExpiryMode as ExpiryModeProto, type StateSpec } from "./gen/twinflow/v1/types_pb.js";
import { create } from "@bufbuild/protobuf";
import { StateSpecSchema } from "./gen/twinflow/v1/types_pb.js";
import { typenameProblem, quote } from "./address.js";
import type { Type } from "./types.js";
import type { Context } from "./context.js";
import { misuse, stateAccess } from "./context.js";

/**
 * When a state value expires. The runtime, not the SDK, expires values: an
 * expired value is simply absent in the next call.
 */
export type Expiry =
  /** The value expires afterMillis after its last write. */
  | { readonly mode: "afterWrite"; readonly afterMillis: number }
  /** The value expires afterMillis after the address was last invoked or the value last written. */
  | { readonly mode: "afterInvoke"; readonly afterMillis: number };

/** What a {@link ValueSpec} is made of. */
export interface ValueSpecOptions<T> {
  /** Unique within the function type. */
  readonly name: string;
  /** The value's typename and codec. */
  readonly type: Type<T>;
  /** When the value expires; never when absent. afterMillis is at least 1 and rounded up. */
  readonly expiry?: Expiry;
}

/**
 * Declares one named state value of type T. Declare specs once, pass them
 * to Registry.register, and use them in the function to read and write the
 * value:
 *
 *     const seen = new ValueSpec({ name: "seen", type: Int64Type });
 *     const n = seen.get(ctx) ?? 0n;
 *     seen.set(ctx, n + 1n);
 *
 * get, set and clear work on the in-memory copy of the state shipped with
 * the batch: later invocations of a batch see earlier writes, and the final
 * value of each written state is returned to the runtime when the batch
 * succeeds.
 */
export class ValueSpec<T> {
  readonly name: string;
  readonly type: Type<T>;
  readonly expiry: Expiry | undefined;

  constructor(options: ValueSpecOptions<T>) {
    this.name = options.name;
    this.type = options.type;
    this.expiry = options.expiry;
  }

  /**
   * Returns the value, or undefined when the state is absent (never
   * written, cleared, or expired). Throws (a retryable error) when the
   * stored value's typename is not the spec's, which happens when the type
   * of a state changed without a migration, or when decoding fails.
   */
  get(ctx: Context): T | undefined {
    const s = stateAccess(ctx, this);
    const v = s.get();
    if (v === undefined) {
      return undefined;
    }
    if (v.typename !== this.type.typename) {
      throw new Error(`state ${quote(this.name)} of ${s.self} holds a value of typename ${quote(v.typename)}, but its spec declares ${quote(this.type.typename)}`);
    }
    try {
      return this.type.decode(v.bytes);
    } catch (e) {
      throw new Error(`state ${quote(this.name)} of ${s.self}: ${(e as Error).message}`, { cause: e });
    }
  }

  /** Writes v. Throws when encoding fails. */
  set(ctx: Context, v: T): void {
    const s = stateAccess(ctx, this);
    let bytes: Uint8Array;
    try {
      bytes = this.type.encode(v);
    } catch (e) {
      throw new Error(`state ${quote(this.name)} of ${s.self}: ${(e as Error).message}`, { cause: e });
    }
    s.set({ typename: this.type.typename, bytes });
  }

  /**
   * Deletes the value. Clearing a state the function did not declare is a
   * misuse: it throws a TerminalError and fails the invocation terminally,
   * as in the Go SDK.
   */
  clear(ctx: Context): void {
    let s: ReturnType<typeof stateAccess>;
    try {
      s = stateAccess(ctx, this);
    } catch (e) {
      throw misuse(ctx, (e as Error).message);
    }
    s.set(undefined);
  }

  /** The spec as the runtime records it; throws when the spec is invalid. */
  toProto(): StateSpec {
    if (this.name === "") {
      throw new Error("state name is empty");
    }
    if (this.type == null) {
      throw new Error(`state ${quote(this.name)}: type is missing`);
    }
    const p = typenameProblem(this.type.typename);
    if (p !== undefined) {
      throw new Error(`state ${quote(this.name)}: ${p}`);
    }
    const spec = create(StateSpecSchema, { name: this.name, typename: this.type.typename });
    if (this.expiry === undefined) {
      return spec;
    }
    const { mode, afterMillis } = this.expiry;
    switch (mode) {
      case "afterWrite":
        spec.expiryMode = ExpiryModeProto.AFTER_WRITE;
        break;
      case "afterInvoke":
        spec.expiryMode = ExpiryModeProto.AFTER_INVOKE;
        break;
      default:
        throw new Error(`state ${quote(this.name)}: unknown expiry mode ${quote(String(mode))}`);
    }
    if (!(afterMillis >= 1) || !Number.isFinite(afterMillis)) {
      throw new Error(`state ${quote(this.name)}: expiry afterMillis is ${afterMillis}, want at least 1 with ${mode}`);
    }
    spec.expireAfterMillis = BigInt(Math.ceil(afterMillis));
    return spec;
  }
}
