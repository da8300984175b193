/** Reports every attempt (method, path, query, JSON body; never headers) to onRequest/onResponse hooks. */

import { HCloudError, HCloudNetworkError } from "../errors.js";
import { buildUrl } from "./http.js";
import type { DebugHooks, Middleware, RequestEvent } from "./types.js";

export function debugHandler(hooks: DebugHooks, now: () => number = Date.now): Middleware {
  return (next) => async (req) => {
    const query = [...buildUrl("http://x", "/", req.query).searchParams.entries()];
    const event: RequestEvent = {
      method: req.method,
      path: req.path,
      query,
      body: req.body,
      attempt: req.attempt ?? 1,
    };
    hooks.onRequest?.(event);
    const t0 = now();
    try {
      const res = await next(req);
      hooks.onResponse?.({ ...event, status: res.status, durationMs: now() - t0 });
      return res;
    } catch (err) {
      const status = err instanceof HCloudError ? err.status : undefined;
      const error =
        err instanceof HCloudError ? err.code : err instanceof HCloudNetworkError ? err.kind : "aborted";
      hooks.onResponse?.({ ...event, status, error, durationMs: now() - t0 });
      throw err;
    }
  };
}

/** Hooks that write one line per request and answer (for `--debug`); bodies are left out. */
export function debugLines(write: (line: string) => void): DebugHooks {
  const q = (e: RequestEvent): string =>
    e.query.length > 0 ? "?" + e.query.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join("&") : "";
  return {
    onRequest: (e) =>
      write(`--> ${e.method} ${e.path}${q(e)}${e.attempt > 1 ? ` (attempt ${e.attempt})` : ""}`),
    onResponse: (e) =>
      write(
        `<-- ${e.method} ${e.path}${q(e)} ${e.status ?? "no answer"}${e.error ? ` ${e.error}` : ""} ${e.durationMs} ms`,
      ),
  };
}
