/** Builds the handler chain: token redaction, retry and debug outermost, then error parsing, rate limits, timeout, auth, http. */

import { authHandler, redactHandler } from "./auth.js";
import { debugHandler } from "./debug.js";
import { errorHandler } from "./errors.js";
import { httpHandler } from "./http.js";
import { rateLimitHandler, type RateLimitState } from "./rate-limit.js";
import { retryHandler, type RetryOptions } from "./retry.js";
import { timeoutHandler } from "./timeout.js";
import type { DebugHooks, Handler, Middleware } from "./types.js";

export interface TransportOptions {
  endpoint: string;
  token: string;
  rateLimit: RateLimitState;
  /** false disables retries. */
  retry?: RetryOptions | false;
  /** Per-attempt timeout in ms (default 60 s; 0 disables). */
  timeoutMs?: number;
  hooks?: DebugHooks;
}

/** Applies middlewares so that the first one listed is the outermost. */
export function compose(end: Handler, ...middlewares: Middleware[]): Handler {
  return middlewares.reduceRight<Handler>((next, mw) => mw(next), end);
}

export function createTransport(opts: TransportOptions): Handler {
  const outer: Middleware[] = [redactHandler(opts.token)];
  if (opts.retry !== false) outer.push(retryHandler(opts.retry ?? {}));
  if (opts.hooks) outer.push(debugHandler(opts.hooks));
  return compose(
    httpHandler(opts.endpoint),
    ...outer,
    errorHandler(),
    rateLimitHandler(opts.rateLimit),
    timeoutHandler(opts.timeoutMs ?? 60_000),
    authHandler(opts.token),
  );
}

export { authHandler, redactHandler, redactToken } from "./auth.js";
export { debugHandler, debugLines } from "./debug.js";
export { errorHandler, parseError } from "./errors.js";
export { buildUrl, httpHandler } from "./http.js";
export { RateLimitState, rateLimitHandler, type RateLimitInfo } from "./rate-limit.js";
export { decide, retryHandler, serverRequestedDelay, type RetryOptions } from "./retry.js";
export { timeoutHandler } from "./timeout.js";
export * from "./types.js";
