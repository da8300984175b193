/**
 * The hash cache: the sha256 of an image file remembered by what identifies one version of that file, so uploading an
 * unchanged image again finds its snapshot without reading it.
 *
 * Key: (device, inode, size, mtime, ctime), all in nanoseconds where the file system has them. mtime can be set by
 * anyone (`touch -d`), ctime cannot: every write, chmod, rename or utimes sets it to the current time. So a file changed
 * in place with its size and mtime restored has a new ctime, and a different file at the same path has another inode
 * or, if the inode number was reused, a newer ctime.
 *
 * One gap remains and is closed here: a change in the same clock tick as the hashing (timestamps are coarse on some
 * file systems) could leave the stamp equal. Like git's "racily clean" entries, a file whose ctime or mtime is not at
 * least RACY_MARGIN_MS older than the moment hashing started is never remembered, and the stamp must be the same
 * before and after hashing.
 *
 * The file (`$XDG_CACHE_HOME/hetznix/hashes.json`, else `~/.cache/hetznix/hashes.json`) holds hashes and stamps, no
 * paths and nothing secret; it is written atomically (temporary file + rename), mode 0600, at most MAX_ENTRIES entries
 * (least recently used dropped first). A file that cannot be read or does not parse is ignored (and replaced on the
 * next write), never trusted in part.
 */
import { randomBytes } from "node:crypto";
import { chmod, mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, isAbsolute, join } from "node:path";

export const CACHE_FILE_NAME = "hashes.json";
export const MAX_ENTRIES = 256;
/** A cache file larger than this is not read (it cannot be one we wrote). */
export const MAX_FILE_BYTES = 1 << 20;
/** A file changed less than this before its hashing started is not remembered (see the module comment). */
export const RACY_MARGIN_MS = 2000;
const VERSION = 1;

/** What identifies one version of a file. */
export interface FileStamp {
  dev: bigint;
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

/** What the cache remembers of a file: the sha256 and size of the raw image it holds (decompressed/converted). */
export interface CachedDigest {
  sha256: string;
  rawSize: number;
}

interface Entry extends CachedDigest {
  stamp: FileStamp;
  /** Last use (ms since the epoch), for eviction. */
  usedAt: number;
}

/** The stamp of `path` (symlinks followed). */
export async function stampOf(path: string): Promise<FileStamp> {
  const st = await stat(path, { bigint: true });
  return { dev: st.dev, ino: st.ino, size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs };
}

export function sameStamp(a: FileStamp, b: FileStamp): boolean {
  return (
    a.dev === b.dev &&
    a.ino === b.ino &&
    a.size === b.size &&
    a.mtimeNs === b.mtimeNs &&
    a.ctimeNs === b.ctimeNs
  );
}

/**
 * Whether a digest computed from a read that started at `hashStartedMs` may be remembered for `stamp`: the file must
 * not have changed within RACY_MARGIN_MS before that moment. Pure.
 */
export function rememberable(stamp: FileStamp, hashStartedMs: number, marginMs = RACY_MARGIN_MS): boolean {
  const limit = BigInt(Math.floor(hashStartedMs - marginMs)) * 1_000_000n;
  return stamp.ctimeNs < limit && stamp.mtimeNs < limit;
}

/** `$XDG_CACHE_HOME/hetznix` (an absolute XDG_CACHE_HOME only, as the spec says), else `~/.cache/hetznix`. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env["XDG_CACHE_HOME"];
  const base = xdg && isAbsolute(xdg) ? xdg : join(env["HOME"] || homedir(), ".cache");
  return join(base, "hetznix");
}

const HEX64 = /^[0-9a-f]{64}$/;
const UINT = /^\d{1,30}$/;

function parseEntry(x: unknown): Entry | undefined {
  if (typeof x !== "object" || x === null) return undefined;
  const o = x as Record<string, unknown>;
  const big = (v: unknown): bigint | undefined =>
    typeof v === "string" && UINT.test(v) ? BigInt(v) : undefined;
  const dev = big(o["dev"]);
  const ino = big(o["ino"]);
  const size = big(o["size"]);
  const mtimeNs = big(o["mtimeNs"]);
  const ctimeNs = big(o["ctimeNs"]);
  const sha256 = o["sha256"];
  const rawSize = o["rawSize"];
  const usedAt = o["usedAt"];
  if (dev === undefined || ino === undefined || size === undefined) return undefined;
  if (mtimeNs === undefined || ctimeNs === undefined) return undefined;
  if (typeof sha256 !== "string" || !HEX64.test(sha256)) return undefined;
  if (typeof rawSize !== "number" || !Number.isSafeInteger(rawSize) || rawSize <= 0) return undefined;
  if (typeof usedAt !== "number" || !Number.isFinite(usedAt)) return undefined;
  return { stamp: { dev, ino, size, mtimeNs, ctimeNs }, sha256, rawSize, usedAt };
}

/**
 * The entries of a cache file's text, or undefined when anything in it is malformed (a corrupt cache is ignored as a
 * whole: one bad entry means the file is not what we wrote). Pure.
 */
export function parseCache(text: string): Entry[] | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof doc !== "object" || doc === null) return undefined;
  const d = doc as Record<string, unknown>;
  if (d["version"] !== VERSION || !Array.isArray(d["entries"])) return undefined;
  if (d["entries"].length > MAX_ENTRIES) return undefined;
  const out: Entry[] = [];
  for (const raw of d["entries"]) {
    const e = parseEntry(raw);
    if (!e) return undefined;
    out.push(e);
  }
  return out;
}

function serialize(entries: Entry[]): string {
  return (
    JSON.stringify({
      version: VERSION,
      entries: entries.map((e) => ({
        dev: String(e.stamp.dev),
        ino: String(e.stamp.ino),
        size: String(e.stamp.size),
        mtimeNs: String(e.stamp.mtimeNs),
        ctimeNs: String(e.stamp.ctimeNs),
        sha256: e.sha256,
        rawSize: e.rawSize,
        usedAt: e.usedAt,
      })),
    }) + "\n"
  );
}

export interface HashCacheOptions {
  /** Directory of the cache file (default defaultCacheDir()). */
  dir?: string;
  maxEntries?: number;
  /** Clock (ms since the epoch), for tests. */
  now?: () => number;
}

/** The cache file. Every method is best effort: an I/O error means "not cached", never a failed upload. */
export class HashCache {
  readonly file: string;
  private readonly maxEntries: number;
  private readonly now: () => number;
  /** Writes of this process, one after another (a read-modify-write each). */
  private writing: Promise<unknown> = Promise.resolve();

  constructor(opts: HashCacheOptions = {}) {
    this.file = join(opts.dir ?? defaultCacheDir(), CACHE_FILE_NAME);
    this.maxEntries = Math.max(1, opts.maxEntries ?? MAX_ENTRIES);
    this.now = opts.now ?? Date.now;
  }

  private async load(): Promise<Entry[]> {
    try {
      const st = await stat(this.file);
      if (!st.isFile() || st.size > MAX_FILE_BYTES) return [];
      return parseCache(await readFile(this.file, "utf8")) ?? [];
    } catch {
      return [];
    }
  }

  /** The digest remembered for the file at `path` as it is now, or undefined. */
  async lookup(path: string): Promise<(CachedDigest & { stamp: FileStamp }) | undefined> {
    let stamp: FileStamp;
    try {
      stamp = await stampOf(path);
    } catch {
      return undefined;
    }
    const hit = (await this.load()).find((e) => sameStamp(e.stamp, stamp));
    if (!hit) return undefined;
    return { sha256: hit.sha256, rawSize: hit.rawSize, stamp };
  }

  /**
   * Remember `digest` for the file whose stamp was `before` when hashing started at `hashStartedMs`, if the file still
   * has that stamp and is not racily new. Returns whether it was written.
   */
  remember(path: string, before: FileStamp, hashStartedMs: number, digest: CachedDigest): Promise<boolean> {
    const task = this.writing.then(async () => {
      if (!HEX64.test(digest.sha256) || !Number.isSafeInteger(digest.rawSize) || digest.rawSize <= 0)
        return false;
      if (!rememberable(before, hashStartedMs)) return false;
      let after: FileStamp;
      try {
        after = await stampOf(path);
      } catch {
        return false;
      }
      if (!sameStamp(before, after)) return false;
      const entries = (await this.load()).filter(
        (e) => !(e.stamp.dev === before.dev && e.stamp.ino === before.ino),
      );
      entries.push({ stamp: before, sha256: digest.sha256, rawSize: digest.rawSize, usedAt: this.now() });
      entries.sort((a, b) => b.usedAt - a.usedAt);
      return this.store(entries.slice(0, this.maxEntries));
    });
    this.writing = task.catch(() => undefined);
    return task.catch(() => false);
  }

  /** Write atomically: a 0600 temporary file in the same directory, then rename over the cache file. */
  private async store(entries: Entry[]): Promise<boolean> {
    const dir = dirname(this.file);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = join(dir, `.${CACHE_FILE_NAME}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
    try {
      const fh = await open(tmp, "wx", 0o600);
      try {
        await fh.writeFile(serialize(entries));
        await fh.sync();
      } finally {
        await fh.close();
      }
      await chmod(tmp, 0o600);
      await rename(tmp, this.file);
      return true;
    } catch {
      await rm(tmp, { force: true }).catch(() => undefined);
      return false;
    }
  }
}
