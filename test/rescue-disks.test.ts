import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { access, mkdtemp, open, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createDiskStore } from "../src/emulator/hosts/index.js";

const MiB = 1024 * 1024;

describe("disk store", () => {
  const disks = createDiskStore();
  let dir = "";
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "rescue-disks-test-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("creates sparse files of the given size, making parent directories", async () => {
    const p = join(dir, "a", "b", "disk.raw");
    await disks.create(p, 512 * MiB);
    assert.equal((await stat(p)).size, 512 * MiB);
    assert.ok((await disks.allocatedBytes(p)) < MiB);
  });

  it("copies keeping content and holes, and can grow the copy", async () => {
    const src = join(dir, "src.raw");
    await disks.create(src, 256 * MiB);
    const data = randomBytes(3 * MiB);
    const fh = await open(src, "r+");
    await fh.write(data, 0, data.length, 100 * MiB);
    await fh.close();
    const allocated = await disks.allocatedBytes(src);
    assert.ok(allocated >= 3 * MiB && allocated < 8 * MiB, `allocated ${allocated}`);

    const dst = join(dir, "copies", "dst.raw");
    await disks.copy(src, dst);
    assert.equal((await stat(dst)).size, 256 * MiB);
    const copied = await disks.allocatedBytes(dst);
    assert.ok(copied < 8 * MiB, `copy allocated ${copied}`);
    const hash = (b: Buffer) => createHash("sha256").update(b).digest("hex");
    assert.equal(hash(await readFile(dst)), hash(await readFile(src)));

    const grown = join(dir, "grown.raw");
    await disks.copy(src, grown, 1024 * MiB);
    assert.equal((await stat(grown)).size, 1024 * MiB);
    assert.ok((await disks.allocatedBytes(grown)) < 8 * MiB);
  });

  it("fails a copy of a missing file without leaving a partial file", async () => {
    const dst = join(dir, "never.raw");
    await assert.rejects(disks.copy(join(dir, "missing.raw"), dst));
    await assert.rejects(access(dst));
    await assert.rejects(access(`${dst}.partial-${process.pid}`));
  });

  it("removes files, and removing twice is fine", async () => {
    const p = join(dir, "gone.raw");
    await disks.create(p, MiB);
    await disks.remove(p);
    await disks.remove(p);
    await assert.rejects(access(p));
  });
});
