/**
 * The extent stream: a raw image as the runs of its blocks that are not all zeros, each with its place on the disk.
 * The rescue system writes each run where it belongs and never sees the zero blocks at all (the disk was discarded
 * first, and the read-back proves those blocks read as zeros), so its work is proportional to the image's data, not
 * to its size.
 *
 * Format (what `extentWriteScript` in rescue.ts reads with bash and dd):
 *
 *   D <offset> <length>\n  followed by <length> bytes of the image from <offset>   (any number of these, in order)
 *   Z <offset> <length>\n  <length> bytes of zeros from <offset>                   (a long zero run, see below)
 *   E <total>\n                                                                    (once, last: the image's size)
 *
 * Offsets are multiples of EXTENT_BLOCK; a run holds at most MAX_EXTENT_BYTES; the last run may end in a partial
 * block (the image's tail). Zeros between runs need no frame; a zero run is announced with Z every ZERO_ANNOUNCE_BYTES
 * so the rescue system can zero and hash it while this side still reads it (else a long zero tail would all wait for
 * the end mark). A Z header carries the FLUSH mark: the compressor ends its frame there, so it is sent at once.
 */
import { Transform, type TransformCallback } from "node:stream";

/** Zero detection granularity (the rescue side's dd block size too). */
export const EXTENT_BLOCK = 4 * 1024 * 1024;
/** Largest run in one frame: what the client holds before sending a header, and one dd in the rescue system. */
export const MAX_EXTENT_BYTES = 4 * EXTENT_BLOCK;
/** A zero run is announced (Z) once it is this long, and again every time it grows by as much. */
export const ZERO_ANNOUNCE_BYTES = 64 * EXTENT_BLOCK;

/** On a chunk of the extent stream: a compressor should end its frame after it (so it goes out now). */
export const FLUSH: unique symbol = Symbol("hetznix.extents.flush");

/** Whether `chunk` carries the FLUSH mark. */
export function wantsFlush(chunk: unknown): boolean {
  return typeof chunk === "object" && chunk !== null && FLUSH in chunk;
}

const ZERO = Buffer.alloc(EXTENT_BLOCK);

export function isZero(block: Buffer): boolean {
  return block.length === ZERO.length ? block.equals(ZERO) : block.equals(ZERO.subarray(0, block.length));
}

export function dataHeader(offset: number, length: number): Buffer {
  return Buffer.from(`D ${offset} ${length}\n`, "latin1");
}

export function zeroHeader(offset: number, length: number): Buffer {
  const b = Buffer.from(`Z ${offset} ${length}\n`, "latin1");
  Object.defineProperty(b, FLUSH, { value: true });
  return b;
}

export function endHeader(total: number): Buffer {
  return Buffer.from(`E ${total}\n`, "latin1");
}

/** What a framed stream carried: data runs, bytes in them, and the image's size. */
export interface ExtentStats {
  extents: number;
  dataBytes: number;
  totalBytes: number;
}

/** Raw image bytes in (any chunking), the extent stream out. Holds at most MAX_EXTENT_BYTES + one block. */
export class ExtentFramer extends Transform {
  private offset = 0;
  /** The block being filled (when input chunks are not whole blocks). */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  /** Non-zero blocks not yet sent, starting at runStart. */
  private run: Buffer[] = [];
  private runBytes = 0;
  private runStart = 0;
  /** Where the zeros not yet announced start. */
  private zeroStart = 0;
  readonly stats: ExtentStats = { extents: 0, dataBytes: 0, totalBytes: 0 };

  constructor() {
    super({ readableHighWaterMark: MAX_EXTENT_BYTES, writableHighWaterMark: EXTENT_BLOCK });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    let c = chunk;
    // Fast path: whole blocks arriving as they are (a file read with EXTENT_BLOCK-sized reads), nothing pending.
    while (c.length > 0) {
      if (this.partialBytes === 0 && c.length >= EXTENT_BLOCK) {
        this.block(c.subarray(0, EXTENT_BLOCK));
        c = c.subarray(EXTENT_BLOCK);
        continue;
      }
      const take = Math.min(EXTENT_BLOCK - this.partialBytes, c.length);
      this.partial.push(c.subarray(0, take));
      this.partialBytes += take;
      c = c.subarray(take);
      if (this.partialBytes === EXTENT_BLOCK) this.flushPartial();
    }
    cb();
  }

  override _flush(cb: TransformCallback): void {
    if (this.partialBytes > 0) this.flushPartial();
    this.sendRun();
    this.stats.totalBytes = this.offset;
    this.push(endHeader(this.offset));
    cb();
  }

  private flushPartial(): void {
    const b = this.partial.length === 1 ? this.partial[0]! : Buffer.concat(this.partial, this.partialBytes);
    this.partial = [];
    this.partialBytes = 0;
    this.block(b);
  }

  private block(b: Buffer): void {
    if (isZero(b)) {
      this.sendRun();
      const end = this.offset + b.length;
      if (end - this.zeroStart >= ZERO_ANNOUNCE_BYTES) {
        this.push(zeroHeader(this.zeroStart, end - this.zeroStart));
        this.zeroStart = end;
      }
    } else {
      if (this.runBytes === 0) this.runStart = this.offset;
      this.run.push(b);
      this.runBytes += b.length;
      if (this.runBytes >= MAX_EXTENT_BYTES) this.sendRun();
    }
    this.offset += b.length;
  }

  private sendRun(): void {
    if (this.runBytes === 0) return;
    this.push(dataHeader(this.runStart, this.runBytes));
    for (const b of this.run) this.push(b);
    this.stats.extents++;
    this.stats.dataBytes += this.runBytes;
    this.zeroStart = this.runStart + this.runBytes;
    this.run = [];
    this.runBytes = 0;
  }
}

/** Parse an extent stream back into the image it describes (tests; the rescue system does this with bash). */
export function decodeExtents(stream: Buffer, zeroFill = 0): Buffer {
  let pos = 0;
  const pieces: { offset: number; data: Buffer }[] = [];
  for (let i = 0; i < 1_000_000; i++) {
    const nl = stream.indexOf(0x0a, pos);
    if (nl < 0) throw new Error("extent stream ends without its end mark");
    const [tag, a, b] = stream.subarray(pos, nl).toString("latin1").split(" ");
    pos = nl + 1;
    if (tag === "E") {
      if (pos !== stream.length) throw new Error("data after the end mark");
      const out = Buffer.alloc(Number(a), zeroFill);
      for (const p of pieces) p.data.copy(out, p.offset);
      return out;
    }
    if (tag === "Z") continue;
    if (tag !== "D") throw new Error(`bad frame tag ${tag}`);
    const len = Number(b);
    pieces.push({ offset: Number(a), data: stream.subarray(pos, pos + len) });
    pos += len;
  }
  throw new Error("too many frames");
}
