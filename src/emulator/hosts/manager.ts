/** Starts, finds and stops hosts; `sweep` clears what a crashed emulator left behind. */
import { execFile } from "node:child_process";
import { readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { pause } from "../../util/time.js";
import { detachLoopIfOurs, loopServes } from "./loop.js";
import {
  HOST_DIR_PREFIX,
  MARKER_FILE,
  MARKER_KIND,
  processStart,
  startHost,
  type HostMarker,
  type StartedHost,
} from "./runtime.js";
import type { HostManager, HostSpec } from "./types.js";

const run = promisify(execFile);

export type { StartedHost } from "./runtime.js";

/** Host directories of earlier versions (swept too). */
const OLD_PREFIXES = ["hetznix-rescue-"];

export interface HostManagerOptions {
  /** Where per-host directories are made (default: the OS temp dir). Must not be under /run, /dev, /proc or /sys. */
  workDir?: string;
  /** Port the proxy listens on at each host's ip (default 22). */
  sshPort?: number;
  /** Size of the tmpfs /tmp (and /root, but in system hosts) inside a host, like the rescue RAM disk (default "1g"). */
  ramDisk?: string;
  /** Give up starting a host after this long (default 20 s). */
  startTimeoutMs?: number;
  /** Diagnostics (sshd log lines etc.); silent by default. */
  log?: (line: string) => void;
  /**
   * Which hetznix the hosts run (the metadata agent at boot, `hetznix` inside): the running code (default), or the
   * built dist/ (`npm run build` first), which starts several times faster than the TypeScript loader.
   */
  hetznixCode?: "running" | "dist";
}

export interface RealHostManager extends HostManager {
  start(spec: HostSpec): Promise<StartedHost>;
  get(serverId: number): StartedHost | undefined;
}

export function createHostManager(opts: HostManagerOptions = {}): RealHostManager {
  const workDir = resolve(opts.workDir ?? tmpdir());
  if (/^\/(run|dev|proc|sys)(\/|$)/.test(workDir)) {
    throw new Error(`host workDir ${workDir} would be hidden inside the host's namespace`);
  }
  const settings = {
    workDir,
    sshPort: opts.sshPort ?? 22,
    ramDisk: opts.ramDisk ?? "1g",
    startTimeoutMs: opts.startTimeoutMs ?? 20_000,
    log: opts.log ?? (() => undefined),
    hetznixCode: opts.hetznixCode ?? "running",
  };
  if (!/^\d+[kmg]?$/.test(settings.ramDisk)) throw new Error(`invalid ramDisk size ${settings.ramDisk}`);
  const hosts = new Map<number, StartedHost>();
  const starting = new Set<number>();

  return {
    async start(spec) {
      if (hosts.has(spec.serverId) || starting.has(spec.serverId)) {
        throw new Error(`a host for server ${spec.serverId} is already running`);
      }
      starting.add(spec.serverId);
      try {
        // sshd's port is picked free just before it binds; another process may take it meanwhile: retry then.
        for (let attempt = 1; ; attempt++) {
          try {
            const host = await startHost(spec, settings, () => {
              if (hosts.get(spec.serverId) === host) hosts.delete(spec.serverId);
            });
            hosts.set(spec.serverId, host);
            return host;
          } catch (err) {
            if (attempt >= 3 || !/Cannot bind any address/.test(String(err))) throw err;
          }
        }
      } finally {
        starting.delete(spec.serverId);
      }
    },
    get(serverId) {
      return hosts.get(serverId);
    },
    async stopAll() {
      const results = await Promise.allSettled([...hosts.values()].map((h) => h.stop()));
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed.length > 0) {
        throw new AggregateError(
          failed.map((f) => f.reason as unknown),
          "some hosts did not stop cleanly",
        );
      }
    },
  };
}

export interface SweepResult {
  /** Host directories removed (their owner process is gone). */
  removedDirs: string[];
  /** Loop devices detached because they still served a crashed host's disk. */
  detachedLoops: string[];
  /** Processes killed (only possible if the namespace outlived its owner, which pdeathsig should prevent). */
  killedPids: number[];
  /** Host directories left alone because their owner still runs. */
  skippedLive: string[];
}

/**
 * Remove what crashed emulators left: host directories whose owner process is gone, loop devices still serving
 * their disks, and any namespace init still alive. Never touches hosts of a running emulator or loop devices that
 * serve other files.
 */
export async function sweep(opts: { workDir?: string } = {}): Promise<SweepResult> {
  const workDir = resolve(opts.workDir ?? tmpdir());
  const result: SweepResult = { removedDirs: [], detachedLoops: [], killedPids: [], skippedLive: [] };
  for (const entry of await readdir(workDir)) {
    if (![HOST_DIR_PREFIX, ...OLD_PREFIXES].some((p) => entry.startsWith(p))) continue;
    const dir = join(workDir, entry);
    let marker: HostMarker;
    try {
      const file = (await readdir(dir)).find((f) => f === MARKER_FILE || f === "hetznix-rescue.json");
      if (file === undefined) continue;
      marker = JSON.parse(await readFile(join(dir, file), "utf8")) as HostMarker;
    } catch {
      continue; // not ours, or still being created
    }
    if (marker.kind !== MARKER_KIND && (marker.kind as string) !== "hetznix-rescue-host/1") continue;
    if (await isAlive(marker.ownerPid, marker.ownerStart)) {
      result.skippedLive.push(dir);
      continue;
    }
    if (marker.initPid !== undefined && (await initStillRuns(marker.initPid, dir))) {
      try {
        process.kill(marker.initPid, "SIGKILL");
        result.killedPids.push(marker.initPid);
      } catch {
        // gone meanwhile
      }
    }
    if (marker.loop !== undefined) {
      for (let i = 0; i < 20; i++) {
        const { stdout } = await run("losetup", [
          "--noheadings",
          "--output",
          "NAME",
          "--associated",
          marker.diskPath,
        ]).catch(() => ({ stdout: "" }));
        if (!stdout.split("\n").some((l) => l.trim() === `/dev/${marker.loop}`)) break;
        if (i === 0) result.detachedLoops.push(marker.loop);
        await detachLoopIfOurs(marker.loop, marker.diskPath).catch(() => undefined);
        await pause(100);
      }
    }
    for (const v of marker.volumeLoops ?? []) {
      if (!(await loopServes(v.name, v.path))) continue;
      result.detachedLoops.push(v.name);
      await detachLoopIfOurs(v.name, v.path).catch(() => undefined);
    }
    await rm(dir, { recursive: true, force: true });
    result.removedDirs.push(dir);
  }
  return result;
}

async function isAlive(pid: number, start: string): Promise<boolean> {
  try {
    return (await processStart(pid)) === start;
  } catch {
    return false;
  }
}

/** Is `pid` still the init of that host (its command line names the host directory)? */
async function initStillRuns(pid: number, dir: string): Promise<boolean> {
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8");
    return cmdline.split("\0").includes(dir);
  } catch {
    return false;
  }
}
