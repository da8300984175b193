/** startEmulator: wires state, hosts, faults, rate limit and the HTTP listener together (see ./index.ts). */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { resolve } from "node:path";
import type { EmulatorOptions, RunningEmulator } from "./types.js";
import { Faults } from "./faults.js";
import { createRequestHandler } from "./http/app.js";
import { RateLimiter } from "./http/ratelimit.js";
import { createDiskStore } from "./hosts/disks.js";
import { createHostManager, sweep } from "./hosts/manager.js";
import type { HostManager } from "./hosts/types.js";
import { EmulatorState } from "./state/index.js";

function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen);
  if (!m) throw new Error(`listen must be HOST:PORT, got '${listen}'`);
  return { host: m[1] ?? m[2] ?? "127.0.0.1", port: Number(m[3]) };
}

async function hostManager(options: EmulatorOptions): Promise<HostManager | undefined> {
  const hosts = options.hosts ?? "modelled";
  if (hosts === "modelled") return undefined;
  if (hosts !== "real") return hosts;
  if (process.getuid?.() !== 0)
    throw new Error("real hosts need root (loop devices, namespaces); run as root or use modelled hosts");
  // Leftovers of an emulator that crashed (host directories, loop devices) would block addresses and disks.
  const swept = await sweep(options.hostOptions?.workDir ? { workDir: options.hostOptions.workDir } : {});
  if (swept.removedDirs.length + swept.detachedLoops.length > 0)
    options.log?.(
      `cleaned up ${swept.removedDirs.length} host(s) and ${swept.detachedLoops.length} loop device(s) left by a previous run`,
    );
  return createHostManager({ ...(options.log ? { log: options.log } : {}), ...options.hostOptions });
}

export async function startEmulator(options: EmulatorOptions): Promise<RunningEmulator> {
  if (!options.token) throw new Error("a token is required");
  const speed = options.speed ?? 1;
  if (!(speed > 0)) throw new Error("speed must be a positive number");
  const ipPrefix = options.ipPrefix ?? "127.0.0.";
  if (!/^\d{1,3}\.\d{1,3}\.\d{1,3}\.$/.test(ipPrefix))
    throw new Error(`ipPrefix must look like 127.77.3., got '${ipPrefix}'`);
  const { host, port } = parseListen(options.listen ?? "127.0.0.1:0");
  const faults = new Faults(options.faults ?? []);
  const hosts = await hostManager(options);
  const state = EmulatorState.open({
    stateDir: resolve(options.stateDir),
    speed,
    ipPrefix,
    disks: options.disks ?? createDiskStore(),
    hosts,
    faults,
    ...(options.log ? { log: options.log } : {}),
  });
  faults.onSshDropChange = () => state.refreshSshDrops();
  const limiter = new RateLimiter(options.rateLimit?.limit ?? 3600, options.rateLimit?.refillPerSecond ?? 1);
  const server = createServer(
    createRequestHandler({ state, token: options.token, faults, limiter, onExchange: options.onExchange }),
  );
  server.keepAliveTimeout = 5_000;
  try {
    await new Promise<void>((ok, fail) => {
      server.once("error", fail);
      server.listen(port, host, () => {
        server.off("error", fail);
        ok();
      });
    });
  } catch (err) {
    await state.close();
    throw err;
  }
  const addr = server.address() as AddressInfo;
  const hostPart = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  const base = `http://${hostPart}:${addr.port}`;
  const metadataUrl = (serverId: number) => `${base}/metadata/${serverId}/hetzner/v1/`;
  state.metadataUrl = metadataUrl;
  state.resume();
  let stopping: Promise<void> | undefined;
  return {
    endpoint: `${base}/v1`,
    token: options.token,
    adminUrl: `${base}/_emulator`,
    metadataUrl,
    state,
    faults,
    stop() {
      stopping ??= (async () => {
        // Hosts first (state.close), so a listener that cannot close never keeps them running.
        const closed = new Promise<void>((ok) => server.close(() => ok()));
        server.closeAllConnections();
        try {
          await state.close();
        } finally {
          await closed;
        }
      })();
      return stopping;
    },
  };
}
