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
import { localDecompressor, tool, type LocalTools } from "./tools.js";
export { localDecompressor } from "./tools.js";
import {
  SNIFF_BYTES,
  qcow2Hazard,
  qcow2VirtualSize,
  sniffBytes,
  unsafeQcow2Error,
  type Compression,
  type ImageFormat,
} from "./formats.js";

export {
  COMPRESSIONS,
  FORMATS,
  SNIFF_BYTES,
  qcow2Hazard,
  qcow2VirtualSize,
  sniffBytes,
  unsafeQcow2Error,
  type Compression,
  type ImageFormat,
  type Sniffed,
} from "./formats.js";
export { digestFile, type Digest, type DigestOptions } from "./digest.js";

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

export { describeSource };
