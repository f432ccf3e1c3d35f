import { create } from "@bufbuild/protobuf";
import {
  DelayedCancellationSchema,
  DelayedMessageSchema,
  EgressRecordSchema,
  OutgoingMessageSchema,
  type Effects,
} from "./gen/twinflow/v1/function_pb.js";
import { AddressSchema, TypedValueSchema, type TypedValue as TypedValueProto } from "./gen/twinflow/v1/types_pb.js";
import { addressProblem, addressString, typenameProblem, quote, type Address } from "./address.js";
import { TerminalError } from "./errors.js";
import { decode, encode, isType, type Type, type TypedValue } from "./types.js";
import type { ValueSpec } from "./state.js";

/** The name of the built-in egress that answers the NATS request a message came with. */
export const replyEgress = "reply";

/** Thrown by Context.reply when the current message came with no reply subject. */
export class NoReplyToError extends Error {
  constructor() {
    super("the message has no reply subject to answer");
    this.name = "NoReplyToError";
  }
}

/** One message delivered to a function. */
export interface Message extends TypedValue {
  /** The reply subject of the NATS request that carried the message, or "". */
  readonly replyTo: string;
  /** Reports whether the message has the typename (of the type). */
  is(type: Type<unknown> | string): boolean;
  /**
   * Decodes the message with type. Throws a TerminalError, naming both
   * typenames, when the message is of another type, or when it does not
   * decode: a message that cannot be read now never will be.
   */
  as<T>(type: Type<T>): T;
}

/** Options of Context.sendAfter. */
export interface SendAfterOptions {
  /**
   * A token, scoped to this address, with which Context.cancelDelayed can
   * cancel the message. A new message with the token of a pending one
   * replaces it.
   */
  readonly cancellationToken?: string;
}

/** Options of Context.egress. */
export interface EgressOptions {
  /** A key the egress appends to its subject as a last token. */
  readonly key?: string;
}

/**
 * What a function gets for one invocation: the invoked address, the caller,
 * and the effects it can produce. The effects take place only if the whole
 * batch succeeds.
 *
 * Every method that takes a value takes either a Type and a value, which it
 * encodes, or a TypedValue (such as the Message itself, to pass it on).
 *
 * Misuse (an invalid address or typename, a negative delay, an empty token
 * or egress name) throws a TerminalError and fails the invocation
 * terminally even when the function catches it: such a mistake is a bug
 * that no retry can fix, and dropping the effect silently would lose data.
 * Effects requested after the function returned are refused.
 */
export interface Context {
  /** The invoked address. */
  readonly self: Address;
  /** The sending function's address; undefined when the message came from an ingress or from no function. */
  readonly caller: Address | undefined;
  /** Aborted when the runtime gives up on the call. */
  readonly signal: AbortSignal;

  /** Sends a message to the address to. */
  send<T>(to: Address, type: Type<T>, value: T): void;
  send(to: Address, value: TypedValue): void;
  /**
   * Sends a message to the address to and passes on the reply subject of
   * the current message, so that the receiver can reply to the request.
   * Without a reply subject it is send.
   */
  forward<T>(to: Address, type: Type<T>, value: T): void;
  forward(to: Address, value: TypedValue): void;
  /** Sends a message to the address to after delayMillis (rounded up to whole milliseconds). */
  sendAfter<T>(delayMillis: number, to: Address, type: Type<T>, value: T, options?: SendAfterOptions): void;
  sendAfter(delayMillis: number, to: Address, value: TypedValue, options?: SendAfterOptions): void;
  /** Cancels this address's pending delayed message with the token; a token that is not pending is ignored. */
  cancelDelayed(cancellationToken: string): void;
  /** Writes a record to the named egress of the module spec. */
  egress<T>(egress: string, type: Type<T>, value: T, options?: EgressOptions): void;
  egress(egress: string, value: TypedValue, options?: EgressOptions): void;
  /**
   * Answers the request the current message came with, through the
   * built-in "reply" egress. Throws NoReplyToError when the message has no
   * reply subject.
   */
  reply<T>(type: Type<T>, value: T): void;
  reply(value: TypedValue): void;
}

/** The in-memory state and the effects of one address batch while it runs. */
export class BatchState {
  /** Values by spec index; undefined = absent. */
  readonly values: (TypedValue | undefined)[];
  /** Written or cleared, by spec index. */
  readonly touched: boolean[];
  readonly effects: Pick<Effects, "outgoing" | "delayed" | "cancellations" | "egress"> = {
    outgoing: [],
    delayed: [],
    cancellations: [],
    egress: [],
  };

  constructor(
    readonly functionType: string,
    readonly stateIndex: ReadonlyMap<string, number>,
    readonly specTypenames: readonly string[],
    values: (TypedValue | undefined)[],
  ) {
    this.values = values;
    this.touched = values.map(() => false);
  }
}

/** What a ValueSpec may do with the state of the current invocation. */
export interface StateAccess {
  readonly self: string;
  get(): TypedValue | undefined;
  set(v: TypedValue | undefined): void;
}

/** The Context of one invocation in a batch. */
export class Invocation implements Context, Message {
  readonly typename: string;
  readonly bytes: Uint8Array;
  readonly replyTo: string;
  /** Set when the function returned; effects are refused after it. */
  done = false;
  /** The first misuse, which fails the invocation terminally. */
  misused: Error | undefined;

  constructor(
    private readonly batch: BatchState,
    readonly self: Address,
    readonly caller: Address | undefined,
    argument: TypedValue,
    replyTo: string,
    readonly signal: AbortSignal,
  ) {
    this.typename = argument.typename;
    this.bytes = argument.bytes;
    this.replyTo = replyTo;
  }

  // Message

  is(type: Type<unknown> | string): boolean {
    return this.typename === (typeof type === "string" ? type : type.typename);
  }

  as<T>(type: Type<T>): T {
    try {
      return decode(type, this);
    } catch (e) {
      throw new TerminalError(`message: ${(e as Error).message}`, { cause: e });
    }
  }

  // Context

  send(to: Address, typeOrValue: Type<unknown> | TypedValue, value?: unknown): void {
    const v = this.value(`send to ${addressString(to)}`, typeOrValue, value);
    this.checkAddress(`send to ${addressString(to)}`, to);
    this.record().outgoing.push(create(OutgoingMessageSchema, { target: toProto(to), argument: v }));
  }

  forward(to: Address, typeOrValue: Type<unknown> | TypedValue, value?: unknown): void {
    const v = this.value(`forward to ${addressString(to)}`, typeOrValue, value);
    this.checkAddress(`forward to ${addressString(to)}`, to);
    this.record().outgoing.push(create(OutgoingMessageSchema, { target: toProto(to), argument: v, replyTo: this.replyTo }));
  }

  sendAfter(delayMillis: number, to: Address, typeOrValue: Type<unknown> | TypedValue, ...rest: unknown[]): void {
    const what = `send to ${addressString(to)} after ${delayMillis}ms`;
    let v: TypedValueProto;
    let options: SendAfterOptions | undefined;
    if (isType(typeOrValue)) {
      v = this.value(what, typeOrValue, rest[0]);
      options = rest[1] as SendAfterOptions | undefined;
    } else {
      v = this.value(what, typeOrValue, undefined);
      options = rest[0] as SendAfterOptions | undefined;
    }
    if (typeof delayMillis !== "number" || !(delayMillis >= 0) || !Number.isFinite(delayMillis)) {
      this.misuse(`${what}: the delay must be a finite number of milliseconds, at least 0`);
    }
    this.checkAddress(what, to);
    const token = options?.cancellationToken ?? "";
    this.record().delayed.push(
      create(DelayedMessageSchema, { target: toProto(to), argument: v, delayMillis: BigInt(Math.ceil(delayMillis)), cancellationToken: token }),
    );
  }

  cancelDelayed(cancellationToken: string): void {
    if (typeof cancellationToken !== "string" || cancellationToken === "") {
      this.misuse("cancel delayed message: empty cancellation token");
    }
    const e = this.record();
    // The runtime applies cancellations before delayed messages: they
    // cancel messages of earlier batches. One sent earlier in this batch
    // is cancelled here, by not sending it.
    for (let i = e.delayed.length - 1; i >= 0; i--) {
      if (e.delayed[i].cancellationToken === cancellationToken) {
        e.delayed.splice(i, 1);
      }
    }
    e.cancellations.push(create(DelayedCancellationSchema, { cancellationToken }));
  }

  egress(egress: string, typeOrValue: Type<unknown> | TypedValue, ...rest: unknown[]): void {
    let v: TypedValueProto;
    let options: EgressOptions | undefined;
    const what = `egress ${quote(String(egress))}`;
    if (isType(typeOrValue)) {
      v = this.value(what, typeOrValue, rest[0]);
      options = rest[1] as EgressOptions | undefined;
    } else {
      v = this.value(what, typeOrValue, undefined);
      options = rest[0] as EgressOptions | undefined;
    }
    if (typeof egress !== "string" || egress === "") {
      this.misuse("egress: empty egress name");
    }
    if (egress === replyEgress) {
      // A reply record needs the reply subject, which only reply knows.
      this.misuse(`egress "reply" is written with reply`);
    }
    this.record().egress.push(create(EgressRecordSchema, { egress, value: v, key: options?.key ?? "" }));
  }

  reply(typeOrValue: Type<unknown> | TypedValue, value?: unknown): void {
    if (this.replyTo === "") {
      throw new NoReplyToError();
    }
    const v = this.value("reply", typeOrValue, value);
    this.record().egress.push(create(EgressRecordSchema, { egress: replyEgress, value: v, replyTo: this.replyTo }));
  }

  /** Gives a ValueSpec the state it declares, after checking that the function declared it with this typename. */
  state(spec: ValueSpec<unknown>): StateAccess {
    const b = this.batch;
    const self = addressString(this.self);
    const i = b.stateIndex.get(spec.name);
    if (i === undefined) {
      throw new Error(`state ${quote(spec.name)} is not declared by function type ${b.functionType}: pass its ValueSpec to register`);
    }
    if (spec.type.typename !== b.specTypenames[i]) {
      throw new Error(
        `state ${quote(spec.name)} of ${self}: this ValueSpec has typename ${quote(spec.type.typename)} but the registered one has ${quote(b.specTypenames[i])}`,
      );
    }
    return {
      self,
      get: () => b.values[i],
      set: (v) => {
        this.checkLive();
        b.values[i] = v;
        b.touched[i] = true;
      },
    };
  }

  /** Encodes a value given as a Type and a value, or as a TypedValue. */
  private value(what: string, typeOrValue: Type<unknown> | TypedValue, value: unknown): TypedValueProto {
    let v: TypedValue;
    if (isType(typeOrValue)) {
      v = encode(typeOrValue, value); // an encoding failure is the function's error, thrown as it is
    } else {
      v = typeOrValue;
      const p = v == null || typeof v.typename !== "string" ? "not a TypedValue" : typenameProblem(v.typename);
      if (p !== undefined) {
        this.misuse(`${what}: ${p}`);
      }
    }
    return create(TypedValueSchema, { typename: v.typename, value: v.bytes });
  }

  private checkAddress(what: string, to: Address): void {
    const p = to == null ? "no address" : addressProblem(to);
    if (p !== undefined) {
      this.misuse(`${what}: ${p}`);
    }
  }

  private checkLive(): void {
    if (this.done) {
      throw new Error("the invocation is over: its Context is no longer valid");
    }
  }

  /** Returns the batch's effects to add to, unless the invocation is over. */
  private record(): BatchState["effects"] {
    this.checkLive();
    return this.batch.effects;
  }

  /** Remembers the first misuse and throws it. */
  misuse(message: string): never {
    const err = new TerminalError(message);
    if (this.misused === undefined && !this.done) {
      this.misused = err;
    }
    throw err;
  }
}

function toProto(a: Address) {
  return create(AddressSchema, { type: a.type, id: a.id });
}

/** Records a misuse of ctx and returns the error to throw. */
export function misuse(ctx: Context, message: string): TerminalError {
  if (ctx instanceof Invocation) {
    try {
      ctx.misuse(message);
    } catch (e) {
      return e as TerminalError;
    }
  }
  return new TerminalError(message);
}

/** Returns the state of spec in the invocation behind ctx. */
export function stateAccess(ctx: Context, spec: ValueSpec<unknown>): StateAccess {
  if (!(ctx instanceof Invocation)) {
    throw new Error(`state ${quote(spec.name)}: the Context was not made by the SDK`);
  }
  return ctx.state(spec);
}
