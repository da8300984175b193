/**
 * The transport is a chain of handlers. Each handler takes a request and the next handler and adds one concern
 * (authentication, timeout, error parsing, rate-limit tracking, retry, debug). `http.ts` is the end of the chain.
 */

export type HttpMethod = "GET" | "POST" | "PUT" | "DELETE";

/** Query parameters; an array value repeats the parameter (`id=1&id=2`); undefined values are left out. */
export type QueryParams = Record<string, string | number | boolean | (string | number)[] | undefined>;

/**
 * Called when a POST failed in a way that leaves it unknown whether the server acted (connection reset, timeout,
 * 502, 504). It looks for the result of the request (e.g. the server by its name) and returns the answer body to
 * use in place of the lost one, or undefined when nothing was created (the request is then retried).
 */
export type RecoverFn = (signal: AbortSignal | undefined) => Promise<unknown>;

export interface TransportRequest {
  method: HttpMethod;
  /** Path below the endpoint, starting with `/`, e.g. `/servers/42/actions/poweron`. */
  path: string;
  query?: QueryParams;
  /** JSON body (POST/PUT). */
  body?: unknown;
  signal?: AbortSignal;
  /** For non-idempotent POSTs: see RecoverFn. Without it such a POST is not retried after an unclear failure. */
  recover?: RecoverFn;
  /** Marks a POST that is safe to repeat (e.g. poweron): retried like a GET. */
  idempotent?: boolean;
  /** Set by the retry handler: 1 for the first attempt. */
  attempt?: number;
  /** Request headers added by handlers (the auth handler sets Authorization here). */
  headers?: Record<string, string>;
}

export interface TransportResponse {
  status: number;
  headers: Headers;
  /** Parsed JSON body, or undefined for an empty body. */
  body: unknown;
  /** True when the body came from a RecoverFn instead of the server. */
  recovered?: boolean;
}

export type Handler = (req: TransportRequest) => Promise<TransportResponse>;

/** A handler that wraps the next one. */
export type Middleware = (next: Handler) => Handler;

/** What the onRequest/debug hook sees for every attempt (never the Authorization header). */
export interface RequestEvent {
  method: HttpMethod;
  path: string;
  /** Query parameters as sent (repeated keys keep every value). */
  query: [string, string][];
  body: unknown;
  attempt: number;
}

export interface ResponseEvent extends RequestEvent {
  /** HTTP status, or undefined when the request got no answer. */
  status: number | undefined;
  /** The error code of an error answer or the kind of a network error. */
  error?: string;
  durationMs: number;
}

export interface DebugHooks {
  onRequest?: (event: RequestEvent) => void;
  onResponse?: (event: ResponseEvent) => void;
}

export { sleep, type SleepFn } from "../../util/time.js";
