/**
 * Errors of the publishing side (release keygen, publish, list, show, rollback, promote). Callers branch on `code`;
 * messages say what is wrong and what to do, and never carry a secret key or S3 credentials.
 */
import { RunError } from "../run/errors.js";

export type ReleaseErrorCode =
  /** A flag or argument is malformed (a usage error: the CLI exits 2). */
  | "invalid_argument"
  /** A channel, release or file that was asked for does not exist. */
  | "not_found"
  /** The signing key cannot be read or used. */
  | "key"
  /** The store path is not a NixOS system toplevel, or not in the local store. */
  | "not_toplevel"
  /** The binary cache does not hold the closure, signed, or cannot be written. */
  | "cache"
  /** The releases location cannot be read or written. */
  | "location"
  /** Other publishes kept taking the serial; nothing was left half-written. */
  | "conflict"
  /** A record in the history does not verify or does not parse. */
  | "record"
  /** Nix failed (build, copy, sign). */
  | "nix";

export class ReleaseError extends RunError {
  override readonly name = "ReleaseError";
  declare readonly code: ReleaseErrorCode;

  constructor(code: ReleaseErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
