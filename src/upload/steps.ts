/**
 * The steps shared by upload and write-to-disk, one module per concern: the run context and options (context.ts),
 * the steps on this machine (local-steps.ts), the steps on the Hetzner side (server-steps.ts), the data phase
 * (data-phase.ts) and how each kind of source is written and proven (writers.ts). This module gathers them for the
 * callers that take them all.
 */
export {
  UploadContext,
  type Catalogue,
  type CommonOptions,
  type ImageInput,
  type LevelReport,
  type SshSettings,
  type UploadEvent,
  type UploadOutcome,
  type UploadStep,
  type WaitSettings,
} from "./context.js";
export {
  SECTOR_BYTES,
  convertLocally,
  inspectSource,
  noteOddSize,
  planWrite,
  type LocalImage,
} from "./local-steps.js";
export {
  bootRescue,
  connectRescue,
  createTemporaryKey,
  createTemporaryServer,
  fetchCatalogue,
  shutdownAndWait,
} from "./server-steps.js";
export { writeAndVerify } from "./data-phase.js";
export { startStream, type WriteOutcome, type WritePlan } from "./writers.js";
