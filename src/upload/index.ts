/** The upload capability: typed library functions the CLI is a thin layer over. */
export {
  uploadImage,
  uploadImages,
  type CommonOptions,
  type ImageInput,
  type SshSettings,
  type UploadOptions,
  type UploadResult,
  type WaitSettings,
} from "./sequence.js";
export { writeToDisk, type WriteToDiskOptions, type WriteToDiskResult } from "./write-to-disk.js";
export type { IncrementalReport } from "./incremental/write.js";
export { SERIES_LABEL, defaultSeries } from "./incremental/base.js";
export type { UploadOutcome, UploadOutcome as RunOutcome, UploadStep, UploadEvent } from "./steps.js";
export { DEFAULT_HEARTBEAT_MS } from "../run/context.js";
export {
  cleanupTemporary,
  parseDuration,
  DEFAULT_OLDER_THAN_MS,
  type CleanupItem,
  type CleanupOptions,
  type CleanupOutcome,
} from "./cleanup.js";
export { readManifest, type ManifestEntry } from "./manifest.js";
export {
  UploadError,
  CleanupIncompleteError,
  isUploadError,
  describeLeftovers,
  type Leftover,
  type UploadErrorCode,
} from "./errors.js";
export type {
  StepEvent,
  DataEvent,
  NoteEvent,
  StepStatus,
  StepTiming,
  EventSink,
  RunEvent,
} from "../run/events.js";
export { CODECS, defaultCodec, startCompressor, type Codec, type CodecSpec } from "./compress.js";
export {
  COMPRESSIONS,
  FORMATS,
  checkImageFile,
  openFileSource,
  openUrlSource,
  digestFile,
  sniffBytes,
  storeIdentity,
  type Compression,
  type ImageFormat,
  type ImageSource,
  type FileSource,
  type UrlSource,
} from "./source.js";
export { planServer, type Plan, type PlanInput, type Candidate } from "./plan.js";
export {
  contentLabels,
  identitySelector,
  parseLabels,
  sha256FromLabels,
  temporaryLabels,
  SHA256_A_LABEL,
  SHA256_B_LABEL,
  SIZE_LABEL,
  STORE_LABEL,
  TEMPORARY_LABEL,
  RUN_LABEL,
  STARTED_LABEL,
} from "./identity.js";
export { writeScript, verifyScript, discardCommand, shellQuote } from "./rescue.js";
export type { LocalTools } from "./tools.js";
