/**
 * The local block index (incremental/block-index.ts) against the emulator with real rescue hosts: an incremental
 * upload keeps the block hashes of its image; a later upload onto that snapshot plans from them instead of hashing the
 * base in the rescue system; an index that does not match the base's disk (corrupted here) ends in a full write on the
 * same server, a correct snapshot, the reason said, and the index dropped.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { UploadEvent, UploadResult } from "../src/upload/index.js";
import {
  assertNoTemporaryResources,
  sha256,
  snapshotContentSha,
  startUploadEnv,
  type UploadTestEnv,
  uploadX86,
} from "./support/upload.js";

const BLOCK = 4096;

function blocks(count: number): Buffer[] {
  return Array.from({ length: count }, () => randomBytes(BLOCK));
}

describe("upload: incremental with the local block index", { timeout: 900_000 }, () => {
  let env: UploadTestEnv;
  let n = 0;
  let baseBlocks: Buffer[] = [];
  let baseResult: UploadResult;

  before(async () => {
    env = await startUploadEnv("127.77.66.");
    baseBlocks = blocks(512);
    baseResult = await uploadX86(env, { path: await save(Buffer.concat(baseBlocks)) });
  });

  after(async () => {
    await env?.close();
  });

  async function save(image: Buffer): Promise<string> {
    const path = join(env.dir, `indexed-${++n}.raw`);
    await writeFile(path, image);
    return path;
  }

  const indexFile = (sha: string | undefined) =>
    join(env.dir, "cache", "hetznix", "block-index", `${sha ?? "(none)"}.idx`);

  async function assertSnapshotHolds(imageId: number, image: Buffer): Promise<void> {
    assert.equal(
      await snapshotContentSha(env, imageId, image.length),
      sha256(image),
      "the snapshot holds the image",
    );
  }

  it("kept hashes replace the rescue system's; a corrupt index: a full write, the reason said, the index dropped", async () => {
    // v1 from the base (a full upload: no index of it): hashed in the rescue system, v1's hashes kept.
    const v1Blocks = [...baseBlocks.slice(10), ...blocks(8), ...baseBlocks.slice(0, 10)];
    const v1 = Buffer.concat(v1Blocks);
    const r1 = await uploadX86(env, { path: await save(v1) }, { base: String(baseResult.imageId) });
    assert.ok(r1.incremental, `incremental, not a fallback: ${r1.fallback}`);
    assert.equal(r1.incremental.baseHashes, "rescue");
    await assertSnapshotHolds(r1.imageId, v1);
    const st = await stat(indexFile(r1.sha256));
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.size > v1Blocks.length * 8, true);

    // v2 onto v1's snapshot: planned from the index, nothing hashed in the rescue system.
    const v2 = Buffer.concat([...v1Blocks.slice(100), ...blocks(4), ...v1Blocks.slice(0, 100)]);
    const events: UploadEvent[] = [];
    const r2 = await uploadX86(
      env,
      { path: await save(v2) },
      { base: String(r1.imageId), onEvent: (e) => events.push(e) },
    );
    assert.ok(r2.incremental, `incremental, not a fallback: ${r2.fallback}`);
    assert.equal(r2.incremental.baseHashes, "index");
    assert.equal(r2.incremental.bytesReceived, 0);
    assert.ok(r2.incremental.blocks.copied >= 500, JSON.stringify(r2.incremental));
    const done = events
      .filter((e) => e.kind === "step" && e.status === "done")
      .map((e) => (e as { step: string }).step);
    assert.ok(!done.includes("base-hash"), "the base is not hashed in the rescue system");
    await assertSnapshotHolds(r2.imageId, v2);

    // v1's index corrupted (its first two block hashes swapped): v3 (v1 with those two blocks swapped) looks kept.
    const file = await readFile(indexFile(r1.sha256));
    const at = file.indexOf(0x0a) + 1;
    const first = Buffer.from(file.subarray(at, at + 8));
    file.copy(file, at, at + 8, at + 16);
    first.copy(file, at + 8);
    await writeFile(indexFile(r1.sha256), file);
    const v3 = Buffer.concat([v1Blocks[1]!, v1Blocks[0]!, ...v1Blocks.slice(2)]);
    const r3 = await uploadX86(env, { path: await save(v3) }, { base: String(r1.imageId) });
    assert.equal(r3.incremental, null);
    assert.match(r3.fallback ?? "", /local block index of the base did not verify/);
    assert.equal(r3.sha256, sha256(v3));
    await assertSnapshotHolds(r3.imageId, v3);
    await assert.rejects(
      stat(indexFile(r1.sha256)),
      { code: "ENOENT" },
      "the index that did not match is dropped",
    );
    await stat(indexFile(r3.sha256));
    await assertNoTemporaryResources(env);
  });
});
