/**
 * The block index: the 4 KiB block hashes of an image hetznix hashed on this machine (every incremental upload does,
 * step "hash"), kept by the image's sha256, so a later upload whose base snapshot carries that sha256 (labels
 * hetznix/sha256-a/-b) plans from it instead of hashing the base in the rescue system (step "base-hash").
 *
 * Never trusted blindly: the disk's whole-image sha256 after the write still decides, and a write planned from an
 * index that does not match the disk is redone in full on the same server, and the index dropped (write.ts).
 *
 * Files: `<cache dir>/block-index/<sha256>.idx` (the cache dir of hash-cache.ts), each a header line
 * (`hetznix-block-index 1 <block bytes> <hash bytes> <blocks>`) and the hashes; mode 0600, written atomically
 * (temporary file + rename); at most MAX_INDEX_BYTES in all, the least recently used removed first. Every method is
 * best effort: an I/O error means "no index", never a failed upload.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, readdir, rename, rm, stat, utimes } from "node:fs/promises";
import { join } from "node:path";
import { BLOCK_HASH_BYTES, DELTA_BLOCK } from "./plan.js";

export const INDEX_DIR_NAME = "block-index";
/** All index files together stay under this (a 4 GiB image's index is 8 MiB). */
export const MAX_INDEX_BYTES = 256 * 1024 * 1024;
const SHA = /^[0-9a-f]{64}$/;

function header(blocks: number): string {
  return `hetznix-block-index 1 ${DELTA_BLOCK} ${BLOCK_HASH_BYTES} ${blocks}\n`;
}

export class BlockIndex {
  constructor(
    readonly dir: string,
    private readonly maxBytes = MAX_INDEX_BYTES,
  ) {}

  private file(sha256: string): string {
    return join(this.dir, `${sha256}.idx`);
  }

  /** The hashes of the first `blocks` blocks of the image with this sha256, if an index of exactly that many is kept. */
  async load(sha256: string, blocks: number): Promise<Buffer | undefined> {
    if (!SHA.test(sha256)) return undefined;
    try {
      const data = await readFile(this.file(sha256));
      const head = Buffer.from(header(blocks), "latin1");
      if (
        data.length !== head.length + blocks * BLOCK_HASH_BYTES ||
        !data.subarray(0, head.length).equals(head)
      )
        return undefined;
      const now = new Date();
      await utimes(this.file(sha256), now, now).catch(() => undefined);
      return data.subarray(head.length);
    } catch {
      return undefined;
    }
  }

  /** Keep the block hashes of the image with this sha256 (then remove the oldest files beyond the size bound). */
  async save(sha256: string, hashes: Buffer): Promise<void> {
    if (!SHA.test(sha256) || hashes.length % BLOCK_HASH_BYTES !== 0) return;
    const blocks = hashes.length / BLOCK_HASH_BYTES;
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      const tmp = join(this.dir, `.${sha256}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
      try {
        const fh = await open(tmp, "wx", 0o600);
        try {
          await fh.writeFile(Buffer.concat([Buffer.from(header(blocks), "latin1"), hashes]));
        } finally {
          await fh.close();
        }
        await rename(tmp, this.file(sha256));
      } finally {
        await rm(tmp, { force: true });
      }
      await this.prune();
    } catch {
      // best effort
    }
  }

  /** Forget the index of this sha256 (it did not match a disk holding that content). */
  async drop(sha256: string): Promise<void> {
    if (SHA.test(sha256)) await rm(this.file(sha256), { force: true }).catch(() => undefined);
  }

  private async prune(): Promise<void> {
    const names = (await readdir(this.dir)).filter((n) => n.endsWith(".idx"));
    const files = [];
    for (const name of names) {
      const st = await stat(join(this.dir, name)).catch(() => undefined);
      if (st) files.push({ name, bytes: st.size, used: st.mtimeMs });
    }
    files.sort((a, b) => b.used - a.used);
    let total = 0;
    for (const f of files) {
      total += f.bytes;
      if (total > this.maxBytes) await rm(join(this.dir, f.name), { force: true });
    }
  }
}

/** The block index next to a hash cache file (`<dir>/hashes.json`). */
export function blockIndexBeside(cacheDir: string): BlockIndex {
  return new BlockIndex(join(cacheDir, INDEX_DIR_NAME));
}

/** Keep an image's block hashes once the disk proved to hold that content (`written`: its sha256). Best effort. */
export async function keepBlockIndex(
  index: BlockIndex,
  hashes: Promise<{ sha256: string; blocks: Buffer }>,
  written: string,
): Promise<void> {
  const h = await hashes.catch(() => undefined);
  if (h && h.sha256 === written) await index.save(h.sha256, h.blocks);
}
