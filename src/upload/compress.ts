/**
 * On-the-fly compression of a raw image for the wire. zstd (the binary, multi-threaded) is the default: Node 20's
 * zlib has no zstd, and the binary with -T0 is far faster than in-process gzip. gzip is the fallback (pigz when
 * present, else node:zlib). The codec is a parameter so benchmarks can compare.
 */
import { createGzip } from "node:zlib";
import { PassThrough, type Readable } from "node:stream";
import { UploadError } from "./errors.js";
import { spawnStage } from "./proc.js";
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
  /** A human description, e.g. "zstd -3 -T0". */
  description: string;
}

/** Start a compressor for `spec`. */
export function startCompressor(spec: CodecSpec, tools?: LocalTools): Compressor {
  switch (spec.codec) {
    case "zstd": {
      const zstd = tool(tools, "zstd");
      if (!zstd)
        throw new UploadError("tool_failed", "zstd is not installed; use --codec gzip or install zstd");
      const level = spec.level ?? 3;
      const args = [`-${level}`, `-T${spec.threads ?? 0}`, "-c", "-q"];
      if (level > 19) args.unshift("--ultra");
      const stage = spawnStage(zstd, args, `zstd ${args.join(" ")}`);
      return {
        input: stage.child.stdin,
        output: stage.child.stdout,
        done: stage.done,
        kill: () => stage.kill(),
        description: `zstd -${level} -T${spec.threads ?? 0}`,
      };
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
