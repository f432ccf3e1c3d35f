/**
 * RackFun, the twin of one rack (datacenter/rack), written with the
 * TypeScript SDK. It behaves exactly as the Go one
 * (examples/datacenter/rack.go): the same state, byte for byte, the same
 * messages and the same correlation rules, so either can serve the rack
 * twins of one deployment, and a deployment can move from one to the
 * other with its state.
 */
import { TerminalError, ValueSpec, protoType, type Address, type Context, type Message, type Type } from "@twinflow/sdk";
import { create } from "@bufbuild/protobuf";
import {
  CorrelationCheckSchema,
  IncidentKind,
  RackAlertSchema,
  RackIncidentKind,
  RackOkSchema,
  ServerDecommissionedSchema,
  ServerIncidentsSchema,
  type RackAlert,
} from "./gen/datacenter/v1/datacenter_pb.js";
import { after, formatTime, fromTimestamp, isZero, parseTime, toTimestamp, zeroTime, type GoTime } from "./gotime.js";

export const rackFunction = "datacenter/rack";
export const dataCenterFunction = "datacenter/datacenter";
export const alertsEgress = "alerts";
/** The cancellation token of a rack's correlation check; at most one is pending. */
export const correlationToken = "correlate";

export const ServerIncidentsType = protoType(ServerIncidentsSchema);
export const ServerDecommissionedType = protoType(ServerDecommissionedSchema);
export const CorrelationCheckType = protoType(CorrelationCheckSchema);
export const RackAlertType = protoType(RackAlertSchema);
export const RackOkType = protoType(RackOkSchema);

/** An incident kind's short name, as kept in state: "PACKET_LOSS". */
export type Kind = string;
/** A rack incident kind's short name: "TOR_SWITCH_FAILURE". */
export type RackKind = string;

// protoc-gen-es drops the enum prefix, so the TypeScript names are the short names.
const kindOf = (k: IncidentKind): Kind => IncidentKind[k] ?? String(k);

/** The rules that turn the incidents of a rack's servers into one rack incident; see rack.go. */
export const correlationModel = { share: 0.5, minServers: 2, multipleFailures: 3 } as const;

/** A rack incident found by the correlation model. */
export interface Correlation {
  readonly kind: RackKind;
  /** The servers it explains, sorted. */
  readonly servers: string[];
  readonly reason: string;
}

/** Orders strings as Go does: by their UTF-8 bytes. */
export function goCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** Applies the correlation model to the open incidents of each known server of a rack. */
export function correlate(servers: ReadonlyMap<string, readonly Kind[] | null>): Correlation | undefined {
  const known = servers.size;
  const shared = (k: Kind, kind: RackKind, cause: string): Correlation | undefined => {
    const withKind = [...servers].filter(([, kinds]) => kinds?.includes(k)).map(([id]) => id);
    if (withKind.length < correlationModel.minServers || withKind.length < correlationModel.share * known) {
      return undefined;
    }
    withKind.sort(goCompare);
    return { kind, servers: withKind, reason: `${withKind.length} of ${known} servers have ${k}: ${cause}` };
  };
  const c =
    shared("PACKET_LOSS", "TOR_SWITCH_FAILURE", "the top-of-rack switch is their common network path") ??
    shared("POWER_DEGRADED", "POWER_DEGRADATION", "the rack's power distribution is their common supply");
  if (c !== undefined) {
    return c;
  }
  const failing = [...servers].filter(([, kinds]) => (kinds?.length ?? 0) > 0).map(([id]) => id);
  if (failing.length >= correlationModel.multipleFailures) {
    failing.sort(goCompare);
    return {
      kind: "MULTIPLE_SERVER_FAILURES",
      servers: failing,
      reason: `${failing.length} of ${known} servers have open incidents with no common cause found`,
    };
  }
  return undefined;
}

/** A rack incident as kept in state: the JSON form of a RackAlert. */
export interface RackAlertRecord {
  rackId: string;
  kind: RackKind;
  servers: string[] | null;
  reason: string;
  knownServers: number;
  openedAt: GoTime;
  updatedAt: GoTime;
}

/** What a rack twin keeps, as the Go RackState. */
export interface RackState {
  /** Each known server's open incident kinds, sorted; null until a server is known. */
  servers: Map<string, Kind[] | null> | null;
  /** How many servers have each kind of incident open. */
  histogram: Map<Kind, number> | null;
  /** The open rack incident as last reported. */
  alert: RackAlertRecord | null;
  /** The time of the newest change of the servers' incidents. */
  lastChangeAt: GoTime;
  /** True while a CorrelationCheck is on its way. */
  checkPending: boolean;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

// Serializes JSON as Go's encoding/json: map keys sorted by bytes, and
// <, >, & escaped.
function goString(s: string): string {
  return JSON.stringify(s).replace(/[<>&\u2028\u2029]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

function goMap<V>(m: ReadonlyMap<string, V>, value: (v: V) => string): string {
  const keys = [...m.keys()].sort(goCompare);
  return "{" + keys.map((k) => `${goString(k)}:${value(m.get(k) as V)}`).join(",") + "}";
}

const goStrings = (a: readonly string[] | null) => (a === null ? "null" : "[" + a.map(goString).join(",") + "]");

/**
 * The type of RackState under "datacenter/RackState", encoded exactly as
 * the Go twin's sdk.JSONType[RackState] encodes it, field for field.
 */
export const RackStateType: Type<RackState> = {
  typename: "datacenter/RackState",
  encode(st: RackState): Uint8Array {
    const fields = [`"servers":${st.servers === null ? "null" : goMap(st.servers, goStrings)}`];
    if (st.histogram !== null && st.histogram.size > 0) {
      fields.push(`"histogram":${goMap(st.histogram, String)}`);
    }
    if (st.alert !== null) {
      const a = st.alert;
      fields.push(
        `"alert":{"rackId":${goString(a.rackId)},"kind":${goString(a.kind)},"servers":${goStrings(a.servers)},` +
          `"reason":${goString(a.reason)},"knownServers":${a.knownServers},` +
          `"openedAt":"${formatTime(a.openedAt)}","updatedAt":"${formatTime(a.updatedAt)}"}`,
      );
    }
    if (!isZero(st.lastChangeAt)) {
      fields.push(`"lastChangeAt":"${formatTime(st.lastChangeAt)}"`);
    }
    if (st.checkPending) {
      fields.push(`"checkPending":true`);
    }
    return utf8.encode("{" + fields.join(",") + "}");
  },
  decode(b: Uint8Array): RackState {
    const j = JSON.parse(utf8Decoder.decode(b)) as {
      servers?: Record<string, Kind[] | null> | null;
      histogram?: Record<Kind, number> | null;
      alert?: (Omit<RackAlertRecord, "openedAt" | "updatedAt"> & { openedAt: string; updatedAt: string }) | null;
      lastChangeAt?: string;
      checkPending?: boolean;
    };
    return {
      servers: j.servers == null ? null : new Map(Object.entries(j.servers)),
      histogram: j.histogram == null ? null : new Map(Object.entries(j.histogram)),
      alert: j.alert == null ? null : { ...j.alert, servers: j.alert.servers ?? null, openedAt: parseTime(j.alert.openedAt), updatedAt: parseTime(j.alert.updatedAt) },
      lastChangeAt: j.lastChangeAt === undefined ? zeroTime : parseTime(j.lastChangeAt),
      checkPending: j.checkPending ?? false,
    };
  },
};

/** The state of a rack twin; it does not expire. */
export const rackStateSpec = new ValueSpec({ name: "rack", type: RackStateType });

/** The settings of the rack twin, as the Go Config's. */
export interface RackConfig {
  /** The id of the data-center twin racks report to. */
  readonly dataCenterId: string;
  /** How long a rack waits after a change before it correlates, in nanoseconds; 0 correlates at once. */
  readonly correlationDelayNanos: number;
}

/** Returns the rack twin's function for cfg. */
export function rackFun(cfg: RackConfig) {
  return (ctx: Context, msg: Message): void => {
    const st: RackState = rackStateSpec.get(ctx) ?? { servers: null, histogram: null, alert: null, lastChangeAt: zeroTime, checkPending: false };
    let at: GoTime;
    switch (msg.typename) {
      case ServerIncidentsType.typename: {
        const m = msg.as(ServerIncidentsType);
        if (m.serverId === "") {
          throw new TerminalError(`incidents for rack ${ctx.self.id} name no server`);
        }
        const kinds = m.open.map(kindOf).sort(goCompare).filter((k, i, a) => i === 0 || a[i - 1] !== k);
        st.servers ??= new Map();
        st.servers.set(m.serverId, kinds);
        at = fromTimestamp(m.changedAt);
        break;
      }
      case ServerDecommissionedType.typename: {
        const m = msg.as(ServerDecommissionedType);
        st.servers?.delete(m.serverId);
        at = fromTimestamp(m.leftAt);
        break;
      }
      case CorrelationCheckType.typename:
        st.checkPending = false;
        report(ctx, cfg, st, correlate(st.servers ?? new Map()), st.lastChangeAt);
        save(ctx, st);
        return;
      default:
        throw new TerminalError(`${rackFunction} does not handle messages of type ${msg.typename}`);
    }
    st.histogram = histogram(st.servers);
    if (after(at, st.lastChangeAt)) {
      st.lastChangeAt = at;
    }
    if (cfg.correlationDelayNanos <= 0) {
      report(ctx, cfg, st, correlate(st.servers ?? new Map()), st.lastChangeAt);
    } else if (!st.checkPending) {
      // The first change arms the check; later ones join it rather than
      // postpone it, so a flapping server cannot hold the rack's report back.
      ctx.sendAfter(cfg.correlationDelayNanos / 1e6, ctx.self, CorrelationCheckType, create(CorrelationCheckSchema), { cancellationToken: correlationToken });
      st.checkPending = true;
    }
    save(ctx, st);
  };
}

/** Writes the state, or clears it when the rack has nothing left to remember. */
function save(ctx: Context, st: RackState): void {
  if ((st.servers?.size ?? 0) === 0 && st.alert === null && !st.checkPending) {
    rackStateSpec.clear(ctx);
    return;
  }
  rackStateSpec.set(ctx, st);
}

/** Tells the data center and the alerts egress about a rack incident that appeared, changed or cleared. */
function report(ctx: Context, cfg: RackConfig, st: RackState, c: Correlation | undefined, at: GoTime): void {
  const dc: Address = { type: dataCenterFunction, id: cfg.dataCenterId };
  const prev = st.alert;
  if (c === undefined) {
    if (prev === null) {
      return;
    }
    st.alert = null;
    const ok = create(RackOkSchema, { rackId: ctx.self.id, clearedAt: toTimestamp(at) });
    ctx.send(dc, RackOkType, ok);
    ctx.egress(alertsEgress, RackOkType, ok);
    return;
  }
  if (prev !== null && prev.kind === c.kind && sameStrings(prev.servers, c.servers)) {
    return;
  }
  const rec: RackAlertRecord = {
    rackId: ctx.self.id,
    kind: c.kind,
    servers: c.servers,
    reason: c.reason,
    knownServers: st.servers?.size ?? 0,
    openedAt: prev !== null && prev.kind === c.kind ? prev.openedAt : at,
    updatedAt: at,
  };
  st.alert = rec;
  const a = alertProto(rec);
  ctx.send(dc, RackAlertType, a);
  ctx.egress(alertsEgress, RackAlertType, a);
}

function alertProto(r: RackAlertRecord): RackAlert {
  return create(RackAlertSchema, {
    rackId: r.rackId,
    kind: (RackIncidentKind as unknown as Record<string, RackIncidentKind>)[r.kind] ?? RackIncidentKind.UNSPECIFIED,
    serverIds: [...(r.servers ?? [])],
    reason: r.reason,
    knownServers: r.knownServers,
    openedAt: toTimestamp(r.openedAt),
    updatedAt: toTimestamp(r.updatedAt),
  });
}

function sameStrings(a: readonly string[] | null, b: readonly string[]): boolean {
  return (a ?? []).length === b.length && b.every((s, i) => a![i] === s);
}

function histogram(servers: ReadonlyMap<string, readonly Kind[] | null> | null): Map<Kind, number> {
  const h = new Map<Kind, number>();
  for (const kinds of servers?.values() ?? []) {
    for (const k of kinds ?? []) {
      h.set(k, (h.get(k) ?? 0) + 1);
    }
  }
  return h;
}
