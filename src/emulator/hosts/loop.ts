/** Loop devices: attach, read their backing file, detach only what is ours. */
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface LoopDevice {
  path: string; // /dev/loopN
  name: string; // loopN
  major: number;
  minor: number;
}

/**
 * Attach `file` (or the part of it at `offset`, `sizeLimit` bytes long: a partition, since kernels built without
 * partition table support give loop devices no partitions).
 */
export async function attachLoop(
  file: string,
  opts: { offset?: number; sizeLimit?: number } = {},
): Promise<LoopDevice> {
  const { stdout } = await run("losetup", [
    "--find",
    "--show",
    "--direct-io=off",
    ...(opts.offset !== undefined ? ["--offset", String(opts.offset)] : []),
    ...(opts.sizeLimit !== undefined ? ["--sizelimit", String(opts.sizeLimit)] : []),
    "--",
    file,
  ]);
  const path = stdout.trim();
  const name = path.replace(/^\/dev\//, "");
  const [major, minor] = (await readFile(`/sys/block/${name}/dev`, "utf8")).trim().split(":").map(Number);
  if (major === undefined || minor === undefined || Number.isNaN(major) || Number.isNaN(minor)) {
    throw new Error(`cannot read device numbers of ${path}`);
  }
  return { path, name, major, minor };
}

/** The backing file of loopN, or undefined when the device is free. */
export async function loopBackingFile(name: string): Promise<string | undefined> {
  try {
    return (await readFile(`/sys/block/${name}/loop/backing_file`, "utf8")).trim();
  } catch {
    return undefined;
  }
}

/** Does loopN still serve `file` (same path, and the same inode when the file still exists)? */
export async function loopServes(name: string, file: string): Promise<boolean> {
  const backing = await loopBackingFile(name);
  if (backing === undefined) return false;
  if (backing === file) return true;
  // The kernel appends " (deleted)" when the backing file was unlinked.
  return backing === `${file} (deleted)`;
}

/** Detach loopN if (and only if) it still serves `file`. With openers left, the kernel detaches on last close. */
export async function detachLoopIfOurs(name: string, file: string): Promise<void> {
  if (!(await loopServes(name, file))) return;
  await run("losetup", ["--detach", `/dev/${name}`]);
}
