/**
 * The extent stream (the image's non-zero runs with their offsets) and the rescue script that writes it and reads the
 * disk back behind itself, run with the real bash, dd and zstd against a file standing in for /dev/sda: what lands on
 * the disk, what the read-back proves (a hole that does not read as zeros is caught), how a broken stream fails, and
 * the hash tool's fallback.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import {
  EXTENT_BLOCK,
  ExtentFramer,
  MAX_EXTENT_BYTES,
  ZERO_ANNOUNCE_BYTES,
  decodeExtents,
  isZero,
  wantsFlush,
  endHeader,
  dataHeader,
} from "../src/upload/extents.js";
import {
  EXIT_BAD_STREAM,
  EXIT_SIZE_MISMATCH,
  WRITTEN_MARK,
  extentWriteScript,
  parseResult,
  verifyScript,
} from "../src/upload/rescue.js";

const MiB = 1024 * 1024;
const run = promisify(execFile);
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** Frame `image`, fed in chunks of `chunk` bytes. */
async function frame(image: Buffer, chunk: number): Promise<{ stream: Buffer; framer: ExtentFramer }> {
  const framer = new ExtentFramer();
  const out: Buffer[] = [];
  framer.on("data", (c: Buffer) => out.push(c));
  const ended = new Promise<void>((resolve, reject) => {
    framer.on("end", resolve);
    framer.on("error", reject);
  });
  for (let i = 0; i < image.length; i += chunk) framer.write(image.subarray(i, i + chunk));
  framer.end();
  await ended;
  return { stream: Buffer.concat(out), framer };
}

/** An image with data at a few places (some runs longer than one frame allows), zeros elsewhere, an odd tail. */
function sampleImage(): Buffer {
  const img = Buffer.alloc(9 * EXTENT_BLOCK + 4096);
  randomBytes(100).copy(img, 0); // first block
  randomBytes(MAX_EXTENT_BYTES + EXTENT_BLOCK).copy(img, 2 * EXTENT_BLOCK + 7); // blocks 2..7: a run split in two
  img[img.length - 1] = 1; // the partial last block
  return img;
}

function bash(
  script: string,
  input: Buffer,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      "bash",
      ["-c", script],
      { encoding: "utf8", env, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(input);
  });
}

let dir = "";
let disk = "";
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hetznix-extents-"));
  disk = join(dir, "sda");
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("extent stream", () => {
  it("carries exactly the image: zero blocks left out, runs bounded, tail kept, whatever the chunking", async () => {
    const img = sampleImage();
    for (const chunk of [EXTENT_BLOCK, 1 * MiB, 999_999, img.length]) {
      const { stream, framer } = await frame(img, chunk);
      assert.ok(decodeExtents(stream).equals(img), `chunk ${chunk}`);
      assert.equal(framer.stats.totalBytes, img.length);
      // Block 0, blocks 2..7 (split: at most MAX_EXTENT_BYTES per run), and the partial last block.
      assert.equal(framer.stats.dataBytes, EXTENT_BLOCK + 6 * EXTENT_BLOCK + 4096);
      assert.equal(framer.stats.extents, 4);
      const headers: string[] = [];
      for (let pos = 0, i = 0; pos < stream.length && i < 100; i++) {
        const nl = stream.indexOf(0x0a, pos);
        const line = stream.subarray(pos, nl).toString("latin1");
        headers.push(line);
        pos = nl + 1 + (line.startsWith("D ") ? Number(line.split(" ")[2]) : 0);
      }
      assert.deepEqual(headers, [
        `D 0 ${EXTENT_BLOCK}`,
        `D ${2 * EXTENT_BLOCK} ${MAX_EXTENT_BYTES}`,
        `D ${2 * EXTENT_BLOCK + MAX_EXTENT_BYTES} ${2 * EXTENT_BLOCK}`,
        `D ${9 * EXTENT_BLOCK} 4096`,
        `E ${img.length}`,
      ]);
    }
  });

  it("announces a long zero run (Z) as it goes, each announcement marked for the compressor to flush", async () => {
    // Fed block by block from one zero buffer: 1 data block, 70 zero blocks, 1 data block.
    const framer = new ExtentFramer();
    const out: Buffer[] = [];
    framer.on("data", (c: Buffer) => out.push(c));
    const ended = new Promise<void>((resolve) => framer.on("end", resolve));
    const data = randomBytes(EXTENT_BLOCK);
    const zeros = Buffer.alloc(EXTENT_BLOCK);
    framer.write(data);
    for (let i = 0; i < 70; i++) framer.write(zeros);
    framer.write(data);
    framer.end();
    await ended;
    const headers = out.filter((c) => c.length < 64).map((c) => c.toString("latin1").trim());
    assert.deepEqual(headers, [
      `D 0 ${EXTENT_BLOCK}`,
      `Z ${EXTENT_BLOCK} ${ZERO_ANNOUNCE_BYTES}`,
      `D ${71 * EXTENT_BLOCK} ${EXTENT_BLOCK}`,
      `E ${72 * EXTENT_BLOCK}`,
    ]);
    assert.equal(out.filter(wantsFlush).length, 1, "only the Z header asks for a flush");
    const stream = Buffer.concat(out);
    const img = decodeExtents(stream);
    assert.ok(img.subarray(0, EXTENT_BLOCK).equals(data) && img.subarray(71 * EXTENT_BLOCK).equals(data));
    assert.ok(
      isZero(img.subarray(EXTENT_BLOCK, 2 * EXTENT_BLOCK)) &&
        isZero(img.subarray(70 * EXTENT_BLOCK, 71 * EXTENT_BLOCK)),
    );
    // The rescue script takes it too.
    await writeFile(disk, "");
    await truncate(disk, img.length);
    const r = await bash(
      extentWriteScript({ compression: "none", device: disk, expectedBytes: img.length }),
      stream,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(parseResult(r.stdout)?.["disk-sha256"], sha(img));
  });

  it("an all-zero image is only its end mark; an empty one too", async () => {
    assert.deepEqual((await frame(Buffer.alloc(3 * EXTENT_BLOCK), MiB)).stream, endHeader(3 * EXTENT_BLOCK));
    assert.deepEqual((await frame(Buffer.alloc(0), MiB)).stream, endHeader(0));
  });
});

describe("extent write script (real bash, dd, zstd; a file as the disk)", () => {
  /** A fresh "discarded" disk: zeros, sparse. */
  async function blankDisk(bytes = 48 * MiB): Promise<void> {
    await writeFile(disk, "");
    await truncate(disk, bytes);
  }

  it("writes the runs in place, reads the disk back behind itself, and reports the disk's sha256", async () => {
    await blankDisk();
    const img = sampleImage();
    const { stream } = await frame(img, MiB);
    for (const compression of ["none", "zstd"] as const) {
      await blankDisk();
      const input =
        compression === "zstd"
          ? await new Promise<Buffer>((resolve, reject) => {
              const c = execFile(
                "zstd",
                ["-q", "-c", "-1"],
                { encoding: "buffer", maxBuffer: 64 * MiB },
                (e, o) => (e ? reject(e) : resolve(o)),
              );
              c.stdin?.end(stream);
            })
          : stream;
      const r = await bash(
        extentWriteScript({ compression, device: disk, expectedBytes: img.length }),
        input,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.includes(WRITTEN_MARK));
      const res = parseResult(r.stdout);
      assert.equal(res?.["disk-sha256"], sha(img), compression);
      assert.equal(res?.["disk-bytes"], String(img.length));
      assert.equal(res?.["extents"], "4");
      assert.equal(res?.["data-bytes"], String(7 * EXTENT_BLOCK + 4096));
      assert.match(res?.["hash-tool"] ?? "", /^(openssl|sha256sum)$/);
      const onDisk = (await readFile(disk)).subarray(0, img.length);
      assert.ok(onDisk.equals(img), "the disk holds the image");
      // The classic verification agrees.
      const v = await bash(verifyScript(img.length, disk), Buffer.alloc(0));
      assert.equal(parseResult(v.stdout)?.["disk-sha256"], sha(img));
    }
  });

  it("catches blocks that were not discarded to zeros: the read-back covers the holes too", async () => {
    const img = sampleImage();
    await writeFile(disk, Buffer.alloc(48 * MiB, 0x5a)); // old contents the image's zero blocks must not keep
    const { stream } = await frame(img, MiB);
    const r = await bash(extentWriteScript({ compression: "none", device: disk }), stream);
    assert.equal(r.code, 0, r.stderr);
    const res = parseResult(r.stdout);
    assert.equal(res?.["holes"], "read-back", "a file is no block device: its holes are read back");
    assert.notEqual(res?.["disk-sha256"], sha(img));
  });

  it("on a block device that zeroes without writing, zeroes the holes (BLKZEROOUT) instead of reading them", async () => {
    const img = sampleImage();
    await writeFile(disk, Buffer.alloc(48 * MiB, 0x5a)); // old contents: only the zero-out makes the holes zeros
    const { stdout } = await run("losetup", ["--find", "--show", disk]);
    const loop = stdout.trim();
    try {
      const { stream } = await frame(img, MiB);
      const r = await bash(extentWriteScript({ compression: "none", device: loop }), stream);
      assert.equal(r.code, 0, r.stderr);
      const res = parseResult(r.stdout);
      assert.equal(res?.["holes"], "zeroed");
      assert.equal(res?.["disk-sha256"], sha(img));
    } finally {
      await run("losetup", ["--detach", loop]);
    }
    assert.ok((await readFile(disk)).subarray(0, img.length).equals(img), "the holes are zeros on the disk");
  });

  it("fails on a truncated stream, a wrong size, a malformed header and data after the end mark", async () => {
    const img = sampleImage();
    const { stream } = await frame(img, MiB);
    const cases: [string, Buffer, number, RegExp, number?][] = [
      ["cut inside a run", stream.subarray(0, 3 * EXTENT_BLOCK), EXIT_SIZE_MISMATCH, /ended early/],
      [
        "no end mark",
        stream.subarray(0, stream.length - endHeader(img.length).length),
        EXIT_SIZE_MISMATCH,
        /ended early/,
      ],
      ["other size", stream, EXIT_SIZE_MISMATCH, /expected 123/, 123],
      [
        "bad header",
        Buffer.concat([Buffer.from("D 0 x\n"), stream]),
        EXIT_BAD_STREAM,
        /malformed extent header/,
      ],
      ["bad tag", Buffer.from("X 1 2\n"), EXIT_BAD_STREAM, /malformed extent stream/],
      [
        "data after the end",
        Buffer.concat([stream, Buffer.from("junk")]),
        EXIT_BAD_STREAM,
        /after the end mark/,
      ],
      ["zero-length run", Buffer.concat([dataHeader(0, 0), endHeader(10)]), EXIT_BAD_STREAM, /malformed/],
    ];
    for (const [name, input, code, message, expected] of cases) {
      await blankDisk();
      const r = await bash(
        extentWriteScript({
          compression: "none",
          device: disk,
          ...(expected !== undefined ? { expectedBytes: expected } : {}),
        }),
        input,
      );
      assert.equal(r.code, code, `${name}: ${r.stderr}`);
      assert.match(r.stderr, message, name);
      assert.ok(!r.stdout.includes("HETZNIX-RESULT"), name);
    }
  });

  it("hashes with openssl only when it hashes right, else with sha256sum", async () => {
    const bin = join(dir, "bin");
    await mkdir(bin, { recursive: true });
    // An openssl that answers with a wrong digest must not be trusted.
    await writeFile(join(bin, "openssl"), "#!/bin/sh\ncat >/dev/null; echo 0000 '*stdin'\n");
    await chmod(join(bin, "openssl"), 0o755);
    const img = sampleImage();
    await blankDisk();
    const { stream } = await frame(img, MiB);
    const env = { ...process.env, PATH: `${bin}:${process.env["PATH"] ?? ""}` };
    const r = await bash(extentWriteScript({ compression: "none", device: disk }), stream, env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(parseResult(r.stdout)?.["hash-tool"], "sha256sum");
    assert.equal(parseResult(r.stdout)?.["disk-sha256"], sha(img));
    const v = await bash(verifyScript(img.length, disk), Buffer.alloc(0), env);
    assert.equal(parseResult(v.stdout)?.["hash-tool"], "sha256sum");
    assert.equal(parseResult(v.stdout)?.["disk-sha256"], sha(img));
  });
});
