/** The boot-time metadata agent: reads Hetzner's metadata service and writes networkd units, host name, keys. */
export { applyMetadata, planFromService, DEFAULT_TIMEOUT_MS } from "./apply.js";
export type { AgentOptions, ApplyResult, PlanResult } from "./apply.js";
export { parseMetadata, parsePrivateNetworks, isHostname } from "./document.js";
export type { HetznerMetadata, PrivateNetwork, PublicInterface, Subnet } from "./document.js";
export { parseDuration, formatDuration } from "./duration.js";
export { MetadataError } from "./errors.js";
export type { MetadataErrorCode } from "./errors.js";
export { DEFAULT_METADATA_URL, fetchDocuments } from "./fetch.js";
export type { FetchedDocuments, FetchOptions } from "./fetch.js";
export { findStaleUnits, writePlan } from "./files.js";
export type { WriteResult } from "./files.js";
export {
  decideLinkStep,
  decideWithWait,
  parseIpAddr,
  readLinks,
  bringUp,
  withLinkLocal,
  randomLinkLocal,
} from "./link.js";
export type { LinkDecision, LinkState, LinkOptions } from "./link.js";
export {
  planFiles,
  publicUnit,
  privateUnit,
  authorizedKeys,
  isAgentUnitName,
  NETWORK_DIR,
  UNIT_PREFIX,
  UNIT_HEADER,
  ROOT_KEYS_FILE,
  AUTHORIZED_KEYS_PATTERN,
  HOSTNAME_FILE,
} from "./plan.js";
export type { Plan, PlannedFile, PlannedFileKind, PlanInput } from "./plan.js";
