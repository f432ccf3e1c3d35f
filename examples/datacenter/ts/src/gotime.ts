/**
 * Times as the Go twins keep them: seconds and nanoseconds since the Unix
 * epoch (a protobuf Timestamp), with Go's zero time (year 1) for "never",
 * written in JSON state as Go's time.Time is (RFC 3339 with nanoseconds,
 * trailing zeros dropped).
 */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { create } from "@bufbuild/protobuf";
import { TimestampSchema } from "@bufbuild/protobuf/wkt";

export interface GoTime {
  readonly seconds: bigint;
  readonly nanos: number;
}

/** Go's zero time.Time, 0001-01-01T00:00:00Z. */
export const zeroTime: GoTime = { seconds: -62135596800n, nanos: 0 };

export function isZero(t: GoTime): boolean {
  return t.seconds === zeroTime.seconds && t.nanos === 0;
}

/** As Go's t.After(u). */
export function after(t: GoTime, u: GoTime): boolean {
  return t.seconds > u.seconds || (t.seconds === u.seconds && t.nanos > u.nanos);
}

/** As timestamppb's AsTime: an unset timestamp is the Unix epoch. */
export function fromTimestamp(ts: Timestamp | undefined): GoTime {
  return { seconds: ts?.seconds ?? 0n, nanos: ts?.nanos ?? 0 };
}

/** As timestamppb.New. */
export function toTimestamp(t: GoTime): Timestamp {
  return create(TimestampSchema, { seconds: t.seconds, nanos: t.nanos });
}

/** As Go's time.Time MarshalJSON for a UTC time: "2026-03-01T12:00:30.5Z". */
export function formatTime(t: GoTime): string {
  const iso = new Date(Number(t.seconds) * 1000).toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  let s = iso.slice(0, 19);
  if (t.nanos > 0) {
    s += "." + String(t.nanos).padStart(9, "0").replace(/0+$/, "");
  }
  return s + "Z";
}

const rfc3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$/;

/** As Go's time.Time UnmarshalJSON of an RFC 3339 time. */
export function parseTime(s: string): GoTime {
  const m = rfc3339.exec(s);
  if (m === null) {
    throw new Error(`parsing time ${JSON.stringify(s)}: not RFC 3339`);
  }
  const d = new Date(0);
  d.setUTCFullYear(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  d.setUTCHours(Number(m[4]), Number(m[5]), Number(m[6]), 0);
  let seconds = BigInt(d.getTime() / 1000);
  if (m[8] !== "Z") {
    const sign = m[8][0] === "-" ? -1n : 1n;
    seconds -= sign * BigInt(Number(m[8].slice(1, 3)) * 3600 + Number(m[8].slice(4, 6)) * 60);
  }
  return { seconds, nanos: m[7] === undefined ? 0 : Number(m[7].padEnd(9, "0")) };
}

const units: Record<string, number> = { ns: 1, us: 1e3, "µs": 1e3, "μs": 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

/** Parses a Go duration ("2s", "1m30s", "-1s", "500ms") into nanoseconds. */
export function parseDuration(s: string): number {
  const m = /^([+-]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$/.exec(s);
  if (s === "0") {
    return 0;
  }
  if (m === null) {
    throw new Error(`time: invalid duration ${JSON.stringify(s)}`);
  }
  let total = 0;
  for (const part of s.replace(/^[+-]/, "").matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g)) {
    total += Number(part[1]) * units[part[2]];
  }
  return m[1] === "-" ? -total : total;
}
