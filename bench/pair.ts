/**
 * A realistic image pair for the incremental upload (issue 16): two ext4 images made by `mke2fs -d` from two
 * store-like trees, as NixOS image builders make them (fixed UUID and hash seed, same size, no mount):
 *
 * - tree 1: N store paths `/nix/store/<32 nix-base32 chars>-<name>-<version>/` holding bin/, lib/ and share/
 *   files: many small ones, some large; contents are deterministic from the seed (AES-CTR keystream) and mixed
 *   like a real store: machine code (low-entropy bytes), compressed data (random bytes), strings and text, zero
 *   padding, so zstd ratios are about those of a real image;
 * - tree 2: tree 1 minus a share of its store paths (default 5%) plus new ones (default 10%), hash-named, so they
 *   sort anywhere among the others and everything after them moves on the disk.
 *
 * `ensurePair` caches a pair under `<workDir>/pairs/<key>/` (key = every parameter); `buildPair` builds one into a
 * directory (the tests' helper). `blockStats` compares two images block by block (4 KiB, by content), and
 * `newBlocksCompressedSize` measures the zstd size of the new image's blocks that the old one holds nowhere.
 */
import { spawn } from "node:child_process";
import { createCipheriv, createHash } from "node:crypto";
import { mkdir, open, readFile, rm, stat, symlink, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { levelArgs } from "../src/upload/level.js";
import { MiB, run, type Log } from "./images.js";
import { onCleanup } from "./cleanup.js";

/** The block size of the comparison (ext4's block size: file data is aligned to it). */
export const PAIR_BLOCK = 4096;
/** Bumped whenever the generator's output changes, so cached pairs of an older generator are not reused. */
const GENERATOR_VERSION = 1;

export interface PairSpec {
  /** Size of each raw disk image (both have the same size). A multiple of 4 KiB. */
  sizeBytes: number;
  seed: number;
  /** Share of the image that file data fills in tree 1 (default 0.5: a NixOS image is about half full). */
  fill?: number;
  /** Share of tree 1's store paths that tree 2 drops (default 0.05) ... */
  dropShare?: number;
  /** ... and share of new store paths it adds (default 0.10), both counted in tree 1's paths. */
  addShare?: number;
}

export interface PairImage {
  path: string;
  sizeBytes: number;
  storePaths: number;
  files: number;
  /** Bytes of regular files in the tree. */
  fileBytes: number;
}

export interface ImagePair {
  /** The directory holding both images (and, when cached, pair.json). */
  dir: string;
  key: string;
  spec: Required<PairSpec>;
  old: PairImage;
  new: PairImage;
  /** Store paths tree 2 dropped and added. */
  dropped: number;
  added: number;
}

function complete(spec: PairSpec): Required<PairSpec> {
  if (!Number.isInteger(spec.sizeBytes) || spec.sizeBytes % PAIR_BLOCK !== 0 || spec.sizeBytes < 8 * MiB) {
    throw new Error(`image size ${spec.sizeBytes}: expected a multiple of 4 KiB of at least 8 MiB`);
  }
  return { fill: 0.5, dropShare: 0.05, addShare: 0.1, ...spec };
}

/** The cache key: every parameter and the generator's version. */
export function pairKey(spec: PairSpec): string {
  const s = complete(spec);
  const mib = Math.round(s.sizeBytes / MiB);
  return `pair-v${GENERATOR_VERSION}-${mib}m-s${s.seed}-f${s.fill}-d${s.dropShare}-a${s.addShare}`;
}

/** Return the cached pair for `spec` under `<workDir>/pairs/`, building it first when missing or incomplete. */
export async function ensurePair(spec: PairSpec, workDir: string, log: Log): Promise<ImagePair> {
  const key = pairKey(spec);
  const dir = join(workDir, "pairs", key);
  const metaPath = join(dir, "pair.json");
  try {
    const meta = JSON.parse(await readFile(metaPath, "utf8")) as ImagePair;
    const [a, b] = await Promise.all([stat(meta.old.path), stat(meta.new.path)]);
    if (meta.dir === dir && a.size === meta.spec.sizeBytes && b.size === meta.spec.sizeBytes) {
      log(`pair ${key}: reusing ${dir}`);
      return meta;
    }
  } catch {
    // missing or incomplete: build it
  }
  await rm(dir, { recursive: true, force: true });
  // Stopped half-way (Ctrl-C): the partial pair (its staging tree is as large as the data) goes.
  let built = false;
  const settle = onCleanup(`pair ${key}`, async () => {
    if (!built) await rm(dir, { recursive: true, force: true });
  });
  try {
    const pair = await buildPair(spec, dir, log);
    await writeFile(metaPath, JSON.stringify(pair, null, 2) + "\n");
    built = true;
    return pair;
  } finally {
    await settle();
  }
}

/**
 * Build the pair into `dir` (created; old.img and new.img, the staging tree removed at the end). Deterministic for
 * a spec, apart from the filesystems' timestamps of the files.
 */
export async function buildPair(spec: PairSpec, dir: string, log: Log = () => undefined): Promise<ImagePair> {
  const s = complete(spec);
  const key = pairKey(s);
  const plan = planTrees(s);
  await mkdir(dir, { recursive: true });
  const staging = join(dir, "tree");
  await rm(staging, { recursive: true, force: true });
  try {
    const t1 = plan.tree1;
    log(`pair ${key}: writing tree 1 (${t1.length} store paths, ${mb(sumBytes(t1))})`);
    const w1 = await writePaths(staging, t1, s.seed);
    const oldPath = join(dir, "old.img");
    log(`pair ${key}: mke2fs -d (old image, ${w1.files} files)`);
    await makeExt4(oldPath, staging, s);
    for (const p of plan.dropped) await rm(join(staging, "nix", "store", p.name), { recursive: true });
    log(`pair ${key}: tree 2: ${plan.dropped.length} store paths dropped, ${plan.added.length} added`);
    const w2 = await writePaths(staging, plan.added, s.seed);
    const droppedFiles = plan.dropped.reduce((a, p) => a + p.files.length, 0);
    const droppedBytes = sumBytes(plan.dropped);
    const newPath = join(dir, "new.img");
    log(`pair ${key}: mke2fs -d (new image)`);
    await makeExt4(newPath, staging, s);
    const storePaths1 = t1.length;
    return {
      dir,
      key,
      spec: s,
      old: { path: oldPath, sizeBytes: s.sizeBytes, storePaths: storePaths1, ...w1 },
      new: {
        path: newPath,
        sizeBytes: s.sizeBytes,
        storePaths: storePaths1 - plan.dropped.length + plan.added.length,
        files: w1.files - droppedFiles + w2.files,
        fileBytes: w1.fileBytes - droppedBytes + w2.fileBytes,
      },
      dropped: plan.dropped.length,
      added: plan.added.length,
    };
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

// ---- the trees ----

type FileKind = "text" | "binary" | "packed";

interface PlannedFile {
  /** Relative to the store path. */
  rel: string;
  bytes: number;
  kind: FileKind;
}

interface StorePath {
  /** `<hash>-<name>-<version>` */
  name: string;
  files: PlannedFile[];
  /** `[link, target]` relative to the store path. */
  links: [string, string][];
}

/** mulberry32: a small seeded PRNG of 32-bit integers. */
function prng32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** The same, uniform in [0, 1). */
function prng(seed: number): () => number {
  const next = prng32(seed);
  return () => next() / 4294967296;
}

/** A standard normal sample (Box-Muller). */
function gauss(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

function logNormal(rand: () => number, median: number, sigma: number): number {
  return median * Math.exp(sigma * gauss(rand));
}

const NIX_BASE32 = "0123456789abcdfghijklmnpqrsvwxyz";
// prettier-ignore
const PACKAGES = [
  "glibc", "openssl", "systemd", "bash", "coreutils", "python3", "perl", "util-linux", "gcc-lib", "zlib",
  "zstd", "xz", "curl", "openssh", "iproute2", "kmod", "linux-modules", "firmware", "nix", "boost",
  "icu4c", "sqlite", "libxml2", "gnutls", "ncurses", "readline", "dbus", "polkit", "shadow", "e2fsprogs",
  "man-db", "tzdata", "cacert", "nodejs", "go", "rustc-lib", "libffi", "expat", "pcre2", "acl",
];
/** Where a store path keeps each kind of file (one directory per kind and path, chosen per path). */
const DIRS: Record<FileKind, string[]> = {
  binary: ["bin", "lib", "libexec"],
  text: ["share", "etc", "lib"],
  packed: ["share", "lib"],
};
const EXT: Record<FileKind, string[]> = {
  binary: ["", ".so", ".so.1", ".a", ".ko"],
  text: [".txt", ".py", ".conf", ".md", ".html", ".pl"],
  packed: [".gz", ".xz", ".bin", ".png"],
};

function storePathName(rand: () => number): string {
  let hash = "";
  for (let i = 0; i < 32; i++) hash += NIX_BASE32[Math.floor(rand() * 32)];
  const pkg = PACKAGES[Math.floor(rand() * PACKAGES.length)]!;
  const version = `${1 + Math.floor(rand() * 9)}.${Math.floor(rand() * 30)}.${Math.floor(rand() * 12)}`;
  return `${hash}-${pkg}-${version}`;
}

/** Files of one store path worth about `bytes`: many small text files, binaries of all sizes, a few packed. */
function planFiles(rand: () => number, bytes: number): Pick<StorePath, "files" | "links"> {
  const files: PlannedFile[] = [];
  const links: [string, string][] = [];
  const pickDir = (kind: FileKind) => DIRS[kind][Math.floor(rand() * DIRS[kind].length)]!;
  const dirOf: Record<FileKind, string> = {
    binary: pickDir("binary"),
    text: pickDir("text"),
    packed: pickDir("packed"),
  };
  let left = Math.max(1, Math.round(bytes));
  for (let i = 0; left > 0 && i < 20_000; i++) {
    const r = rand();
    const kind: FileKind = r < 0.5 ? "text" : r < 0.88 ? "binary" : "packed";
    const size =
      kind === "text"
        ? logNormal(rand, 2_000, 1.2)
        : kind === "packed"
          ? logNormal(rand, 6_000, 1.5)
          : logNormal(rand, 60_000, 1.6);
    const n = Math.max(1, Math.min(left, Math.round(size), 64 * MiB));
    const exts = EXT[kind];
    const dir = dirOf[kind];
    const rel = `${dir}/f${i}-${Math.floor(rand() * 1e6).toString(36)}${exts[Math.floor(rand() * exts.length)]!}`;
    files.push({ rel, bytes: n, kind });
    if (kind === "binary" && rand() < 0.15) links.push([`${rel}.link`, rel.split("/").pop()!]);
    left -= n;
  }
  return { files, links };
}

interface TreePlan {
  tree1: StorePath[];
  dropped: StorePath[];
  added: StorePath[];
}

/** Store path sizes: log-normal (heavy tail: a few paths hold much of the data), scaled to the fill. */
function planPaths(rand: () => number, count: number, meanBytes: number): StorePath[] {
  const sigma = 1.4;
  const median = meanBytes / Math.exp((sigma * sigma) / 2);
  const out: StorePath[] = [];
  for (let i = 0; i < count; i++) {
    const name = storePathName(rand);
    const bytes = Math.min(logNormal(rand, median, sigma), meanBytes * count * 0.08);
    out.push({ name, ...planFiles(rand, bytes) });
  }
  return out;
}

function planTrees(s: Required<PairSpec>): TreePlan {
  const fileBytes = s.sizeBytes * s.fill;
  // A NixOS system closure: about 1000 store paths for 2.5 GB; small images keep enough paths for the shares.
  const count = Math.round(Math.min(2000, Math.max(100, fileBytes / (2.5 * MiB))));
  const rand = prng(s.seed);
  const tree1 = planPaths(rand, count, fileBytes / count);
  const dropRand = prng(s.seed ^ 0x5eed);
  const order = tree1.map((p) => ({ p, r: dropRand() }));
  order.sort((a, b) => a.r - b.r);
  const dropped = order.slice(0, Math.round(count * s.dropShare)).map((o) => o.p);
  const added = planPaths(prng(s.seed ^ 0xadd), Math.round(count * s.addShare), fileBytes / count);
  return { tree1, dropped, added };
}

function sumBytes(paths: StorePath[]): number {
  return paths.reduce((a, p) => a + p.files.reduce((b, f) => b + f.bytes, 0), 0);
}

async function writePaths(
  staging: string,
  paths: StorePath[],
  seed: number,
): Promise<{ files: number; fileBytes: number }> {
  let files = 0;
  let fileBytes = 0;
  for (const p of paths) {
    const root = join(staging, "nix", "store", p.name);
    const dirs = new Set(p.files.map((f) => f.rel.slice(0, f.rel.lastIndexOf("/"))));
    for (const d of dirs) await mkdir(join(root, d), { recursive: true });
    for (const f of p.files) {
      await writeFile(join(root, f.rel), fileContent(seed, p.name, f));
      files++;
      fileBytes += f.bytes;
    }
    for (const [link, target] of p.links) await symlink(target, join(root, link));
  }
  return { files, fileBytes };
}

// ---- file contents ----

/**
 * The text parts: words of a fixed vocabulary, drawn with a Zipf-like skew (common words are common, as in real
 * text), separated by spaces, punctuation and line ends. Flat tables so that generating is a few table look-ups
 * per word.
 */
const TEXT = (() => {
  const rand = prng(0x70c4b);
  const letters = "etaoinshrdlcumwfgypbvkjxqz_";
  const count = 2048;
  const bytes: number[] = [];
  const start = new Uint32Array(count + 1);
  for (let i = 0; i < count; i++) {
    start[i] = bytes.length;
    const len = 2 + Math.floor(Math.pow(rand(), 1.5) * 10);
    for (let j = 0; j < len; j++)
      bytes.push(letters.charCodeAt(Math.floor(Math.pow(rand(), 1.6) * letters.length)));
  }
  start[count] = bytes.length;
  // 16 random bits -> word index, P(rank k) ~ 1/(k+1) (Zipf).
  const pick = new Uint16Array(1 << 16);
  const h = Math.log(count + 1);
  for (let x = 0; x < pick.length; x++)
    pick[x] = Math.min(count - 1, Math.floor(Math.exp(((x + 0.5) / pick.length) * h) - 1));
  const separators = " ,  . \n  ( /=  ".split("").map((c) => c.charCodeAt(0));
  return { words: Uint8Array.from(bytes), start, pick, separators };
})();

/** Low-entropy bytes (machine code, relocation tables): 256 keystream values mapped to a skewed set of 16. */
const CODE_BYTES = (() => {
  const symbols = [
    0x00, 0x48, 0x89, 0xff, 0x8b, 0xe8, 0x0f, 0x24, 0x44, 0xc3, 0x85, 0x74, 0x01, 0x45, 0x83, 0x31,
  ];
  const table = new Uint8Array(256);
  for (let v = 0, s = 0, edge = 128; v < 256; v++) {
    // symbol s covers half of what is left: 128, 64, 32, ... values (the last ones one each)
    if (v >= edge && s < symbols.length - 1) {
      s++;
      edge += Math.max(1, (256 - edge) >> 1);
    }
    table[v] = symbols[s]!;
  }
  return table;
})();

/** Deterministic bytes of one file: a keystream of its own, shaped by kind in 0.5-8 KiB segments. */
function fileContent(seed: number, storePath: string, f: PlannedFile): Buffer {
  const key = createHash("sha256").update(`${seed}\0${storePath}\0${f.rel}`).digest();
  const cipher = createCipheriv("aes-128-ctr", key.subarray(0, 16), key.subarray(16, 32));
  const buf = cipher.update(Buffer.alloc(f.bytes));
  const next = prng32(key.readUInt32LE(0));
  if (f.kind === "packed") return buf;
  if (f.kind === "text") {
    fillText(buf, 0, buf.length, next);
    return buf;
  }
  // Machine code and data: mostly low-entropy bytes, with strings, zero padding and some random data.
  for (let pos = 0; pos < buf.length;) {
    const len = Math.min(buf.length - pos, 512 + (next() % 7680));
    const r = next() % 100;
    if (r < 60) for (let i = pos; i < pos + len; i++) buf[i] = CODE_BYTES[buf[i]!]!;
    else if (r < 80) fillText(buf, pos, pos + len, next);
    else if (r < 90) buf.fill(0, pos, pos + len);
    // else: random (tables, compressed sections)
    pos += len;
  }
  return buf;
}

function fillText(buf: Buffer, from: number, to: number, next: () => number): void {
  const { words, start, pick, separators } = TEXT;
  let pos = from;
  // Each word advances by at least one byte: bounded by the range.
  for (let guard = 0; pos < to && guard < to - from; guard++) {
    const r = next();
    const w = pick[r & 0xffff]!;
    const end = Math.min(to, pos + start[w + 1]! - start[w]!);
    for (let i = start[w]!; pos < end; i++) buf[pos++] = words[i]!;
    if (pos < to) buf[pos++] = separators[(r >>> 16) % separators.length]!;
  }
}

// ---- the filesystem ----

/** A UUID (8-4-4-4-12 hex) derived from the seed and a purpose, fixed like a NixOS image builder's. */
function fixedUuid(seed: number, what: string): string {
  const h = createHash("sha256").update(`${what}\0${seed}`).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

async function makeExt4(path: string, staging: string, s: Required<PairSpec>): Promise<void> {
  await rm(path, { force: true });
  await writeFile(path, "");
  await truncate(path, s.sizeBytes);
  // As nixpkgs' make-ext4-fs: fixed UUID, hash seed and time; 4 KiB blocks at every size (small images too).
  await run("env", [
    "E2FSPROGS_FAKE_TIME=1",
    "mke2fs",
    "-q",
    "-F",
    "-t",
    "ext4",
    "-b",
    String(PAIR_BLOCK),
    "-L",
    "nixos",
    "-U",
    fixedUuid(s.seed, "uuid"),
    "-E",
    `hash_seed=${fixedUuid(s.seed, "hash_seed")}`,
    "-d",
    staging,
    path,
  ]);
}

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

// ---- comparing the two images ----

export interface BlockStats {
  /** Non-zero 4 KiB blocks of the new image (what the shares are of). */
  blocks: number;
  /** Of those: the old image has the same bytes at the same offset ... */
  sameOffset: number;
  /** ... the old image has the same bytes at another offset ... */
  elsewhere: number;
  /** ... the old image has them nowhere. */
  new: number;
  /** The same, in percent of `blocks`. */
  percent: { sameOffset: number; elsewhere: number; new: number };
}

/** Blocks read per chunk when streaming an image. */
const CHUNK_BLOCKS = 1024;
const ZERO_BLOCK = Buffer.alloc(PAIR_BLOCK);

/**
 * Call `fn(index, block)` for each 4 KiB block of `path` in order (the last one may be short), reading 4 MiB at a
 * time into one buffer (`block` is a view into it, valid during the call only).
 */
async function forEachBlock(
  path: string,
  fn: (index: number, block: Buffer) => void | Promise<void>,
): Promise<number> {
  const fh = await open(path, "r");
  try {
    const { size } = await fh.stat();
    const buf = Buffer.alloc(CHUNK_BLOCKS * PAIR_BLOCK);
    const blocks = Math.ceil(size / PAIR_BLOCK);
    for (let first = 0; first < blocks; first += CHUNK_BLOCKS) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, first * PAIR_BLOCK);
      for (let off = 0, i = first; off < bytesRead; off += PAIR_BLOCK, i++) {
        await fn(i, buf.subarray(off, Math.min(off + PAIR_BLOCK, bytesRead)));
      }
      if (bytesRead < buf.length) break;
    }
    return blocks;
  } finally {
    await fh.close();
  }
}

function isZeroBlock(block: Buffer): boolean {
  return block.length === PAIR_BLOCK
    ? block.equals(ZERO_BLOCK)
    : block.equals(ZERO_BLOCK.subarray(0, block.length));
}

/** 64 bits of the block's sha256 (0 is kept for "zero block"; a real hash of 0 would count as absent, harmlessly). */
function blockHash(block: Buffer): bigint {
  return createHash("sha256").update(block).digest().readBigUInt64LE(0);
}

/**
 * The old image's content index: its blocks' hashes by offset (0 for zero blocks) and, sorted, for look-ups by
 * content. 16 bytes per block of the image (32 MiB for 8 GiB), whatever it holds.
 */
class ContentIndex {
  private constructor(
    readonly byOffset: BigUint64Array,
    private readonly sorted: BigUint64Array,
  ) {}

  static async of(path: string): Promise<ContentIndex> {
    const { size } = await stat(path);
    const byOffset = new BigUint64Array(Math.ceil(size / PAIR_BLOCK));
    await forEachBlock(path, (i, block) => {
      if (i < byOffset.length && !isZeroBlock(block)) byOffset[i] = blockHash(block);
    });
    const sorted = byOffset.slice().sort();
    return new ContentIndex(byOffset, sorted);
  }

  has(hash: bigint): boolean {
    let lo = 0;
    let hi = this.sorted.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = this.sorted[mid]!;
      if (v === hash) return true;
      if (v < hash) lo = mid + 1;
      else hi = mid - 1;
    }
    return false;
  }
}

/**
 * Over the new image's non-zero 4 KiB blocks: how many the old image holds at the same offset, elsewhere, or
 * nowhere, compared by content (64 bits of sha256 per block). Streams both images; memory is the index above.
 */
export async function blockStats(oldPath: string, newPath: string): Promise<BlockStats> {
  const index = await ContentIndex.of(oldPath);
  let blocks = 0;
  let sameOffset = 0;
  let elsewhere = 0;
  await forEachBlock(newPath, (i, block) => {
    if (isZeroBlock(block)) return;
    blocks++;
    const h = blockHash(block);
    if (i < index.byOffset.length && index.byOffset[i] === h) sameOffset++;
    else if (index.has(h)) elsewhere++;
  });
  const fresh = blocks - sameOffset - elsewhere;
  const pct = (n: number) => (blocks === 0 ? 0 : (n / blocks) * 100);
  return {
    blocks,
    sameOffset,
    elsewhere,
    new: fresh,
    percent: { sameOffset: pct(sameOffset), elsewhere: pct(elsewhere), new: pct(fresh) },
  };
}

/**
 * The zstd size (at `level`, as the upload runs it: `zstd <level> -T0`) of the concatenation of the new image's
 * non-zero blocks that occur nowhere in the old image: what an ideal incremental upload must send at least.
 */
export async function newBlocksCompressedSize(
  oldPath: string,
  newPath: string,
  level: number,
): Promise<{ blocks: number; rawBytes: number; compressedBytes: number }> {
  const index = await ContentIndex.of(oldPath);
  const child = spawn("zstd", [...levelArgs(level), "-T0", "-c", "-q"], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  let compressedBytes = 0;
  child.stdout.on("data", (c: Buffer) => (compressedBytes += c.length));
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", resolve);
  });
  let blocks = 0;
  let rawBytes = 0;
  const write = (data: Buffer): Promise<void> =>
    new Promise((resolve, reject) => child.stdin.write(data, (err) => (err ? reject(err) : resolve())));
  try {
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    await forEachBlock(newPath, async (i, block) => {
      if (isZeroBlock(block)) return;
      const h = blockHash(block);
      if ((i < index.byOffset.length && index.byOffset[i] === h) || index.has(h)) return;
      blocks++;
      rawBytes += block.length;
      pending.push(Buffer.from(block));
      pendingBytes += block.length;
      if (pendingBytes >= 4 * MiB) {
        const data = Buffer.concat(pending);
        pending = [];
        pendingBytes = 0;
        await write(data);
      }
    });
    if (pendingBytes > 0) await write(Buffer.concat(pending));
    child.stdin.end();
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
  const code = await exited;
  if (code !== 0) throw new Error(`zstd ${levelArgs(level).join(" ")} exited with ${code}`);
  return { blocks, rawBytes, compressedBytes };
}

// ---- remembered per pair ----

interface PairFacts {
  stats?: BlockStats;
  /** By zstd level. */
  newBlocks?: Record<string, NewBlocksSize>;
}

export type NewBlocksSize = Awaited<ReturnType<typeof newBlocksCompressedSize>>;

async function readFacts(pair: ImagePair): Promise<PairFacts> {
  return JSON.parse(await readFile(join(pair.dir, "facts.json"), "utf8").catch(() => "{}")) as PairFacts;
}

async function rememberFacts(pair: ImagePair, change: (f: PairFacts) => void): Promise<void> {
  const facts = await readFacts(pair);
  change(facts);
  await writeFile(join(pair.dir, "facts.json"), JSON.stringify(facts, null, 2) + "\n");
}

/** `blockStats` of a pair, remembered beside its images (a pair is rebuilt in a new directory, never in place). */
export async function pairBlockStats(pair: ImagePair): Promise<BlockStats> {
  const known = (await readFacts(pair)).stats;
  if (known) return known;
  const stats = await blockStats(pair.old.path, pair.new.path);
  await rememberFacts(pair, (f) => (f.stats = stats));
  return stats;
}

/** `newBlocksCompressedSize` of a pair at `level`, remembered beside its images. */
export async function pairNewBlocks(pair: ImagePair, level: number): Promise<NewBlocksSize> {
  const known = (await readFacts(pair)).newBlocks?.[String(level)];
  if (known) return known;
  const size = await newBlocksCompressedSize(pair.old.path, pair.new.path, level);
  await rememberFacts(pair, (f) => (f.newBlocks = { ...f.newBlocks, [String(level)]: size }));
  return size;
}
