/**
 * The hash cache: a remembered sha256 is found for the same file version and never for a changed one (one byte
 * changed with size and mtime restored; another file at the same path), racily new files are not remembered, a
 * corrupt cache is ignored, the file is 0600 and bounded. Then the upload itself: an unchanged image is found again
 * without reading it, a changed one is hashed again.
 */
import assert from "node:assert/strict";
import { mkdtemp, open, readdir, readFile, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  HashCache,
  CACHE_FILE_NAME,
  defaultCacheDir,
  parseCache,
  rememberable,
  stampOf,
  type FileStamp,
} from "../src/upload/hash-cache.js";
import { sleep } from "../src/util/time.js";
import { makeRawImage, sha256, startUploadEnv, uploadX86, type UploadTestEnv } from "./support/upload.js";

const SHA_A = "a".repeat(64);
const SHA_B = "b".repeat(64);

/** A whole second, so utimes can restore it exactly (a float of seconds cannot carry every nanosecond). */
const MTIME = 1_600_000_000;

/** Change one byte of `path` in place, then put its mtime back (size unchanged): only ctime tells. */
async function changeOneByteKeepingMtime(path: string, offset: number): Promise<void> {
  const before = await stat(path, { bigint: true });
  assert.equal(before.mtimeNs, BigInt(MTIME) * 1_000_000_000n, "the file was given a whole-second mtime");
  const fh = await open(path, "r+");
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, offset);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, offset);
  } finally {
    await fh.close();
  }
  await utimes(path, MTIME, MTIME);
  const after = await stat(path, { bigint: true });
  assert.equal(after.size, before.size);
  assert.equal(after.mtimeNs, before.mtimeNs);
  assert.notEqual(after.ctimeNs, before.ctimeNs);
}

describe("hash cache: the cache file", () => {
  let dir = "";
  /** Files made once and left alone for longer than the racy margin, so they can be remembered. */
  let aged: string[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hetznix-hash-cache-"));
    aged = [];
    for (let i = 0; i < 8; i++) {
      const p = join(dir, `aged-${i}.raw`);
      await writeFile(p, Buffer.alloc(64 * 1024, i + 1));
      await utimes(p, MTIME, MTIME);
      aged.push(p);
    }
    await sleep(2100); // older than RACY_MARGIN_MS (2 s) from here on
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const cacheIn = (name: string) => new HashCache({ dir: join(dir, name) });

  it("finds a remembered hash for the same file, unchanged", async () => {
    const cache = cacheIn("c1");
    const path = aged[0]!;
    const stamp = await stampOf(path);
    assert.equal(await cache.remember(path, stamp, Date.now(), { sha256: SHA_A, rawSize: 65536 }), true);
    const hit = await cache.lookup(path);
    assert.equal(hit?.sha256, SHA_A);
    assert.equal(hit?.rawSize, 65536);
    // A second instance reads the same file.
    assert.equal((await cacheIn("c1").lookup(path))?.sha256, SHA_A);
  });

  it("misses once one byte changed, even with the same size and the mtime restored (ctime differs)", async () => {
    const cache = cacheIn("c2");
    const path = aged[1]!;
    const stamp = await stampOf(path);
    assert.equal(await cache.remember(path, stamp, Date.now(), { sha256: SHA_A, rawSize: 65536 }), true);
    await changeOneByteKeepingMtime(path, 1000);
    const now = await stampOf(path);
    assert.equal(now.size, stamp.size);
    assert.equal(now.mtimeNs, stamp.mtimeNs, "mtime restored exactly");
    assert.equal(now.ino, stamp.ino);
    assert.notEqual(now.ctimeNs, stamp.ctimeNs, "ctime moved");
    assert.equal(await cache.lookup(path), undefined);
  });

  it("misses for a different file at the same path (same size, same mtime)", async () => {
    const cache = cacheIn("c3");
    const path = aged[2]!;
    const stamp = await stampOf(path);
    assert.equal(await cache.remember(path, stamp, Date.now(), { sha256: SHA_A, rawSize: 65536 }), true);
    // Replaced by rename (a new inode) ...
    const other = join(dir, "other.raw");
    await writeFile(other, Buffer.alloc(65536, 0x42));
    await utimes(other, MTIME, MTIME);
    await rename(other, path);
    assert.equal(await cache.lookup(path), undefined);
    // ... and deleted and written anew (the inode number may even be reused).
    await rm(path);
    await writeFile(path, Buffer.alloc(65536, 0x43));
    await utimes(path, MTIME, MTIME);
    const again = await stampOf(path);
    assert.equal(again.size, stamp.size);
    assert.equal(again.mtimeNs, stamp.mtimeNs);
    assert.equal(await cache.lookup(path), undefined);
  });

  it("does not remember a file changed within the racy margin, or changed while it was hashed", async () => {
    const cache = cacheIn("c4");
    const fresh = join(dir, "fresh.raw");
    await writeFile(fresh, Buffer.alloc(4096, 9));
    const stamp = await stampOf(fresh);
    assert.equal(await cache.remember(fresh, stamp, Date.now(), { sha256: SHA_A, rawSize: 4096 }), false);
    assert.equal(await cache.lookup(fresh), undefined);

    const path = aged[3]!;
    const before = await stampOf(path);
    const started = Date.now();
    await changeOneByteKeepingMtime(path, 5); // "during the hash"
    assert.equal(await cache.remember(path, before, started, { sha256: SHA_A, rawSize: 65536 }), false);
    assert.equal(await cache.lookup(path), undefined);
  });

  it("decides racy stamps purely from ctime and mtime against the start of hashing", () => {
    const at = 1_700_000_000_000;
    const ns = (ms: number) => BigInt(ms) * 1_000_000n;
    const stamp = (c: number, m: number): FileStamp => ({
      dev: 1n,
      ino: 2n,
      size: 3n,
      ctimeNs: ns(c),
      mtimeNs: ns(m),
    });
    assert.equal(rememberable(stamp(at - 5000, at - 5000), at), true);
    assert.equal(rememberable(stamp(at - 1000, at - 5000), at), false, "ctime too recent");
    assert.equal(rememberable(stamp(at - 5000, at - 1000), at), false, "mtime too recent");
    assert.equal(rememberable(stamp(at - 5000, at + 60_000), at), false, "mtime in the future");
  });

  it("ignores a corrupt cache file as a whole and replaces it on the next write", async () => {
    const cacheDir = join(dir, "c5");
    const cache = new HashCache({ dir: cacheDir });
    const path = aged[0]!;
    const stamp = await stampOf(path);
    assert.equal(await cache.remember(path, stamp, Date.now(), { sha256: SHA_A, rawSize: 65536 }), true);
    const file = join(cacheDir, CACHE_FILE_NAME);
    const good = await readFile(file, "utf8");

    for (const bad of [
      "{not json",
      "[]",
      JSON.stringify({ version: 2, entries: [] }),
      // One entry with a bad hash spoils the file: it is not what hetznix wrote.
      good.replace(SHA_A, "z".repeat(64)),
      good.replace(/"ino":"\d+"/, '"ino":-1'),
      good.slice(0, good.length / 2),
    ]) {
      await writeFile(file, bad);
      assert.equal(await cache.lookup(path), undefined, `not trusted: ${bad.slice(0, 40)}`);
    }
    assert.equal(parseCache(good)?.length, 1);
    assert.equal(await cache.remember(path, stamp, Date.now(), { sha256: SHA_B, rawSize: 65536 }), true);
    assert.equal((await cache.lookup(path))?.sha256, SHA_B);
  });

  it("writes the file 0600 in a 0700 directory, atomically, bounded in entries", async () => {
    const cacheDir = join(dir, "c6", "nested");
    let clock = 1;
    const cache = new HashCache({ dir: cacheDir, maxEntries: 3, now: () => clock++ });
    // Files no earlier test touched (a changed file is racily new and would not be remembered).
    const untouched = aged.slice(4);
    for (const p of untouched) {
      assert.equal(
        await cache.remember(p, await stampOf(p), Date.now(), { sha256: SHA_A, rawSize: 1 }),
        true,
      );
    }
    const file = join(cacheDir, CACHE_FILE_NAME);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await stat(cacheDir)).mode & 0o777, 0o700);
    assert.deepEqual(await readdir(cacheDir), [CACHE_FILE_NAME], "no temporary file is left");
    const entries = parseCache(await readFile(file, "utf8"));
    assert.equal(entries?.length, 3, "at most maxEntries");
    assert.equal(await cache.lookup(untouched[0]!), undefined, "the least recently remembered went first");
    assert.equal((await cache.lookup(untouched[3]!))?.sha256, SHA_A);
    const text = await readFile(file, "utf8");
    assert.ok(!text.includes(dir), "no paths in the cache file");
  });

  it("lives in $XDG_CACHE_HOME/hetznix (absolute only), else ~/.cache/hetznix", () => {
    assert.equal(defaultCacheDir({ XDG_CACHE_HOME: "/x/cache", HOME: "/home/u" }), "/x/cache/hetznix");
    assert.equal(defaultCacheDir({ XDG_CACHE_HOME: "rel", HOME: "/home/u" }), "/home/u/.cache/hetznix");
    assert.equal(defaultCacheDir({ HOME: "/home/u" }), "/home/u/.cache/hetznix");
  });
});

describe("hash cache: uploads", { timeout: 300_000 }, () => {
  let env: UploadTestEnv;

  before(async () => {
    env = await startUploadEnv("127.81.9.");
  });
  after(async () => {
    await env?.close();
  });

  it("finds the snapshot of an unchanged image without reading it, and hashes a changed one again", async () => {
    const path = join(env.dir, "cached.raw");
    const buf = await makeRawImage(path, 6, 2);
    await utimes(path, MTIME, MTIME);
    await sleep(2100); // older than the racy margin, so the first upload's hash is remembered
    const cache = new HashCache({ dir: join(env.dir, "hash-cache") });

    const first = await uploadX86(env, { path }, { hashCache: cache });
    assert.equal(first.reused, false);
    assert.equal(first.sha256, sha256(buf));
    assert.equal((await cache.lookup(path))?.sha256, sha256(buf), "remembered after the verified write");

    const again = await uploadX86(env, { path }, { hashCache: cache });
    assert.equal(again.reused, true);
    assert.equal(again.imageId, first.imageId);
    assert.equal(again.bytesHashed, 0, "not read");
    assert.equal(again.bytesRead, 0);
    const hash = again.steps.find((s) => s.step === "hash");
    assert.equal(hash?.status, "skipped");
    assert.match(hash?.detail ?? "", /remembered/);

    // One byte changed, size and mtime as before: the cache must not answer; the new content is uploaded.
    await changeOneByteKeepingMtime(path, 3 * 1024 * 1024 + 17);
    const changed = Buffer.from(buf);
    changed[3 * 1024 * 1024 + 17] = changed[3 * 1024 * 1024 + 17]! ^ 0xff;
    const third = await uploadX86(env, { path }, { hashCache: cache });
    assert.equal(third.reused, false);
    assert.notEqual(third.imageId, first.imageId);
    assert.equal(third.sha256, sha256(changed));
  });
});
