/**
 * The extent stream of an incremental write (see ../extents.ts for the frames): first the copy list (`C <bytes>`),
 * then the image in disk order: `D` runs for the blocks the plan sends, `K` for blocks already in place (kept, or
 * brought there by the copy phase), nothing for zero blocks (the rescue system zeroes the gaps), `E` last. Raw image
 * bytes in (any chunking, read in full: the blocks not sent are skipped here), frames out.
 */
import { Transform, type TransformCallback } from "node:stream";
import { MAX_EXTENT_BYTES, dataHeader, endHeader, type ExtentStats } from "../extents.js";
import { DELTA_BLOCK, type DeltaPlan } from "./plan.js";
import { copyList } from "./script.js";

/** A byte range of the image and what the stream does with it. */
interface Piece {
  kind: "data" | "keep" | "zero";
  offset: number;
  length: number;
}

/** The plan's segments as byte ranges, keep and copy merged (both are in place once the copy phase ran). */
export function piecesOf(plan: DeltaPlan, rawSize: number): Piece[] {
  const out: Piece[] = [];
  const add = (kind: Piece["kind"], offset: number, length: number) => {
    if (length <= 0) return;
    const last = out[out.length - 1];
    if (last && last.kind === kind && last.offset + last.length === offset) last.length += length;
    else out.push({ kind, offset, length });
  };
  for (const s of plan.segments) {
    add(s.kind === "copy" ? "keep" : s.kind, s.start * DELTA_BLOCK, s.count * DELTA_BLOCK);
  }
  // A partial last block is always sent.
  add("data", plan.blocks * DELTA_BLOCK, rawSize - plan.blocks * DELTA_BLOCK);
  return out;
}

export function keepHeader(offset: number, length: number): Buffer {
  return Buffer.from(`K ${offset} ${length}\n`, "latin1");
}

export class DeltaFramer extends Transform {
  private readonly pieces: Piece[];
  private index = 0;
  private offset = 0;
  private run: Buffer[] = [];
  private runBytes = 0;
  private runStart = 0;
  readonly stats: ExtentStats = { extents: 0, dataBytes: 0, totalBytes: 0 };

  constructor(
    plan: DeltaPlan,
    private readonly rawSize: number,
  ) {
    super({ readableHighWaterMark: MAX_EXTENT_BYTES });
    this.pieces = piecesOf(plan, rawSize);
    const list = copyList(plan.copies);
    this.push(Buffer.from(`C ${list.length}\n`, "latin1"));
    if (list.length > 0) this.push(list);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    let c = chunk;
    while (c.length > 0) {
      const piece = this.pieces[this.index];
      if (!piece) {
        cb(
          new Error(`the image is longer than the ${this.rawSize} bytes planned (changed while uploading?)`),
        );
        return;
      }
      const take = Math.min(c.length, piece.offset + piece.length - this.offset);
      if (piece.kind === "data") {
        if (this.runBytes === 0) this.runStart = this.offset;
        this.run.push(c.subarray(0, take));
        this.runBytes += take;
        if (this.runBytes >= MAX_EXTENT_BYTES) this.sendRun();
      }
      this.offset += take;
      c = c.subarray(take);
      if (this.offset === piece.offset + piece.length) {
        if (piece.kind === "data") this.sendRun();
        else if (piece.kind === "keep") this.push(keepHeader(piece.offset, piece.length));
        this.index++;
      }
    }
    cb();
  }

  override _flush(cb: TransformCallback): void {
    if (this.offset !== this.rawSize) {
      cb(
        new Error(
          `the image ended after ${this.offset} of the ${this.rawSize} bytes planned (changed while uploading?)`,
        ),
      );
      return;
    }
    this.sendRun();
    this.stats.totalBytes = this.offset;
    this.push(endHeader(this.offset));
    cb();
  }

  private sendRun(): void {
    if (this.runBytes === 0) return;
    this.push(dataHeader(this.runStart, this.runBytes));
    for (const b of this.run) this.push(b);
    this.stats.extents++;
    this.stats.dataBytes += this.runBytes;
    this.run = [];
    this.runBytes = 0;
  }
}
