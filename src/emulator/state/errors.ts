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
  // Operation-specific codes; statuses from the operations' tables in the OpenAPI document (422 throughout; where a
  // table leaves the status empty, 422 like its neighbours).
  server_not_stopped: 422,
  must_be_unassigned: 422,
  primary_ip_already_assigned: 422,
  primary_ip_assigned: 422,
  primary_ip_datacenter_mismatch: 422,
  primary_ip_version_mismatch: 422,
  placement_error: 422,
  server_already_added: 422,
  firewall_resource_not_found: 422,
  firewall_already_applied: 422,
  firewall_managed_by_label_selector: 422,
  resource_in_use: 422,
  server_already_attached: 422,
  ip_not_available: 422,
  no_subnet_available: 422,
  networks_overlap: 422,
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

/**
 * invalid_input with details.fields. The message carries the reasons too (Hetzner's messages name the problem,
 * e.g. "unsupported location for server type"; clients that print only the message must show something useful).
 */
export function invalidInput(fields: FieldProblem[], message?: string): ApiError {
  const reasons = fields.map((f) => `${f.name}: ${f.messages.join(", ")}`).join("; ");
  const text =
    message ??
    `invalid input in field${fields.length > 1 ? "s" : ""} '${fields.map((f) => f.name).join("', '")}' (${reasons})`;
  return new ApiError("invalid_input", text, { fields });
}

export function invalidField(name: string, ...messages: string[]): ApiError {
  return invalidInput([{ name, messages }]);
}

/** invalid_input whose message is the reason itself, as Hetzner words its semantic checks. */
export function rejected(field: string, message: string): ApiError {
  return invalidInput([{ name: field, messages: [message] }], message);
}

/**
 * What the emulator does not model or honour: 422 unsupported_error, never not_found (a client must not read it as
 * "the resource does not exist"; Terraform's provider drops resources on not_found) and never a silent drop.
 */
export function unsupported(what: string): ApiError {
  return new ApiError(
    "unsupported_error",
    `the hetznix emulator does not support ${what}; the request was not carried out (see its README)`,
  );
}

export function notFound(what: string): ApiError {
  return new ApiError("not_found", `${what} not found`);
}

export function uniqueness(field: string, message: string): ApiError {
  return new ApiError("uniqueness_error", message, { fields: [{ name: field }] });
}
