/**
 * Errors of the upload capability. Callers (the CLI, tests) branch on `code`, never on message text. Messages say
 * what was wrong and, where it helps, what to do; they never carry tokens or private keys.
 */

import { RunError } from "../run/errors.js";

export type UploadErrorCode =
  /** A flag or option is missing, contradictory or malformed (e.g. an unknown architecture). */
  | "invalid_argument"
  /** The local file is missing, unreadable, not a regular file or empty. */
  | "source_unreadable"
  /** The file or URL holds a format hetznix cannot turn into a disk (zip, vmdk, lz4, ...). */
  | "unknown_format"
  /** Compressed data is truncated or corrupt (found while reading it, before anything was snapshotted). */
  | "corrupt_source"
  /** The URL answered an error status, or could not be reached. */
  | "url_unavailable"
  /** The rescue system's download of a URL stalled, or did not finish in the time its size allows. */
  | "download_stalled"
  /** A qcow2 image names a backing file or an external data file (their bytes would end up in the snapshot). */
  | "unsafe_image"
  /** A label (given or derived) breaks Hetzner's label rules. */
  | "invalid_label"
  /** The image does not fit on the largest disk available for the architecture. */
  | "image_too_large"
  /** No server type / location pair could be created (all out of capacity or none matching). */
  | "no_capacity"
  /** The server type named does not exist (or does not match the architecture). */
  | "unknown_server_type"
  /** The server named for write-to-disk does not exist. */
  | "unknown_server"
  /** The server being written to was deleted during the run (e.g. by `hetznix cleanup --older-than 0s`). */
  | "server_deleted"
  /** A command in the rescue system failed (the message carries its last lines of output). */
  | "remote_command_failed"
  /** What the server holds after writing does not match the source. */
  | "verification_failed"
  /** The rescue system does not have room for an image that must be converted there. */
  | "rescue_space"
  /** The operation was aborted (signal or AbortSignal). */
  | "aborted"
  /**
   * The base named for an incremental upload (--base) cannot be used: not found, not a snapshot, another
   * architecture, not made by hetznix, or deleted during the run.
   */
  | "invalid_base"
  /** A local helper program (zstd, qemu-img, ...) failed or is missing. */
  | "tool_failed";

export class UploadError extends RunError {
  override readonly name = "UploadError";
  declare readonly code: UploadErrorCode;

  constructor(code: UploadErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/**
 * Is `err` an error of the upload capability (or of the run machinery it uses, e.g. an abort), optionally with one of
 * these codes?
 */
export function isUploadError(err: unknown, ...codes: UploadErrorCode[]): err is UploadError {
  return err instanceof RunError && (codes.length === 0 || (codes as string[]).includes(err.code));
}

export {
  CleanupIncompleteError,
  abortError,
  describeLeftovers,
  throwIfAborted,
  type Leftover,
} from "../run/errors.js";
