/**
 * Errors raised by the Hetzner Cloud client. Callers branch on `code` (and `kind` for transport failures), never on
 * message text. No error ever carries the API token: messages come from the server's error body or from our own
 * words, and no error keeps a reference to the request headers.
 */

/** Well-known API error codes (the server may send others; `code` is a plain string). */
export type HCloudErrorCode =
  | "json_error"
  | "unauthorized"
  | "token_readonly"
  | "forbidden"
  | "maintenance"
  | "resource_limit_exceeded"
  | "not_found"
  | "method_not_allowed"
  | "uniqueness_error"
  | "conflict"
  | "deprecated_api_endpoint"
  | "resource_unavailable"
  | "invalid_input"
  | "service_error"
  | "unsupported_error"
  | "locked"
  | "protected"
  | "rate_limit_exceeded"
  | "server_error"
  | "bad_gateway"
  | "unavailable"
  | "timeout";

export interface HCloudErrorInit {
  status: number;
  code: string;
  message: string;
  details?: Record<string, unknown> | null;
  correlationId?: string | undefined;
  method: string;
  path: string;
  /** Answer headers (used by the retry handler for Retry-After and RateLimit-Reset). */
  headers?: Headers;
}

/** An error answer of the API: HTTP status plus the `error` object of the body. */
export class HCloudError extends Error {
  override readonly name = "HCloudError";
  /** HTTP status of the answer. */
  readonly status: number;
  /** `error.code` of the body; for a body that was not a Hetzner error, `http_<status>`. */
  readonly code: HCloudErrorCode | (string & {});
  /** `error.details` of the body (shape depends on the code), or null. */
  readonly details: Record<string, unknown> | null;
  /** Value of the `X-Correlation-Id` answer header, for Hetzner support. */
  readonly correlationId: string | undefined;
  readonly method: string;
  /** Request path (without query string), e.g. `/servers/42`. */
  readonly path: string;
  /** Answer headers (not enumerable, not in toJSON). */
  declare readonly headers: Headers | undefined;

  constructor(init: HCloudErrorInit) {
    super(`${init.message} (${init.code}, HTTP ${init.status}, ${init.method} ${init.path})`);
    Object.defineProperty(this, "headers", { value: init.headers, enumerable: false });
    this.status = init.status;
    this.code = init.code;
    this.details = init.details ?? null;
    this.correlationId = init.correlationId;
    this.method = init.method;
    this.path = init.path;
  }

  /** The server's message alone (the `message` property also names code, status and request). */
  get serverMessage(): string {
    const m = /^(.*) \([^()]*\)$/s.exec(this.message);
    return m?.[1] ?? this.message;
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      status: this.status,
      code: this.code,
      message: this.message,
      details: this.details,
      correlationId: this.correlationId,
      method: this.method,
      path: this.path,
    };
  }
}

/**
 * The request did not get an HTTP answer.
 * - `refused`: the connection was refused (nothing was sent: safe to retry any request);
 * - `reset`: the connection broke (the server may or may not have acted);
 * - `timeout`: no answer within the per-request timeout (the server may or may not have acted);
 * - `network`: another network failure (DNS, TLS, ...).
 */
export type HCloudNetworkErrorKind = "refused" | "reset" | "timeout" | "network";

export class HCloudNetworkError extends Error {
  override readonly name = "HCloudNetworkError";
  readonly kind: HCloudNetworkErrorKind;
  readonly method: string;
  readonly path: string;

  constructor(
    kind: HCloudNetworkErrorKind,
    method: string,
    path: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`${describeKind(kind)} for ${method} ${path}: ${detail}`, options);
    this.kind = kind;
    this.method = method;
    this.path = path;
  }

  toJSON(): Record<string, unknown> {
    return { name: this.name, kind: this.kind, message: this.message, method: this.method, path: this.path };
  }
}

function describeKind(kind: HCloudNetworkErrorKind): string {
  switch (kind) {
    case "refused":
      return "Connection refused";
    case "reset":
      return "Connection reset";
    case "timeout":
      return "No answer in time";
    case "network":
      return "Network error";
  }
}

/** An action finished with status `error`. */
export class HCloudActionError extends Error {
  override readonly name = "HCloudActionError";
  readonly actionId: number;
  readonly command: string;
  /** `action.error.code`, e.g. `action_failed`. */
  readonly code: string;
  /** `action.error.message`. */
  readonly actionMessage: string;
  readonly resources: { id: number; type: string }[];

  constructor(action: {
    id: number;
    command: string;
    error: { code: string; message: string } | null;
    resources?: { id: number; type: string }[];
  }) {
    const code = action.error?.code ?? "action_failed";
    const msg = action.error?.message ?? "action failed without an error message";
    super(`Action ${action.id} (${action.command}) failed: ${msg} (${code})`);
    this.actionId = action.id;
    this.command = action.command;
    this.code = code;
    this.actionMessage = msg;
    this.resources = action.resources ?? [];
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      actionId: this.actionId,
      command: this.command,
      code: this.code,
      message: this.message,
      resources: this.resources,
    };
  }
}

/** Waiting for actions took longer than the caller allowed. */
export class HCloudWaitTimeoutError extends Error {
  override readonly name = "HCloudWaitTimeoutError";
  /** Ids of the actions still running when time ran out. */
  readonly pendingActionIds: number[];

  constructor(timeoutMs: number, pendingActionIds: number[], message?: string) {
    super(message ?? `Actions ${pendingActionIds.join(", ")} still running after ${timeoutMs} ms`);
    this.pendingActionIds = pendingActionIds;
  }
}

/** The client could not be configured (no token, unknown context, unreadable config file). */
export class HCloudConfigError extends Error {
  override readonly name = "HCloudConfigError";
}

/** True when `err` is an API error, optionally with one of the given codes. */
export function isHCloudError(err: unknown, ...codes: string[]): err is HCloudError {
  return err instanceof HCloudError && (codes.length === 0 || codes.includes(err.code));
}

/** True when `err` is an API error answered with 404 not_found. */
export function isNotFound(err: unknown): err is HCloudError {
  return err instanceof HCloudError && (err.code === "not_found" || err.status === 404);
}
