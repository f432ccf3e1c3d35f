/**
 * Runs Twinflow functions in unit tests, without a runtime, as the Go
 * SDK's sdktest package does.
 *
 * A Harness keeps the state of each address in memory and invokes
 * functions through the same batch executor that serves the runtime
 * (Registry.runBatch), so a function behaves here as it does in
 * production: state specs are negotiated the same way, effects of a failed
 * invocation are discarded, and misuse of the Context fails the same way.
 *
 *     const h = new Harness(reg);
 *     const res = await h.invoke({ type: "example/counter", id: "a" }, encode(Int64Type, 5n));
 *     const n = h.stateOf({ type: "example/counter", id: "a" }, count);
 *
 * There is no clock: delayed messages are reported in Result.delayed and a
 * test delivers them with another invoke when it wants to.
 */
import { create } from "@bufbuild/protobuf";
import { AddressBatchSchema, InvocationSchema, StateMutation_Kind, InvocationError_Kind, type Effects } from "./gen/twinflow/v1/function_pb.js";
import { addressFromProto, addressString, type Address } from "./address.js";
import { replyEgress } from "./context.js";
import type { Registry } from "./registry.js";
import type { ValueSpec } from "./state.js";
import { decode, encode, type TypedValue } from "./types.js";

/** Options of one Harness.invoke. */
export interface InvokeOptions {
  /** Delivers the message as sent by the function at caller. */
  readonly caller?: Address;
  /** Delivers the message as a NATS request with this reply subject, which the function can answer with reply. */
  readonly replyTo?: string;
}

/** A message to an address. */
export interface SentMessage {
  readonly to: Address;
  readonly value: TypedValue;
  /** The reply subject passed on with forward, or "". */
  readonly replyTo: string;
}

/** A message to be delivered after a delay. */
export interface DelayedMessage {
  readonly to: Address;
  readonly value: TypedValue;
  readonly delayMillis: number;
  /** The token, or "" for none. */
  readonly cancellationToken: string;
}

/** A record written to a named egress. */
export interface EgressRecord {
  readonly egress: string;
  /** The key given with the record, or "". */
  readonly key: string;
  readonly value: TypedValue;
}

/** An answer to a NATS request. */
export interface Reply {
  readonly replyTo: string;
  readonly value: TypedValue;
}

/** The effects of one successful invocation other than state changes, which the harness applies and stateOf reads. */
export interface Result {
  readonly sent: SentMessage[];
  readonly delayed: DelayedMessage[];
  readonly cancelled: string[];
  readonly egress: EgressRecord[];
  readonly replies: Reply[];
}

/** The failure of an invocation, as the runtime would see it. */
export class InvocationFailure extends Error {
  constructor(
    /** True when the runtime would dead-letter the message rather than retry it. */
    readonly terminal: boolean,
    /** The function's error message. */
    readonly reason: string,
    /** The failed invocation's index in its batch: 0, or -1 when the batch failed as a whole (e.g. an unregistered function type). */
    readonly index: number,
  ) {
    super(`${terminal ? "terminal" : "retryable"} error: ${reason}`);
    this.name = "InvocationFailure";
  }
}

/** Invokes the functions of a registry with in-memory state per address. */
export class Harness {
  // The state names learned per function type from MissingStates answers, as the runtime records them.
  private readonly specs = new Map<string, string[]>();
  // The values per address (keyed by addressString); an absent name is absent state.
  private readonly state = new Map<string, Map<string, TypedValue>>();

  constructor(private readonly reg: Registry) {}

  /**
   * Delivers msg to the address to, applies the state changes when the
   * function succeeds, and returns the other effects. When the function
   * fails it throws an InvocationFailure and changes nothing.
   */
  async invoke(to: Address, msg: TypedValue, options: InvokeOptions = {}): Promise<Result> {
    const inv = create(InvocationSchema, {
      argument: { typename: msg.typename, value: msg.bytes },
      replyTo: options.replyTo ?? "",
      caller: options.caller === undefined ? undefined : { type: options.caller.type, id: options.caller.id },
    });
    // The first call for a function type ships no state and learns the
    // specs from the MissingStates answer, as the runtime does; the
    // second ships them.
    for (let attempt = 0; attempt < 2; attempt++) {
      const res = await this.reg.runBatch(
        create(AddressBatchSchema, { target: { type: to.type, id: to.id }, state: this.shippedState(to), invocations: [inv] }),
      );
      const o = res.outcome;
      switch (o.case) {
        case "missingStates": {
          const names = this.specs.get(to.type) ?? [];
          names.push(...o.value.specs.map((s) => s.name));
          this.specs.set(to.type, names);
          continue;
        }
        case "error":
          throw new InvocationFailure(o.value.kind === InvocationError_Kind.TERMINAL, o.value.message, o.value.invocationIndex);
        case "effects":
          return this.apply(to, o.value);
        default:
          throw new Error("the executor returned no outcome");
      }
    }
    throw new Error(`${to.type} still reports missing states after they were sent`);
  }

  /** Returns the value of the spec's state at address a, or undefined when absent. */
  stateOf<T>(a: Address, spec: ValueSpec<T>): T | undefined {
    const v = this.state.get(addressString(a))?.get(spec.name);
    return v === undefined ? undefined : decode(spec.type, v);
  }

  /** Sets the value of the spec's state at address a, as if an earlier invocation had written it. */
  setState<T>(a: Address, spec: ValueSpec<T>, v: T): void {
    this.setRawState(a, spec.name, encode(spec.type, v));
  }

  /** Stores a typed value under a state name at address a, to test how a function handles values it did not write. */
  setRawState(a: Address, name: string, v: TypedValue): void {
    const key = addressString(a);
    let values = this.state.get(key);
    if (values === undefined) {
      values = new Map();
      this.state.set(key, values);
    }
    values.set(name, v);
  }

  /** Removes the state name at address a, as if it had expired. */
  clearState(a: Address, name: string): void {
    this.state.get(addressString(a))?.delete(name);
  }

  private shippedState(a: Address) {
    const values = this.state.get(addressString(a));
    return (this.specs.get(a.type) ?? []).map((name) => {
      const v = values?.get(name);
      return { name, value: v === undefined ? undefined : { typename: v.typename, value: v.bytes } };
    });
  }

  private apply(a: Address, e: Effects): Result {
    for (const m of e.stateMutations) {
      if (m.kind === StateMutation_Kind.SET && m.value !== undefined) {
        this.setRawState(a, m.name, { typename: m.value.typename, bytes: m.value.value });
      } else if (m.kind === StateMutation_Kind.DELETE) {
        this.clearState(a, m.name);
      }
    }
    const tv = (v: { typename: string; value: Uint8Array } | undefined): TypedValue => ({ typename: v?.typename ?? "", bytes: v?.value ?? new Uint8Array() });
    const res: Result = { sent: [], delayed: [], cancelled: [], egress: [], replies: [] };
    for (const m of e.outgoing) {
      res.sent.push({ to: addressFromProto(m.target), value: tv(m.argument), replyTo: m.replyTo });
    }
    for (const m of e.delayed) {
      res.delayed.push({ to: addressFromProto(m.target), value: tv(m.argument), delayMillis: Number(m.delayMillis), cancellationToken: m.cancellationToken });
    }
    for (const c of e.cancellations) {
      res.cancelled.push(c.cancellationToken);
    }
    for (const r of e.egress) {
      if (r.egress === replyEgress) {
        res.replies.push({ replyTo: r.replyTo, value: tv(r.value) });
      } else {
        res.egress.push({ egress: r.egress, key: r.key, value: tv(r.value) });
      }
    }
    return res;
  }
}
