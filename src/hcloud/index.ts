/** Public surface of the Hetzner Cloud client. */

export { HCloudClient, clientFromEnvironment, type HCloudClientOptions } from "./client.js";
export {
  DEFAULT_ENDPOINT,
  defaultConfigPath,
  readCliConfig,
  resolveConfig,
  type CliConfig,
  type CliContext,
  type ResolveConfigOptions,
  type ResolvedConfig,
} from "./config.js";
export type * from "./schema.js";
export * from "./errors.js";
export * from "./labels.js";
export {
  ACTIONS_CHUNK,
  ActionsClient,
  defaultPollDelay,
  waitForActions,
  type WaitForActionsOptions,
} from "./actions.js";
export * from "./servers.js";
export * from "./images.js";
export * from "./ssh-keys.js";
export * from "./rules.js";
export * from "./server-types.js";
export * from "./locations.js";
export { isIdRef, type ListOptions, type Page, type Ref, type RequestOptions } from "./resource.js";
export { RateLimitState, type RateLimitInfo } from "./transport/rate-limit.js";
export type { RetryOptions } from "./transport/retry.js";
export type {
  HttpMethod,
  QueryParams,
  RecoverFn,
  RequestEvent,
  ResponseEvent,
  SleepFn,
  TransportRequest,
  TransportResponse,
} from "./transport/types.js";
