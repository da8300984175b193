/**
 * Errors every long operation shares. Capabilities subclass RunError with their own codes (UploadError, DeployError);
 * callers branch on `code`, never on message text. Messages name the operation ("the write-to-disk was aborted"),
 * say what was wrong and what to do, and never carry tokens or private keys.
 */

export class RunError extends Error {
  override readonly name: string = "RunError";
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message };
  }
}

export function isRunError(err: unknown, ...codes: string[]): err is RunError {
  return err instanceof RunError && (codes.length === 0 || codes.includes(err.code));
}

/** The operation's AbortSignal reason as an error (a RunError reason is kept as is), code `aborted`. */
export function abortError(signal: AbortSignal | undefined, operation = "operation"): RunError {
  const reason: unknown = signal?.reason;
  if (reason instanceof RunError) return reason;
  const detail =
    reason instanceof Error ? `: ${reason.message}` : typeof reason === "string" ? `: ${reason}` : "";
  return new RunError("aborted", `The ${operation} was aborted${detail}`);
}

export function throwIfAborted(signal: AbortSignal | undefined, operation?: string): void {
  if (signal?.aborted) throw abortError(signal, operation);
}

/** A temporary resource that cleanup could not remove, with how to remove it by hand. */
export interface Leftover {
  kind: "server" | "ssh_key" | "image" | "file" | "process";
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
