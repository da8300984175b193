/** Tracks the RateLimit-Limit/Remaining/Reset headers of every answer (errors included) for callers to read. */

import type { Middleware } from "./types.js";

export interface RateLimitInfo {
  /** Requests per hour the project may make. */
  limit: number | undefined;
  /** Requests left now. */
  remaining: number | undefined;
  /** When the budget is fully refilled. */
  reset: Date | undefined;
  /** When these values were last seen. */
  updatedAt: Date | undefined;
}

export class RateLimitState {
  #info: RateLimitInfo = { limit: undefined, remaining: undefined, reset: undefined, updatedAt: undefined };

  get limit(): number | undefined {
    return this.#info.limit;
  }
  get remaining(): number | undefined {
    return this.#info.remaining;
  }
  get reset(): Date | undefined {
    return this.#info.reset;
  }

  snapshot(): RateLimitInfo {
    return { ...this.#info };
  }

  update(headers: Headers, now: Date = new Date()): void {
    const limit = intHeader(headers, "ratelimit-limit");
    const remaining = intHeader(headers, "ratelimit-remaining");
    const reset = intHeader(headers, "ratelimit-reset");
    if (limit === undefined && remaining === undefined && reset === undefined) return;
    this.#info = {
      limit: limit ?? this.#info.limit,
      remaining: remaining ?? this.#info.remaining,
      reset: reset !== undefined ? new Date(reset * 1000) : this.#info.reset,
      updatedAt: now,
    };
  }

  toJSON(): RateLimitInfo {
    return this.snapshot();
  }
}

export function intHeader(headers: Headers, name: string): number | undefined {
  const v = headers.get(name);
  if (v === null || !/^\s*\d+\s*$/.test(v)) return undefined;
  return Number(v);
}

export function rateLimitHandler(state: RateLimitState): Middleware {
  return (next) => async (req) => {
    const res = await next(req);
    state.update(res.headers);
    return res;
  };
}
