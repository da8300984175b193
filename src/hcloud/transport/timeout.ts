/** Per-request timeout: aborts one attempt after `timeoutMs` with an HCloudNetworkError of kind `timeout`. */

import { HCloudNetworkError } from "../errors.js";
import type { Middleware } from "./types.js";

export function timeoutHandler(timeoutMs: number): Middleware {
  return (next) => async (req) => {
    if (!(timeoutMs > 0 && Number.isFinite(timeoutMs))) return next(req);
    const controller = new AbortController();
    const outer = req.signal;
    if (outer?.aborted) throw outer.reason;
    const onOuterAbort = (): void => controller.abort(outer?.reason);
    outer?.addEventListener("abort", onOuterAbort, { once: true });
    const timer = setTimeout(() => {
      controller.abort(
        new HCloudNetworkError("timeout", req.method, req.path, `no complete answer within ${timeoutMs} ms`),
      );
    }, timeoutMs);
    try {
      return await next({ ...req, signal: controller.signal });
    } finally {
      clearTimeout(timer);
      outer?.removeEventListener("abort", onOuterAbort);
    }
  };
}
