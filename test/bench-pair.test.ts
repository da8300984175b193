/**
 * The realistic image pair (bench/pair.ts, used by the incremental-upload benchmark and tests): both images are valid
 * ext4 filesystems, the pair is what the issue measured (most of the new image's blocks lie elsewhere in the old
 * one, few at the same offset), and the block statistics count by content, checked on hand-made files too.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { blockStats, makeImagePair, type ImagePair } from "./support/image-pair.js";
import { newBlocksCompressedSize, PAIR_BLOCK } from "../bench/pair.js";

const run = promisify(execFile);

describe("realistic image pair", () => {
  let dir: string;
  let pair: ImagePair;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hetznix-pair-"));
    pair = await makeImagePair(join(dir, "pair"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("builds two valid ext4 images of the same size", async () => {
    assert.equal(pair.old.sizeBytes, 32 * 1024 * 1024);
    assert.equal(pair.new.sizeBytes, pair.old.sizeBytes);
    assert.ok(pair.dropped > 0 && pair.added > pair.dropped, `${pair.dropped} dropped, ${pair.added} added`);
    for (const path of [pair.old.path, pair.new.path]) {
      // -f: check even a clean filesystem; -n: open read-only, answer no. Exit 0 = no errors found.
      const { stdout } = await run("e2fsck", ["-fn", path]);
      assert.match(stdout, /Pass 5/);
    }
  });

  it("has most of the new image's blocks elsewhere in the old one, few at the same offset", async () => {
    const s = await blockStats(pair.old.path, pair.new.path);
    assert.ok(s.blocks > 1000, `${s.blocks} non-zero blocks`);
    assert.equal(s.sameOffset + s.elsewhere + s.new, s.blocks);
    assert.ok(s.percent.elsewhere > 50, `elsewhere ${s.percent.elsewhere.toFixed(1)}%`);
    assert.ok(s.percent.sameOffset < 10, `same offset ${s.percent.sameOffset.toFixed(1)}%`);
    assert.ok(s.percent.new > 0 && s.percent.new < 30, `new ${s.percent.new.toFixed(1)}%`);
  });

  it("is the same pair again for the same seed", async () => {
    const again = await makeImagePair(join(dir, "again"));
    const s = await blockStats(pair.new.path, again.new.path);
    // The same files in the same places; only inode timestamps (the staging tree's) may differ.
    assert.ok(s.percent.sameOffset > 95, `same offset ${s.percent.sameOffset.toFixed(1)}%`);
  });
});

describe("block statistics", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hetznix-blockstats-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("counts same offset, elsewhere and new by content, and skips zero blocks", async () => {
    const [a, b, c, d] = [0, 1, 2, 3].map(() => randomBytes(PAIR_BLOCK)) as [Buffer, Buffer, Buffer, Buffer];
    const zero = Buffer.alloc(PAIR_BLOCK);
    // old: a b c zero; new: a c b d zero zero (a in place, b and c moved, d new, zeros not counted)
    await writeFile(join(dir, "old"), Buffer.concat([a, b, c, zero]));
    await writeFile(join(dir, "new"), Buffer.concat([a, c, b, d, zero, zero]));
    const s = await blockStats(join(dir, "old"), join(dir, "new"));
    assert.deepEqual(
      { blocks: s.blocks, sameOffset: s.sameOffset, elsewhere: s.elsewhere, new: s.new },
      { blocks: 4, sameOffset: 1, elsewhere: 2, new: 1 },
    );
    assert.equal(s.percent.new, 25);
    const fresh = await newBlocksCompressedSize(join(dir, "old"), join(dir, "new"), 3);
    assert.equal(fresh.blocks, 1);
    assert.equal(fresh.rawBytes, PAIR_BLOCK);
    // One random block: zstd cannot shrink it, and adds only its frame.
    assert.ok(fresh.compressedBytes >= PAIR_BLOCK && fresh.compressedBytes < PAIR_BLOCK + 64);
  });
});
