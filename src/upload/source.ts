/**
 * Image sources: a local file or a URL. Opening one checks it is usable, sniffs its compression and format from magic
 * bytes (never from the name), learns the sizes it can, and finds an identity (content hash or Nix store path).
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, realpath, stat } from "node:fs/promises";
import { posix } from "node:path";
import { UploadError, throwIfAborted, abortError } from "./errors.js";
import { runCapture, spawnStage } from "./proc.js";
import { tool, type LocalTools } from "./tools.js";

export type Compression = "none" | "gz" | "bz2" | "xz" | "zstd";
export type ImageFormat = "raw" | "qcow2";
export const COMPRESSIONS: readonly Compression[] = ["none", "gz", "bz2", "xz", "zstd"];
export const FORMATS: readonly ImageFormat[] = ["raw", "qcow2"];

/** How many leading bytes the sniffer looks at. */
export const SNIFF_BYTES = 65536;

export interface Sniffed {
  compression: Compression;
  /** Only meaningful when compression is "none" (or for the decompressed head). */
  format: ImageFormat;
  /** Set when the bytes are a known format hetznix does not take (zip, vmdk, ...). */
  unsupported?: string;
}

const COMPRESSION_MAGIC: [Compression, number[]][] = [
  ["gz", [0x1f, 0x8b]],
  ["bz2", [0x42, 0x5a, 0x68]], // "BZh"
  ["xz", [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ["zstd", [0x28, 0xb5, 0x2f, 0xfd]],
];

const QCOW2_MAGIC = [0x51, 0x46, 0x49, 0xfb]; // "QFI\xfb"

/** Formats that are recognisably not a raw disk or qcow2; uploading them would write garbage. */
const UNSUPPORTED_MAGIC: [string, number, number[]][] = [
  ["zip archive", 0, [0x50, 0x4b, 0x03, 0x04]],
  ["7-zip archive", 0, [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]],
  ["rar archive", 0, [0x52, 0x61, 0x72, 0x21, 0x1a, 0x07]],
  ["lz4 data", 0, [0x04, 0x22, 0x4d, 0x18]],
  ["lzip data", 0, [0x4c, 0x5a, 0x49, 0x50]],
  ["VMDK disk", 0, [0x4b, 0x44, 0x4d, 0x56]], // "KDMV"
  ["VMDK descriptor", 0, [...Buffer.from("# Disk DescriptorFile")]],
  ["VDI disk", 64, [0x7f, 0x10, 0xda, 0xbe]],
  ["VHDX disk", 0, [...Buffer.from("vhdxfile")]],
  ["VHD disk", 0, [...Buffer.from("conectix")]],
  ["QED disk", 0, [0x51, 0x45, 0x44, 0x00]],
  ["qcow (version 1) disk", 0, [0x51, 0x46, 0x49, 0xfb, 0x00, 0x00, 0x00, 0x01]],
  ["tar archive", 257, [...Buffer.from("ustar")]],
];

function startsWith(head: Uint8Array, offset: number, magic: number[]): boolean {
  if (head.length < offset + magic.length) return false;
  return magic.every((b, i) => head[offset + i] === b);
}

/** Compression and format from the first bytes. Pure. */
export function sniffBytes(head: Uint8Array): Sniffed {
  for (const [compression, magic] of COMPRESSION_MAGIC) {
    if (startsWith(head, 0, magic)) return { compression, format: "raw" };
  }
  for (const [name, offset, magic] of UNSUPPORTED_MAGIC) {
    if (startsWith(head, offset, magic)) return { compression: "none", format: "raw", unsupported: name };
  }
  if (startsWith(head, 0, QCOW2_MAGIC)) return { compression: "none", format: "qcow2" };
  return { compression: "none", format: "raw" };
}

/** The virtual disk size of a qcow2 image (header bytes 24..31, big endian). Pure. */
export function qcow2VirtualSize(head: Uint8Array): number {
  if (head.length < 32 || !startsWith(head, 0, QCOW2_MAGIC)) throw new Error("not a qcow2 header");
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  return Number(view.getBigUint64(24, false));
}

/**
 * Why a qcow2 image is refused, from its header, or undefined when it is self-contained. A backing file or an external
 * data file is another file that `qemu-img convert` reads on the machine that converts the image (this one, or the
 * rescue system): its bytes would end up in the snapshot (e.g. `qemu-img create -f qcow2 -b /etc/shadow -F raw x 1M`).
 * Pure.
 */
export function qcow2Hazard(head: Uint8Array): string | undefined {
  if (head.length < 20 || !startsWith(head, 0, QCOW2_MAGIC)) return "its qcow2 header is cut short";
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const version = view.getUint32(4, false);
  const backingOffset = view.getBigUint64(8, false);
  if (backingOffset !== 0n) {
    // The name is stored at backing_file_offset, backing_file_size bytes long (at most 1023).
    const size = Math.min(view.getUint32(16, false), 1023);
    const at = Number(backingOffset);
    const name =
      at + size <= head.length
        ? Buffer.from(head.subarray(at, at + size))
            .toString("utf8")
            .replace(/[^\x20-\x7e]/g, "?")
        : undefined;
    return `it names a backing file${name ? ` ${name}` : ""}`;
  }
  // Version 3: incompatible features at bytes 72..79; bit 2 says the guest data lives in an external data file.
  if (version >= 3) {
    if (head.length < 80) return "its qcow2 header is cut short";
    if ((view.getBigUint64(72, false) & 4n) !== 0n) return "it keeps its data in an external data file";
  }
  return undefined;
}

/** The refusal of a qcow2 image that is not self-contained (see qcow2Hazard). */
export function unsafeQcow2Error(where: string, hazard: string): UploadError {
  return new UploadError(
    "unsafe_image",
    `${where} is a qcow2 image that is not self-contained: ${hazard}. Converting it would copy that other file of the converting machine into the snapshot, so hetznix refuses it; make a self-contained image first (qemu-img convert -f qcow2 -O qcow2 IN OUT, where IN's backing file is the one you mean)`,
  );
}

/** Nix base32 alphabet (no e, o, u, t). */
const NIX_HASH_RE = /^[0-9a-df-np-sv-z]{32}$/;

/**
 * The identity of a file under the Nix store: `<hash>` of its store path, plus a short digest of the path inside the
 * store object when the file is not the object itself. Undefined outside the store. Pure.
 */
export function storeIdentity(realPath: string, storeDir = "/nix/store"): string | undefined {
  const prefix = storeDir.endsWith("/") ? storeDir : `${storeDir}/`;
  if (!realPath.startsWith(prefix)) return undefined;
  const rest = realPath.slice(prefix.length);
  const [object, ...inner] = rest.split("/");
  const hash = object?.slice(0, 32) ?? "";
  if (!NIX_HASH_RE.test(hash) || object?.[32] !== "-") return undefined;
  if (inner.length === 0) return hash;
  const innerPath = posix.join(...inner);
  return `${hash}-${createHash("sha256").update(innerPath).digest("hex").slice(0, 16)}`;
}

export interface SourceOptions {
  /** Override detection; must agree with the magic bytes when those are conclusive. */
  compression?: Compression | "auto";
  format?: ImageFormat | "auto";
  tools?: LocalTools;
  /** Where the Nix store is (default /nix/store); files below it may be identified by their store path. */
  storeDir?: string;
  signal?: AbortSignal;
}

interface CommonSource {
  /** Compression of the bytes as stored (file) or served (URL). */
  compression: Compression;
  /** Format of the (decompressed) image. */
  format: ImageFormat;
  /** Virtual disk size of a qcow2 image. */
  qcow2VirtualSize?: number;
}

export interface FileSource extends CommonSource {
  kind: "file";
  /** The path as given. */
  path: string;
  /** The resolved path (symlinks followed). */
  realPath: string;
  /** Size of the file as stored. */
  fileSize: number;
  /** Raw size, when known without decompressing (uncompressed raw file, qcow2 virtual size). */
  rawSize?: number;
  /** Identity from the Nix store path, when the file lives in the store. */
  storeIdentity?: string;
}

export interface UrlSource extends CommonSource {
  kind: "url";
  url: string;
  /** Content-Length, when the server sent one. */
  contentLength?: number;
  /** Raw size when known (uncompressed raw with a Content-Length, qcow2 virtual size). */
  rawSize?: number;
}

export type ImageSource = FileSource | UrlSource;

function describeSource(s: { kind: "file"; path: string } | { kind: "url"; url: string }): string {
  return s.kind === "file" ? s.path : s.url;
}

/** Decompressor program for `compression` on this machine, as [file, args]; gz without pigz falls back to gzip. */
export function localDecompressor(
  compression: Exclude<Compression, "none">,
  tools?: LocalTools,
): { file: string; args: string[] } {
  switch (compression) {
    case "gz": {
      const pigz = tool(tools, "pigz");
      return pigz ? { file: pigz, args: ["-dc"] } : { file: "gzip", args: ["-dc"] };
    }
    case "bz2": {
      const bzip2 = tool(tools, "bzip2");
      if (!bzip2) throw new UploadError("tool_failed", "bzip2 is needed to read a bzip2-compressed image");
      return { file: bzip2, args: ["-dc"] };
    }
    case "xz": {
      const xz = tool(tools, "xz");
      if (!xz) throw new UploadError("tool_failed", "xz is needed to read an xz-compressed image");
      return { file: xz, args: ["-dc", "-T0"] };
    }
    case "zstd": {
      const zstd = tool(tools, "zstd");
      if (!zstd) throw new UploadError("tool_failed", "zstd is needed to read a zstd-compressed image");
      return { file: zstd, args: ["-dc"] };
    }
  }
}

/** Input fed to the decompressor at most when sniffing (a bzip2 block can be about 1 MB compressed). */
export const SNIFF_INPUT_MAX = 4 * 1024 * 1024;

/**
 * Decompress the start of `compressed` (chunks, fed until enough output came or the input ends) and return up to
 * `limit` bytes of output. A partial input is fine: only the output so far matters.
 */
export async function decompressHead(
  compressed: AsyncIterable<Buffer> | Buffer,
  compression: Exclude<Compression, "none">,
  tools?: LocalTools,
  limit = SNIFF_BYTES,
): Promise<Buffer> {
  const { file, args } = localDecompressor(compression, tools);
  const stage = spawnStage(file, args, `${file} ${args.join(" ")}`);
  const chunks: Buffer[] = [];
  let total = 0;
  let finished = false;
  const outputDone = new Promise<void>((resolve) => {
    const finish = () => {
      finished = true;
      resolve();
    };
    stage.child.stdout.on("data", (c: Buffer) => {
      chunks.push(c);
      total += c.length;
      if (total >= limit) finish();
    });
    stage.child.on("close", finish);
  });
  const feed = async () => {
    const input = Buffer.isBuffer(compressed) ? [compressed] : compressed;
    let fed = 0;
    for await (const chunk of input) {
      if (finished || fed >= SNIFF_INPUT_MAX) break;
      fed += chunk.length;
      if (!stage.child.stdin.write(chunk)) {
        await Promise.race([new Promise((r) => stage.child.stdin.once("drain", r)), outputDone]);
      }
    }
    stage.child.stdin.end();
  };
  await Promise.all([feed().catch(() => undefined), outputDone]);
  stage.kill();
  return Buffer.concat(chunks).subarray(0, limit);
}

/** Read the first bytes of a file. */
async function readHead(path: string, length: number): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/**
 * Decide compression/format from the sniffed head and the user's overrides; fills in the qcow2 virtual size.
 * `innerHead` is the start of the decompressed data (for compressed sources), when available.
 */
async function classify(
  where: string,
  head: Buffer,
  opts: SourceOptions,
  more?: () => AsyncIterable<Buffer>,
): Promise<{ compression: Compression; format: ImageFormat; qcow2VirtualSize?: number; innerHead?: Buffer }> {
  const outer = sniffBytes(head);
  if (outer.unsupported) {
    throw new UploadError(
      "unknown_format",
      `${where} is a ${outer.unsupported}, not a disk image (hetznix takes raw or qcow2 images, optionally compressed with gzip, bzip2, xz or zstd)`,
    );
  }
  const wanted = opts.compression ?? "auto";
  if (wanted !== "auto" && wanted !== outer.compression) {
    throw new UploadError(
      "invalid_argument",
      `${where} looks ${outer.compression === "none" ? "uncompressed" : `${outer.compression}-compressed`} from its first bytes, but --compression ${wanted} was given`,
    );
  }
  const compression = outer.compression;
  let inner = outer;
  let innerHead: Buffer | undefined;
  if (compression !== "none") {
    innerHead = await decompressHead(more ? more() : head, compression, opts.tools);
    if (innerHead.length === 0) {
      throw new UploadError(
        "corrupt_source",
        `${where}: the ${compression} data is truncated or corrupt (its start does not decompress to anything)`,
      );
    }
    inner = sniffBytes(innerHead);
    if (inner.compression !== "none" || inner.unsupported) {
      throw new UploadError(
        "unknown_format",
        `${where} decompresses to ${inner.unsupported ? `a ${inner.unsupported}` : `${inner.compression} data`}, not a disk image`,
      );
    }
  }
  const wantedFormat = opts.format ?? "auto";
  if (wantedFormat !== "auto" && wantedFormat !== inner.format) {
    throw new UploadError(
      "invalid_argument",
      `${where} looks like a ${inner.format} image from its first bytes, but --format ${wantedFormat} was given`,
    );
  }
  const format = inner.format;
  if (format === "qcow2") {
    const h = innerHead ?? head;
    const hazard = qcow2Hazard(h);
    if (hazard) throw unsafeQcow2Error(where, hazard);
    const size = qcow2VirtualSize(h);
    if (size <= 0)
      throw new UploadError("corrupt_source", `${where}: the qcow2 header gives a virtual size of 0`);
    if (compression !== "none") {
      throw new UploadError(
        "unknown_format",
        `${where} is a compressed qcow2 image; decompress it first (qcow2 can carry its own compression)`,
      );
    }
    return { compression, format, qcow2VirtualSize: size, innerHead };
  }
  return { compression, format, innerHead };
}

/**
 * Check that a local image file exists and is a file (or block device) hetznix can read the size of: its real path and
 * size, or an UploadError source_unreadable saying what is wrong. The first check of openFileSource, also run by the
 * CLI before it asks for any other flag.
 */
export async function checkImageFile(path: string): Promise<{ realPath: string; size: number }> {
  try {
    const real = await realpath(path);
    const st = await stat(real);
    if (!st.isFile() && !st.isBlockDevice()) {
      throw new UploadError("source_unreadable", `${path} is not a regular file`);
    }
    return { realPath: real, size: st.isFile() ? st.size : await blockDeviceSize(real) };
  } catch (err) {
    if (err instanceof UploadError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === "ENOENT"
        ? "does not exist"
        : code === "EACCES"
          ? "is not readable (permission denied)"
          : `cannot be read (${code ?? String(err)})`;
    throw new UploadError("source_unreadable", `Image file ${path} ${why}`);
  }
}

/** Open a local image file: check it, sniff it, find what can be known without reading it whole. */
export async function openFileSource(path: string, opts: SourceOptions = {}): Promise<FileSource> {
  throwIfAborted(opts.signal, "upload");
  const { realPath: real, size } = await checkImageFile(path);
  if (size === 0) throw new UploadError("source_unreadable", `Image file ${path} is empty`);
  let head: Buffer;
  try {
    head = await readHead(real, Math.min(size, SNIFF_BYTES));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UploadError(
      "source_unreadable",
      `Image file ${path} ${code === "EACCES" ? "is not readable (permission denied)" : `cannot be read (${code ?? String(err)})`}`,
    );
  }
  const c = await classify(
    path,
    head,
    opts,
    () =>
      createReadStream(real, {
        end: SNIFF_INPUT_MAX - 1,
        highWaterMark: 256 * 1024,
      }) as AsyncIterable<Buffer>,
  );
  const identity = storeIdentity(real, opts.storeDir);
  const headerSize =
    c.format === "raw" && c.compression !== "none"
      ? await headerRawSize(real, c.compression, opts.tools)
      : undefined;
  return {
    kind: "file",
    path,
    realPath: real,
    fileSize: size,
    compression: c.compression,
    format: c.format,
    ...(c.qcow2VirtualSize !== undefined ? { qcow2VirtualSize: c.qcow2VirtualSize } : {}),
    ...(c.format === "qcow2"
      ? { rawSize: c.qcow2VirtualSize }
      : c.compression === "none"
        ? { rawSize: size }
        : headerSize !== undefined
          ? { rawSize: headerSize }
          : {}),
    ...(identity ? { storeIdentity: identity } : {}),
  };
}

/**
 * The decompressed size recorded in an xz or zstd file, read with `xz --list` / `zstd -lv` (both walk the whole
 * container, so a truncated file gives no size). Undefined when the format does not record it or on any error.
 */
export async function headerRawSize(
  path: string,
  compression: Compression,
  tools?: LocalTools,
): Promise<number | undefined> {
  try {
    if (compression === "xz") {
      const xz = tool(tools, "xz");
      if (!xz) return undefined;
      const out = await runCapture(xz, ["--robot", "--list", path]);
      const totals = out.split("\n").find((l) => l.startsWith("totals\t"));
      const field = totals?.split("\t")[4];
      return field !== undefined && /^\d+$/.test(field) && Number(field) > 0 ? Number(field) : undefined;
    }
    if (compression === "zstd") {
      const zstd = tool(tools, "zstd");
      if (!zstd) return undefined;
      const out = await runCapture(zstd, ["-lv", path]);
      const m = /Decompressed Size:.*\((\d+) B\)/.exec(out);
      return m?.[1] !== undefined && Number(m[1]) > 0 ? Number(m[1]) : undefined;
    }
  } catch {
    return undefined;
  }
  return undefined;
}

async function blockDeviceSize(path: string): Promise<number> {
  const fh = await open(path, "r");
  try {
    // Reading to the end is the portable way; a block device reports size 0 in stat.
    const { size } = await fh.stat();
    if (size > 0) return size;
    throw new UploadError("source_unreadable", `${path} is a block device; write it to a file first`);
  } finally {
    await fh.close();
  }
}

export interface UrlOptions extends SourceOptions {
  /** Per-request timeout for the HEAD and sniffing requests (default 15 s). */
  timeoutMs?: number;
}

/**
 * Check a URL before anything is created: a HEAD request (404 or unreachable fails here), then the first bytes
 * (a Range request) to sniff compression and format.
 */
export async function openUrlSource(url: string, opts: UrlOptions = {}): Promise<UrlSource> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UploadError("invalid_argument", `${url} is not a valid URL`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new UploadError("invalid_argument", `${url}: only http and https URLs are supported`);
  }
  const timeoutMs = opts.timeoutMs ?? 15000;
  const signalFor = () =>
    opts.signal
      ? AbortSignal.any([opts.signal, AbortSignal.timeout(timeoutMs)])
      : AbortSignal.timeout(timeoutMs);
  let contentLength: number | undefined;
  try {
    const res = await fetch(url, { method: "HEAD", redirect: "follow", signal: signalFor() });
    await res.body?.cancel();
    if (res.status === 405 || res.status === 501) {
      // HEAD not supported: the Range GET below decides.
    } else if (!res.ok) {
      throw new UploadError(
        "url_unavailable",
        `${url} answered HTTP ${res.status} ${res.statusText}`.trimEnd(),
      );
    } else {
      const len = res.headers.get("content-length");
      if (len !== null && /^\d+$/.test(len)) contentLength = Number(len);
    }
  } catch (err) {
    if (err instanceof UploadError) throw err;
    if (opts.signal?.aborted) throw abortError(opts.signal, "upload");
    throw new UploadError("url_unavailable", `${url} could not be reached: ${networkReason(err)}`);
  }
  if (contentLength === 0) throw new UploadError("source_unreadable", `${url} is empty (Content-Length: 0)`);
  const head = await fetchHead(url, signalFor());
  if (head.length === 0) throw new UploadError("source_unreadable", `${url} is empty`);
  const c = await classify(url, head, opts);
  let rawSize: number | undefined;
  if (c.format === "qcow2") rawSize = c.qcow2VirtualSize;
  else if (c.compression === "none") rawSize = contentLength;
  return {
    kind: "url",
    url,
    compression: c.compression,
    format: c.format,
    ...(contentLength !== undefined ? { contentLength } : {}),
    ...(rawSize !== undefined ? { rawSize } : {}),
    ...(c.qcow2VirtualSize !== undefined ? { qcow2VirtualSize: c.qcow2VirtualSize } : {}),
  };
}

/** Bytes of a URL read for sniffing (enough for the first bzip2 block). */
const URL_SNIFF_BYTES = 2 * 1024 * 1024;

async function fetchHead(url: string, signal: AbortSignal): Promise<Buffer> {
  const controller = new AbortController();
  const both = AbortSignal.any([signal, controller.signal]);
  try {
    const res = await fetch(url, {
      headers: { Range: `bytes=0-${URL_SNIFF_BYTES - 1}` },
      redirect: "follow",
      signal: both,
    });
    if (!res.ok) {
      await res.body?.cancel();
      throw new UploadError(
        "url_unavailable",
        `${url} answered HTTP ${res.status} ${res.statusText}`.trimEnd(),
      );
    }
    const chunks: Buffer[] = [];
    let total = 0;
    if (res.body) {
      const reader = res.body.getReader();
      while (total < URL_SNIFF_BYTES) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(Buffer.from(value));
        total += value.length;
      }
      await reader.cancel().catch(() => {});
    }
    return Buffer.concat(chunks).subarray(0, URL_SNIFF_BYTES);
  } catch (err) {
    if (err instanceof UploadError) throw err;
    throw new UploadError("url_unavailable", `${url} could not be read: ${networkReason(err)}`);
  } finally {
    controller.abort();
  }
}

function networkReason(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: unknown }).cause;
    if (cause instanceof Error) {
      const code = (cause as NodeJS.ErrnoException).code;
      return code ? `${code} (${cause.message})` : cause.message;
    }
    if (err.name === "TimeoutError") return "no answer in time";
    return err.message;
  }
  return String(err);
}

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

export { describeSource };
