/**
 * Step "hash" of an upload (prepare): the local form of a file source (a qcow2 converted here) and its sha256, from
 * the hash cache when the file is unchanged, else by reading it; and remembering a digest for the file afterwards.
 */
import type { HashCache, CachedDigest, FileStamp } from "./hash-cache.js";
import { stampOf } from "./hash-cache.js";
import { digestFile, type FileSource, type ImageFormat } from "./source.js";
import { convertLocally, type LocalImage, type UploadContext } from "./steps.js";
import type { CommonOptions } from "./context.js";

/** The file's stamp when its reading started, so a hash of it can be remembered afterwards. */
export interface Stamped {
  stamp: FileStamp;
  atMs: number;
}

export async function takeStamp(src: FileSource): Promise<Stamped | undefined> {
  const atMs = Date.now();
  return stampOf(src.realPath).then(
    (stamp) => ({ stamp, atMs }),
    () => undefined,
  );
}

/** Remember the raw image's digest for the file (best effort, never fails the upload). */
export async function remember(
  cache: HashCache | undefined,
  src: FileSource,
  stamped: Stamped | undefined,
  digest: CachedDigest,
): Promise<void> {
  if (!cache || !stamped) return;
  await cache.remember(src.realPath, stamped.stamp, stamped.atMs, digest).catch(() => false);
}

export async function prepareFile(
  ctx: UploadContext,
  src: FileSource,
  opts: Pick<CommonOptions, "tools"> & { base?: string },
  hashFirst: boolean,
  known: { remembered?: CachedDigest; cache?: HashCache; stamped?: Stamped } = {},
): Promise<LocalImage> {
  let path = src.realPath;
  let compression = src.compression;
  let remoteFormat: ImageFormat = "raw";
  if (src.format === "qcow2") {
    const converted = await convertLocally(ctx, src);
    if (converted) {
      path = converted;
      compression = "none";
    } else {
      ctx.steps.note(
        "qemu-img is not installed here: the qcow2 image is converted in the rescue system (its RAM disk limits the size)",
      );
      remoteFormat = "qcow2";
      ctx.steps.skip("convert", "in the rescue system");
    }
  }
  if (known.remembered) {
    const r = known.remembered;
    ctx.steps.skip(
      "hash",
      `remembered: sha256 ${r.sha256.slice(0, 16)}... of ${r.rawSize} bytes (hash cache)`,
    );
    return { path, compression, remoteFormat, sha256: r.sha256, rawSize: r.rawSize };
  }
  if (!hashFirst || remoteFormat === "qcow2") {
    const later = opts.base !== undefined ? "hashed with its blocks (--base)" : "hashed while streaming";
    ctx.steps.skip("hash", hashFirst ? "qcow2 converted remotely: hashed there" : later);
    return {
      path,
      compression,
      remoteFormat,
      ...(src.rawSize !== undefined && remoteFormat === "raw" ? { rawSize: src.rawSize } : {}),
    };
  }
  const total =
    compression === "none" ? (src.format === "qcow2" ? src.qcow2VirtualSize : src.fileSize) : src.fileSize;
  const digest = await ctx.steps.run(
    "hash",
    () =>
      digestFile(path, compression, src.path, {
        signal: ctx.signal,
        ...(opts.tools ? { tools: opts.tools } : {}),
        onProgress: (n) => ctx.steps.data("hash", n, 0, total),
      }),
    (d) => `sha256 ${d.sha256.slice(0, 16)}... of ${d.rawSize} bytes`,
  );
  ctx.bytesHashed = digest.bytesRead;
  await remember(known.cache, src, known.stamped, digest);
  return { path, compression, remoteFormat, sha256: digest.sha256, rawSize: digest.rawSize };
}
