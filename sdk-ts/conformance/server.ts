/**
 * Serves the TypeScript reference functions of the conformance suite:
 *
 *     node sdk-ts/dist/conformance/server.js [--listen 127.0.0.1:9001]
 *     go run ./conformance -endpoint http://127.0.0.1:9001
 *
 * It prints the URL it serves on, which tells the port when --listen asks
 * for any free one (127.0.0.1:0). With TWINFLOW_VERIFY_KEY set it serves
 * only calls signed with one of those keys.
 */
import { parseArgs } from "node:util";
import type { AddressInfo } from "node:net";
import { Registry, createServer } from "../src/index.js";
import { register } from "./reference.js";

const { values } = parseArgs({ options: { listen: { type: "string", default: "127.0.0.1:9001" } } });
const listen = values.listen ?? "";
const colon = listen.lastIndexOf(":");
const host = listen.slice(0, colon);
const port = Number(listen.slice(colon + 1));
if (colon < 0 || !Number.isInteger(port)) {
  console.error(`--listen ${JSON.stringify(listen)}: want host:port`);
  process.exit(2);
}
const server = createServer(register(new Registry()));
server.listen(port, host, () => {
  const a = server.address() as AddressInfo;
  console.log(`serving the conformance reference functions on http://${a.address}:${a.port}`);
});
server.on("error", (err) => {
  console.error(`conformance reference server: ${err.message}`);
  process.exit(1);
});
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
