/**
 * Realistic benchmark images: an ext4 filesystem in a raw disk image, filled with real files copied from this
 * machine (documentation, binaries, libraries) by `mke2fs -d`, which needs no mount. Images are cached under
 * bench/.work/images/ (gitignored) and reused when their metadata file says they are complete.
 */
import { spawn } from "node:child_process";
import {
  open,
  link,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  truncate,
  writeFile,
  copyFile,
} from "node:fs/promises";
import { dirname, join } from "node:path";
import { EXTENT_BLOCK, isZero } from "../src/upload/extents.js";

export interface BenchImage {
  name: string;
  path: string;
  /** Size of the raw disk image. */
  sizeBytes: number;
  /** Bytes of regular files put into the filesystem. */
  fileBytes: number;
  files: number;
  /** Size of `zstd -3` of the whole image (what the limit is computed from). */
  zstd3Bytes: number;
  /** Bytes in the image's 4 MiB blocks that are not all zeros (what hetznix's extent stream carries). */
  dataBytes: number;
  /** Blocks actually allocated by the image file on the host (it is sparse). */
  allocatedBytes: number;
  /** sha256 of the whole image (what a default upload's hash step computes before the data phase). */
  sha256: string;
}

export interface ImageSpec {
  name: string;
  sizeBytes: number;
  /** Target byte count of real files to copy in. */
  fileBytes: number;
}

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;

/** The full run's image and the quick run's image (same mix of files, scaled). */
export const FULL_IMAGE: ImageSpec = { name: "realistic-4g", sizeBytes: 4 * GiB, fileBytes: 1_400_000_000 };
export const QUICK_IMAGE: ImageSpec = { name: "realistic-1g", sizeBytes: 1 * GiB, fileBytes: 350_000_000 };

/** Where files come from, in order, each with its share of the byte budget (the last one takes the rest). */
const SOURCES: { root: string; share: number }[] = [
  { root: "/usr/share/doc", share: 0.08 },
  { root: "/usr/bin", share: 0.15 },
  { root: "/usr/sbin", share: 0.03 },
  { root: "/usr/lib", share: 1 },
];

/** Bounds of the walk, whatever the machine holds. */
const MAX_ENTRIES_VISITED = 400_000;
const MAX_FILE_BYTES = 200 * MiB;

export type Log = (line: string) => void;

/** Return the cached image for `spec`, making it first if it is missing or incomplete. */
export async function ensureImage(spec: ImageSpec, workDir: string, log: Log): Promise<BenchImage> {
  const dir = join(workDir, "images");
  const path = join(dir, `${spec.name}.img`);
  const metaPath = join(dir, `${spec.name}.json`);
  const cached = await readCached(metaPath, path, spec);
  if (cached) {
    log(`image ${spec.name}: reusing ${path}`);
    return cached;
  }
  await mkdir(dir, { recursive: true });
  await rm(metaPath, { force: true });
  const staging = join(dir, `${spec.name}.staging`);
  await rm(staging, { recursive: true, force: true });
  try {
    log(`image ${spec.name}: picking ~${(spec.fileBytes / 1e9).toFixed(2)} GB of real files`);
    const picked = await stageFiles(staging, spec.fileBytes);
    log(
      `image ${spec.name}: ${picked.files} files, ${(picked.bytes / 1e9).toFixed(2)} GB; running mke2fs -d`,
    );
    await rm(path, { force: true });
    await writeFile(path, "");
    await truncate(path, spec.sizeBytes);
    await run("mke2fs", ["-q", "-F", "-t", "ext4", "-L", "bench", "-d", staging, path]);
    log(`image ${spec.name}: measuring zstd -3 size`);
    const zstd = await zstdSize(path, 3, 0);
    const allocatedBytes = (await stat(path)).blocks * 512;
    log(`image ${spec.name}: sha256`);
    const sha256 = (await run("sha256sum", [path])).split(" ")[0] ?? "";
    const dataBytes = await nonZeroBytes(path);
    const image: BenchImage = {
      dataBytes,
      name: spec.name,
      path,
      sizeBytes: spec.sizeBytes,
      fileBytes: picked.bytes,
      files: picked.files,
      zstd3Bytes: zstd.bytes,
      allocatedBytes,
      sha256,
    };
    await writeFile(metaPath, JSON.stringify(image, null, 2) + "\n");
    return image;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

async function readCached(metaPath: string, path: string, spec: ImageSpec): Promise<BenchImage | undefined> {
  try {
    const meta = JSON.parse(await readFile(metaPath, "utf8")) as BenchImage;
    const st = await stat(path);
    if (meta.sizeBytes !== spec.sizeBytes || st.size !== spec.sizeBytes || meta.path !== path)
      return undefined;
    if (!/^[0-9a-f]{64}$/.test(meta.sha256 ?? "")) return undefined;
    if (typeof meta.dataBytes !== "number") {
      // Metadata of an earlier version of this file: add what is missing.
      meta.dataBytes = await nonZeroBytes(path);
      await writeFile(metaPath, JSON.stringify(meta, null, 2) + "\n");
    }
    return meta;
  } catch {
    return undefined;
  }
}

/**
 * Hard-link (same filesystem) or copy regular files, and recreate symlinks, from SOURCES into `staging` until the
 * byte budget is used. The walk is depth-first in sorted order and bounded in entries visited.
 */
async function stageFiles(staging: string, budget: number): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  let visited = 0;
  for (const [i, source] of SOURCES.entries()) {
    const last = i === SOURCES.length - 1;
    const cap = last ? budget - bytes : Math.min(budget - bytes, budget * source.share);
    let taken = 0;
    const stack: string[] = [source.root];
    while (stack.length > 0 && taken < cap && visited < MAX_ENTRIES_VISITED) {
      const dir = stack.pop() as string;
      let entries: string[];
      try {
        entries = (await readdir(dir)).sort().reverse();
      } catch {
        continue;
      }
      for (const entry of entries) {
        if (taken >= cap || visited >= MAX_ENTRIES_VISITED) break;
        visited++;
        const from = join(dir, entry);
        const to = join(staging, from);
        let st;
        try {
          st = await lstat(from);
        } catch {
          continue;
        }
        if (st.isDirectory()) {
          stack.push(from);
        } else if (st.isSymbolicLink()) {
          await mkdir(dirname(to), { recursive: true });
          await symlink(await readlink(from), to).catch(() => undefined);
        } else if (st.isFile() && st.size <= MAX_FILE_BYTES && taken + st.size <= cap + 16 * MiB) {
          await mkdir(dirname(to), { recursive: true });
          try {
            await link(from, to);
          } catch {
            try {
              await copyFile(from, to);
            } catch {
              continue;
            }
          }
          files++;
          taken += st.size;
        }
      }
    }
    bytes += taken;
  }
  return { files, bytes };
}

/** Bytes and seconds of `zstd -LEVEL -T<threads>` over a file (threads 0 = one per core). */
export async function zstdSize(
  path: string,
  level: number,
  threads: number,
): Promise<{ bytes: number; seconds: number }> {
  const started = process.hrtime.bigint();
  const input = await open(path, "r");
  const child = spawn("zstd", [`-${level}`, `-T${threads}`, "-c", "-q"], {
    stdio: [input.fd, "pipe", "inherit"],
  });
  let bytes = 0;
  child.stdout?.on("data", (chunk: Buffer) => {
    bytes += chunk.length;
  });
  let code: number | null;
  try {
    code = await new Promise<number | null>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", resolve);
    });
  } finally {
    await input.close();
  }
  if (code !== 0) throw new Error(`zstd -${level} exited with ${code}`);
  return { bytes, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
}

/** Run a command to completion; throw with its stderr's tail if it fails. */
export function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (err = (err + c.toString()).slice(-4000)));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(" ")} exited with ${code}: ${err.trim()}`));
    });
  });
}

/** Bytes of `path` in EXTENT_BLOCK-sized blocks that are not all zeros. */
export async function nonZeroBytes(path: string): Promise<number> {
  let total = 0;
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(EXTENT_BLOCK);
    for (let pos = 0, i = 0; i < 1 << 20; i++) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      if (!isZero(buf.subarray(0, bytesRead))) total += bytesRead;
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return total;
}
