/** The client: one object holding the transport chain and a module per resource. */

import { inspect } from "node:util";
import { ActionsClient, waitForActions, type WaitForActionsOptions } from "./actions.js";
import { DEFAULT_ENDPOINT, resolveConfig, type ResolveConfigOptions } from "./config.js";
import { HCloudConfigError } from "./errors.js";
import { ImagesClient } from "./images.js";
import { LocationsClient } from "./locations.js";
import { ServerTypesClient } from "./server-types.js";
import { ServersClient } from "./servers.js";
import { SshKeysClient } from "./ssh-keys.js";
import { createTransport } from "./transport/index.js";
import { debugLines } from "./transport/debug.js";
import { RateLimitState } from "./transport/rate-limit.js";
import type { RetryOptions } from "./transport/retry.js";
import type { Action } from "./schema.js";
import type {
  DebugHooks,
  Handler,
  RequestEvent,
  ResponseEvent,
  TransportRequest,
  TransportResponse,
} from "./transport/types.js";

export interface HCloudClientOptions {
  /** API token. Kept only inside the transport chain, never on the client object. */
  token: string;
  /** API base URL (default https://api.hetzner.cloud/v1; clientFromEnvironment also reads HCLOUD_ENDPOINT). */
  endpoint?: string;
  /** Per-attempt timeout in ms (default 60 000; 0 disables). */
  timeoutMs?: number;
  /** Retry policy, or false to never retry. */
  retry?: RetryOptions | false;
  /** Sees every attempt the client sends: method, path, query, JSON body (never headers). */
  onRequest?: (event: RequestEvent) => void;
  /** Sees the outcome of every attempt. */
  onResponse?: (event: ResponseEvent) => void;
  /** Writes one line per request and answer (no bodies, no headers). */
  debug?: (line: string) => void;
  /** Default options for waitForActions through this client (e.g. a fast pollDelay in tests). */
  waitDefaults?: Omit<WaitForActionsOptions, "signal" | "onProgress" | "timeoutMs">;
}

export class HCloudClient {
  readonly endpoint: string;
  /** RateLimit-* values of the latest answer. */
  readonly rateLimit = new RateLimitState();
  readonly servers: ServersClient;
  readonly images: ImagesClient;
  readonly sshKeys: SshKeysClient;
  readonly actions: ActionsClient;
  readonly serverTypes: ServerTypesClient;
  readonly locations: LocationsClient;
  readonly #transport: Handler;
  readonly #waitDefaults: HCloudClientOptions["waitDefaults"];

  constructor(opts: HCloudClientOptions) {
    if (!opts.token) throw new HCloudConfigError("No Hetzner Cloud API token given");
    this.endpoint = (opts.endpoint ?? DEFAULT_ENDPOINT).replace(/\/+$/, "");
    const hooks: DebugHooks = {};
    const lines = opts.debug ? debugLines(opts.debug) : undefined;
    if (opts.onRequest || lines?.onRequest)
      hooks.onRequest = (e) => {
        opts.onRequest?.(e);
        lines?.onRequest?.(e);
      };
    if (opts.onResponse || lines?.onResponse)
      hooks.onResponse = (e) => {
        opts.onResponse?.(e);
        lines?.onResponse?.(e);
      };
    this.#transport = createTransport({
      endpoint: this.endpoint,
      token: opts.token,
      rateLimit: this.rateLimit,
      retry: opts.retry,
      timeoutMs: opts.timeoutMs,
      hooks: hooks.onRequest || hooks.onResponse ? hooks : undefined,
    });
    this.#waitDefaults = opts.waitDefaults;
    this.servers = new ServersClient(this.#transport);
    this.images = new ImagesClient(this.#transport);
    this.sshKeys = new SshKeysClient(this.#transport);
    this.actions = new ActionsClient(this.#transport);
    this.serverTypes = new ServerTypesClient(this.#transport);
    this.locations = new LocationsClient(this.#transport);
  }

  /** Sends any request through the chain (retry, errors, rate limits); returns the answer. */
  request(req: TransportRequest): Promise<TransportResponse> {
    return this.#transport(req);
  }

  /** Waits for actions (see waitForActions), with this client's waitDefaults. */
  waitForActions(actions: readonly (Action | number)[], opts: WaitForActionsOptions = {}): Promise<Action[]> {
    return waitForActions(this.actions, actions, { ...this.#waitDefaults, ...opts });
  }

  toJSON(): Record<string, unknown> {
    return { endpoint: this.endpoint, rateLimit: this.rateLimit.snapshot() };
  }

  [inspect.custom](): string {
    return `HCloudClient { endpoint: ${JSON.stringify(this.endpoint)} }`;
  }
}

/**
 * A client configured from options, then the environment and the official CLI's config (see resolveConfig).
 * Throws HCloudConfigError naming the fix when no token is found.
 */
export function clientFromEnvironment(
  opts: Omit<HCloudClientOptions, "token"> & ResolveConfigOptions = {},
): HCloudClient {
  const cfg = resolveConfig(opts);
  return new HCloudClient({ ...opts, token: cfg.token, endpoint: cfg.endpoint });
}
