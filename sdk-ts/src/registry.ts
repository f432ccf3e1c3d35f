import { create } from "@bufbuild/protobuf";
import {
  AddressResultSchema,
  EffectsSchema,
  InvocationError_Kind,
  StateMutation_Kind,
  StateMutationSchema,
  type AddressBatch,
  type AddressResult,
  type InvokeRequest,
} from "./gen/twinflow/v1/function_pb.js";
import type { Address as AddressProto, StateSpec } from "./gen/twinflow/v1/types_pb.js";
import { addressFromProto, addressProblem, addressString, functionTypeProblem, typenameProblem, quote } from "./address.js";
import { BatchState, Invocation, type Context, type Message } from "./context.js";
import { errorMessage, isTerminal } from "./errors.js";
import type { ValueSpec } from "./state.js";
import type { TypedValue } from "./types.js";

/**
 * The code of a function type: it handles one message for the address
 * ctx.self. Invocations of one address never run concurrently.
 *
 * Returning (or resolving) commits the invocation's effects together with
 * the rest of its batch. Throwing (or rejecting) discards the effects of
 * the whole batch; the batch is retried unless the error is a
 * TerminalError (see terminal).
 */
export type FunctionHandler = (ctx: Context, msg: Message) => void | Promise<void>;

interface RegisteredFunction {
  readonly type: string;
  readonly fn: FunctionHandler;
  readonly specs: readonly StateSpec[];
  readonly stateIndex: ReadonlyMap<string, number>;
}

/** Maps function types to their code and declared state. */
export class Registry {
  private readonly functions = new Map<string, RegisteredFunction>();

  /**
   * Adds a function type ("namespace/name") with its code and the state it
   * declares. Throws when the type is malformed or already registered, or
   * a state declaration is invalid or repeats a name.
   */
  register(functionType: string, fn: FunctionHandler, ...states: ValueSpec<any>[]): this {
    const p = functionTypeProblem(functionType);
    if (p !== undefined) {
      throw new Error(`register: ${p}`);
    }
    if (typeof fn !== "function") {
      throw new Error(`register ${functionType}: the function is not a function`);
    }
    const specs: StateSpec[] = [];
    const stateIndex = new Map<string, number>();
    for (const s of states) {
      if (s == null) {
        throw new Error(`register ${functionType}: a state declaration is missing`);
      }
      let spec: StateSpec;
      try {
        spec = s.toProto();
      } catch (e) {
        throw new Error(`register ${functionType}: ${(e as Error).message}`);
      }
      if (stateIndex.has(spec.name)) {
        throw new Error(`register ${functionType}: state ${quote(spec.name)} is declared twice`);
      }
      stateIndex.set(spec.name, specs.length);
      specs.push(spec);
    }
    if (this.functions.has(functionType)) {
      throw new Error(`register ${functionType}: function type is already registered`);
    }
    this.functions.set(functionType, { type: functionType, fn, specs, stateIndex });
    return this;
  }

  /**
   * Runs one address batch and returns its result, exactly as the Go SDK's
   * Registry.RunBatch does:
   *
   * - MissingStates, listing the declared specs absent from the batch's
   *   state, in declaration order; no invocation runs;
   * - the Effects of all invocations, run in order over an in-memory copy
   *   of the state, with one mutation per written state (in declaration
   *   order) holding its final value;
   * - an InvocationError when an invocation failed, discarding the effects
   *   of the whole batch: RETRYABLE unless the error is terminal. Misuse of
   *   the Context, an unknown function type and a malformed batch are
   *   TERMINAL; the last two have invocation_index -1.
   *
   * It never throws.
   */
  async runBatch(b: AddressBatch, signal: AbortSignal = new AbortController().signal): Promise<AddressResult> {
    const p = batchProblem(b);
    if (p !== undefined) {
      return errorResult(b?.target, InvocationError_Kind.TERMINAL, `malformed batch: ${p}`, -1);
    }
    return this.runValidBatch(b, signal);
  }

  /** runBatch for a batch that passed batchProblem. */
  async runValidBatch(b: AddressBatch, signal: AbortSignal): Promise<AddressResult> {
    const target = b.target!;
    const f = this.functions.get(target.type);
    if (f === undefined) {
      return errorResult(target, InvocationError_Kind.TERMINAL, `function type ${quote(target.type)} is not registered at this endpoint`, -1);
    }
    const values: (TypedValue | undefined)[] = f.specs.map(() => undefined);
    const present = f.specs.map(() => false);
    for (const sv of b.state) {
      const i = f.stateIndex.get(sv.name);
      if (i !== undefined) {
        present[i] = true;
        values[i] = sv.value === undefined ? undefined : { typename: sv.value.typename, bytes: sv.value.value };
      }
    }
    const missing = f.specs.filter((_, i) => !present[i]);
    if (missing.length > 0) {
      return create(AddressResultSchema, { target, outcome: { case: "missingStates", value: { specs: missing } } });
    }
    const batch = new BatchState(
      f.type,
      f.stateIndex,
      f.specs.map((s) => s.typename),
      values,
    );
    const self = addressFromProto(target);
    for (let i = 0; i < b.invocations.length; i++) {
      if (signal.aborted) {
        return errorResult(target, InvocationError_Kind.RETRYABLE, `batch interrupted before this invocation: ${errorMessage(signal.reason ?? "aborted")}`, i);
      }
      const inv = b.invocations[i];
      const arg = inv.argument!;
      const c = new Invocation(
        batch,
        self,
        inv.caller === undefined ? undefined : addressFromProto(inv.caller),
        { typename: arg.typename, bytes: arg.value },
        inv.replyTo,
        signal,
      );
      let err: unknown;
      let failed = false;
      try {
        await f.fn(c, c);
      } catch (e) {
        failed = true;
        err = e;
      }
      c.done = true;
      // Misuse fails the invocation terminally even when the function
      // caught the error it threw.
      if (c.misused !== undefined) {
        return errorResult(target, InvocationError_Kind.TERMINAL, `misuse of the Context: ${c.misused.message}`, i);
      }
      if (failed) {
        const kind = isTerminal(err) ? InvocationError_Kind.TERMINAL : InvocationError_Kind.RETRYABLE;
        return errorResult(target, kind, errorMessage(err), i);
      }
    }
    const effects = create(EffectsSchema, batch.effects);
    batch.touched.forEach((touched, i) => {
      if (!touched) {
        return;
      }
      const v = batch.values[i];
      effects.stateMutations.push(
        create(StateMutationSchema, v === undefined
          ? { name: f.specs[i].name, kind: StateMutation_Kind.DELETE }
          : { name: f.specs[i].name, kind: StateMutation_Kind.SET, value: { typename: v.typename, value: v.bytes } }),
      );
    });
    return create(AddressResultSchema, { target, outcome: { case: "effects", value: effects } });
  }
}

function errorResult(target: AddressProto | undefined, kind: InvocationError_Kind, message: string, index: number): AddressResult {
  return create(AddressResultSchema, {
    target,
    outcome: { case: "error", value: { kind, message, invocationIndex: index } },
  });
}

/**
 * Returns why the request is malformed, or undefined: no batches, a
 * malformed batch, or an address that appears twice. A malformed request
 * is refused as a whole before any function runs.
 */
export function requestProblem(req: InvokeRequest): string | undefined {
  if (req.batches.length === 0) {
    return "the request has no batches";
  }
  const seen = new Map<string, number>();
  for (let i = 0; i < req.batches.length; i++) {
    const b = req.batches[i];
    const p = batchProblem(b);
    if (p !== undefined) {
      return `batch ${i}: ${p}`;
    }
    const key = JSON.stringify([b.target!.type, b.target!.id]);
    const j = seen.get(key);
    if (j !== undefined) {
      return `batch ${i}: address ${addressString(addressFromProto(b.target))} already appears in batch ${j}`;
    }
    seen.set(key, i);
  }
  return undefined;
}

/** Returns what makes one batch malformed, as opposed to failing: a bad address, state entry or invocation. */
export function batchProblem(b: AddressBatch | undefined): string | undefined {
  if (b == null) {
    return "batch is missing";
  }
  if (b.target === undefined) {
    return "target address is missing";
  }
  const p = addressProblem(addressFromProto(b.target));
  if (p !== undefined) {
    return `target address: ${p}`;
  }
  const names = new Set<string>();
  for (let i = 0; i < b.state.length; i++) {
    const sv = b.state[i];
    if (sv.name === "") {
      return `state ${i}: empty name`;
    }
    if (names.has(sv.name)) {
      return `state ${quote(sv.name)} appears more than once`;
    }
    names.add(sv.name);
    if (sv.value !== undefined) {
      const tp = typenameProblem(sv.value.typename);
      if (tp !== undefined) {
        return `state ${quote(sv.name)}: ${tp}`;
      }
    }
  }
  for (let i = 0; i < b.invocations.length; i++) {
    const inv = b.invocations[i];
    if (inv.argument === undefined) {
      return `invocation ${i}: argument is missing`;
    }
    const tp = typenameProblem(inv.argument.typename);
    if (tp !== undefined) {
      return `invocation ${i}: argument: ${tp}`;
    }
    if (inv.caller !== undefined) {
      const cp = addressProblem(addressFromProto(inv.caller));
      if (cp !== undefined) {
        return `invocation ${i}: caller: ${cp}`;
      }
    }
  }
  return undefined;
}
