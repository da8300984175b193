/**
 * The run of an upload or write-to-disk: its options, its steps, and the context every step reports through (the shared
 * run context plus the bytes read, sent and hashed, and the level chosen for the data phase).
 */
import type { Location, ServerType } from "../hcloud/schema.js";
import type { SshConnection } from "../ssh/index.js";
import type { CodecSpec } from "./compress.js";
import { RunContext, type RunOptions, type RunOutcome } from "../run/context.js";
import type { RunEvent } from "../run/events.js";
import { runScript as runRemote, type RunScriptOptions } from "../run/remote.js";
import { UploadError } from "./errors.js";
import type { DownloadLimits } from "./rescue.js";
import type { Compression, ImageFormat } from "./source.js";
import type { LocalTools } from "./tools.js";

export type ImageInput = { path: string } | { url: string };

export type { WaitSettings } from "../run/context.js";

/** The steps of upload and write-to-disk, in the order they run. */
export type UploadStep =
  | "inspect"
  | "convert"
  | "hash"
  | "catalogue"
  | "lookup"
  | "plan"
  | "ssh-key"
  | "server"
  | "rescue"
  | "poweron"
  | "connect"
  | "discard"
  | "measure"
  | "write"
  /** Incremental upload (--base): choose the base, hash it on the server, plan the blocks, copy, send. */
  | "base"
  | "base-hash"
  | "delta"
  | "copy"
  | "send"
  | "verify"
  | "shutdown"
  | "snapshot"
  | "cleanup";

export type UploadEvent = RunEvent<UploadStep>;

export interface SshSettings {
  /** Port of the rescue system's sshd (default 22). */
  port?: number;
  /** Connection attempts (default 100) and total time (default 180 s). */
  maxAttempts?: number;
  maxTotalMs?: number;
}

/** Options shared by upload and write-to-disk. */
export interface CommonOptions extends RunOptions<UploadStep> {
  /** Override detection (must agree with the magic bytes). */
  compression?: Compression | "auto";
  format?: ImageFormat | "auto";
  /** Wire codec for images that are not compressed already (default zstd when installed, else gzip). */
  codec?: CodecSpec;
  tools?: LocalTools;
  /** Directory for a qcow2 converted to raw on this machine (default os.tmpdir()). */
  tmpDir?: string;
  /** Compressed bytes kept ready while the server boots (default DEFAULT_READ_AHEAD_BYTES, 24 MiB). */
  readAheadBytes?: number;
  ssh?: SshSettings;
  /** Attempts of the data phase when the SSH connection drops (default 2: one retry from the start). */
  writeAttempts?: number;
  /** Limits of a URL download by the rescue system (default DEFAULT_DOWNLOAD_LIMITS). */
  download?: Partial<DownloadLimits>;
}

export interface Catalogue {
  serverTypes: ServerType[];
  locations: Location[];
}

/** The run of an upload or write-to-disk: the shared run context plus the bytes read, sent and hashed. */
export class UploadContext extends RunContext<CommonOptions, UploadStep> {
  bytesRead = 0;
  bytesSent = 0;
  bytesHashed = 0;
  /** The odd-size warning was given (once per run). */
  oddSizeNoted = false;
  /** The zstd level chosen from the measured link and CPU (kept for a retried data phase). */
  levelChoice: LevelReport | undefined;

  override outcome(): UploadOutcome {
    return {
      ...super.outcome(),
      bytesRead: this.bytesRead,
      bytesSent: this.bytesSent,
      ...(this.levelChoice ? { levelChoice: this.levelChoice } : {}),
    };
  }

  /** A script in the rescue system, its errors named for this operation. */
  runScript(conn: SshConnection, script: string, what: string, opts: RunScriptOptions = {}) {
    return runRemote(conn, script, what, {
      operation: this.operation,
      makeError: (code, message, cause) =>
        new UploadError(code as UploadError["code"], message, cause === undefined ? undefined : { cause }),
      ...opts,
    });
  }
}

/** What upload and write-to-disk report about the run itself. */
export interface UploadOutcome extends RunOutcome<UploadStep> {
  /** Bytes read from the local source for sending (the data phase). */
  bytesRead: number;
  /** Bytes sent over SSH (after compression). */
  bytesSent: number;
  /** The compression level chosen at the start of the data phase, and from what. */
  levelChoice?: LevelReport;
}

/** What the step "measure" found and chose. */
export interface LevelReport {
  level: number;
  /** The probe's rate towards the server. */
  linkMbitPerSecond: number;
  cores: number;
  bound: "link" | "cpu";
  /** The measured levels: single-threaded MB/s of input and compressed/input ratio on the image's sample. */
  measured: { level: number; mbPerSecond: number; ratio: number }[];
  detail: string;
}
