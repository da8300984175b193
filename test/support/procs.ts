/** Finding processes by what they run (from /proc), to check that a run left none of its helpers behind. */
import { readFile, readdir } from "node:fs/promises";
import { pause } from "../../src/util/time.js";

export interface ProcInfo {
  pid: number;
  ppid: number;
  /** The program name (comm). */
  name: string;
  /** The command line, arguments joined by spaces. */
  cmdline: string;
}

/** Every process visible in /proc (those that exit while being read are skipped). */
export async function processes(): Promise<ProcInfo[]> {
  const out: ProcInfo[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      // "pid (comm) state ppid ...": comm may hold spaces and parentheses; it ends at the last ')'.
      const close = stat.lastIndexOf(")");
      const name = stat.slice(stat.indexOf("(") + 1, close);
      const ppid = Number(stat.slice(close + 2).split(" ")[1]);
      const cmdline = (await readFile(`/proc/${entry}/cmdline`, "utf8")).replace(/\0/g, " ").trim();
      out.push({ pid: Number(entry), ppid, name, cmdline });
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/**
 * Waits (at most `ms`) until no process matches `match`; returns those still matching then (empty when none).
 * Killed helpers take a moment to be reaped, hence the wait.
 */
export async function remainingAfter(match: (p: ProcInfo) => boolean, ms = 3000): Promise<ProcInfo[]> {
  const deadline = Date.now() + ms;
  for (let i = 0; i < 1000; i++) {
    const found = (await processes()).filter(match);
    if (found.length === 0 || Date.now() >= deadline) return found;
    await pause(50);
  }
  return (await processes()).filter(match);
}
