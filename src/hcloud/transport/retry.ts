/**
 * Retries failed attempts with jittered exponential backoff, bounded in tries and total time.
 *
 * What is retried:
 * - any request: 429 rate_limit_exceeded (waiting as told by Retry-After or RateLimit-Reset), 409 conflict,
 *   423 locked, 503 unavailable with an API error body, and a refused connection (nothing was sent);
 * - GET/PUT/DELETE (and POSTs marked idempotent) also: connection reset, timeout, other network errors, 502, 504
 *   and 503 without an API error body;
 * - other POSTs after such an unclear failure only when `recover()` finds that nothing was created; when it finds
 *   the result, that result is the answer. Without `recover` the error is surfaced.
 */

import { HCloudError, HCloudNetworkError } from "../errors.js";
import { intHeader } from "./rate-limit.js";
import { sleep as realSleep, type Middleware, type SleepFn, type TransportRequest } from "./types.js";

export interface RetryOptions {
  /** Attempts in all, including the first (default 7: about 30 s of backoff at most). */
  maxTries?: number;
  /** First backoff delay (default 500 ms); doubles per attempt. */
  baseDelayMs?: number;
  /** Cap of one backoff delay (default 15 s; a server-requested 429 wait may be longer). */
  maxDelayMs?: number;
  /** No retry starts after this much time since the first attempt (default 120 s). */
  maxTotalMs?: number;
  /** Injectable for tests. */
  sleep?: SleepFn;
  /** Returns a number in [0, 1); injectable for tests. */
  random?: () => number;
  now?: () => number;
}

type Decision = "retry" | "recover" | "fail";

/** POSTs the server may have acted on are unsafe; `idempotent` marks POSTs that are safe to repeat. */
export function isSafeToRepeat(req: TransportRequest): boolean {
  return req.method !== "POST" || req.idempotent === true;
}

export function decide(req: TransportRequest, err: unknown): Decision {
  const unclear: Decision = isSafeToRepeat(req) ? "retry" : "recover";
  if (err instanceof HCloudNetworkError) return err.kind === "refused" ? "retry" : unclear;
  if (!(err instanceof HCloudError)) return "fail";
  const apiBody = !err.code.startsWith("http_");
  switch (err.status) {
    case 429:
      return "retry";
    case 409:
      return err.code === "conflict" ? "retry" : "fail";
    case 423:
      return err.code === "locked" ? "retry" : "fail";
    case 503:
      return apiBody ? "retry" : unclear;
    case 502:
    case 504:
      return unclear;
    default:
      return "fail";
  }
}

/** How long the server asked us to wait before retrying (429), in ms, or undefined. */
export function serverRequestedDelay(err: HCloudError, now: number): number | undefined {
  const h = err.headers;
  if (!h) return undefined;
  const retryAfter = h.get("retry-after");
  if (retryAfter !== null) {
    if (/^\s*\d+\s*$/.test(retryAfter)) return Number(retryAfter) * 1000;
    const at = Date.parse(retryAfter);
    if (!Number.isNaN(at)) return Math.max(0, at - now);
  }
  const reset = intHeader(h, "ratelimit-reset");
  if (reset === undefined) return undefined;
  const untilReset = Math.max(0, reset * 1000 - now);
  // The budget refills gradually until `reset`; one request is free again after about untilReset / missing.
  const limit = intHeader(h, "ratelimit-limit");
  const remaining = intHeader(h, "ratelimit-remaining") ?? 0;
  if (limit !== undefined && limit > remaining) return Math.ceil(untilReset / (limit - remaining));
  return untilReset;
}

export function retryHandler(opts: RetryOptions = {}): Middleware {
  const maxTries = Math.max(1, opts.maxTries ?? 7);
  const base = opts.baseDelayMs ?? 500;
  const cap = opts.maxDelayMs ?? 15_000;
  const maxTotal = opts.maxTotalMs ?? 120_000;
  const sleep = opts.sleep ?? realSleep;
  const random = opts.random ?? Math.random;
  const now = opts.now ?? Date.now;

  return (next) => async (req) => {
    const started = now();
    let unclearBefore = false;
    for (let attempt = 1; ; attempt++) {
      let err: unknown;
      try {
        return await next({ ...req, attempt });
      } catch (e) {
        err = e;
      }
      if (req.signal?.aborted) throw err;
      // A create repeated after an unclear failure may collide with what the first attempt made.
      if (unclearBefore && req.recover && err instanceof HCloudError && err.code === "uniqueness_error") {
        const found = await req.recover(req.signal).catch(() => undefined);
        if (found !== undefined) return { status: 200, headers: new Headers(), body: found, recovered: true };
        throw err;
      }
      let decision = decide(req, err);
      if (decision === "recover") {
        if (!req.recover) throw err;
        let found: unknown;
        try {
          found = await req.recover(req.signal);
        } catch {
          throw err;
        }
        if (found !== undefined) return { status: 200, headers: new Headers(), body: found, recovered: true };
        unclearBefore = true;
        decision = "retry";
      }
      if (decision !== "retry" || attempt >= maxTries) throw err;
      const backoff = Math.min(cap, base * 2 ** (attempt - 1));
      let delay = backoff / 2 + (random() * backoff) / 2;
      if (err instanceof HCloudError && err.status === 429) {
        const asked = serverRequestedDelay(err, now());
        if (asked !== undefined) delay = Math.max(asked, Math.min(delay, 1000));
      }
      if (now() - started + delay > maxTotal) throw err;
      await sleep(delay, req.signal);
    }
  };
}
