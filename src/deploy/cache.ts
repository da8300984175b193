/**
 * The binary cache a release's closure goes to: a `file://` directory (served by any static HTTP server) or an
 * S3-compatible bucket. Nix signs every path with the release key while copying; paths that were already in the
 * cache get the key's signature added (`nix store sign`), so the whole closure verifies with that one key. Nix 2.8
 * has no s3:// store: for a bucket the closure is copied into a local staging cache, then what the bucket lacks is
 * uploaded, NARs first, then narinfos, then nix-cache-info, so a narinfo never points at a missing NAR.
 * `checkClosure` reads the cache back and is what publish, rollback and promote rely on before writing a record.
 */
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ReleaseError } from "./errors.js";
import { parsePublicKey, type PublicKey } from "./keys.js";
import type { SigningKeyFile } from "./keyfile.js";
import { parseNarInfo, signedBy, storePathHash, type NarInfo } from "./narinfo.js";
import { NixError, runNixTool } from "./nix.js";
import { parseLocation } from "./releases/index.js";
import { openS3Bucket, type S3Bucket, type S3Location } from "./s3.js";
import { nixRun } from "./system.js";

export type CacheTarget = { kind: "file"; path: string } | { kind: "s3"; s3: S3Location };

/** Characters a cache directory may have: Nix takes the file:// URL's path as it is, without decoding. */
const SAFE_DIR = /^\/[A-Za-z0-9._/+@=,~-]*$/;

/** `file:///dir`, a directory path, or `s3://bucket/prefix?endpoint=...&region=...`. */
export function parseCache(
  text: string,
  what = "--cache",
  env: NodeJS.ProcessEnv = process.env,
): CacheTarget {
  const location = parseLocation(text, what, env);
  if (location.kind === "s3") return location;
  const path = location.path.replace(/\/+$/, "") || "/";
  if (!SAFE_DIR.test(path))
    throw new ReleaseError(
      "invalid_argument",
      `${what} ${path}: Nix cannot open a cache directory with spaces or URL characters in its path; use letters, digits and ._/+@=,~-`,
    );
  return { kind: "file", path };
}

export function describeCache(cache: CacheTarget): string {
  return cache.kind === "file"
    ? `file://${cache.path}`
    : `s3://${cache.s3.bucket}${cache.s3.prefix ? `/${cache.s3.prefix}` : ""}`;
}

/** Read access to a cache's files, relative to its root. */
interface CacheReader {
  read(key: string, signal?: AbortSignal): Promise<string | undefined>;
  exists(key: string, signal?: AbortSignal): Promise<boolean>;
}

function fileReader(root: string): CacheReader {
  return {
    async read(key) {
      try {
        return await readFile(join(root, key), "utf8");
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw new ReleaseError(
          "cache",
          `cannot read ${join(root, key)} (${(err as NodeJS.ErrnoException).code})`,
        );
      }
    },
    async exists(key) {
      return stat(join(root, key)).then(
        (s) => s.isFile(),
        () => false,
      );
    },
  };
}

function bucketReader(bucket: S3Bucket): CacheReader {
  return {
    async read(key, signal) {
      return (await bucket.get(key, signal))?.body.toString("utf8");
    },
    async exists(key, signal) {
      return (await bucket.head(key, signal)) !== undefined;
    },
  };
}

/** Runs `fn` over `items` with at most `limit` at once; stops at the first failure. */
async function eachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (failed === undefined && next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failed !== undefined) throw failed;
}

const MAX_CLOSURE = 500_000;

export interface ClosureCheck {
  /** Store paths in the closure, all present with their NARs and signed by the key. */
  paths: number;
}

async function walkClosure(
  reader: CacheReader,
  where: string,
  storePath: string,
  key: PublicKey,
  signal?: AbortSignal,
): Promise<ClosureCheck> {
  const seen = new Set<string>([storePathHash(storePath)]);
  let frontier = [storePathHash(storePath)];
  const parentOf = new Map<string, string>();
  while (frontier.length > 0) {
    if (seen.size > MAX_CLOSURE)
      throw new ReleaseError("cache", `the closure of ${storePath} has over ${MAX_CLOSURE} paths`);
    const found: string[] = [];
    await eachLimited(frontier, 16, async (hash) => {
      signal?.throwIfAborted();
      const of = parentOf.has(hash) ? ` (in the closure of ${storePath})` : "";
      const text = await reader.read(`${hash}.narinfo`, signal);
      if (text === undefined)
        throw new ReleaseError(
          "cache",
          `${where} lacks ${hash}.narinfo${of}: publish the release again to fill it`,
        );
      let info: NarInfo;
      try {
        info = parseNarInfo(text, `${where}/${hash}.narinfo`);
      } catch (err) {
        throw new ReleaseError("cache", (err as Error).message);
      }
      if (storePathHash(info.storePath) !== hash)
        throw new ReleaseError("cache", `${where}/${hash}.narinfo describes ${info.storePath}`);
      if (!signedBy(info, key))
        throw new ReleaseError(
          "cache",
          `${info.storePath} in ${where} is not signed by key ${key.name}${of}; publish it again (publish adds the signature)`,
        );
      if (!(await reader.exists(info.url, signal)))
        throw new ReleaseError("cache", `${where} lacks ${info.url}, the NAR of ${info.storePath}`);
      for (const ref of info.references) {
        const h = storePathHash(ref);
        if (!seen.has(h)) {
          seen.add(h);
          parentOf.set(h, hash);
          found.push(h);
        }
      }
    });
    frontier = found;
  }
  return { paths: seen.size };
}

/**
 * Checks that the cache holds the whole closure of `storePath`: every narinfo, every NAR, each signed by `key`.
 * Throws a ReleaseError (code `cache`) naming the first gap.
 */
export async function checkClosure(
  cache: CacheTarget,
  storePath: string,
  key: PublicKey | string,
  signal?: AbortSignal,
): Promise<ClosureCheck> {
  const pk = typeof key === "string" ? parsePublicKey(key) : key;
  if (cache.kind === "file")
    return walkClosure(fileReader(cache.path), describeCache(cache), storePath, pk, signal);
  const bucket = await openS3Bucket(cache.s3, "cache");
  try {
    return await walkClosure(bucketReader(bucket), bucket.description, storePath, pk, signal);
  } finally {
    bucket.close();
  }
}

export interface PushOptions {
  cache: CacheTarget;
  storePath: string;
  key: SigningKeyFile;
  /** NAR compression (default zstd; Debian's Nix 2.8 writes and reads it). */
  compression?: "zstd" | "xz";
  signal?: AbortSignal;
  /** Short progress messages. */
  onNote?: (message: string) => void;
  /** Bytes uploaded to a bucket so far, of `total`. */
  onUpload?: (sent: number, total: number) => void;
}

export interface PushResult {
  /** Paths in the closure. */
  paths: number;
  /** Paths the cache held before (signed by the key, with their NARs). */
  present: number;
  /** Paths written now. */
  copied: number;
  /** Signatures `nix store sign` added to paths the cache held without one by the key. */
  signed: number;
  /** Bytes uploaded (S3). */
  uploadedBytes: number;
  check: ClosureCheck;
}

/** The closure of a path in the local store (fails clearly when the path is not there). */
export async function localClosure(storePath: string, signal?: AbortSignal): Promise<string[]> {
  try {
    const { stdout } = await runNixTool("nix", ["path-info", "-r", storePath], {
      ...(signal ? { signal } : {}),
    });
    return stdout.split("\n").filter((l) => l.startsWith("/nix/store/"));
  } catch (err) {
    if (signal?.aborted) throw err;
    const detail = err instanceof NixError ? err.stderr.trim().split("\n").pop() : String(err);
    throw new ReleaseError(
      "not_toplevel",
      `${storePath} is not in this machine's Nix store (${detail}); build it here first, or publish with --flake`,
    );
  }
}

function storeUrl(dir: string, key: SigningKeyFile, compression: string): string {
  return `file://${dir}?secret-key=${encodeURIComponent(key.path)}&compression=${compression}`;
}

/** Copies and signs into a file:// directory; returns how many signatures `nix store sign` added. */
async function copyAndSign(
  dir: string,
  storePath: string,
  key: SigningKeyFile,
  compression: string,
  signal?: AbortSignal,
): Promise<number> {
  const store = `file://${dir}`;
  await nixRun(
    ["copy", "--to", storeUrl(dir, key, compression), storePath],
    `copying ${storePath} to ${store}`,
    signal,
  );
  // Paths the cache held before were skipped by the copy and may lack the key's signature: add it.
  const signOut = await nixRun(
    ["store", "sign", "--store", store, "-k", key.path, "-r", storePath],
    `signing ${storePath} in ${store}`,
    signal,
  );
  const added = /added (\d+) signatures?/.exec(signOut.stderr);
  // Nix's own check, with the release key as the only trusted key.
  await nixRun(
    [
      "store",
      "verify",
      "--store",
      store,
      "--no-contents",
      "-r",
      storePath,
      "--option",
      "trusted-public-keys",
      key.key.publicKey,
    ],
    `Nix does not accept the signatures of ${storePath} in ${store} with key ${key.key.name}`,
    signal,
  );
  return added ? Number(added[1]) : 0;
}

/** Signs the closure of `storePath` with the key and puts it into the cache; then checks the cache holds it. */
export async function pushClosure(opts: PushOptions): Promise<PushResult> {
  const { cache, storePath, key, signal } = opts;
  const compression = opts.compression ?? "zstd";
  const pk = parsePublicKey(key.key.publicKey);
  const closure = await localClosure(storePath, signal);
  const hashes = closure.map(storePathHash);

  if (cache.kind === "file") {
    await mkdir(cache.path, { recursive: true });
    const reader = fileReader(cache.path);
    let present = 0;
    for (const h of hashes) if (await reader.exists(`${h}.narinfo`)) present++;
    opts.onNote?.(`${closure.length} paths in the closure, ${present} already in ${describeCache(cache)}`);
    const signed = await copyAndSign(cache.path, storePath, key, compression, signal);
    const check = await walkClosure(reader, describeCache(cache), storePath, pk, signal);
    return {
      paths: closure.length,
      present,
      copied: closure.length - present,
      signed,
      uploadedBytes: 0,
      check,
    };
  }

  const bucket = await openS3Bucket(cache.s3, "cache");
  const staging = await mkdtemp(join(tmpdir(), "hetznix-cache-"));
  try {
    const remote = bucketReader(bucket);
    // What the bucket holds already, signed by the key and with its NAR, goes into the staging cache as a
    // narinfo only: `nix copy` then skips it, and nothing is compressed or uploaded again.
    const present = new Set<string>();
    await eachLimited(hashes, 16, async (h) => {
      const text = await remote.read(`${h}.narinfo`, signal);
      if (text === undefined) return;
      let info: NarInfo;
      try {
        info = parseNarInfo(text, `${h}.narinfo`);
      } catch {
        return; // replaced by a good one below
      }
      if (!signedBy(info, pk) || !(await remote.exists(info.url, signal))) return;
      await writeFile(join(staging, `${h}.narinfo`), text);
      present.add(h);
    });
    opts.onNote?.(`${closure.length} paths in the closure, ${present.size} already in ${bucket.description}`);
    await writeFile(
      join(staging, "nix-cache-info"),
      "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n",
    );
    const signed = await copyAndSign(staging, storePath, key, compression, signal);

    const missing = hashes.filter((h) => !present.has(h));
    const infos = await Promise.all(
      missing.map(async (h) =>
        parseNarInfo(await readFile(join(staging, `${h}.narinfo`), "utf8"), `${h}.narinfo`),
      ),
    );
    const sizes = await Promise.all(infos.map(async (i) => (await stat(join(staging, i.url))).size));
    const total = sizes.reduce((a, b) => a + b, 0);
    let sent = 0;
    let uploaded = 0;
    // 1. NARs (content-addressed by their file hash: one of the same name is the same file).
    await eachLimited(
      infos.map((info, i) => ({ info, size: sizes[i] as number })),
      4,
      async ({ info, size }) => {
        const there = await bucket.head(info.url, signal);
        if (!there || there.size !== size) {
          await bucket.put(
            info.url,
            { file: join(staging, info.url), size },
            { contentType: "application/x-nix-nar" },
            signal,
          );
          uploaded += size;
        }
        sent += size;
        opts.onUpload?.(sent, total);
      },
    );
    // 2. narinfos, once every NAR they point at is there.
    await eachLimited(missing, 8, async (h) => {
      signal?.throwIfAborted();
      const data = await readFile(join(staging, `${h}.narinfo`));
      await bucket.put(`${h}.narinfo`, { data }, { contentType: "text/x-nix-narinfo" }, signal);
    });
    // 3. nix-cache-info, which makes the prefix a cache for Nix.
    if (!(await bucket.head("nix-cache-info", signal)))
      await bucket.put(
        "nix-cache-info",
        { data: await readFile(join(staging, "nix-cache-info")) },
        { contentType: "text/x-nix-cache-info" },
        signal,
      );
    const check = await walkClosure(remote, bucket.description, storePath, pk, signal);
    return {
      paths: closure.length,
      present: present.size,
      copied: missing.length,
      signed,
      uploadedBytes: uploaded,
      check,
    };
  } finally {
    bucket.close();
    await rm(staging, { recursive: true, force: true });
  }
}
