/**
 * The processes and devices of a host seen from the machine: killing its PID namespace (gracefully first when asked),
 * releasing its loop devices, finding its processes, a free port for its sshd.
 */
import type { ChildProcess } from "node:child_process";
import { readFile, readdir, readlink } from "node:fs/promises";
import net from "node:net";
import { pause, within } from "../../util/time.js";
import { detachLoopIfOurs, loopServes } from "./loop.js";

export async function killNamespace(
  child: ChildProcess | undefined,
  exited: Promise<void>,
  initPid: number | undefined,
  pidNamespace: string,
  graceful: boolean,
): Promise<void> {
  if (child === undefined) return;
  const alive = () => child.exitCode === null && child.signalCode === null;
  // Signal pid 1 of the namespace only while it is still the same process (a recycled pid is never hit).
  const signalInit = async (signal: NodeJS.Signals): Promise<boolean> => {
    if (initPid === undefined || pidNamespace === "") return false;
    const ns = await readlink(`/proc/${initPid}/ns/pid`).catch(() => "");
    if (ns !== pidNamespace) return false;
    try {
      process.kill(initPid, signal);
      return true;
    } catch {
      return false;
    }
  };
  if (graceful && alive() && (await signalInit("SIGTERM"))) {
    // ACPI: init stops sshd and the host's processes, syncs, exits.
    await within(exited, 5_000);
  }
  if (alive()) {
    // Killing pid 1 of the namespace makes the kernel kill all of its processes; unshare (our child) exits once
    // they are all gone.
    if (!(await signalInit("SIGKILL"))) child.kill("SIGKILL"); // --kill-child passes SIGKILL on to pid 1
  }
  await within(exited, 15_000);
  if (pidNamespace !== "") {
    for (let i = 0; i < 50; i++) {
      const left = await processesInPidNamespace(pidNamespace);
      if (left.length === 0) return;
      for (const pid of left) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // gone meanwhile
        }
      }
      await pause(100);
    }
    throw new Error(`processes of ${pidNamespace} survived SIGKILL`);
  }
}

export async function releaseLoop(name: string, diskPath: string): Promise<void> {
  // The lazy detach normally frees the device on the namespace's last close (after its file systems are
  // unmounted, which the kernel finishes a moment later). Detach explicitly if it is still ours.
  for (let i = 0; i < 300; i++) {
    if (!(await loopServes(name, diskPath))) return;
    if (i === 10 || i === 50 || i === 150) await detachLoopIfOurs(name, diskPath).catch(() => undefined);
    await pause(100);
  }
  throw new Error(`loop device ${name} still attached to ${diskPath}`);
}

/** Host pids of all processes whose pid namespace is `ns` (`pid:[inode]`). */
export async function processesInPidNamespace(ns: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const link = await readlink(`/proc/${entry}/ns/pid`).catch(() => "");
    if (link === ns) pids.push(Number(entry));
  }
  return pids;
}

export async function processStart(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may contain spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields[19] ?? "";
}

export async function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen({ host, port: 0 }, () => {
      const addr = srv.address();
      srv.close(() =>
        typeof addr === "object" && addr !== null ? resolve(addr.port) : reject(new Error("no port")),
      );
    });
  });
}
