/** What bench/main.ts and the client child (bench/client.ts) exchange. */
import type { CodecSpec } from "../src/upload/compress.js";
import type { IncrementalReport } from "../src/upload/incremental/write.js";

/** One data phase against a server already in rescue (what the data-phase table measures). */
export interface DataPhaseRequest {
  mode: "data";
  serverId: number;
  image: string;
  imageBytes: number;
  /** sha256 of the image when known before the data phase (a hash pass ran first); else hashed while streaming. */
  sha256?: string;
  keyFile: string;
  publicKey: string;
  codec: CodecSpec;
}

/** A whole upload (uploadImage), from inspecting the file to the snapshot and cleanup. */
export interface UploadRequest {
  mode: "upload";
  image: string;
  codec?: CodecSpec;
  /** Upload even when a snapshot of the same content exists (a measured run must write). */
  force?: boolean;
  /** Incremental upload onto a server made from this snapshot (id, name or label selector, or "auto"). */
  base?: string;
  /** The image series (label hetznix/series) of the snapshot. */
  series?: string;
  /** Poll actions every this many ms (for an emulator running faster than Hetzner); default: the client's. */
  pollMs?: number;
}

export type ClientRequest = DataPhaseRequest | UploadRequest;

export interface StepRecord {
  step: string;
  status: string;
  durationMs: number;
  /** From the start of the run. */
  startMs: number;
  detail?: string;
}

export interface ClientResult {
  /** Wall time of the measured call (writeAndVerify, or uploadImage), measured inside the child. */
  seconds: number;
  steps: StepRecord[];
  bytesRead: number;
  bytesSent: number;
  transfer?: string;
  /** Upload mode: whether an existing snapshot was reused, and its id. */
  reused?: boolean;
  imageId?: number;
  /** Upload mode: image bytes read (and compressed) before the write step's first progress (read-ahead). */
  readAheadBytes?: number;
  /** The zstd level chosen for the data phase, when one was. */
  level?: number;
  /** Upload mode with a base: what the incremental upload did (null: it wrote the whole image), and why not. */
  incremental?: IncrementalReport | null;
  fallback?: string;
}

/** The local emulator's endpoint and (random, per-run) token reach the child through these variables. */
export const ENDPOINT_ENV = "HETZNIX_BENCH_ENDPOINT";
export const TOKEN_ENV = "HETZNIX_BENCH_TOKEN";
