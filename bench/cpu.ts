/**
 * CPU placement for the benchmark. On Hetzner the client and the rescue system are different machines; here they
 * share one. "split" gives each side its own cores: this process and everything it started (the emulator, its TCP
 * proxies, the rescue hosts' sshd and what runs in them) on the rescue side's cores, the measured client (hetznix's
 * child process, or the baseline's ssh) on the client's. "shared" lets both sides run anywhere, as before.
 *
 * Affinity is set with `taskset` (sched_setaffinity) on every thread of every process of the tree; processes started
 * later inherit it from their parent. Kernel work (the loop device's writes, loopback networking in softirq) is not
 * placed.
 */
import { spawn } from "node:child_process";
import { readFile, readdir } from "node:fs/promises";
import { cpus } from "node:os";

export type CpuMode = "split" | "shared";

export interface CpuPlan {
  mode: CpuMode;
  /** Cores of the client (a taskset list, e.g. "0"), or undefined for "anywhere". */
  client?: string;
  /** Cores of the rescue side (this process's tree). */
  rescue?: string;
  all: string;
}

/** split: the first half of the cores for the client, the rest for the rescue side (one each on two cores). */
export function cpuPlan(mode: CpuMode, count = cpus().length): CpuPlan {
  const all = `0-${count - 1}`;
  if (mode === "shared") return { mode, all };
  if (count < 2) throw new Error("the split CPU mode needs at least 2 cores");
  const half = Math.floor(count / 2);
  const range = (a: number, b: number) => (a === b ? String(a) : `${a}-${b}`);
  return { mode, client: range(0, half - 1), rescue: range(half, count - 1), all };
}

function taskset(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("taskset", args, { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve() : reject(new Error(`taskset ${args.join(" ")}: ${err.trim()}`)),
    );
  });
}

/** `root` and its descendants (at most 512 processes), from /proc/PID/task/TID/children. */
async function processTree(root: number): Promise<number[]> {
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0 && out.length < 512) {
    const pid = queue.shift()!;
    if (out.includes(pid)) continue;
    out.push(pid);
    const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
    for (const tid of tasks) {
      const children = await readFile(`/proc/${pid}/task/${tid}/children`, "utf8").catch(() => "");
      for (const c of children.trim().split(/\s+/)) if (c) queue.push(Number(c));
    }
  }
  return out;
}

/** Put this process and every process it started on `cores` (processes that end meanwhile are skipped). */
export async function placeOwnTree(cores: string): Promise<number> {
  const pids = await processTree(process.pid);
  let placed = 0;
  for (const pid of pids) {
    try {
      await taskset(["-a", "-p", "-c", cores, String(pid)]);
      placed++;
    } catch {
      // gone meanwhile
    }
  }
  return placed;
}

/** The command to start a measured client with: prefixed with taskset when the plan places the client. */
export function clientCommand(plan: CpuPlan, cmd: string, args: string[]): { cmd: string; args: string[] } {
  if (!plan.client) return { cmd, args };
  return { cmd: "taskset", args: ["-c", plan.client, cmd, ...args] };
}
