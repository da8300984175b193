/** Disk files for emulated servers: sparse files, hole-keeping copies, allocated-size queries. */
import { execFile } from "node:child_process";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { promisify } from "node:util";
import type { DiskStore } from "./types.js";

const run = promisify(execFile);

export function createDiskStore(): DiskStore {
  return {
    async create(path, sizeBytes) {
      assertSize(sizeBytes);
      await mkdir(dirname(path), { recursive: true });
      const handle = await open(path, "w");
      try {
        await handle.truncate(sizeBytes);
      } finally {
        await handle.close();
      }
    },

    async copy(from, to, sizeBytes) {
      if (sizeBytes !== undefined) assertSize(sizeBytes);
      await mkdir(dirname(to), { recursive: true });
      const partial = `${to}.partial-${process.pid}`;
      try {
        // GNU cp shares extents where the filesystem can (reflink), otherwise copies only the data extents it finds
        // with SEEK_DATA/SEEK_HOLE and leaves holes (and zero runs) unallocated.
        await run("cp", ["--sparse=always", "--reflink=auto", "--", from, partial]);
        if (sizeBytes !== undefined) {
          const handle = await open(partial, "r+");
          try {
            if ((await handle.stat()).size < sizeBytes) await handle.truncate(sizeBytes);
          } finally {
            await handle.close();
          }
        }
        await rename(partial, to);
      } catch (err) {
        await rm(partial, { force: true });
        throw err;
      }
    },

    async allocatedBytes(path) {
      const st = await stat(path);
      return st.blocks * 512;
    },

    async remove(path) {
      await rm(path, { force: true });
    },

    async format(path, fsType) {
      // Lazy initialisation keeps a fresh file system sparse (a 10 GB volume allocates a few MB).
      if (fsType === "ext4")
        await run("mke2fs", ["-q", "-F", "-t", "ext4", "-E", "lazy_itable_init=1,lazy_journal_init=1", path]);
      else if (fsType === "xfs") await run("mkfs.xfs", ["-q", "-f", path]);
      else throw new Error(`unknown file system ${fsType}`);
    },

    async grow(path, sizeBytes) {
      assertSize(sizeBytes);
      const handle = await open(path, "r+");
      try {
        if ((await handle.stat()).size < sizeBytes) await handle.truncate(sizeBytes);
      } finally {
        await handle.close();
      }
    },
  };
}

function assertSize(sizeBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0)
    throw new RangeError(`invalid disk size ${sizeBytes}`);
}
