/**
 * Connect to an SSH server whose host key is not known in advance (a freshly booted rescue system), retrying with a
 * capped backoff until it answers, within a bounded number of attempts and a bounded total time.
 */
import { Client, type ConnectConfig } from "ssh2";
import { fingerprintOf } from "./keys.js";

export interface ConnectAttempt {
  /** 1-based number of the attempt about to start. */
  attempt: number;
  maxAttempts: number;
  /** Milliseconds since connect() was called. */
  elapsedMs: number;
  /** Why the previous attempt failed (undefined for the first). */
  lastError: Error | undefined;
}

export interface ConnectOptions {
  host: string;
  port?: number;
  username?: string;
  /** The private key (OpenSSH or PEM text), held in memory. Either this or `agent`. */
  privateKey?: string | Buffer;
  /** An SSH agent's socket (e.g. process.env.SSH_AUTH_SOCK): the agent's keys are offered. */
  agent?: string;
  /** Per attempt: time allowed for TCP connect + SSH handshake + auth (default 20 s). */
  readyTimeout?: number;
  /** At most this many attempts (default 100). */
  maxAttempts?: number;
  /** Give up once this much time has passed (default 180 s); no attempt starts after it. */
  maxTotalMs?: number;
  /** First delay between attempts (default 250 ms); doubles up to maxDelayMs (default 2 s). */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Pin the host key: only accept this `SHA256:...` fingerprint (default: accept any and report it). */
  expectedHostKeyFingerprint?: string;
  /** SSH keepalive interval (default 10 s; 0 disables). */
  keepaliveIntervalMs?: number;
  signal?: AbortSignal;
  onAttempt?: (attempt: ConnectAttempt) => void;
}

export interface SshConnection {
  readonly client: Client;
  readonly host: string;
  readonly port: number;
  /** `SHA256:...` fingerprint of the key the server presented. */
  readonly hostKeyFingerprint: string;
  /** Attempts it took. */
  readonly attempts: number;
  /** Resolves when the connection has closed (for any reason). */
  readonly closed: Promise<void>;
  /** Close the connection; resolves once it is closed. */
  close(): Promise<void>;
}

export class SshConnectError extends Error {
  constructor(
    message: string,
    readonly attempts: number,
    readonly lastError: Error | undefined,
  ) {
    super(message, { cause: lastError });
    this.name = "SshConnectError";
  }
}

/** The server presented another host key than the one expected (pinned). Never retried. */
export class HostKeyMismatchError extends SshConnectError {
  constructor(
    message: string,
    attempts: number,
    readonly presented: string,
    readonly expected: string,
  ) {
    super(message, attempts, undefined);
    this.name = "HostKeyMismatchError";
  }
}

/** The handshake's finding that the host key differs (becomes a HostKeyMismatchError). */
class HostKeyMismatch extends Error {
  constructor(
    message: string,
    readonly presented: string,
    readonly expected: string,
  ) {
    super(message);
  }
}

export async function connect(opts: ConnectOptions): Promise<SshConnection> {
  if (opts.privateKey === undefined && opts.agent === undefined)
    throw new Error("connect needs a private key or an SSH agent (SSH_AUTH_SOCK)");
  const port = opts.port ?? 22;
  const maxAttempts = opts.maxAttempts ?? 100;
  const maxTotalMs = opts.maxTotalMs ?? 180_000;
  const maxDelay = opts.maxDelayMs ?? 2_000;
  let delay = opts.initialDelayMs ?? 250;
  const started = Date.now();
  let lastError: Error | undefined;
  let attempt = 0;

  while (attempt < maxAttempts) {
    opts.signal?.throwIfAborted();
    const elapsedMs = Date.now() - started;
    if (attempt > 0 && elapsedMs >= maxTotalMs) break;
    attempt += 1;
    opts.onAttempt?.({ attempt, maxAttempts, elapsedMs, lastError });
    const remaining = maxTotalMs - elapsedMs;
    try {
      const conn = await connectOnce(
        opts,
        port,
        Math.max(1_000, Math.min(opts.readyTimeout ?? 20_000, remaining)),
      );
      return Object.assign(conn, { attempts: attempt });
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      lastError = err instanceof Error ? err : new Error(String(err));
      if (err instanceof HostKeyMismatch)
        throw new HostKeyMismatchError(err.message, attempt, err.presented, err.expected);
    }
    if (attempt >= maxAttempts) break;
    const wait = Math.min(delay, maxTotalMs - (Date.now() - started));
    if (wait <= 0) break;
    await sleep(wait, opts.signal);
    delay = Math.min(delay * 2, maxDelay);
  }
  throw new SshConnectError(
    `cannot connect to ${opts.host}:${port} over SSH after ${attempt} attempt(s) in ${Math.round(
      (Date.now() - started) / 1000,
    )} s: ${lastError?.message ?? "no attempt made"}`,
    attempt,
    lastError,
  );
}

function connectOnce(
  opts: ConnectOptions,
  port: number,
  readyTimeout: number,
): Promise<Omit<SshConnection, "attempts">> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    let fingerprint = "";
    let settled = false;
    let mismatch: HostKeyMismatch | undefined;
    const closed = new Promise<void>((r) => client.once("close", () => r()));
    const onAbort = (): void => {
      client.destroy();
      fail(opts.signal?.reason instanceof Error ? opts.signal.reason : new Error("aborted"));
    };
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      opts.signal?.removeEventListener("abort", onAbort);
      client.destroy();
      reject(mismatch ?? err);
    };
    opts.signal?.addEventListener("abort", onAbort, { once: true });

    client.once("ready", () => {
      if (settled) return;
      settled = true;
      opts.signal?.removeEventListener("abort", onAbort);
      // Errors after "ready" surface through exec/close; keep a listener so they never crash the process.
      client.on("error", () => undefined);
      resolve({
        client,
        host: opts.host,
        port,
        hostKeyFingerprint: fingerprint,
        closed,
        close: () => {
          client.end();
          return closed;
        },
      });
    });
    client.on("error", (err) => fail(err));
    client.once("close", () => fail(new Error("connection closed during handshake")));

    const config: ConnectConfig = {
      host: opts.host,
      port,
      username: opts.username ?? "root",
      ...(opts.privateKey !== undefined ? { privateKey: opts.privateKey } : {}),
      ...(opts.agent !== undefined ? { agent: opts.agent } : {}),
      readyTimeout,
      keepaliveInterval: opts.keepaliveIntervalMs ?? 10_000,
      keepaliveCountMax: 3,
      hostVerifier: (key: Buffer) => {
        fingerprint = fingerprintOf(key);
        if (
          opts.expectedHostKeyFingerprint !== undefined &&
          fingerprint !== opts.expectedHostKeyFingerprint
        ) {
          mismatch = new HostKeyMismatch(
            `host key of ${opts.host}:${port} is ${fingerprint}, expected ${opts.expectedHostKeyFingerprint}`,
            fingerprint,
            opts.expectedHostKeyFingerprint,
          );
          return false;
        }
        return true;
      },
    };
    client.connect(config);
  });
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
