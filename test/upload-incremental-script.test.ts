/**
 * The rescue side of an incremental write, run with the real bash, perl, dd and zstd against a file standing in for
 * /dev/sda that holds the base: the block hashes of the base, the copy phase, the D/K stream, zeroed gaps and the
 * cleared tail, and the read-back sha256.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { DeltaFramer } from "../src/upload/incremental/framer.js";
import {
  HashCollector,
  baseHashScript,
  hashImageBlocks,
  probeScript,
} from "../src/upload/incremental/hashes.js";
import { DELTA_BLOCK, planDelta } from "../src/upload/incremental/plan.js";
import { COPIED_MARK } from "../src/upload/incremental/script.js";
import { WRITTEN_MARK, extentWriteScript, parseResult } from "../src/upload/rescue.js";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function bash(script: string, input: Buffer): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      "bash",
      ["-c", script],
      { encoding: "buffer", maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        resolve({
          code: err ? ((err as { code?: number }).code ?? 1) : 0,
          stdout,
          stderr: stderr.toString(),
        });
      },
    );
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(input);
  });
}

async function frame(framer: DeltaFramer, image: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  framer.on("data", (c: Buffer) => out.push(c));
  const ended = new Promise<void>((resolve, reject) => {
    framer.on("end", resolve);
    framer.on("error", reject);
  });
  for (let i = 0; i < image.length; i += 100_000) framer.write(image.subarray(i, i + 100_000));
  framer.end();
  await ended;
  return Buffer.concat(out);
}

let dir = "";
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hetznix-incr-script-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Blocks A..: random 4 KiB blocks. */
function blocks(count: number): Buffer[] {
  return Array.from({ length: count }, () => randomBytes(DELTA_BLOCK));
}

async function roundTrip(base: Buffer, image: Buffer, diskBytes: number) {
  const disk = join(dir, "sda");
  const diskContent = Buffer.alloc(diskBytes);
  base.copy(diskContent);
  await writeFile(disk, diskContent);
  const probe = parseResult((await bash(probeScript(disk), Buffer.alloc(0))).stdout.toString());
  assert.equal(probe?.["perl"], "yes");
  assert.equal(probe?.["disk-bytes"], String(diskBytes));
  const baseBlocks = Math.floor(base.length / DELTA_BLOCK);
  const hashed = await bash(baseHashScript(baseBlocks, disk), Buffer.alloc(0));
  assert.equal(hashed.code, 0, hashed.stderr);
  const collector = new HashCollector();
  collector.write(hashed.stdout);
  const baseHashes = await collector.finish(baseBlocks);
  const imagePath = join(dir, "image.raw");
  await writeFile(imagePath, image);
  const local = await hashImageBlocks(imagePath);
  assert.equal(local.sha256, sha(image));
  const plan = planDelta(local.blocks, baseHashes);
  const stream = await frame(new DeltaFramer(plan, image.length), image);
  const r = await bash(
    extentWriteScript({
      compression: "none",
      device: disk,
      expectedBytes: image.length,
      incremental: { clearTo: base.length },
    }),
    stream,
  );
  assert.equal(r.code, 0, r.stderr);
  const out = r.stdout.toString();
  assert.ok(out.includes(COPIED_MARK) && out.includes(WRITTEN_MARK), out);
  assert.equal(parseResult(out)?.["disk-sha256"], sha(image));
  const after = await readFile(disk);
  assert.ok(after.subarray(0, image.length).equals(image), "the disk holds the image");
  assert.ok(
    after.subarray(image.length).equals(Buffer.alloc(diskBytes - image.length)),
    "nothing stale after it",
  );
  return { plan, stream };
}

describe("incremental write script (real bash, perl, dd; a file as the disk)", () => {
  it("perl is there to hash and copy; the probe says so, and says when it is not", async () => {
    const r = await bash("perl -MDigest::MD5 -e1", Buffer.alloc(0));
    assert.equal(r.code, 0);
    // A PATH with stat but no perl: the probe reports perl=no (the upload then falls back to a full write).
    const bin = join(dir, "bin");
    await mkdir(bin, { recursive: true });
    const stat = (await bash("command -v stat", Buffer.alloc(0))).stdout.toString().trim();
    await symlink(stat, join(bin, "stat")).catch(() => undefined);
    const disk = join(dir, "probe-disk");
    await writeFile(disk, Buffer.alloc(8192));
    const noPerl = await bash(`PATH=${bin}\n${probeScript(disk)}`, Buffer.alloc(0));
    assert.equal(noPerl.code, 0, noPerl.stderr);
    assert.deepEqual(parseResult(noPerl.stdout.toString()), { perl: "no", "disk-bytes": "8192" });
  });

  it("moved, new, zero and kept blocks; first and last changed; a swap cycle; the image shrank and grew", async () => {
    const b = blocks(40);
    const zero = Buffer.alloc(DELTA_BLOCK);
    const base = Buffer.concat([...b.slice(0, 30), zero, ...b.slice(30)]);
    // Shifted by one block, two blocks swapped, new first and last blocks, zeros, an odd tail.
    const image = Buffer.concat([
      randomBytes(DELTA_BLOCK),
      ...b.slice(0, 10),
      b[11] as Buffer,
      b[10] as Buffer,
      zero,
      ...b.slice(20, 35),
      randomBytes(DELTA_BLOCK),
      randomBytes(1000),
    ]);
    const { plan, stream } = await roundTrip(base, image, 64 * DELTA_BLOCK);
    assert.ok(plan.counts.copied > 20, JSON.stringify(plan.counts));
    assert.ok(stream.length < image.length / 4, `stream ${stream.length} bytes`);
    // Grew beyond the base.
    await roundTrip(base, Buffer.concat([base, ...blocks(10)]), 64 * DELTA_BLOCK);
    // Identical.
    const same = await roundTrip(base, base, 48 * DELTA_BLOCK);
    assert.equal(same.plan.counts.sent, 0);
    assert.ok(same.stream.length < 200, `identical: ${same.stream.length} bytes of stream`);
  });
});
