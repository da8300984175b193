/** Running the rescue-side scripts over SSH and reading their result lines. */
import type { Readable } from "node:stream";
import { ExecError, exec, type ExecProgress, type SshConnection } from "../ssh/index.js";
import { UploadError, abortError, type UploadErrorCode } from "./errors.js";
import { bashCommand, parseResult } from "./rescue.js";

/** The SSH connection broke while a command ran (the command may be retried on a new connection). */
export class ConnectionLostError extends Error {
  override readonly name = "ConnectionLostError";
}

export interface RunScriptOptions {
  stdin?: Readable;
  signal?: AbortSignal;
  onProgress?: (p: Readonly<ExecProgress>) => void;
  onStderr?: (chunk: Buffer) => void;
  /** Error codes for specific exit statuses (default remote_command_failed). */
  exitCodes?: Record<number, UploadErrorCode>;
}

/**
 * Run `script` with bash in the rescue system. Resolves with the `HETZNIX-RESULT` pairs (empty when none).
 * A non-zero exit is an UploadError `remote_command_failed` naming `what` and showing the last lines of output;
 * a dropped connection is a ConnectionLostError.
 */
export async function runScript(
  conn: SshConnection,
  script: string,
  what: string,
  opts: RunScriptOptions = {},
): Promise<Record<string, string>> {
  let res;
  try {
    res = await exec(conn, bashCommand(script), {
      ...(opts.stdin ? { stdin: opts.stdin } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
      ...(opts.onStderr ? { onStderr: opts.onStderr } : {}),
      tailLines: 15,
    });
  } catch (err) {
    if (opts.signal?.aborted) throw abortError(opts.signal, what);
    if (err instanceof ExecError && (err.kind === "connection-lost" || err.kind === "channel-failed")) {
      throw new ConnectionLostError(`SSH connection lost during ${what}`, { cause: err });
    }
    if (err instanceof ExecError && err.kind === "stdin-failed") {
      const cause = err.cause;
      if (cause instanceof UploadError) throw cause;
      throw new UploadError(
        "source_unreadable",
        `Reading the image failed during ${what}: ${cause instanceof Error ? cause.message : err.message}`,
        { cause: err },
      );
    }
    throw err;
  }
  if (res.exitCode !== 0) {
    const status =
      res.exitCode === null
        ? `was killed by signal ${res.signal ?? "?"}`
        : `failed with exit status ${res.exitCode}`;
    const tail = [
      res.stderrTail,
      res.stdoutTail
        .split("\n")
        .filter((l) => !l.startsWith("HETZNIX-RESULT"))
        .join("\n"),
    ]
      .filter((t) => t.trim() !== "")
      .join("\n");
    throw new UploadError(
      (res.exitCode !== null ? opts.exitCodes?.[res.exitCode] : undefined) ?? "remote_command_failed",
      `${what} ${status} in the rescue system${tail ? `; last lines of its output:\n${indent(tail)}` : " (no output)"}`,
    );
  }
  return parseResult(res.stdoutTail) ?? {};
}

function indent(text: string): string {
  return text
    .split("\n")
    .map((l) => `  | ${l}`)
    .join("\n");
}
