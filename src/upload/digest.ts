/** The sha256 and raw size of a local image file's content (decompressed locally when compressed). */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { UploadError, abortError, throwIfAborted } from "./errors.js";
import { spawnStage } from "./proc.js";
import type { Compression } from "./formats.js";
import { localDecompressor, type LocalTools } from "./tools.js";

export interface Digest {
  /** sha256 (hex) of the raw image. */
  sha256: string;
  /** Size of the raw image in bytes. */
  rawSize: number;
  /** Bytes read from the file. */
  bytesRead: number;
}

export interface DigestOptions {
  tools?: LocalTools;
  signal?: AbortSignal;
  /** Called as bytes are read from the file (cumulative). */
  onProgress?: (bytesRead: number) => void;
}

/**
 * Hash the raw content of a local file: read it (decompressing when compressed, locally), so corrupt or truncated
 * compressed data is found here, before anything is created. qcow2 must have been converted first.
 */
export async function digestFile(
  path: string,
  compression: Compression,
  where: string,
  opts: DigestOptions = {},
): Promise<Digest> {
  throwIfAborted(opts.signal, "upload");
  const hash = createHash("sha256");
  let bytesRead = 0;
  let rawSize = 0;
  const file = createReadStream(path, { highWaterMark: 1 << 20 });
  const onAbort = () => file.destroy(abortError(opts.signal, "upload"));
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    if (compression === "none") {
      for await (const chunk of file as AsyncIterable<Buffer>) {
        hash.update(chunk);
        bytesRead += chunk.length;
        rawSize += chunk.length;
        opts.onProgress?.(bytesRead);
      }
    } else {
      const { file: prog, args } = localDecompressor(compression, opts.tools);
      const stage = spawnStage(prog, args, `${prog} ${args.join(" ")}`);
      file.on("data", (c: Buffer | string) => {
        bytesRead += c.length;
        opts.onProgress?.(bytesRead);
      });
      file.on("error", () => stage.kill());
      file.pipe(stage.child.stdin);
      const onAbortStage = () => stage.kill();
      opts.signal?.addEventListener("abort", onAbortStage, { once: true });
      try {
        for await (const chunk of stage.child.stdout as AsyncIterable<Buffer>) {
          hash.update(chunk);
          rawSize += chunk.length;
        }
        await stage.done;
      } catch (err) {
        stage.kill();
        throwIfAborted(opts.signal, "upload");
        const msg = err instanceof Error ? err.message : String(err);
        throw new UploadError(
          "corrupt_source",
          `${where}: the ${compression} data is truncated or corrupt (found while decompressing it locally, before creating anything):\n${msg}`,
        );
      } finally {
        opts.signal?.removeEventListener("abort", onAbortStage);
      }
      if (rawSize === 0) throw new UploadError("source_unreadable", `${where} is empty once decompressed`);
    }
  } catch (err) {
    if (err instanceof UploadError) throw err;
    throwIfAborted(opts.signal, "upload");
    throw new UploadError("source_unreadable", `${where} could not be read: ${(err as Error).message}`);
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
    file.destroy();
  }
  return { sha256: hash.digest("hex"), rawSize, bytesRead };
}
