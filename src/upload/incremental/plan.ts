/**
 * The block plan of an incremental upload (pure): which 4 KiB blocks of the new image the server already holds where
 * they belong (keep), holds elsewhere on its disk (copy), or must receive (data), and zero blocks (zero). Blocks are
 * matched by content, wherever they lie in the base: file data in ext4 is 4 KiB-aligned but moves between versions.
 *
 * Copies happen in place on the one disk, all of them before any data or zeros are written. A copy must read its
 * source before another copy overwrites it, so the copy runs are ordered topologically (run A reads what run B
 * writes: A goes first); the runs of a cycle cannot all be ordered, so the smallest run of each cycle is sent as data
 * instead, until none is left. A run whose source and destination overlap each other is fine: it is executed like
 * memmove (backwards when it moves data up the disk).
 *
 * Cycles are common when regions swap places (a file moved down, another up). When the disk has room past both the
 * image and the base (`scratch`), a run taken out of a cycle is staged there instead of sent: copied to scratch
 * before any other copy, and from scratch to its place after all of them; the scratch space is zeroed afterwards, so
 * the snapshot is not larger for it. Only what does not fit there is sent as data.
 *
 * Hashes: BLOCK_HASH_BYTES bytes per block (the first bytes of its MD5), all zero for a zero block. A collision can
 * only make a copy bring the wrong bytes, which the whole-image sha256 verification then catches.
 */

export const DELTA_BLOCK = 4096;
export const BLOCK_HASH_BYTES = 8;

export type SegmentKind = "keep" | "copy" | "data" | "zero";

/** A run of blocks of the new image, in blocks. */
export interface Segment {
  kind: SegmentKind;
  start: number;
  count: number;
}

/** Copy `count` blocks from block `src` of the disk to block `dst`. */
export interface CopyRun {
  src: number;
  dst: number;
  count: number;
}

export interface DeltaCounts {
  kept: number;
  copied: number;
  sent: number;
  zero: number;
}

export interface DeltaPlan {
  /** Whole blocks of the new image (a partial last block is not planned: it is always sent). */
  blocks: number;
  /** Copy runs in the order they must run. */
  copies: CopyRun[];
  /** Every block of the new image, in disk order, adjacent runs of one kind merged (copy runs kept apart). */
  segments: Segment[];
  counts: DeltaCounts;
  /** Copy runs taken out of cycles (staged through scratch space, or sent as data when it has no room). */
  cyclesBroken: number;
  /** Blocks staged through scratch space (0 when none), and the scratch range used, in blocks. */
  staged: number;
  scratch?: { start: number; count: number };
}

/** Free space on the disk past the image and the base, in blocks, for staging copies taken out of cycles. */
export interface Scratch {
  start: number;
  count: number;
}

const ZERO_HASH = Buffer.alloc(BLOCK_HASH_BYTES);
/** Places of one content considered as a copy's source, and how far ahead they are compared. */
const MAX_CANDIDATES = 8;
const LOOKAHEAD = 64;

function hashAt(hashes: Buffer, i: number): Buffer {
  return hashes.subarray(i * BLOCK_HASH_BYTES, (i + 1) * BLOCK_HASH_BYTES);
}

function sameHash(a: Buffer, i: number, b: Buffer, j: number): boolean {
  return (
    a.compare(
      b,
      j * BLOCK_HASH_BYTES,
      (j + 1) * BLOCK_HASH_BYTES,
      i * BLOCK_HASH_BYTES,
      (i + 1) * BLOCK_HASH_BYTES,
    ) === 0
  );
}

/** Whether block `i` of `hashes` is a zero block. */
export function isZeroHash(hashes: Buffer, i: number): boolean {
  return hashAt(hashes, i).equals(ZERO_HASH);
}

/**
 * Plan the new image (`image`: one hash per whole block) against the base (`base`: one hash per whole block of the
 * base's content). Pure.
 */
export function planDelta(image: Buffer, base: Buffer, scratch?: Scratch): DeltaPlan {
  const n = Math.floor(image.length / BLOCK_HASH_BYTES);
  const m = Math.floor(base.length / BLOCK_HASH_BYTES);
  // The places of each non-zero content in the base (the first MAX_CANDIDATES).
  const where = new Map<string, number | number[]>();
  for (let j = 0; j < m; j++) {
    if (isZeroHash(base, j)) continue;
    const key = base.toString("latin1", j * BLOCK_HASH_BYTES, (j + 1) * BLOCK_HASH_BYTES);
    const had = where.get(key);
    if (had === undefined) where.set(key, j);
    else if (typeof had === "number") where.set(key, [had, j]);
    else if (had.length < MAX_CANDIDATES) had.push(j);
  }
  /** Of the places holding block i's content, the one whose following blocks match the image's longest. */
  const bestSource = (i: number): number | undefined => {
    const c = where.get(image.toString("latin1", i * BLOCK_HASH_BYTES, (i + 1) * BLOCK_HASH_BYTES));
    if (c === undefined || typeof c === "number") return c;
    let best = c[0] as number;
    let bestLen = -1;
    for (const j of c) {
      let len = 0;
      while (
        len < LOOKAHEAD &&
        i + len + 1 < n &&
        j + len + 1 < m &&
        sameHash(image, i + len + 1, base, j + len + 1)
      )
        len++;
      if (len > bestLen) {
        best = j;
        bestLen = len;
      }
    }
    return best;
  };
  const kind: SegmentKind[] = new Array<SegmentKind>(n);
  const src = new Int32Array(n).fill(-1);
  for (let i = 0; i < n; i++) {
    if (isZeroHash(image, i)) {
      kind[i] = "zero";
    } else if (i < m && sameHash(image, i, base, i)) {
      kind[i] = "keep";
    } else {
      // Prefer the block after the previous block's source: runs stay long.
      const prev = i > 0 && kind[i - 1] === "copy" ? (src[i - 1] as number) + 1 : -1;
      const s = prev >= 0 && prev < m && sameHash(image, i, base, prev) ? prev : bestSource(i);
      if (s === undefined) kind[i] = "data";
      else {
        kind[i] = "copy";
        src[i] = s;
      }
    }
  }
  // Copy runs: destination and source both contiguous.
  let runs: CopyRun[] = [];
  for (let i = 0; i < n; i++) {
    if (kind[i] !== "copy") continue;
    const last = runs[runs.length - 1];
    const s = src[i] as number;
    if (last && last.dst + last.count === i && last.src + last.count === s) last.count++;
    else runs.push({ src: s, dst: i, count: 1 });
  }
  const { order, broken } = orderCopies(runs);
  // Runs out of cycles: staged through scratch while it has room (smallest first), else sent as data.
  const stageIn: CopyRun[] = [];
  const stageOut: CopyRun[] = [];
  let used = 0;
  for (const r of [...broken].sort((a, b) => a.count - b.count)) {
    if (scratch && scratch.start >= Math.max(n, m) && used + r.count <= scratch.count) {
      stageIn.push({ src: r.src, dst: scratch.start + used, count: r.count });
      stageOut.push({ src: scratch.start + used, dst: r.dst, count: r.count });
      used += r.count;
    } else {
      for (let i = r.dst; i < r.dst + r.count; i++) kind[i] = "data";
    }
  }
  runs = [...stageIn, ...order, ...stageOut];
  const counts: DeltaCounts = { kept: 0, copied: 0, sent: 0, zero: 0 };
  const segments: Segment[] = [];
  const copyStarts = new Set([...order, ...stageOut].map((r) => r.dst));
  for (let i = 0; i < n; i++) {
    const k = kind[i] as SegmentKind;
    if (k === "keep") counts.kept++;
    else if (k === "copy") counts.copied++;
    else if (k === "data") counts.sent++;
    else counts.zero++;
    const last = segments[segments.length - 1];
    if (last && last.kind === k && last.start + last.count === i && !(k === "copy" && copyStarts.has(i)))
      last.count++;
    else segments.push({ kind: k, start: i, count: 1 });
  }
  return {
    blocks: n,
    copies: runs,
    segments,
    counts,
    cyclesBroken: broken.length,
    staged: used,
    ...(used > 0 && scratch ? { scratch: { start: scratch.start, count: used } } : {}),
  };
}

/**
 * Order copy runs so none reads blocks an earlier one wrote: an edge A -> B when A's source overlaps B's destination
 * (A != B). Returns the runs in a valid order and the runs dropped (to be sent as data) to break cycles.
 */
export function orderCopies(runs: readonly CopyRun[]): { order: CopyRun[]; broken: CopyRun[] } {
  const k = runs.length;
  // Destinations are disjoint; sort run indexes by destination for interval lookups.
  const byDst = [...runs.keys()].sort((a, b) => (runs[a] as CopyRun).dst - (runs[b] as CopyRun).dst);
  const dstStart = byDst.map((r) => (runs[r] as CopyRun).dst);
  const edges: number[][] = runs.map(() => []);
  for (let a = 0; a < k; a++) {
    const r = runs[a] as CopyRun;
    const lo = r.src;
    const hi = r.src + r.count;
    // First run (by destination) whose destination ends after lo.
    let left = 0;
    let right = k;
    while (left < right) {
      const mid = (left + right) >> 1;
      const d = runs[byDst[mid] as number] as CopyRun;
      if (d.dst + d.count <= lo) left = mid + 1;
      else right = mid;
    }
    for (let p = left; p < k && (dstStart[p] as number) < hi; p++) {
      const b = byDst[p] as number;
      if (b !== a) (edges[a] as number[]).push(b);
    }
  }
  // Kahn's algorithm, in destination order among the ready runs. When no run is ready, the runs left all wait on
  // one another: walk back along what each waits for until a run repeats (a cycle), and take the smallest run of that
  // cycle out (to be staged or sent as data). Each walk is as long as the path it follows, not the graph.
  const preds: number[][] = runs.map(() => []);
  const indegree = new Int32Array(k);
  for (let a = 0; a < k; a++) {
    for (const b of edges[a] as number[]) {
      (preds[b] as number[]).push(a);
      indegree[b] = (indegree[b] as number) + 1;
    }
  }
  /** 0: waiting, 1: ordered, 2: taken out. */
  const state = new Uint8Array(k);
  const ready: number[] = [];
  for (let a = 0; a < k; a++) if (indegree[a] === 0) ready.push(a);
  const order: CopyRun[] = [];
  const broken: CopyRun[] = [];
  const release = (a: number) => {
    for (const b of edges[a] as number[]) {
      if (state[b] !== 0) continue;
      indegree[b] = (indegree[b] as number) - 1;
      if (indegree[b] === 0) ready.push(b);
    }
  };
  const onPath = new Int32Array(k).fill(-1);
  let head = 0;
  let scan = 0;
  while (order.length + broken.length < k) {
    if (head < ready.length) {
      const a = ready[head++] as number;
      if (state[a] !== 0) continue;
      state[a] = 1;
      order.push(runs[a] as CopyRun);
      release(a);
      continue;
    }
    while (state[scan] !== 0) scan++;
    const path: number[] = [];
    let v = scan;
    let cycleFrom = -1;
    for (let guard = 0; guard <= k && cycleFrom < 0; guard++) {
      onPath[v] = path.length;
      path.push(v);
      const u = (preds[v] as number[]).find((w) => state[w] === 0);
      if (u === undefined) throw new Error("orderCopies: a waiting run waits for nothing");
      if ((onPath[u] as number) >= 0) cycleFrom = onPath[u] as number;
      else v = u;
    }
    let smallest = path[cycleFrom] as number;
    for (let i = cycleFrom; i < path.length; i++) {
      const w = path[i] as number;
      if ((runs[w] as CopyRun).count < (runs[smallest] as CopyRun).count) smallest = w;
    }
    for (const w of path) onPath[w] = -1;
    state[smallest] = 2;
    broken.push(runs[smallest] as CopyRun);
    release(smallest);
  }
  return { order, broken };
}
