/** Turns error answers (HTTP status >= 400) into HCloudError with the body's code, message and details. */

import { HCloudError } from "../errors.js";
import type { Middleware, TransportResponse } from "./types.js";

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function parseError(method: string, path: string, res: TransportResponse): HCloudError {
  const correlationId = res.headers.get("x-correlation-id") ?? undefined;
  const err = isRecord(res.body) && isRecord(res.body.error) ? res.body.error : undefined;
  if (err && typeof err.code === "string") {
    return new HCloudError({
      status: res.status,
      code: err.code,
      message: typeof err.message === "string" ? err.message : err.code,
      details: isRecord(err.details) ? err.details : null,
      correlationId,
      method,
      path,
      headers: res.headers,
    });
  }
  const text = typeof res.body === "string" ? res.body.slice(0, 200).trim() : "";
  return new HCloudError({
    status: res.status,
    code: `http_${res.status}`,
    message: text.length > 0 ? `unexpected answer: ${text}` : `unexpected answer without error body`,
    details: null,
    correlationId,
    method,
    path,
    headers: res.headers,
  });
}

export function errorHandler(): Middleware {
  return (next) => async (req) => {
    const res = await next(req);
    if (res.status >= 400) throw parseError(req.method, req.path, res);
    return res;
  };
}
