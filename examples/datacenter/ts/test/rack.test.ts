import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { encode, Registry } from "@twinflow/sdk";
import { Harness } from "@twinflow/sdk/testing";
import { IncidentKind, ServerIncidentsSchema } from "../src/gen/datacenter/v1/datacenter_pb.js";
import { formatTime, parseDuration, parseTime } from "../src/gotime.js";
import { CorrelationCheckType, RackAlertType, RackStateType, ServerIncidentsType, rackFun, rackFunction, rackStateSpec } from "../src/rack.js";
import { configFromEnv } from "../src/main.js";

const rack = { type: rackFunction, id: "rack-1" };
const incidents = (server: string, seconds: bigint, ...open: IncidentKind[]) =>
  encode(ServerIncidentsType, create(ServerIncidentsSchema, { serverId: server, rackId: "rack-1", open, changedAt: { seconds, nanos: 0 } }));

test("most servers losing packets is one switch failure, reported after the delay", async () => {
  const h = new Harness(new Registry().register(rackFunction, rackFun({ dataCenterId: "dc", correlationDelayNanos: 2e9 }), rackStateSpec));
  let res = await h.invoke(rack, incidents("srv-1", 100n, IncidentKind.PACKET_LOSS));
  assert.deepEqual(res.delayed.map((d) => [d.delayMillis, d.cancellationToken]), [[2000, "correlate"]]);
  const check = res.delayed[0].value;
  for (const s of ["srv-2", "srv-3", "srv-4"]) {
    res = await h.invoke(rack, incidents(s, 101n, ...(s === "srv-4" ? [] : [IncidentKind.PACKET_LOSS, IncidentKind.PACKET_LOSS])));
    assert.equal(res.delayed.length, 0, "later changes join the pending check");
  }
  assert.equal(check.typename, CorrelationCheckType.typename);
  res = await h.invoke(rack, check);
  assert.equal(res.egress.length, 1);
  const a = RackAlertType.decode(res.egress[0].value.bytes);
  assert.deepEqual([a.kind, a.serverIds, a.knownServers, a.reason], [1, ["srv-1", "srv-2", "srv-3"], 4, "3 of 4 servers have PACKET_LOSS: the top-of-rack switch is their common network path"]);
  assert.equal(
    new TextDecoder().decode(RackStateType.encode(h.stateOf(rack, rackStateSpec)!)),
    `{"servers":{"srv-1":["PACKET_LOSS"],"srv-2":["PACKET_LOSS"],"srv-3":["PACKET_LOSS"],"srv-4":[]},"histogram":{"PACKET_LOSS":3},` +
      `"alert":{"rackId":"rack-1","kind":"TOR_SWITCH_FAILURE","servers":["srv-1","srv-2","srv-3"],"reason":"3 of 4 servers have PACKET_LOSS: the top-of-rack switch is their common network path",` +
      `"knownServers":4,"openedAt":"1970-01-01T00:01:41Z","updatedAt":"1970-01-01T00:01:41Z"},"lastChangeAt":"1970-01-01T00:01:41Z"}`,
  );
});

test("times and durations read and write as Go's", () => {
  for (const s of ["2026-03-01T12:00:30Z", "2026-03-01T12:00:30.5Z", "0001-01-01T00:00:00Z", "2026-03-01T12:00:30.000000001Z"]) {
    assert.equal(formatTime(parseTime(s)), s);
  }
  assert.equal(formatTime(parseTime("2026-03-01T13:00:30+01:00")), "2026-03-01T12:00:30Z");
  assert.deepEqual([parseDuration("2s"), parseDuration("1m30s"), parseDuration("-1.5ms"), parseDuration("0")], [2e9, 90e9, -1.5e6, 0]);
  assert.throws(() => parseDuration("2 s"), /invalid duration "2 s"/);
  assert.deepEqual(configFromEnv({ DATACENTER_ID: "dc2", DATACENTER_CORRELATION_DELAY: "-1s" }), { dataCenterId: "dc2", correlationDelayNanos: 0 });
  assert.throws(() => configFromEnv({ DATACENTER_CORRELATION_DELAY: "40s" }), /want less than SilenceTimeout/);
});
