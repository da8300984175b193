/**
 * In-process entry point of the Hetzner Cloud API emulator.
 *
 * - `state/`: resources and their rules (no HTTP);
 * - `http/`: node:http server, routing, parsing, rendering, auth, rate limit headers;
 * - `faults.ts`: fault injection (failing calls, capacity, SSH drops);
 * - `rescue/` (disks, rescue hosts) and `metadata.ts` (metadata documents) plug in through interfaces.
 *
 * One listener serves:
 * - `/v1/...`: the API (bearer token; see README.md in this folder for what is modelled);
 * - `/metadata/{server_id}/hetzner/v1/metadata[/...]` and `.../userdata`: each server's metadata service, without
 *   authentication (what the server would see at http://169.254.169.254/hetzner/v1/);
 * - `/_emulator/state` (GET), `/_emulator/faults` (GET, POST, DELETE) and `/_emulator/faults/{id}` (DELETE): admin,
 *   with the same bearer token.
 */
import type { Faults } from "./faults.js";
import type { DiskStore, RescueHostManager } from "./rescue/types.js";
import type { EmulatorState } from "./state/index.js";

export interface FaultSpec {
  /** The next `count` calls matching method + path pattern fail with `code` (status from the code table). */
  kind: "http";
  /** HTTP method, or "*" for any. */
  method: string;
  /** Path pattern below /v1, `*` matches one segment, `**` the rest; e.g. "/servers/*\/actions/poweron". */
  path: string;
  code: string;
  count: number;
  message?: string;
}

export interface CapacityFault {
  kind: "capacity";
  location: string;
  serverType: string;
}

export interface SshDropFault {
  kind: "ssh_drop";
  /** Server id, or undefined for every server (current and future rescue hosts). */
  serverId?: number;
  afterBytes: number;
}

export type Fault = FaultSpec | CapacityFault | SshDropFault;

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
  /** Directory for state.json and disks/ (created if missing; state survives restarts). */
  stateDir: string;
  /** host:port to listen on; default "127.0.0.1:0" (a free port). */
  listen?: string;
  /** Divides every modelled latency (default 1 = like Hetzner). Tests use 50-200. */
  speed?: number;
  /** Prefix for servers' public IPv4 addresses on loopback; server N gets prefix + (N from 2). Default "127.0.0.". */
  ipPrefix?: string;
  /** Faults active from the start. */
  faults?: Fault[];
  /** Real rescue hosts; without it, rescue boots are modelled only (no sshd). */
  rescue?: RescueHostManager;
  /** Disk files; without it, a built-in sparse-file store is used. */
  disks?: DiskStore;
  /** Rate limit budget (default 3600) and refill per second (default 1). */
  rateLimit?: { limit?: number; refillPerSecond?: number };
  /** Called after every API exchange (not for metadata/admin paths). */
  onExchange?: (exchange: Exchange) => void;
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
  /** Stop listening, stop every rescue host, flush state. Idempotent. */
  stop(): Promise<void>;
}

export { startEmulator } from "./server.js";
export { parseFault, FaultSyntaxError } from "./faults.js";
export { EmulatorState } from "./state/index.js";
