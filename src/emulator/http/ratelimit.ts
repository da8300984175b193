/**
 * Hetzner's rate limit: a budget of `limit` requests (3600 per hour by default) refilled gradually (about one per
 * second), reported on every answer as RateLimit-Limit / RateLimit-Remaining / RateLimit-Reset (UNIX seconds when
 * the budget is full again). A request finding the budget spent gets 429 rate_limit_exceeded.
 */
export class RateLimiter {
  private tokens: number;
  private last: number;

  constructor(
    readonly limit = 3600,
    readonly refillPerSecond = 1,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = limit;
    this.last = now();
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.limit, this.tokens + ((t - this.last) / 1000) * this.refillPerSecond);
    this.last = t;
  }

  /** Takes one request from the budget; false when it is spent. */
  take(): boolean {
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  headers(): Record<string, string> {
    this.refill();
    const missing = this.limit - this.tokens;
    const reset = Math.ceil((this.now() + (missing / this.refillPerSecond) * 1000) / 1000);
    return {
      "RateLimit-Limit": String(this.limit),
      "RateLimit-Remaining": String(Math.floor(this.tokens)),
      "RateLimit-Reset": String(reset),
    };
  }
}
