/**
 * Writing the image in the rescue system, one way per kind of source, and how each proves what the disk holds: the
 * extent stream (raw file; read back behind the writer), any other local file (hashed on both sides, read back
 * after), and a URL the rescue system downloads.
 */
import { stat } from "node:fs/promises";
import type { SshConnection } from "../ssh/index.js";
import type { CodecSpec } from "./compress.js";
import { ConnectionLostError } from "../run/remote.js";
import { pause } from "../util/time.js";
import { UploadError } from "./errors.js";
import {
  DEFAULT_DOWNLOAD_LIMITS,
  DOWNLOAD_FAILED_MARK,
  EXIT_BAD_STREAM,
  EXIT_NO_ROOM,
  EXIT_SIZE_MISMATCH,
  EXIT_UNSAFE_QCOW2,
  WRITTEN_MARK,
  downloadDeadlineSeconds,
  type DownloadLimits,
  downloadProgressScript,
  extentWriteScript,
  verifyScript,
  writeScript,
  type WriteInput,
} from "./rescue.js";
import type { Compression, ImageFormat } from "./source.js";
import { DEFAULT_READ_AHEAD_BYTES, startLocalStream, type LocalStream } from "./stream.js";
import type { UploadContext } from "./context.js";

/** What the data phase sends and how the rescue system handles it. */
export interface WritePlan {
  /** Local file to stream (raw, converted raw, compressed file, or qcow2 for conversion in the rescue system). */
  path?: string;
  url?: string;
  /** Compression of the file as stored / of the URL's bytes. */
  compression: Compression;
  /** raw: written directly; qcow2: converted in the rescue system. */
  remoteFormat: ImageFormat;
  /** Exact payload size when known (raw: raw size; qcow2: file size), checked on the server. */
  expectedBytes?: number;
  virtualSize?: number;
  /** A URL's Content-Length (for download progress). */
  downloadBytes?: number;
  /** The payload's sha256 when known before sending (from the local hash pass). */
  payloadSha256?: string;
  codec: CodecSpec;
}

export interface WriteOutcome {
  /** sha256 and size of the raw image now on the disk (verified). */
  sha256: string;
  rawSize: number;
  transfer: string;
  /** Bytes of the image sent as data (the rest were zero blocks, skipped), when sent as an extent stream. */
  dataBytes?: number;
}

/** A write that finished: what it wrote, and how to prove the disk holds it (the step "verify"). */
export interface WriteRun {
  verify(): Promise<WriteOutcome>;
  verifyDetail: (w: WriteOutcome) => string;
}

function verifiedDetail(w: WriteOutcome): string {
  return `sha256 ${w.sha256.slice(0, 16)}... matches`;
}

/** The classic verification: read the disk back after the write and hash it. */
function readBackAfterwards(ctx: UploadContext, conn: SshConnection, written: WriteOutcome): WriteRun {
  return {
    async verify() {
      const r = await ctx.runScript(conn, verifyScript(written.rawSize), "verifying the disk", {
        signal: ctx.signal,
      });
      checkDiskHash(r["disk-sha256"], written.sha256, written.rawSize);
      return written;
    },
    verifyDetail: (w) => `${verifiedDetail(w)} (read back after the write)`,
  };
}

function checkDiskHash(disk: string | undefined, expected: string, bytes: number): void {
  if (disk !== expected) {
    throw new UploadError(
      "verification_failed",
      `The disk's first ${bytes} bytes hash to ${disk ?? "(nothing)"}, the image to ${expected}`,
    );
  }
}

export async function writeOnce(
  ctx: UploadContext,
  conn: SshConnection,
  wp: WritePlan,
  early: LocalStream | undefined,
): Promise<WriteRun> {
  if (wp.url !== undefined) {
    const written = await ctx.steps.run(
      "write",
      () => writeFromUrl(ctx, conn, wp),
      (r) => `${r.rawSize} bytes, ${r.transfer}`,
    );
    return readBackAfterwards(ctx, conn, written);
  }
  const path = wp.path;
  if (path === undefined) throw new Error("write plan without path or url");
  const stream = early ?? startStream(ctx, { ...wp, path });
  if (stream.framing === "extents") return writeExtents(ctx, conn, wp, path, stream);
  const written = await ctx.steps.run(
    "write",
    () => writeImageStream(ctx, conn, wp, path, stream),
    (r) => `${r.rawSize} bytes, ${r.transfer}`,
  );
  return readBackAfterwards(ctx, conn, written);
}

/** Progress of a local stream as the write step's data events (bytes read from the file, bytes sent). */
function progressOf(ctx: UploadContext, stream: LocalStream, total: number) {
  const baseRead = ctx.bytesRead;
  const baseSent = ctx.bytesSent;
  let lastEmit = 0;
  const emit = (force = false) => {
    const now = Date.now();
    if (!force && now - lastEmit < 200) return;
    lastEmit = now;
    ctx.steps.data("write", ctx.bytesRead, ctx.bytesSent, total);
  };
  return {
    onProgress: (p: { stdinBytes: number }) => {
      ctx.bytesSent = baseSent + p.stdinBytes;
      ctx.bytesRead = baseRead + stream.bytesRead();
      emit();
    },
    done: () => {
      ctx.bytesRead = baseRead + stream.bytesRead();
      emit(true);
    },
  };
}

/** A local failure (corrupt data, compressor) explains a remote failure better than the remote tail. */
async function preferLocalFailure(stream: LocalStream, err: unknown): Promise<never> {
  stream.destroy();
  const local = await stream.finish().then(
    () => undefined,
    (e: unknown) => e,
  );
  if (local instanceof UploadError && !(err instanceof ConnectionLostError)) throw local;
  throw err;
}

/**
 * The extent stream: the rescue system writes the image's non-zero runs and reads the disk back behind itself while
 * the rest is still arriving. The step "write" ends when the last run is written and flushed (the script says so on
 * stdout); "verify" waits for the rest of the read-back and compares the disk's sha256 with the image's.
 */
async function writeExtents(
  ctx: UploadContext,
  conn: SshConnection,
  wp: WritePlan,
  path: string,
  stream: LocalStream,
): Promise<WriteRun> {
  const script = extentWriteScript({
    compression: stream.wireCompression,
    ...(wp.expectedBytes !== undefined ? { expectedBytes: wp.expectedBytes } : {}),
  });
  const total = (await stat(path)).size;
  const progress = progressOf(ctx, stream, total);
  let markSeen: () => void = () => undefined;
  const written = new Promise<void>((resolve) => (markSeen = resolve));
  let stdout = "";
  const remote = ctx.runScript(conn, script, "writing the image", {
    stdin: stream.output,
    exitCodes: {
      [EXIT_NO_ROOM]: "rescue_space",
      [EXIT_SIZE_MISMATCH]: "corrupt_source",
      [EXIT_BAD_STREAM]: "remote_command_failed",
    },
    signal: ctx.signal,
    onProgress: progress.onProgress,
    onStdout: (chunk) => {
      if (stdout.length < 4096) stdout += chunk.toString("latin1");
      if (stdout.includes(WRITTEN_MARK)) markSeen();
    },
  });
  remote.catch(() => undefined); // awaited below; this only keeps an early failure from being unhandled
  let hashTool: string | undefined;
  const outcome = await ctx.steps.run(
    "write",
    async (): Promise<WriteOutcome> => {
      try {
        await Promise.race([written, remote]);
      } catch (err) {
        return preferLocalFailure(stream, err);
      }
      const local = await stream.finish();
      progress.done();
      const sha256 = wp.payloadSha256 ?? local.sha256;
      const stats = stream.extentStats();
      if (!sha256 || !stats) throw new Error("extent stream finished without its hash or statistics");
      return { sha256, rawSize: stats.totalBytes, transfer: stream.description, dataBytes: stats.dataBytes };
    },
    (r) =>
      `${r.rawSize} bytes, ${r.transfer}; zero blocks skipped: ${r.dataBytes ?? 0} bytes sent as data in ${stream.extentStats()?.extents ?? 0} run(s)`,
  );
  return {
    async verify() {
      const r = await remote;
      if (Number(r["disk-bytes"]) !== outcome.rawSize) {
        throw new UploadError(
          "verification_failed",
          `The rescue system read back ${r["disk-bytes"] ?? "no"} bytes, the image has ${outcome.rawSize}`,
        );
      }
      checkDiskHash(r["disk-sha256"], outcome.sha256, outcome.rawSize);
      hashTool = r["hash-tool"];
      return outcome;
    },
    verifyDetail: (w) =>
      `${verifiedDetail(w)} (read back behind the writer${hashTool ? `, ${hashTool}` : ""})`,
  };
}

/** Any other local file: its bytes as they are (compressed file) or compressed on the fly, hashed on both sides. */
async function writeImageStream(
  ctx: UploadContext,
  conn: SshConnection,
  wp: WritePlan,
  path: string,
  stream: LocalStream,
): Promise<WriteOutcome> {
  const input: WriteInput = { kind: "stdin" };
  const script = writeScript({
    input,
    compression: stream.wireCompression,
    format: wp.remoteFormat,
    ...(wp.expectedBytes !== undefined ? { expectedBytes: wp.expectedBytes } : {}),
    ...(wp.virtualSize !== undefined ? { virtualSize: wp.virtualSize } : {}),
  });
  // Progress counts bytes read from the local file.
  const progress = progressOf(ctx, stream, (await stat(path)).size);
  let result: Record<string, string>;
  try {
    result = await ctx.runScript(conn, script, "writing the image", {
      stdin: stream.output,
      exitCodes: {
        [EXIT_NO_ROOM]: "rescue_space",
        [EXIT_SIZE_MISMATCH]: "corrupt_source",
        [EXIT_UNSAFE_QCOW2]: "unsafe_image",
      },
      signal: ctx.signal,
      onProgress: progress.onProgress,
    });
  } catch (err) {
    return preferLocalFailure(stream, err);
  }
  const local = await stream.finish();
  progress.done();
  const expected = wp.payloadSha256 ?? local.sha256;
  const streamSha = result["stream-sha256"];
  const streamBytes = Number(result["stream-bytes"]);
  if (!expected || streamSha !== expected) {
    throw new UploadError(
      "verification_failed",
      `The rescue system received data hashing to ${streamSha ?? "(nothing)"}, but the image hashes to ${expected ?? "(unknown)"}`,
    );
  }
  if (wp.remoteFormat === "qcow2") {
    const raw = result["raw-sha256"];
    const rawBytes = Number(result["raw-bytes"]);
    if (!raw || !/^[0-9a-f]{64}$/.test(raw))
      throw new UploadError("verification_failed", "no raw hash after conversion");
    return {
      sha256: raw,
      rawSize: rawBytes,
      transfer: `${stream.description}, converted in the rescue system`,
    };
  }
  return { sha256: streamSha, rawSize: streamBytes, transfer: stream.description };
}

async function writeFromUrl(ctx: UploadContext, conn: SshConnection, wp: WritePlan): Promise<WriteOutcome> {
  const url = wp.url as string;
  const limits: DownloadLimits = { ...DEFAULT_DOWNLOAD_LIMITS, ...ctx.opts.download };
  const maxSeconds = downloadDeadlineSeconds(limits, wp.downloadBytes);
  const script = writeScript({
    input: { kind: "url", url, limits, ...(maxSeconds !== undefined ? { maxSeconds } : {}) },
    compression: wp.compression,
    format: wp.remoteFormat,
    ...(wp.expectedBytes !== undefined ? { expectedBytes: wp.expectedBytes } : {}),
    ...(wp.virtualSize !== undefined ? { virtualSize: wp.virtualSize } : {}),
  });
  // Progress: the rescue system downloads, so poll what its curl has read (/proc/PID/io) on a second channel.
  const stopPolling = new AbortController();
  const pollSignal = AbortSignal.any([stopPolling.signal, ctx.signal]);
  const polling = (async () => {
    for (let i = 0; i < 1_000_000 && !pollSignal.aborted; i++) {
      await pause(PROGRESS_POLL_MS, pollSignal);
      if (pollSignal.aborted) break;
      try {
        const r = await ctx.runScript(conn, downloadProgressScript(), "reading download progress", {
          signal: pollSignal,
        });
        const n = Number(r["rchar"]);
        if (Number.isFinite(n) && n > 0) ctx.steps.data("write", n, 0, wp.downloadBytes);
      } catch {
        // Progress is best effort.
      }
    }
  })();
  const curl = new CurlFailure();
  let result: Record<string, string>;
  try {
    result = await ctx.runScript(conn, script, "downloading and writing the image", {
      signal: ctx.signal,
      exitCodes: { [EXIT_NO_ROOM]: "rescue_space", [EXIT_UNSAFE_QCOW2]: "unsafe_image" },
      onStderr: (chunk) => curl.read(chunk),
    });
  } catch (err) {
    throw curl.explain(url, limits, maxSeconds, wp.downloadBytes) ?? err;
  } finally {
    stopPolling.abort();
    await polling;
  }
  const streamSha = result["stream-sha256"];
  const streamBytes = Number(result["stream-bytes"]);
  if (!streamSha || !/^[0-9a-f]{64}$/.test(streamSha) || !Number.isFinite(streamBytes) || streamBytes <= 0) {
    throw new UploadError("verification_failed", "The rescue system did not report what it downloaded");
  }
  if (wp.remoteFormat === "qcow2") {
    const raw = result["raw-sha256"];
    if (!raw || !/^[0-9a-f]{64}$/.test(raw))
      throw new UploadError("verification_failed", "no raw hash after conversion");
    return {
      sha256: raw,
      rawSize: Number(result["raw-bytes"]),
      transfer: "downloaded by the rescue system, converted there",
    };
  }
  return { sha256: streamSha, rawSize: streamBytes, transfer: "downloaded by the rescue system" };
}

/** Reads the download stage's stderr: curl's own message and the exit status it reported, if it failed. */
class CurlFailure {
  private text = "";
  read(chunk: Buffer): void {
    // Only the last few KiB matter (curl's message and the mark come at the end).
    this.text = (this.text + chunk.toString("utf8")).slice(-8192);
  }

  /** A download_stalled error when curl gave up on a stalled or too slow download (exit 28), else undefined. */
  explain(
    url: string,
    limits: DownloadLimits,
    maxSeconds: number | undefined,
    announced: number | undefined,
  ): UploadError | undefined {
    const exit = new RegExp(`${DOWNLOAD_FAILED_MARK} curl-exit=(\\d+)`).exec(this.text)?.[1];
    if (exit !== "28") return undefined;
    const said = /curl: \(28\)[^\n]*/.exec(this.text)?.[0] ?? "curl: (28)";
    const kib = (n: number) => `${(n / 1024).toFixed(1)} KiB/s`;
    const after =
      "nothing was snapshotted; check the server that hosts the image, or download it yourself and upload it with --image-path";
    if (/too slow/i.test(said)) {
      return new UploadError(
        "download_stalled",
        `The rescue system's download of ${url} stalled: less than ${kib(limits.lowSpeedBytesPerSecond)} for ${limits.lowSpeedSeconds} s (${said}); ${after}`,
      );
    }
    if (maxSeconds !== undefined && /timed out after/i.test(said)) {
      return new UploadError(
        "download_stalled",
        `The rescue system's download of ${url} was not finished within ${maxSeconds} s, the time allowed for ${announced ?? "?"} bytes (${limits.deadlineBaseSeconds} s plus ${kib(limits.deadlineBytesPerSecond)}) (${said}); ${after}`,
      );
    }
    return new UploadError(
      "url_unavailable",
      `The rescue system could not connect to ${url} in time (${said}); nothing was snapshotted`,
    );
  }
}

/** How often the download progress of the rescue system is read. */
const PROGRESS_POLL_MS = 1000;

/** Start reading (and compressing) a write plan's file; the read-ahead fills while the server boots. */
export function startStream(ctx: UploadContext, wp: WritePlan & { path: string }): LocalStream {
  return startLocalStream({
    path: wp.path,
    fileCompression: wp.compression,
    codec: wp.codec,
    hash: wp.payloadSha256 === undefined,
    extents: wp.remoteFormat === "raw",
    readAheadBytes: ctx.opts.readAheadBytes ?? DEFAULT_READ_AHEAD_BYTES,
    ...(ctx.opts.tools ? { tools: ctx.opts.tools } : {}),
  });
}
