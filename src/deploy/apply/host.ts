/**
 * The host side of an apply: where things are on a NixOS host, what it runs now, its one-apply-at-a-time lock, the
 * record of what was applied last, and running `switch-to-configuration` and health checks.
 */
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { mkdir, readFile, readlink, rename, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";

export interface ApplyPaths {
  /** Per-apply directories (request, events, result, confirmation), and the lock. Default /run/hetznix/apply. */
  runDir: string;
  /** What was applied last, and the history of outcomes. Default /var/lib/hetznix/apply. */
  stateDir: string;
  /** The system profile. Default /nix/var/nix/profiles/system. */
  profile: string;
  /** The running system's link. Default /run/current-system. */
  currentSystem: string;
  /** Where temporary GC roots go. Default /nix/var/nix/gcroots. */
  gcroots: string;
}

export const DEFAULT_PATHS: ApplyPaths = {
  runDir: "/run/hetznix/apply",
  stateDir: "/var/lib/hetznix/apply",
  profile: "/nix/var/nix/profiles/system",
  currentSystem: "/run/current-system",
  gcroots: "/nix/var/nix/gcroots",
};

/** Follows a chain of symlinks (relative ones against their directory) to a /nix/store path, if it leads to one. */
export async function storePathOf(link: string): Promise<string | undefined> {
  let at = link;
  for (let i = 0; i < 10; i++) {
    let target: string;
    try {
      target = await readlink(at);
    } catch {
      return undefined;
    }
    const next = resolve(dirname(at), target);
    const m = /^(\/nix\/store\/[^/]+)/.exec(next);
    if (m && next === m[1]) return next;
    at = next;
  }
  return undefined;
}

/** The generation number the profile link points at (`system-7-link` -> 7). */
export async function profileGeneration(profile: string): Promise<number | undefined> {
  try {
    const m = /-(\d+)-link$/.exec(await readlink(profile));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** This host's Nix system: what the running system says (NixOS writes `system`), else from the CPU. */
export async function hostSystem(paths: ApplyPaths): Promise<string> {
  try {
    const text = (await readFile(join(paths.currentSystem, "system"), "utf8")).trim();
    if (text) return text;
  } catch {
    // not a NixOS-like system
  }
  const arch = process.arch === "x64" ? "x86_64" : process.arch === "arm64" ? "aarch64" : process.arch;
  return `${arch}-linux`;
}

/** Start time of a process (field 22 of /proc/PID/stat), "" when it does not exist. */
function processStart(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? "";
  } catch {
    return "";
  }
}

export interface LockHolder {
  pid: number;
  nonce: string;
  started: string;
}

/** One apply at a time per host: an exclusive lock file; a lock whose process is gone is taken over. */
export function takeLock(runDir: string, nonce: string): { release(): void } | { holder: LockHolder } {
  const path = join(runDir, "lock");
  const me = { pid: process.pid, start: processStart(process.pid), nonce, started: new Date().toISOString() };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, "wx", 0o600);
      try {
        writeSync(fd, JSON.stringify(me));
      } finally {
        closeSync(fd);
      }
      return {
        release() {
          try {
            const now = JSON.parse(readFileSync(path, "utf8")) as { nonce?: string };
            if (now.nonce === nonce) rmSyncQuiet(path);
          } catch {
            // gone already
          }
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    let holder: { pid?: number; start?: string; nonce?: string; started?: string } = {};
    try {
      holder = JSON.parse(readFileSync(path, "utf8")) as typeof holder;
    } catch {
      continue; // being written or removed: look again
    }
    if (holder.pid !== undefined && holder.start && processStart(holder.pid) === holder.start)
      return { holder: { pid: holder.pid, nonce: holder.nonce ?? "?", started: holder.started ?? "?" } };
    rmSyncQuiet(path); // its apply died (killed, crashed): take over
  }
  return { holder: { pid: 0, nonce: "?", started: "?" } };
}

function rmSyncQuiet(path: string): void {
  try {
    rmSync(path, { force: true });
  } catch {
    // not ours to remove (permissions): the next take reports it
  }
}

export interface AppliedState {
  channel: string;
  channelUrl: string;
  serial: number;
  storePath: string;
  action: string;
  appliedAt: string;
}

export async function readState(stateDir: string): Promise<AppliedState | undefined> {
  try {
    return JSON.parse(await readFile(join(stateDir, "last.json"), "utf8")) as AppliedState;
  } catch {
    return undefined;
  }
}

export async function writeState(stateDir: string, state: AppliedState): Promise<void> {
  await mkdir(stateDir, { recursive: true, mode: 0o755 });
  const tmp = join(stateDir, `.last.json.${process.pid}`);
  await writeFile(tmp, JSON.stringify(state, null, 2) + "\n");
  await rename(tmp, join(stateDir, "last.json"));
}

/** Appends one line to the history of outcomes (kept to the last 200). */
export async function appendHistory(stateDir: string, entry: Record<string, unknown>): Promise<void> {
  await mkdir(stateDir, { recursive: true, mode: 0o755 });
  const path = join(stateDir, "history.jsonl");
  let lines: string[] = [];
  try {
    lines = (await readFile(path, "utf8")).split("\n").filter((l) => l.trim() !== "");
  } catch {
    // first entry
  }
  lines.push(JSON.stringify(entry));
  const tmp = join(stateDir, `.history.jsonl.${process.pid}`);
  await writeFile(tmp, lines.slice(-200).join("\n") + "\n");
  await rename(tmp, path);
}

export interface CommandResult {
  exitCode: number | null;
  signal: string | null;
  /** The last lines of its output (stdout and stderr together). */
  tail: string;
}

/** Runs a command, keeping the last lines of its output, killing it after `timeoutMs`. */
export function runCommand(
  file: string,
  args: string[],
  opts: { timeoutMs: number; env?: NodeJS.ProcessEnv; onLine?: (line: string) => void },
): Promise<CommandResult> {
  return new Promise((resolvePromise) => {
    const child = spawn(file, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...opts.env },
    });
    const lines: string[] = [];
    const take = (d: Buffer) => {
      for (const line of d.toString().split("\n")) {
        if (line === "") continue;
        opts.onLine?.(line);
        lines.push(line);
        if (lines.length > 20) lines.shift();
      }
    };
    child.stdout.on("data", take);
    child.stderr.on("data", take);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, opts.timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      resolvePromise({ exitCode: 127, signal: null, tail: err.message });
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      if (timedOut) lines.push(`(killed after ${Math.round(opts.timeoutMs / 1000)} s)`);
      resolvePromise({ exitCode: code, signal, tail: lines.join("\n") });
    });
  });
}
