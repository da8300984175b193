/** What starting an emulator takes and gives (see ./index.ts for the layout). */
import type { Faults, Fault } from "./faults.js";
import type { HostManagerOptions } from "./hosts/manager.js";
import type { DiskStore, HostManager } from "./hosts/types.js";
import type { EmulatorState } from "./state/index.js";

/** One request/response pair, for tests that validate all traffic (e.g. the OpenAPI contract test). */
export interface Exchange {
  method: string;
  /** Path below the API root, without query string, e.g. "/servers/42". */
  path: string;
  query: URLSearchParams;
  requestBody: unknown;
  status: number;
  responseBody: unknown;
  responseHeaders: Record<string, string>;
}

export interface EmulatorOptions {
  /** Bearer token clients must send. */
  token: string;
  /** Directory for state.json and disks/ (created if missing; state survives restarts; one emulator at a time). */
  stateDir: string;
  /** host:port to listen on; default "127.0.0.1:0" (a free port). */
  listen?: string;
  /** Divides every modelled latency (default 1 = like Hetzner). Tests use 50-200. */
  speed?: number;
  /** Prefix for servers' public IPv4 addresses on loopback; server N gets prefix + (N from 2). Default "127.0.0.". */
  ipPrefix?: string;
  /** Faults active from the start. */
  faults?: Fault[];
  /**
   * What running servers run: "real" hosts (a real sshd per running server over its disk; needs root; leftovers of
   * a crashed emulator are swept first), "modelled" (default: status changes only, nothing listens), or a manager
   * of your own.
   */
  hosts?: "real" | "modelled" | HostManager;
  /** Settings of real hosts (where their directories go, RAM disk size, diagnostics). */
  hostOptions?: HostManagerOptions;
  /** Disk files; without it, a built-in sparse-file store is used. */
  disks?: DiskStore;
  /** Rate limit budget (default 3600) and refill per second (default 1). */
  rateLimit?: { limit?: number; refillPerSecond?: number };
  /** Called after every API exchange (not for metadata/admin paths). */
  onExchange?: (exchange: Exchange) => void;
  /** Diagnostics: why a server has nothing to boot, what a host printed (silent by default). */
  log?: (line: string) => void;
}

export interface RunningEmulator {
  /** API root, e.g. http://127.0.0.1:PORT/v1 (what HCLOUD_ENDPOINT should be). */
  readonly endpoint: string;
  readonly token: string;
  /** Metadata base of one server: http://127.0.0.1:PORT/metadata/{id}/hetzner/v1/ (append "metadata", "userdata"). */
  metadataUrl(serverId: number): string;
  /** Admin root, e.g. http://127.0.0.1:PORT/_emulator (faults, state), authenticated with the same token. */
  readonly adminUrl: string;
  readonly state: EmulatorState;
  /** Active faults; tests may add/remove faults directly (same as the admin endpoint). */
  readonly faults: Faults;
  /** Stop listening, stop every host, flush state. Idempotent. */
  stop(): Promise<void>;
}
