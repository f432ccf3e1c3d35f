/**
 * Serves the rack twin (datacenter/rack) written in TypeScript as a
 * Twinflow function endpoint, for deploy/datacenter/module-ts-rack.yaml:
 *
 *     node examples/datacenter/ts/dist/src/main.js --listen 127.0.0.1:8001
 *
 * It reads the same settings as datacenter-functions: DATACENTER_ID (the
 * data-center twin's id, "dc"), DATACENTER_CORRELATION_DELAY ("2s"; a
 * negative duration correlates at once) and DATACENTER_SILENCE_TIMEOUT
 * ("30s"; the delay must stay below it). TWINFLOW_VERIFY_KEY makes it
 * serve only calls signed with one of those keys. On SIGINT or SIGTERM it
 * stops accepting calls and finishes the running ones.
 */
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import type { AddressInfo } from "node:net";
import { Registry, createServer } from "@twinflow/sdk";
import { parseDuration } from "./gotime.js";
import { rackFun, rackFunction, rackStateSpec, type RackConfig } from "./rack.js";

/** Reads the rack twin's settings from the environment, as the Go ConfigFromEnv. */
export function configFromEnv(env: NodeJS.ProcessEnv): RackConfig {
  const duration = (name: string, dflt: number): number => {
    const v = env[name];
    if (v === undefined || v === "") {
      return dflt;
    }
    try {
      const d = parseDuration(v);
      return d === 0 ? dflt : d;
    } catch (e) {
      throw new Error(`${name}: ${(e as Error).message}`);
    }
  };
  const silence = duration("DATACENTER_SILENCE_TIMEOUT", 30e9);
  const delay = Math.max(0, duration("DATACENTER_CORRELATION_DELAY", 2e9));
  if (silence < 1e9) {
    throw new Error(`SilenceTimeout ${env.DATACENTER_SILENCE_TIMEOUT}: want at least 1s`);
  }
  if (delay >= silence) {
    throw new Error(`CorrelationDelay ${env.DATACENTER_CORRELATION_DELAY}: want less than SilenceTimeout ${env.DATACENTER_SILENCE_TIMEOUT ?? "30s"}, or racks lag behind their servers`);
  }
  return { dataCenterId: env.DATACENTER_ID || "dc", correlationDelayNanos: delay };
}

function main(): void {
  const { values } = parseArgs({ options: { listen: { type: "string", default: "127.0.0.1:8001" } } });
  const listen = values.listen ?? "";
  const colon = listen.lastIndexOf(":");
  const port = Number(listen.slice(colon + 1));
  if (colon < 0 || !Number.isInteger(port)) {
    throw new Error(`--listen ${JSON.stringify(listen)}: want host:port`);
  }
  const cfg = configFromEnv(process.env);
  const server = createServer(new Registry().register(rackFunction, rackFun(cfg), rackStateSpec));
  server.listen(port, listen.slice(0, colon), () => {
    const a = server.address() as AddressInfo;
    console.log(
      `serving the rack twin (${rackFunction}) on http://${a.address}:${a.port}; datacenter ${cfg.dataCenterId}, correlation delay ${cfg.correlationDelayNanos / 1e6}ms`,
    );
  });
  server.on("error", (err) => {
    console.error(`datacenter rack endpoint: ${err.message}`);
    process.exit(1);
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      console.log("shutting down: waiting for running calls");
      server.close(() => process.exit(0));
      server.closeIdleConnections();
    });
  }
}

// Run only as a program, not when a test imports configFromEnv.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    main();
  } catch (e) {
    console.error(`datacenter rack endpoint: ${(e as Error).message}`);
    process.exit(2);
  }
}
