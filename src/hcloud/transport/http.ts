/** End of the handler chain: one HTTP exchange with global fetch; JSON in, JSON out; network failures classified. */

import { HCloudError, HCloudNetworkError, type HCloudNetworkErrorKind } from "../errors.js";
import type { Handler, QueryParams, TransportRequest } from "./types.js";

export const USER_AGENT = "hetznix";

export function buildUrl(endpoint: string, path: string, query?: QueryParams): URL {
  const url = new URL(endpoint.replace(/\/+$/, "") + path);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) url.searchParams.append(key, String(v));
  }
  return url;
}

/** Network error codes node's fetch (undici) reports in `cause.code`. */
function classify(err: unknown): HCloudNetworkErrorKind {
  let cause: unknown = err;
  for (let depth = 0; depth < 5 && cause instanceof Error; depth++) {
    const code = (cause as { code?: unknown }).code;
    if (code === "ECONNREFUSED") return "refused";
    if (code === "ECONNRESET" || code === "EPIPE" || code === "UND_ERR_SOCKET" || code === "UND_ERR_CLOSED")
      return "reset";
    if (code === "ETIMEDOUT" || code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT")
      return "timeout";
    if (cause.name === "TimeoutError") return "timeout";
    cause = cause.cause;
  }
  return "network";
}

function describe(err: unknown): string {
  const parts: string[] = [];
  let cause: unknown = err;
  for (let depth = 0; depth < 5 && cause instanceof Error; depth++) {
    const code = (cause as { code?: unknown }).code;
    parts.push(typeof code === "string" ? `${cause.message} [${code}]` : cause.message);
    cause = cause.cause;
  }
  return parts.join(": ") || String(err);
}

/** Creates the final handler. `endpoint` is e.g. `https://api.hetzner.cloud/v1`. */
export function httpHandler(endpoint: string, fetchFn: typeof fetch = globalThis.fetch): Handler {
  return async (req) => {
    const url = buildUrl(endpoint, req.path, req.query);
    const headers: Record<string, string> = {
      Accept: "application/json",
      "User-Agent": USER_AGENT,
      ...req.headers,
    };
    let body: string | undefined;
    if (req.body !== undefined) {
      body = JSON.stringify(req.body);
      headers["Content-Type"] = "application/json";
    }
    let res: Response;
    let text: string;
    try {
      res = await fetchFn(url, { method: req.method, headers, body, signal: req.signal });
      text = await res.text();
    } catch (err) {
      // An aborted request (the caller's signal, or the timeout handler's) fails with the abort reason.
      if (req.signal?.aborted) throw req.signal.reason;
      throw new HCloudNetworkError(classify(err), req.method, req.path, describe(err));
    }
    let parsed: unknown = undefined;
    if (text.length > 0) {
      try {
        parsed = JSON.parse(text) as unknown;
      } catch (err) {
        // A success status with a body that is not JSON (a captive portal's or proxy's HTML page, an answer cut
        // short) must never read as "nothing there".
        if (res.status < 400) throw notJson(req, url, res, text, err);
        // An error status: keep the text so the error handler can report it.
        parsed = text;
      }
    }
    return { status: res.status, headers: res.headers, body: parsed };
  };
}

/** The answer of a successful status is not JSON: an `invalid_response` error naming the endpoint. */
function notJson(
  req: TransportRequest,
  url: URL,
  res: Response,
  text: string,
  parseError: unknown,
): HCloudError {
  const trimmed = text.trimStart();
  const looksJson = trimmed.startsWith("{") || trimmed.startsWith("[");
  const start = trimmed.slice(0, 80).replace(/\s+/g, " ");
  const why = looksJson
    ? `its JSON body is not valid JSON (cut short?): ${parseError instanceof Error ? parseError.message : String(parseError)}`
    : `its body is not JSON (it starts with: ${start})`;
  return new HCloudError({
    status: res.status,
    code: "invalid_response",
    message: `${url.origin}${url.pathname} answered HTTP ${res.status}, but ${why}; check that the endpoint (--endpoint or HCLOUD_ENDPOINT) is the Hetzner Cloud API and nothing (a proxy, a captive portal) stands in between`,
    correlationId: res.headers.get("x-correlation-id") ?? undefined,
    method: req.method,
    path: req.path,
    headers: res.headers,
  });
}
