/**
 * API errors raised by the emulator's rules. The HTTP layer renders them as `{error: {code, message, details}}` with
 * the status Hetzner uses for the code (table from ../shared/docs/hetzner-facts.md, "Errors").
 */

export const STATUS_BY_CODE: Readonly<Record<string, number>> = {
  json_error: 400,
  unauthorized: 401,
  token_readonly: 401,
  forbidden: 403,
  maintenance: 403,
  resource_limit_exceeded: 403,
  not_found: 404,
  method_not_allowed: 405,
  uniqueness_error: 409,
  conflict: 409,
  deprecated_api_endpoint: 410,
  resource_unavailable: 412,
  invalid_input: 422,
  service_error: 422,
  unsupported_error: 422,
  locked: 423,
  protected: 423,
  rate_limit_exceeded: 429,
  server_error: 500,
  bad_gateway: 502,
  unavailable: 503,
  timeout: 504,
};

/** HTTP status of an error code; unknown codes are treated as server errors. */
export function statusOf(code: string): number {
  return STATUS_BY_CODE[code] ?? 500;
}

export class ApiError extends Error {
  override readonly name = "ApiError";
  readonly status: number;
  constructor(
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> | null = null,
  ) {
    super(message);
    this.status = statusOf(code);
  }
}

export interface FieldProblem {
  name: string;
  messages: string[];
}

export function invalidInput(fields: FieldProblem[], message?: string): ApiError {
  const text =
    message ??
    `invalid input in field${fields.length > 1 ? "s" : ""} '${fields.map((f) => f.name).join("', '")}'`;
  return new ApiError("invalid_input", text, { fields });
}

export function invalidField(name: string, ...messages: string[]): ApiError {
  return invalidInput([{ name, messages }]);
}

export function notFound(what: string): ApiError {
  return new ApiError("not_found", `${what} not found`);
}

export function uniqueness(field: string, message: string): ApiError {
  return new ApiError("uniqueness_error", message, { fields: [{ name: field }] });
}
