/** Reading the disk files behind emulated servers and rescue hosts, and checking that nothing of them is left. */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { open, readFile, readdir } from "node:fs/promises";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Up to `length` bytes of the file at `offset` (fewer at its end). */
export async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** No loop device serves a disk under `stateDir`, and no mount or process of a rescue host under `rescueDir` remains. */
export async function assertNoHostResidue(stateDir: string, rescueDir: string): Promise<void> {
  const { stdout } = await run("losetup", ["--list", "--noheadings", "--output", "NAME,BACK-FILE"]);
  const loops = stdout.split("\n").filter((l) => l.includes(stateDir));
  assert.deepEqual(loops, [], "no loop device serves an emulator disk");
  const mounts = await readFile("/proc/self/mountinfo", "utf8");
  assert.ok(!mounts.includes(rescueDir), "no mount of a rescue host remains");
  const pids = (await readdir("/proc")).filter((p) => /^\d+$/.test(p));
  const stray: string[] = [];
  for (const pid of pids) {
    try {
      const cmd = (await readFile(`/proc/${pid}/cmdline`, "utf8")).replace(/\0/g, " ");
      if (cmd.includes(rescueDir)) stray.push(`${pid}: ${cmd}`);
    } catch {
      // exited meanwhile
    }
  }
  assert.deepEqual(stray, [], "no process of a rescue host remains");
}
