/**
 * What the commands share: client and image flags, flag checks, Ctrl-C handling, progress, and how errors become text,
 * JSON and exit codes. Commands import from here, never from each other.
 */
import type { Command } from "commander";
import { clientFromEnvironment, type HCloudClient } from "../hcloud/client.js";
import { HCloudConfigError, HCloudError, HCloudNetworkError } from "../hcloud/errors.js";
import { createProgressRenderer, chooseMode, guardedWriter, type ProgressRenderer } from "../ui/progress.js";
import { CleanupIncompleteError, RunError, isRunError, type RunOutcome } from "../run/index.js";
import {
  CODECS,
  COMPRESSIONS,
  FORMATS,
  type Codec,
  type CodecSpec,
  type Compression,
  type ImageFormat,
  type IncrementalReport,
} from "../upload/index.js";

export interface ClientFlags {
  context?: string;
  endpoint?: string;
}

export interface SharedFlags extends ClientFlags {
  compression: string;
  format: string;
  output: string;
  codec?: string;
  codecLevel?: string;
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** A usage error: exit status 2, nothing created. */
export class UsageError extends Error {}

export function makeClient(flags: ClientFlags): HCloudClient {
  return clientFromEnvironment({
    ...(flags.context ? { context: flags.context } : {}),
    ...(flags.endpoint ? { endpoint: flags.endpoint } : {}),
  });
}

/** --endpoint and --context: where the API is and which token to use. */
export function withClientFlags(cmd: Command): Command {
  return cmd
    .option("--endpoint <url>", "API endpoint (default: HCLOUD_ENDPOINT, else https://api.hetzner.cloud/v1)")
    .option(
      "--context <name>",
      "hcloud CLI context to take the token from (default: HCLOUD_TOKEN, else the active context)",
    );
}

export function checkChoice<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  if (!allowed.includes(value as T))
    throw new UsageError(`${flag} must be one of ${allowed.join(", ")} (got ${value})`);
  return value as T;
}

/** --compression and --format, checked. */
export function imageChoices(flags: SharedFlags): {
  compression: Compression | "auto";
  format: ImageFormat | "auto";
} {
  return {
    compression: checkChoice<Compression | "auto">("--compression", flags.compression, [
      "auto",
      ...COMPRESSIONS,
    ]),
    format: checkChoice<ImageFormat | "auto">("--format", flags.format, ["auto", ...FORMATS]),
  };
}

export function codecFromFlags(flags: SharedFlags): CodecSpec | undefined {
  if (flags.codec === undefined && flags.codecLevel === undefined) return undefined;
  const codec = flags.codec === undefined ? "zstd" : checkChoice<Codec>("--codec", flags.codec, CODECS);
  const spec: CodecSpec = { codec };
  if (flags.codecLevel !== undefined) {
    const level = Number(flags.codecLevel);
    if (!Number.isInteger(level) || level < 1 || level > 22)
      throw new UsageError("--codec-level must be 1..22");
    spec.level = level;
  }
  return spec;
}

/** The client flags plus the image and output flags of upload and write-to-disk. */
export function withSharedFlags(cmd: Command): Command {
  return withClientFlags(cmd)
    .option("--compression <kind>", `compression of the image: auto, ${COMPRESSIONS.join(", ")}`, "auto")
    .option("--format <format>", `image format: auto, ${FORMATS.join(", ")}`, "auto")
    .option("--output <format>", "text or json", "text")
    .option(
      "--codec <codec>",
      `wire compression for uncompressed images: ${CODECS.join(", ")} (default zstd)`,
    )
    .option("--codec-level <n>", "compression level of --codec");
}

const stdoutWriter = guardedWriter(process.stdout);
const stderrWriter = guardedWriter(process.stderr);

/**
 * Everything the commands print goes through these: a reader that went away (EPIPE on `2>&1 | tee log` after Ctrl-C,
 * `| head`) makes further output a no-op instead of an unhandled 'error' event that kills the process before its
 * cleanup ran. Importing this module installs the error listeners on both streams.
 */
export function writeOut(text: string): void {
  stdoutWriter.write(text);
}

export function writeErr(text: string): void {
  stderrWriter.write(text);
}

/**
 * Ctrl-C / SIGTERM: the first aborts the operation (cleanup still runs), the second aborts cleanup (what is left is
 * printed), a third exits at once.
 */
export function installSignals(command: string): {
  signal: AbortSignal;
  cleanupSignal: AbortSignal;
  dispose(): void;
} {
  const run = new AbortController();
  const cleanup = new AbortController();
  let count = 0;
  const handler = (sig: NodeJS.Signals) => {
    count++;
    if (count === 1) {
      writeErr(
        `\nhetznix ${command}: ${sig}: stopping and removing temporary resources (press Ctrl-C again to stop cleanup)\n`,
      );
      // A plain reason: the operation's abort error names the operation ("The upload was aborted: ...").
      run.abort(new Error(`interrupted by ${sig}`));
    } else if (count === 2) {
      writeErr(`\nhetznix ${command}: ${sig} again: stopping cleanup; what is left is listed below\n`);
      cleanup.abort(new RunError("aborted", `cleanup interrupted by ${sig}`));
    } else {
      process.exit(130);
    }
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  return {
    signal: run.signal,
    cleanupSignal: cleanup.signal,
    dispose() {
      process.off("SIGINT", handler);
      process.off("SIGTERM", handler);
    },
  };
}

/** Progress on stderr: bars or lines for text output, JSON lines for JSON output. */
export function startProgress(json: boolean, multi?: boolean): ProgressRenderer {
  return createProgressRenderer({
    mode: chooseMode(json ? "json" : "text", process.stderr),
    out: process.stderr,
    ...(multi !== undefined ? { multi } : {}),
  });
}

/** An incremental upload's or write's part of a result (only when a base was asked for), as JSON. */
export function incrementalJson(r: {
  incremental?: IncrementalReport | null;
  fallback?: string;
}): Record<string, unknown> {
  if (r.incremental === undefined) return {};
  const i = r.incremental;
  return {
    incremental: i
      ? {
          base: i.base,
          block_bytes: i.blockBytes,
          blocks: i.blocks,
          copy_runs: i.copyRuns,
          cycles_broken: i.cyclesBroken,
          staged_blocks: i.staged,
          bytes_planned: i.bytesPlanned,
          bytes_sent: i.bytesSent,
          bytes_received: i.bytesReceived,
          base_hashes: i.baseHashes,
        }
      : null,
    fallback: r.fallback ?? null,
  };
}

/** The run's part of a result (id, duration, steps, what cleanup left), as JSON. */
export function runJson(r: RunOutcome): Record<string, unknown> {
  return {
    run_id: r.runId,
    duration_ms: r.durationMs,
    steps: r.steps.map((s) => ({
      step: s.step,
      status: s.status,
      duration_ms: s.durationMs,
      start_ms: s.startMs,
      ...(s.detail ? { detail: s.detail } : {}),
    })),
    leftovers: r.leftovers,
  };
}

/** One line (or a few) for an error, with advice for the common cases. */
export function describeError(err: unknown): string {
  if (err instanceof HCloudError) {
    if (err.status === 401) {
      return `The Hetzner Cloud API rejected the token (401 ${err.code}); check HCLOUD_TOKEN or the hcloud context`;
    }
    return `Hetzner Cloud API error: ${err.message}`;
  }
  if (err instanceof HCloudNetworkError) return `Cannot reach the Hetzner Cloud API: ${err.message}`;
  if (err instanceof HCloudConfigError) return err.message;
  if (err instanceof CleanupIncompleteError) return err.message;
  if (err instanceof Error) return err.message;
  return String(err);
}

export function errorCode(err: unknown): string {
  if (err instanceof RunError) return err.code;
  if (err instanceof CleanupIncompleteError) return err.code;
  if (err instanceof HCloudError) return err.code;
  if (err instanceof HCloudNetworkError) return `network_${err.kind}`;
  if (err instanceof HCloudConfigError) return "config";
  if (err instanceof UsageError) return "usage";
  return "error";
}

export function errorJson(err: unknown): Record<string, unknown> {
  return {
    code: errorCode(err),
    message: describeError(err),
    ...(err instanceof CleanupIncompleteError ? { leftovers: err.leftovers } : {}),
  };
}

export function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError) return 2;
  if (isRunError(err, "aborted")) return 130;
  if (err instanceof CleanupIncompleteError && isRunError(err.cause, "aborted")) return 130;
  return 1;
}

/** A command failed: the error as JSON on stdout or as a line on stderr, and the exit status it calls for. */
export function reportFailure(command: string, json: boolean, err: unknown): void {
  if (json) writeOut(`${JSON.stringify({ error: errorJson(err) }, null, 2)}\n`);
  else writeErr(`hetznix ${command}: ${describeError(err)}\n`);
  process.exitCode = exitCodeFor(err);
}
