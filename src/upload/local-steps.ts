/**
 * The steps on this machine shared by upload and write-to-disk: inspecting the source, converting a qcow2 here,
 * planning what the data phase sends, and starting the local stream (read-ahead while the server boots).
 */
import { defaultCodec } from "./compress.js";
import { convertQcow2ToRaw } from "./convert.js";
import {
  openFileSource,
  openUrlSource,
  type Compression,
  type FileSource,
  type ImageFormat,
  type ImageSource,
} from "./source.js";
import { tool } from "./tools.js";
import type { UploadContext, ImageInput } from "./context.js";
import type { WritePlan } from "./writers.js";

/** Step "inspect": open the file or URL and sniff its compression and format. */
export function inspectSource(
  ctx: UploadContext,
  input: ImageInput,
  storeDir?: string,
): Promise<ImageSource> {
  const { compression, format, tools } = ctx.opts;
  const srcOpts = {
    ...(compression ? { compression } : {}),
    ...(format ? { format } : {}),
    ...(tools ? { tools } : {}),
    ...(storeDir ? { storeDir } : {}),
    signal: ctx.signal,
  };
  return ctx.steps.run<ImageSource>(
    "inspect",
    () => ("path" in input ? openFileSource(input.path, srcOpts) : openUrlSource(input.url, srcOpts)),
    (s) =>
      `${s.format}${s.compression !== "none" ? `, ${s.compression}-compressed` : ""}, ${s.kind === "file" ? `${s.fileSize} bytes` : s.contentLength !== undefined ? `${s.contentLength} bytes` : "size unknown"}`,
  );
}

/**
 * Step "convert": a qcow2 file to a raw file on this machine with qemu-img, registered for removal. Returns the raw
 * file, or undefined when qemu-img is not installed here (the rescue system converts it then).
 */
export async function convertLocally(ctx: UploadContext, src: FileSource): Promise<string | undefined> {
  const qemuImg = tool(ctx.opts.tools, "qemuImg");
  if (!qemuImg) return undefined;
  const converted = await ctx.steps.run(
    "convert",
    () =>
      convertQcow2ToRaw(qemuImg, src.realPath, {
        ...(ctx.opts.tmpDir ? { dir: ctx.opts.tmpDir } : {}),
        signal: ctx.signal,
        virtualSize: src.qcow2VirtualSize ?? 0,
      }),
    `qcow2 -> raw with qemu-img (${src.qcow2VirtualSize} bytes)`,
  );
  ctx.registry.add({
    kind: "file",
    name: "the raw image converted from qcow2 (a file without a name)",
    removeHint: "nothing: the system frees it when hetznix exits",
    remove: () => converted.remove(),
  });
  return converted.rawPath;
}

/** Bytes of a disk sector: every disk, so every disk image, is a whole number of them. */
export const SECTOR_BYTES = 512;

/**
 * Warns (once per run) when the raw image is not a whole number of 512-byte sectors: it is then most likely not a
 * disk image at all (a wrong file, a truncated download). It is written as it is.
 */
export function noteOddSize(ctx: UploadContext, rawSize: number | undefined): void {
  if (rawSize === undefined || rawSize % SECTOR_BYTES === 0 || ctx.oddSizeNoted) return;
  ctx.oddSizeNoted = true;
  ctx.steps.note(
    `the image is ${rawSize} byte${rawSize === 1 ? "" : "s"}, not a whole number of 512-byte sectors as disk images are: it is probably not a disk image (it is written as it is; the rest of the disk reads as zeros)`,
  );
}

/** The image as this machine sends it (after a local conversion or hash pass, if any). */
export interface LocalImage {
  /** The file to stream (converted raw for a qcow2 converted here); none for a URL. */
  path?: string;
  /** Compression of that file (or of the URL's bytes). */
  compression: Compression;
  /** raw: written directly; qcow2: converted in the rescue system. */
  remoteFormat: ImageFormat;
  /** sha256/size of the raw image when hashed before creating anything. */
  sha256?: string;
  rawSize?: number;
}

/** What the data phase sends and what the rescue system checks, for a source and its local form. */
export function planWrite(ctx: UploadContext, src: ImageSource, local: LocalImage): WritePlan {
  const wp: WritePlan = {
    ...(local.path !== undefined ? { path: local.path } : {}),
    ...(src.kind === "url" ? { url: src.url } : {}),
    ...(src.kind === "url" && src.contentLength !== undefined ? { downloadBytes: src.contentLength } : {}),
    compression: local.compression,
    remoteFormat: local.remoteFormat,
    codec: ctx.opts.codec ?? { codec: defaultCodec(ctx.opts.tools) },
    // The raw image's hash is the payload's only when the payload is the raw image (not a qcow2 converted remotely).
    ...(local.sha256 && local.remoteFormat === "raw" ? { payloadSha256: local.sha256 } : {}),
    ...(src.format === "qcow2" ? { virtualSize: src.qcow2VirtualSize } : {}),
  };
  if (local.remoteFormat === "raw" && local.rawSize !== undefined) wp.expectedBytes = local.rawSize;
  if (local.remoteFormat === "qcow2") {
    const qsize = src.kind === "file" ? src.fileSize : src.contentLength;
    if (qsize !== undefined) wp.expectedBytes = qsize;
  }
  if (
    src.kind === "url" &&
    src.compression === "none" &&
    src.contentLength !== undefined &&
    src.format === "raw"
  ) {
    wp.expectedBytes = src.contentLength;
  }
  return wp;
}
