/**
 * Remote scripts: shell text built by pure functions with every value quoted, run over SSH with bash, and the one
 * machine-readable result line each prints (`HETZNIX-RESULT key=value ...`).
 */
import type { Readable } from "node:stream";
import { ExecError, exec, type ExecProgress, type SshConnection } from "../ssh/index.js";
import { RunError, abortError } from "./errors.js";

/** Quote one word for a POSIX shell. */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_./:=@%+-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** Wrap a script for `ssh exec`: run it with bash, the script itself fed as an argument (no stdin needed). */
export function bashCommand(script: string): string {
  return `bash -c ${shellQuote(script)}`;
}

export const RESULT_PREFIX = "HETZNIX-RESULT ";

/** The `key=value` pairs of the last HETZNIX-RESULT line of `output`, or undefined. */
export function parseResult(output: string): Record<string, string> | undefined {
  const lines = output.split("\n").filter((l) => l.startsWith(RESULT_PREFIX));
  const last = lines[lines.length - 1];
  if (!last) return undefined;
  const out: Record<string, string> = {};
  for (const pair of last.slice(RESULT_PREFIX.length).trim().split(/\s+/)) {
    const eq = pair.indexOf("=");
    if (eq > 0) out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

/** The SSH connection broke while a command ran (the command may be retried on a new connection). */
export class ConnectionLostError extends Error {
  override readonly name = "ConnectionLostError";
}

export interface RunScriptOptions {
  stdin?: Readable;
  signal?: AbortSignal;
  onProgress?: (p: Readonly<ExecProgress>) => void;
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  /** Error codes for specific exit statuses (default remote_command_failed). */
  exitCodes?: Record<number, string>;
  /** Where the script runs, for messages (default "in the rescue system"). */
  where?: string;
  /** The operation, for the abort message (default "operation"). */
  operation?: string;
  /** Turns a code and message into the capability's error (default RunError). */
  makeError?: (code: string, message: string, cause?: unknown) => Error;
}

/**
 * Run `script` with bash over `conn`. Resolves with the `HETZNIX-RESULT` pairs (empty when none). A non-zero exit is
 * an error `remote_command_failed` (or the code `exitCodes` maps the status to) naming `what` and showing the last
 * lines of output; a dropped connection is a ConnectionLostError; an error of the stdin stream is passed on.
 */
export async function runScript(
  conn: SshConnection,
  script: string,
  what: string,
  opts: RunScriptOptions = {},
): Promise<Record<string, string>> {
  const make = opts.makeError ?? ((code, message, cause) => new RunError(code, message, { cause }));
  const where = opts.where ?? "in the rescue system";
  let res;
  try {
    res = await exec(conn, bashCommand(script), {
      ...(opts.stdin ? { stdin: opts.stdin } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
      ...(opts.onStdout ? { onStdout: opts.onStdout } : {}),
      ...(opts.onStderr ? { onStderr: opts.onStderr } : {}),
      tailLines: 15,
    });
  } catch (err) {
    if (opts.signal?.aborted) throw abortError(opts.signal, opts.operation);
    if (err instanceof ExecError && (err.kind === "connection-lost" || err.kind === "channel-failed")) {
      throw new ConnectionLostError(`SSH connection lost during ${what}`, { cause: err });
    }
    if (err instanceof ExecError && err.kind === "stdin-failed") {
      const cause = err.cause;
      if (cause instanceof RunError) throw cause;
      throw make(
        "source_unreadable",
        `Reading the input failed during ${what}: ${cause instanceof Error ? cause.message : err.message}`,
        err,
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
        .filter((l) => !l.startsWith(RESULT_PREFIX.trim()))
        .join("\n"),
    ]
      .filter((t) => t.trim() !== "")
      .join("\n");
    throw make(
      (res.exitCode !== null ? opts.exitCodes?.[res.exitCode] : undefined) ?? "remote_command_failed",
      `${what} ${status} ${where}${tail ? `; last lines of its output:\n${indent(tail)}` : " (no output)"}`,
      undefined,
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
