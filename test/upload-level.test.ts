/**
 * The compression level's decision (a pure function of the measured link, compressor and cores), its measurements on
 * real data, and the switchable zstd whose frames at different levels decompress as one stream.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { startSwitchableZstd } from "../src/upload/compress.js";
import { zeroHeader } from "../src/upload/extents.js";
import { sleep } from "../src/util/time.js";
import {
  chooseLevel,
  describeChoice,
  measureLevel,
  readSample,
  SAMPLE_BYTES,
  type LevelInput,
  type LevelSample,
} from "../src/upload/level.js";
import { findExecutable } from "../src/upload/tools.js";

const MB = 1e6;
const mbit = (n: number) => (n * 1e6) / 8;

/** Speeds (single thread, input MB/s) and ratios shaped like zstd's on a disk image's data (measured here once). */
const TYPICAL: LevelSample[] = [
  { level: 1, secondsPerByte: 1 / (400 * MB), ratio: 0.333 },
  { level: 3, secondsPerByte: 1 / (160 * MB), ratio: 0.295 },
  { level: 6, secondsPerByte: 1 / (55 * MB), ratio: 0.276 },
  { level: 9, secondsPerByte: 1 / (30 * MB), ratio: 0.262 },
  { level: 12, secondsPerByte: 1 / (12 * MB), ratio: 0.26 },
];

const input = (over: Partial<LevelInput>): LevelInput => ({
  linkBytesPerSecond: mbit(100),
  cores: 2,
  otherSecondsPerByte: 1 / (1000 * MB),
  samples: TYPICAL,
  ...over,
});

describe("compression level: the decision", () => {
  it("a fast link takes the fastest level; a slow one the tightest level that keeps up", () => {
    assert.equal(chooseLevel(input({ linkBytesPerSecond: mbit(1000), cores: 1 })).level, 1);
    assert.equal(chooseLevel(input({ linkBytesPerSecond: mbit(1000), cores: 1 })).bound, "cpu");
    // 100 Mbit/s, 2 cores: level 9 compresses 2 x 30 MB/s = 15.7 MB/s of output, more than the link's 12.5.
    const slow = chooseLevel(input({ linkBytesPerSecond: mbit(100), cores: 2 }));
    assert.equal(slow.level, 9);
    assert.equal(slow.bound, "link");
    // 10 Mbit/s: even level 12 keeps up.
    assert.equal(chooseLevel(input({ linkBytesPerSecond: mbit(10) })).level, 12);
  });

  it("fewer cores move the choice down: on one core level 9 no longer keeps up with 100 Mbit/s", () => {
    const one = chooseLevel(input({ linkBytesPerSecond: mbit(100), cores: 1 }));
    assert.equal(one.level, 6);
    const e6 = one.estimates.find((e) => e.level === 6)!;
    const e9 = one.estimates.find((e) => e.level === 9)!;
    assert.ok(e6.time < e9.time);
  });

  it("other client work (hashing) counts against the CPU", () => {
    const cheap = chooseLevel(input({ linkBytesPerSecond: mbit(100), cores: 1, otherSecondsPerByte: 0 }));
    const dear = chooseLevel(
      input({ linkBytesPerSecond: mbit(100), cores: 1, otherSecondsPerByte: 1 / (20 * MB) }),
    );
    assert.ok(dear.level < cheap.level, `${dear.level} < ${cheap.level}`);
  });

  it("near-ties go to the level that sends fewer bytes", () => {
    const samples: LevelSample[] = [
      { level: 1, secondsPerByte: 1e-9, ratio: 0.5 },
      { level: 3, secondsPerByte: 1e-9, ratio: 0.49 },
    ];
    // Link-bound at both: times differ by 2% (< TIE): the smaller output wins.
    assert.equal(chooseLevel(input({ samples, linkBytesPerSecond: mbit(10) })).level, 3);
  });

  it("says whether a higher level could still help, so measuring stops early", () => {
    const fast = input({ linkBytesPerSecond: mbit(1000), cores: 1, samples: TYPICAL.slice(0, 2) });
    assert.equal(chooseLevel(fast).measureHigher, false, "level 3 is CPU-bound: higher ones only slower");
    const slow = input({ linkBytesPerSecond: mbit(100), cores: 2, samples: TYPICAL.slice(0, 2) });
    assert.equal(chooseLevel(slow).measureHigher, true, "level 3 is link-bound: a tighter one may keep up");
    assert.throws(() => chooseLevel(input({ samples: [] })));
  });

  it("describes the choice with the link, the cores and the others' estimated cost", () => {
    const i = input({ linkBytesPerSecond: mbit(100), cores: 1 });
    const text = describeChoice(chooseLevel(i), i);
    assert.match(text, /^-6 chosen for a 100 Mbit\/s link and 1 core\(s\), link-bound/);
    assert.match(text, /-9 \+\d+%/);
  });
});

describe("compression level: measurements and the switchable zstd", () => {
  let dir = "";
  const zstd = findExecutable("zstd");
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hetznix-level-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it(
    "samples non-zero data from the image and measures a level's speed and ratio",
    { skip: !zstd },
    async () => {
      const path = join(dir, "img.raw");
      const img = Buffer.alloc(64 * 1024 * 1024);
      const text = Buffer.from("hetznix ".repeat(1024));
      for (let at = 8 * 1024 * 1024; at < img.length; at += 16 * 1024 * 1024) {
        for (let i = 0; i < 4 * 1024 * 1024; i += text.length) text.copy(img, at + i);
      }
      await writeFile(path, img);
      const sample = await readSample(path, img.length);
      assert.ok(sample.length > 0 && sample.length <= SAMPLE_BYTES);
      assert.ok(sample.subarray(0, 8).equals(Buffer.from("hetznix ")), "the sample is data, not zeros");
      const sampleFile = join(dir, "sample");
      await writeFile(sampleFile, sample);
      const m = await measureLevel(zstd!, 3, sampleFile);
      assert.equal(m.level, 3);
      assert.ok(m.ratio > 0 && m.ratio < 0.05, `repetitive text compresses well (${m.ratio})`);
      assert.ok(m.secondsPerByte > 0);
      await writeFile(sampleFile, randomBytes(1024 * 1024));
      const noise = await measureLevel(zstd!, -1, sampleFile);
      assert.equal(noise.level, -1);
      assert.ok(noise.ratio > 0.99, "random data does not");
    },
  );

  it(
    "ends its frame at a FLUSH-marked chunk, so what came before goes out without more input",
    { skip: !zstd },
    async () => {
      const c = startSwitchableZstd(zstd!, 3);
      const chunks: Buffer[] = [];
      c.output.on("data", (b: Buffer) => chunks.push(b));
      const data = randomBytes(100_000);
      const mark = zeroHeader(0, 1);
      c.input.write(data);
      c.input.write(mark);
      const decompress = (b: Buffer) =>
        new Promise<Buffer>((resolve, reject) => {
          const d = execFile(zstd!, ["-d", "-c", "-q"], { encoding: "buffer", maxBuffer: 1 << 24 }, (e, o) =>
            e ? reject(e) : resolve(o),
          );
          d.stdin?.end(b);
        });
      const want = Buffer.concat([data, mark]);
      let got: Buffer = Buffer.alloc(0);
      for (let i = 0; i < 100 && !got.equals(want); i++) {
        await sleep(20);
        got = await decompress(Buffer.concat(chunks)).catch(() => Buffer.alloc(0));
      }
      assert.ok(got.equals(want), "the frame before the mark is complete while the input is still open");
      c.input.end();
      await c.done;
    },
  );

  it("changes the level mid-stream; the frames decompress as one stream", { skip: !zstd }, async () => {
    const c = startSwitchableZstd(zstd!, 3);
    const chunks: Buffer[] = [];
    c.output.on("data", (b: Buffer) => chunks.push(b));
    const parts = [randomBytes(300_000), Buffer.alloc(500_000, 7), randomBytes(10)];
    const write = (b: Buffer) =>
      new Promise<void>((r) => (c.input.write(b) ? r() : c.input.once("drain", r)));
    c.setLevel(1); // before any input: no frame at level 3
    await write(parts[0]!);
    c.setLevel(6);
    await write(parts[1]!);
    await write(parts[2]!);
    c.input.end();
    await c.done;
    assert.deepEqual(c.levels, [1, 6]);
    assert.equal(c.description, "zstd -1 then -6 -T0");
    const out = await new Promise<Buffer>((resolve, reject) => {
      const d = execFile(zstd!, ["-d", "-c", "-q"], { encoding: "buffer", maxBuffer: 1 << 24 }, (e, o) =>
        e ? reject(e) : resolve(o),
      );
      d.stdin?.end(Buffer.concat(chunks));
    });
    assert.ok(out.equals(Buffer.concat(parts)));
  });
});
