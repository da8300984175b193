/**
 * Run one client step in a child process and measure it: wall time, CPU time (user + sys of the whole child tree,
 * from GNU time's rusage of waited-for children), the largest process's peak RSS (GNU time), the peak of the tree's
 * summed RSS (sampled from /proc every 100 ms) and, through a callback, bytes on the wire.
 *
 * Children run in their own process group so a timeout or Ctrl-C ends the whole tree (`killActiveChildren`).
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, open, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Measurement {
  wallSeconds: number;
  userSeconds: number;
  sysSeconds: number;
  /** user + sys of the child tree. */
  cpuSeconds: number;
  /** Peak RSS of the largest single process in the tree (GNU time %M). */
  maxRssBytes: number;
  /** Peak of the sum of RSS over the child tree, sampled every 100 ms. */
  peakTreeRssBytes: number;
  exitCode: number | null;
  stdout: string;
  stderrTail: string;
}

export interface MeasureOptions {
  /** A file to give the child as its stdin (opened read-only, passed as the fd itself, as a shell `<` would). */
  stdinFile?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs: number;
}

const TIME = "/usr/bin/time";
const active = new Set<number>();

/** Kill every child process group started by `measureChild` that is still running. */
export function killActiveChildren(): void {
  for (const pgid of active) {
    try {
      process.kill(-pgid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  active.clear();
}

export async function measureChild(cmd: string, args: string[], opts: MeasureOptions): Promise<Measurement> {
  if (!existsSync(TIME)) throw new Error(`${TIME} is missing (Debian package "time")`);
  const dir = await mkdtemp(join(tmpdir(), "hetznix-bench-"));
  const timeFile = join(dir, "time");
  const stdin = opts.stdinFile ? await open(opts.stdinFile, "r") : undefined;
  try {
    const started = process.hrtime.bigint();
    const child = spawn(TIME, ["-o", timeFile, "-f", "%U %S %M", cmd, ...args], {
      stdio: [stdin ? stdin.fd : "ignore", "pipe", "pipe"],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      detached: true,
    });
    const pid = child.pid;
    if (pid === undefined) throw new Error(`could not start ${cmd}`);
    active.add(pid);
    let stdout = "";
    let stderrTail = "";
    child.stdout?.on("data", (c: Buffer) => (stdout = (stdout + c.toString()).slice(-1_000_000)));
    child.stderr?.on("data", (c: Buffer) => (stderrTail = (stderrTail + c.toString()).slice(-4000)));
    let peakTreeRss = 0;
    let sampling = false;
    const sampler = setInterval(() => {
      if (sampling) return;
      sampling = true;
      treeRss(pid)
        .then((rss) => {
          peakTreeRss = Math.max(peakTreeRss, rss);
        })
        .catch(() => undefined)
        .finally(() => (sampling = false));
    }, 100);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        // gone
      }
    }, opts.timeoutMs);
    const exitCode = await new Promise<number | null>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", (code) => resolve(code));
    });
    const wallSeconds = Number(process.hrtime.bigint() - started) / 1e9;
    clearTimeout(timer);
    clearInterval(sampler);
    active.delete(pid);
    if (timedOut) throw new Error(`${cmd} timed out after ${opts.timeoutMs} ms`);
    const [user, sys, maxRssKb] = (await readFile(timeFile, "utf8"))
      .trim()
      .split("\n")
      .pop()!
      .split(" ")
      .map(Number);
    return {
      wallSeconds,
      userSeconds: user ?? NaN,
      sysSeconds: sys ?? NaN,
      cpuSeconds: (user ?? NaN) + (sys ?? NaN),
      maxRssBytes: (maxRssKb ?? NaN) * 1024,
      peakTreeRssBytes: peakTreeRss,
      exitCode,
      stdout,
      stderrTail,
    };
  } finally {
    await stdin?.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Sum of VmRSS over `root` and its descendants, walked through /proc/PID/task/PID/children (at most 256). */
async function treeRss(root: number): Promise<number> {
  let total = 0;
  const queue = [root];
  const seen = new Set<number>();
  while (queue.length > 0 && seen.size < 256) {
    const pid = queue.shift()!;
    if (seen.has(pid)) continue;
    seen.add(pid);
    try {
      const status = await readFile(`/proc/${pid}/status`, "utf8");
      const vm = /\nVmRSS:\s+(\d+) kB/.exec(status);
      total += vm ? Number(vm[1]) * 1024 : 0;
      const children = await readFile(`/proc/${pid}/task/${pid}/children`, "utf8");
      for (const c of children.trim().split(/\s+/)) if (c) queue.push(Number(c));
    } catch {
      // exited meanwhile
    }
  }
  return total;
}
