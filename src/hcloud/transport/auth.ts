/**
 * Authentication: `authHandler` adds `Authorization: Bearer <token>`; `redactHandler` (outermost in the chain) blanks
 * the token out of any error that comes back, as a last line of defence (e.g. a server echoing the header).
 */

import type { Middleware } from "./types.js";

export const REDACTED = "[REDACTED]";

function scrub(text: string, token: string): string {
  return text.split(token).join(REDACTED);
}

/** Tokens shorter than this (never real API tokens, which are 64 characters) are not searched for in text. */
export const MIN_REDACTED_LENGTH = 8;

export function redactToken(err: unknown, token: string): unknown {
  if (token.length < MIN_REDACTED_LENGTH || !(err instanceof Error)) return err;
  if (err.message.includes(token)) err.message = scrub(err.message, token);
  if (err.stack?.includes(token)) err.stack = scrub(err.stack, token);
  const details = (err as { details?: unknown }).details;
  if (details !== undefined && details !== null) {
    const json = JSON.stringify(details);
    if (json.includes(token))
      Object.defineProperty(err, "details", {
        value: JSON.parse(scrub(json, token)) as unknown,
        enumerable: true,
      });
  }
  return err;
}

export function authHandler(token: string): Middleware {
  return (next) => (req) => next({ ...req, headers: { ...req.headers, Authorization: `Bearer ${token}` } });
}

export function redactHandler(token: string): Middleware {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      throw redactToken(err, token);
    }
  };
}
