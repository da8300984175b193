/**
 * On-the-fly compression of a raw image for the wire. zstd (the binary, multi-threaded) is the default: Node 20's
 * zlib has no zstd, and the binary with -T0 is far faster than in-process gzip. gzip is the fallback (pigz when
 * present, else node:zlib). The codec is a parameter so benchmarks can compare.
 */
import { createGzip } from "node:zlib";
import { PassThrough, Writable, type Readable } from "node:stream";
import { UploadError } from "./errors.js";
import { wantsFlush } from "./extents.js";
import { levelArgs, levelName } from "./level.js";
import { spawnStage, type SpawnedStage } from "./proc.js";
import { tool, type LocalTools } from "./tools.js";

export type Codec = "zstd" | "gzip" | "none";
export const CODECS: readonly Codec[] = ["zstd", "gzip", "none"];

export interface CodecSpec {
  codec: Codec;
  /** Compression level (zstd 1..19, gzip 1..9); default zstd 3, gzip 1. */
  level?: number;
  /** zstd threads (0 = one per core, the default). */
  threads?: number;
}

/** The codec used when none is asked for: zstd when its binary is present, else gzip. */
export function defaultCodec(tools?: LocalTools): Codec {
  return tool(tools, "zstd") ? "zstd" : "gzip";
}

export interface Compressor {
  /** Write the raw image here. */
  input: NodeJS.WritableStream;
  /** The compressed stream. */
  output: Readable;
  /** Resolves when compression finished successfully. */
  done: Promise<void>;
  /** Stop at once (idempotent). */
  kill(): void;
  /** A human description, e.g. "zstd -3 -T0" (it may change while a SwitchableCompressor switches levels). */
  readonly description: string;
}

/** A compressor whose level can change mid-stream (zstd: a new frame at the new level; `zstd -d` reads them all). */
export interface SwitchableCompressor extends Compressor {
  /** Compress what comes from now on at `level` (the input so far keeps its level). */
  setLevel(level: number): void;
  readonly level: number;
  /** Every level used, in order. */
  readonly levels: readonly number[];
}

/**
 * zstd, one process per level in turn: input goes to the current process; after setLevel, the next input first ends
 * that process (its frame completes and its output drains) and starts one at the new level. A process starts only
 * when input arrives, so setLevel before any input costs nothing. A chunk with the FLUSH mark (extents.ts) ends the
 * current frame after it, so what was written so far goes out without waiting for more input.
 */
export function startSwitchableZstd(zstd: string, level: number, threads = 0): SwitchableCompressor {
  const output = new PassThrough({ highWaterMark: 1 << 20 });
  const args = (l: number) => [...levelArgs(l), `-T${threads}`, "-c", "-q"];
  let wanted = level;
  let current: { stage: SpawnedStage; level: number; drained: Promise<void> } | undefined;
  const stages: SpawnedStage[] = [];
  const levels: number[] = [];
  let failed: Error | undefined;
  let resolveDone: () => void = () => undefined;
  let rejectDone: (e: Error) => void = () => undefined;
  const done = new Promise<void>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  done.catch(() => {});
  const fail = (err: Error) => {
    if (failed) return;
    failed = err;
    for (const s of stages) s.kill();
    output.destroy(err);
    rejectDone(err);
  };
  const start = () => {
    const stage = spawnStage(zstd, args(wanted), `zstd ${args(wanted).join(" ")}`);
    stages.push(stage);
    if (levels[levels.length - 1] !== wanted) levels.push(wanted);
    stage.done.catch((e: Error) => fail(e));
    stage.child.stdout.pipe(output, { end: false });
    const drained = new Promise<void>((resolve) => stage.child.stdout.once("end", resolve));
    current = { stage, level: wanted, drained };
  };
  /** End the current process and wait until all it wrote is in `output`. */
  const finishCurrent = async () => {
    if (!current) return;
    const c = current;
    current = undefined;
    c.stage.child.stdin.end();
    await Promise.all([c.drained, c.stage.done]);
  };
  const input = new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _enc, cb) {
      void (async () => {
        if (current && current.level !== wanted) await finishCurrent();
        if (!current) start();
        const stdin = current!.stage.child.stdin;
        if (!stdin.write(chunk)) await new Promise((resolve) => stdin.once("drain", resolve));
        // End the frame here (extents.ts marks the chunks that should go out at once).
        if (wantsFlush(chunk)) await finishCurrent();
        cb();
      })().catch((e: Error) => {
        fail(e);
        cb(e);
      });
    },
    final(cb) {
      void (async () => {
        if (!current && levels.length === 0) start(); // an empty input still makes a (valid, empty) frame
        await finishCurrent();
        output.end();
        resolveDone();
        cb();
      })().catch((e: Error) => {
        fail(e);
        cb(e);
      });
    },
  });
  return {
    input,
    output,
    done,
    kill: () => {
      for (const s of stages) s.kill();
      input.destroy();
      output.destroy();
    },
    get description() {
      // `levels` lists each change of level (a flush restarts zstd at the same level: not a change).
      return `zstd ${(levels.length > 0 ? levels : [wanted]).map(levelName).join(" then ")} -T${threads}`;
    },
    setLevel(l: number) {
      if (!Number.isInteger(l) || l === 0 || l < -7 || l > 22) throw new Error(`zstd level ${l}`);
      wanted = l;
    },
    get level() {
      return wanted;
    },
    get levels() {
      return levels;
    },
  };
}

/** The zstd level used until one is chosen (and when none can be: no sample, no probe). */
export const DEFAULT_ZSTD_LEVEL = 3;

/** Start a compressor for `spec` (zstd: switchable; its level is chosen later when `spec.level` is not given). */
export function startCompressor(spec: CodecSpec, tools?: LocalTools): Compressor | SwitchableCompressor {
  switch (spec.codec) {
    case "zstd": {
      const zstd = tool(tools, "zstd");
      if (!zstd)
        throw new UploadError("tool_failed", "zstd is not installed; use --codec gzip or install zstd");
      return startSwitchableZstd(zstd, spec.level ?? DEFAULT_ZSTD_LEVEL, spec.threads ?? 0);
    }
    case "gzip": {
      const level = spec.level ?? 1;
      const pigz = tool(tools, "pigz");
      if (pigz) {
        const args = [`-${level}`, "-c"];
        if (spec.threads) args.push("-p", String(spec.threads));
        const stage = spawnStage(pigz, args, `pigz ${args.join(" ")}`);
        return {
          input: stage.child.stdin,
          output: stage.child.stdout,
          done: stage.done,
          kill: () => stage.kill(),
          description: `pigz -${level}`,
        };
      }
      const gz = createGzip({ level, chunkSize: 1 << 20 });
      const done = new Promise<void>((resolve, reject) => {
        gz.on("end", resolve);
        gz.on("error", reject);
      });
      done.catch(() => {});
      return {
        input: gz,
        output: gz,
        done,
        kill: () => gz.destroy(),
        description: `gzip -${level} (node:zlib)`,
      };
    }
    case "none": {
      // An identity stage so the plumbing is the same.
      const pt = new PassThrough({ highWaterMark: 1 << 20 });
      const done = new Promise<void>((resolve, reject) => {
        pt.on("end", resolve);
        pt.on("error", reject);
      });
      done.catch(() => {});
      return { input: pt, output: pt, done, kill: () => pt.destroy(), description: "none" };
    }
  }
}

/** The compression the rescue system must undo for data compressed with `codec`. */
export function codecCompression(codec: Codec): "zstd" | "gz" | "none" {
  return codec === "zstd" ? "zstd" : codec === "gzip" ? "gz" : "none";
}
