/**
 * The block plan of an incremental upload (pure): keep / copy / data / zero per 4 KiB block, copy runs coalesced and
 * ordered so that no copy reads a block another copy already rewrote (checked by executing the plan on a simulated
 * disk), cycles broken by sending a run as data.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { checkSeries, defaultSeries } from "../src/upload/incremental/base.js";
import { BLOCK_HASH_BYTES, orderCopies, planDelta, type DeltaPlan } from "../src/upload/incremental/plan.js";
import { isUploadError } from "../src/upload/index.js";

/** Hashes of blocks named by small integers (0 = a zero block). */
function hashes(blocks: number[]): Buffer {
  const b = Buffer.alloc(blocks.length * BLOCK_HASH_BYTES);
  blocks.forEach((v, i) => b.writeUInt32BE(v, i * BLOCK_HASH_BYTES + 4));
  return b;
}

/** Execute the plan on a disk holding `base` (copies in order, then data and zeros) and return the disk's blocks. */
function execute(plan: DeltaPlan, base: number[], image: number[]): number[] {
  const disk = [...base];
  while (disk.length < image.length + 100) disk.push(-1); // unknown bytes beyond the base (and scratch)
  for (const c of plan.copies) {
    // memmove semantics
    const tmp = disk.slice(c.src, c.src + c.count);
    for (let i = 0; i < c.count; i++) disk[c.dst + i] = tmp[i] as number;
  }
  for (const s of plan.segments) {
    for (let i = s.start; i < s.start + s.count; i++) {
      if (s.kind === "data") disk[i] = image[i] as number;
      if (s.kind === "zero") disk[i] = 0;
    }
  }
  return disk.slice(0, image.length);
}

/** Copies in plan order read their source before a later copy... checked by executing without memmove buffering. */
function executeStrict(plan: DeltaPlan, base: number[], image: number[]): number[] {
  const disk = [...base];
  while (disk.length < Math.max(image.length, base.length) + 100) disk.push(-1);
  for (const c of plan.copies) {
    if (c.dst > c.src) for (let i = c.count - 1; i >= 0; i--) disk[c.dst + i] = disk[c.src + i] as number;
    else for (let i = 0; i < c.count; i++) disk[c.dst + i] = disk[c.src + i] as number;
  }
  for (const s of plan.segments) {
    for (let i = s.start; i < s.start + s.count; i++) {
      if (s.kind === "data") disk[i] = image[i] as number;
      if (s.kind === "zero") disk[i] = 0;
    }
  }
  return disk.slice(0, image.length);
}

function check(base: number[], image: number[], scratch?: { start: number; count: number }): DeltaPlan {
  const plan = planDelta(hashes(image), hashes(base), scratch);
  assert.deepEqual(executeStrict(plan, base, image), image);
  assert.deepEqual(execute(plan, base, image), image);
  const c = plan.counts;
  assert.equal(c.kept + c.copied + c.sent + c.zero, image.length);
  let covered = 0;
  for (const s of plan.segments) {
    assert.equal(s.start, covered);
    covered += s.count;
  }
  assert.equal(covered, image.length);
  return plan;
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

describe("incremental plan", () => {
  it("identical content: everything kept, nothing sent or copied", () => {
    const p = check([1, 2, 3, 0, 4], [1, 2, 3, 0, 4]);
    assert.deepEqual(p.counts, { kept: 4, copied: 0, sent: 0, zero: 1 });
    assert.deepEqual(p.copies, []);
  });

  it("a shifted image: one copy run (overlapping itself, run like memmove), new blocks as data", () => {
    const base = range(1, 101);
    const image = [500, ...range(1, 101)];
    const p = check(base, image);
    assert.deepEqual(p.copies, [{ src: 0, dst: 1, count: 100 }]);
    assert.deepEqual(p.counts, { kept: 0, copied: 100, sent: 1, zero: 0 });
  });

  it("moved blocks in both directions: ordered so no copy reads a rewritten block", () => {
    const base = range(1, 41);
    // Blocks 10..19 move to 0..9 and blocks 0..9 move to 20..29 (which held 20..29): chain, not a cycle.
    const image = [...range(11, 21), ...range(41, 51), ...range(1, 11), ...range(31, 41)];
    const p = check(base, image);
    assert.equal(p.cyclesBroken, 0);
    assert.equal(p.counts.sent, 10);
    assert.equal(p.counts.copied, 20);
  });

  it("two swapped blocks: a cycle, broken by sending one of them", () => {
    const p = check([1, 2, 3, 4], [1, 3, 2, 4]);
    assert.equal(p.cyclesBroken, 1);
    assert.deepEqual(p.counts, { kept: 2, copied: 1, sent: 1, zero: 0 });
  });

  it("with scratch space past the image and base, a cycle is staged there, not sent", () => {
    const p = check([1, 2, 3, 4], [1, 3, 2, 4], { start: 4, count: 10 });
    assert.equal(p.cyclesBroken, 1);
    assert.equal(p.staged, 1);
    assert.deepEqual(p.counts, { kept: 2, copied: 2, sent: 0, zero: 0 });
    assert.deepEqual(p.scratch, { start: 4, count: 1 });
    // Too little room: sent as data.
    const q = check(range(1, 21), [...range(11, 21), ...range(1, 11)], { start: 20, count: 5 });
    assert.equal(q.staged, 0);
    assert.equal(q.counts.sent, 10);
  });

  it("a cycle of three runs of different sizes: the smallest goes as data", () => {
    // A: 3 blocks, B: 2 blocks, C: 1 block, rotating places.
    const base = [1, 2, 3, 4, 5, 6];
    const image = [4, 5, 6, 1, 2, 3].map((v, i) => [6, 1, 2, 3, 4, 5][i] ?? v);
    const p = check(base, image);
    assert.ok(p.cyclesBroken >= 1);
    assert.ok(p.counts.sent <= 1, `sent ${p.counts.sent}`);
  });

  it("grown and shrunk images, zero blocks, changes in the first and last block", () => {
    const base = range(1, 65);
    check(base, [...range(1, 65), ...range(100, 120), 0, 0]);
    check(base, range(1, 33));
    const changed = [999, ...range(2, 64), 998];
    const p = check(base, changed);
    assert.deepEqual(p.counts, { kept: 62, copied: 0, sent: 2, zero: 0 });
    check(base, [0, 0, ...range(1, 63)]);
    check([], range(1, 10));
    check(range(1, 10), []);
  });

  it("a duplicated block in the base: copy sources stay contiguous", () => {
    const base = [7, 1, 2, 3, 7, 8, 9];
    const image = [0, 0, 0, 7, 8, 9, 5];
    const p = check(base, image);
    // 7,8,9 come from blocks 4..6 as one run although 7 first occurs at block 0.
    assert.deepEqual(p.copies, [{ src: 4, dst: 3, count: 3 }]);
  });

  it("random permutations with new and zero blocks always reconstruct the image", () => {
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 200; round++) {
      const m = 1 + rnd(60);
      const base = range(1, m + 1).map((v) => (rnd(8) === 0 ? 0 : v));
      const n = 1 + rnd(70);
      const image: number[] = [];
      for (let i = 0; i < n; i++) {
        const r = rnd(10);
        if (r < 6 && i > 0 && image[i - 1]! > 0 && image[i - 1]! < m) image.push(image[i - 1]! + 1);
        else if (r < 8) image.push(1 + rnd(m));
        else if (r < 9) image.push(0);
        else image.push(1000 + rnd(1000));
      }
      check(base, image);
      check(base, image, { start: Math.max(m, n), count: rnd(20) });
    }
  });

  it("orders a long chain of runs without quadratic work", () => {
    // Run i copies from where run i+1 writes: run i must go before run i+1.
    const runs = range(0, 20000).map((i) => ({ src: (i + 1) * 2, dst: i * 2, count: 2 }));
    const { order, broken } = orderCopies(runs);
    assert.equal(broken.length, 0);
    assert.deepEqual(order[0], runs[0]);
    assert.deepEqual(order[order.length - 1], runs[runs.length - 1]);
  });
});

describe("image series (label hetznix/series)", () => {
  it("defaults to the file name without store hash, extensions and version-like parts", () => {
    assert.equal(
      defaultSeries("nixos-image-25.05.20250101.abcdef-x86_64-linux.raw"),
      "nixos-image-x86_64-linux",
    );
    assert.equal(defaultSeries("result/nixos.img"), "nixos");
    assert.equal(
      defaultSeries("/nix/store/0c7c0v1h2m3n4p5q6r7s8v9w0x1y2z3a-nixos-web-2.raw.zst"),
      "nixos-web",
    );
    assert.equal(defaultSeries("1.2.3.qcow2"), "image");
    assert.equal(defaultSeries("my image (v2).raw"), "my-image-v2");
  });

  it("--series must already be a valid label value", () => {
    assert.equal(checkSeries("web_x86.v2"), "web_x86.v2");
    for (const bad of ["", "-web", "web!", "a".repeat(64)]) {
      assert.throws(
        () => checkSeries(bad),
        (err: unknown) => isUploadError(err, "invalid_label"),
        bad,
      );
    }
  });
});
