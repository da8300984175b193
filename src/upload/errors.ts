/**
 * Errors of the upload capability. Callers (the CLI, tests) branch on `code`, never on message text. Messages say
 * what was wrong and, where it helps, what to do; they never carry tokens or private keys.
 */

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
  /** A command in the rescue system failed (the message carries its last lines of output). */
  | "remote_command_failed"
  /** What the server holds after writing does not match the source. */
  | "verification_failed"
  /** The rescue system does not have room for an image that must be converted there. */
  | "rescue_space"
  /** The operation was aborted (signal or AbortSignal). */
  | "aborted"
  /** A local helper program (zstd, qemu-img, ...) failed or is missing. */
  | "tool_failed";

export class UploadError extends Error {
  override readonly name = "UploadError";
  readonly code: UploadErrorCode;

  constructor(code: UploadErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message };
  }
}

export function isUploadError(err: unknown, ...codes: UploadErrorCode[]): err is UploadError {
  return err instanceof UploadError && (codes.length === 0 || codes.includes(err.code));
}

/** Turn an AbortSignal's reason into an UploadError (keeps an UploadError reason as is). */
export function abortError(signal: AbortSignal | undefined, what = "operation"): UploadError {
  const reason: unknown = signal?.reason;
  if (reason instanceof UploadError) return reason;
  const detail =
    reason instanceof Error ? `: ${reason.message}` : typeof reason === "string" ? `: ${reason}` : "";
  return new UploadError("aborted", `The ${what} was aborted${detail}`);
}

export function throwIfAborted(signal: AbortSignal | undefined, what?: string): void {
  if (signal?.aborted) throw abortError(signal, what);
}

/** A temporary resource that cleanup could not remove, with how to remove it by hand. */
export interface Leftover {
  kind: "server" | "ssh_key" | "image" | "file";
  id?: number;
  name: string;
  /** A command that removes it, e.g. `hcloud server delete 42`. */
  removeHint: string;
  /** Why cleanup did not remove it. */
  reason: string;
}

/**
 * The operation failed (or was aborted) AND cleanup could not remove everything. `cause` is the original error;
 * `leftovers` says what is left and how to remove it.
 */
export class CleanupIncompleteError extends Error {
  override readonly name = "CleanupIncompleteError";
  readonly code = "cleanup_incomplete";
  readonly leftovers: Leftover[];

  constructor(cause: unknown, leftovers: Leftover[]) {
    const first = cause instanceof Error ? cause.message : String(cause);
    super(`${first}\n${describeLeftovers(leftovers)}`, { cause });
    this.leftovers = leftovers;
  }
}

export function describeLeftovers(leftovers: Leftover[]): string {
  if (leftovers.length === 0) return "";
  return [
    "Cleanup did not finish; these temporary resources are left:",
    ...leftovers.map(
      (l) =>
        `  ${l.kind} ${l.name}${l.id !== undefined ? ` (id ${l.id})` : ""}: ${l.reason}; remove with: ${l.removeHint}`,
    ),
  ].join("\n");
}
