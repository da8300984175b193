/** The publishing side of releases (keys, records, caches, channels) and the pieces hetznix apply shares. */
export { ReleaseError, type ReleaseErrorCode } from "./errors.js";
export {
  KeyError,
  generateSigningKey,
  parsePublicKey,
  parseSecretKey,
  type PublicKey,
  type SecretKey,
} from "./keys.js";
export {
  readSigningKeyFile,
  writeSigningKeyFiles,
  type KeygenResult,
  type SigningKeyFile,
} from "./keyfile.js";
export {
  RECORD_FORMAT,
  RecordError,
  canonicalJson,
  checkChannelName,
  isStorePath,
  parseRecord,
  signRecord,
  verifyRecord,
  type RecordKind,
  type ReleaseRecord,
  type SignedRecord,
} from "./record.js";
export { NixError, runNixTool, type NixRunOptions } from "./nix.js";
export {
  narInfoFingerprint,
  nixBase32,
  normaliseNarHash,
  parseNarInfo,
  signedBy,
  storePathHash,
  type NarInfo,
} from "./narinfo.js";
export { describeS3, parseS3Url, type S3Location } from "./s3.js";
export {
  checkClosure,
  describeCache,
  localClosure,
  parseCache,
  pushClosure,
  type CacheTarget,
  type ClosureCheck,
  type PushOptions,
  type PushResult,
} from "./cache.js";
export {
  appendRecord,
  channelKey,
  historySerials,
  openReleaseStore,
  parseLocation,
  readCurrent,
  readRelease,
  releaseKey,
  type AppendOutcome,
  type ChannelObject,
  type Location,
  type ReleaseStore,
} from "./releases/index.js";
export {
  buildFlake,
  ciRevision,
  flakeRevision,
  inspectToplevel,
  parseFlakeTarget,
  type FlakeTarget,
  type Toplevel,
} from "./system.js";
export type { ReleaseOutcome, ReleaseRunOptions, ReleaseStep } from "./operation.js";
export { checkSubstituterUrl, publishRelease, type PublishOptions, type PublishResult } from "./publish.js";
export {
  listChannels,
  listReleases,
  promoteRelease,
  rollbackChannel,
  showRelease,
  type ChannelChange,
  type ChannelSummary,
  type ListReleasesOptions,
  type ListedRecord,
  type PromoteOptions,
  type RollbackOptions,
  type ShowOptions,
} from "./channels.js";
