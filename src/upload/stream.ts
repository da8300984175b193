/**
 * The local side of the data phase: read the image file, hash what the server will reconstruct (unless the hash is
 * already known), compress on the fly when the file is not already compressed, and keep a bounded read-ahead so
 * compression can run while the temporary server still boots.
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream, type ReadStream } from "node:fs";
import { PassThrough, Transform, type Readable, type TransformCallback } from "node:stream";
import { startCompressor, type CodecSpec, type Compressor, type SwitchableCompressor } from "./compress.js";
import { UploadError } from "./errors.js";
import { EXTENT_BLOCK, ExtentFramer, type ExtentStats } from "./extents.js";
import { spawnStage, type SpawnedStage } from "./proc.js";
import type { Compression } from "./formats.js";
import { localDecompressor } from "./tools.js";
import type { LocalTools } from "./tools.js";

export interface LocalStreamSpec {
  path: string;
  /** How the file is stored: "none" = compress with `codec`; otherwise sent as is. */
  fileCompression: Compression;
  codec: CodecSpec;
  /** Compute the sha256 (and size) of the payload (the decompressed bytes) while streaming. */
  hash: boolean;
  /**
   * Send an uncompressed raw file as an extent stream (extents.ts: its non-zero runs with their offsets) instead of
   * every byte; the rescue system then writes it with extentWriteScript. Ignored for compressed files.
   */
  extents?: boolean;
  /** Frame the raw file with this instead (an incremental write's DeltaFramer); implies extents. */
  framer?: StreamFramer;
  /** Compressed bytes buffered ahead of the SSH channel (default DEFAULT_READ_AHEAD_BYTES). */
  readAheadBytes?: number;
  tools?: LocalTools;
}

/** Turns raw image bytes into an extent stream, counting what it carried. */
export type StreamFramer = Transform & { readonly stats: ExtentStats };

export interface LocalStream {
  /** What goes to the SSH command's stdin. */
  readonly output: Readable;
  /** Compression of `output` (what the rescue system must undo). */
  readonly wireCompression: Compression;
  /** e.g. "zstd -3 -T0" or "sent as is (xz)" (a getter: it names every level used so far). */
  readonly description: string;
  /** The compressor when its level can be changed mid-stream (zstd), else undefined. */
  readonly switchable: SwitchableCompressor | undefined;
  /** "extents": an extent stream (see extents.ts); "image": the image's bytes, all of them. */
  readonly framing: "extents" | "image";
  /** What the extent stream carried so far (framing "extents"). */
  extentStats(): ExtentStats | undefined;
  /** Bytes read from the file so far. */
  bytesRead(): number;
  /** Wait for every local stage to finish; the payload hash/size when `hash` was asked. Throws on local failures. */
  finish(): Promise<{ sha256?: string; payloadBytes?: number }>;
  /** Stop everything (idempotent). */
  destroy(): void;
}

/**
 * Compressed bytes kept ready ahead of the SSH channel while the server is created and boots. A stream can hold up to
 * about twice its high-water mark, and the benchmark measured 64 MiB taking the client past 300 MB on a 100 Mbit/s
 * link; 24 MiB is still several seconds of data at that rate.
 */
export const DEFAULT_READ_AHEAD_BYTES = 24 * 1024 * 1024;

/** Counts (and optionally hashes) the bytes passing through. */
class Tap extends Transform {
  count = 0;
  constructor(
    private readonly hash: Hash | undefined,
    private readonly onChunk?: (chunk: Buffer, done: (err?: Error | null) => void) => void,
  ) {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.count += chunk.length;
    this.hash?.update(chunk);
    if (this.onChunk) {
      this.onChunk(chunk, (err) => (err ? cb(err) : cb(null, chunk)));
    } else cb(null, chunk);
  }
}

export function startLocalStream(spec: LocalStreamSpec): LocalStream {
  const readAhead = spec.readAheadBytes ?? DEFAULT_READ_AHEAD_BYTES;
  const framer: StreamFramer | undefined =
    spec.fileCompression !== "none"
      ? undefined
      : (spec.framer ?? (spec.extents ? new ExtentFramer() : undefined));
  // Whole blocks per read when framing, so the framer never copies.
  const file: ReadStream = createReadStream(spec.path, { highWaterMark: framer ? EXTENT_BLOCK : 1 << 20 });
  const buffer = new PassThrough({ highWaterMark: Math.max(1 << 20, readAhead) });
  let compressor: Compressor | SwitchableCompressor | undefined;
  let hashStage: SpawnedStage | undefined;
  let payloadHash: Hash | undefined;
  let payloadBytes = 0;
  let hashDone: Promise<void> = Promise.resolve();
  let tap: Tap;
  let wireCompression: Compression;
  let description: string;
  const failures: Error[] = [];
  let destroyed = false;
  const fail = (err: Error) => {
    // After a deliberate stop, stages dying from it are not failures.
    if (destroyed) return;
    failures.push(err);
    // Destroying the output with the error makes the SSH side fail at once instead of waiting for more input.
    buffer.destroy(err);
    destroy();
  };

  if (spec.fileCompression === "none") {
    payloadHash = spec.hash ? createHash("sha256") : undefined;
    tap = new Tap(payloadHash);
    compressor = startCompressor(spec.codec, spec.tools);
    wireCompression = spec.codec.codec === "zstd" ? "zstd" : spec.codec.codec === "gzip" ? "gz" : "none";
    description = compressor.description;
    if (framer)
      file
        .pipe(tap)
        .pipe(framer)
        .pipe(compressor.input as NodeJS.WritableStream);
    else file.pipe(tap).pipe(compressor.input as NodeJS.WritableStream);
    compressor.output.pipe(buffer);
    compressor.done.catch((err: Error) =>
      fail(new UploadError("tool_failed", `Local compression failed: ${err.message}`)),
    );
  } else {
    wireCompression = spec.fileCompression;
    description = `sent as is (${spec.fileCompression})`;
    if (spec.hash) {
      // Decompress locally in the same pass, only to hash what the server will write.
      const { file: prog, args } = localDecompressor(spec.fileCompression, spec.tools);
      const stage = spawnStage(prog, args, `${prog} ${args.join(" ")}`);
      hashStage = stage;
      payloadHash = createHash("sha256");
      const h = payloadHash;
      stage.child.stdout.on("data", (c: Buffer) => {
        h.update(c);
        payloadBytes += c.length;
      });
      hashDone = stage.done.catch((err: Error) => {
        const e = new UploadError(
          "corrupt_source",
          `${spec.path}: the ${spec.fileCompression} data is truncated or corrupt: ${err.message}`,
        );
        if (!destroyed) fail(e);
        throw e;
      });
      hashDone.catch(() => {});
      tap = new Tap(undefined, (chunk, done) => {
        if (stage.child.stdin.write(chunk)) done();
        else stage.child.stdin.once("drain", () => done());
      });
      tap.on("end", () => stage.child.stdin.end());
    } else {
      tap = new Tap(undefined);
    }
    file.pipe(tap).pipe(buffer);
  }
  file.on("error", (err) =>
    fail(new UploadError("source_unreadable", `Reading ${spec.path} failed: ${err.message}`)),
  );

  function destroy() {
    if (destroyed) return;
    destroyed = true;
    file.destroy();
    tap.destroy();
    framer?.destroy();
    compressor?.kill();
    hashStage?.kill();
    buffer.destroy();
  }

  return {
    output: buffer,
    wireCompression,
    get description() {
      return compressor ? compressor.description : description;
    },
    switchable: compressor && "setLevel" in compressor ? compressor : undefined,
    framing: framer ? "extents" : "image",
    extentStats: () => framer?.stats,
    bytesRead: () => tap.count,
    async finish() {
      await compressor?.done.catch(() => undefined);
      if (hashStage) await hashDone;
      if (failures[0]) throw failures[0];
      if (compressor) await compressor.done;
      if (!payloadHash) return {};
      return {
        sha256: payloadHash.digest("hex"),
        payloadBytes: spec.fileCompression === "none" ? tap.count : payloadBytes,
      };
    },
    destroy,
  };
}
