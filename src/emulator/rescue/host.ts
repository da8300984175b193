/**
 * One rescue host: a real OpenSSH sshd for root, in its own mount + pid namespace where /dev/sda is the server's
 * disk (a loop device), behind a byte-counting proxy on <ip>:22. See scripts.ts for what runs inside.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, readFile, readdir, readlink, rm, symlink, writeFile } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { fingerprintOf } from "../../ssh/keys.js";
import { attachLoop, detachLoopIfOurs, loopServes, type LoopDevice } from "./loop.js";
import { startProxy, type Proxy } from "./proxy.js";
import {
  INIT_HOLDING,
  INIT_PID_PREFIX,
  POWER_PREFIX,
  initScript,
  powerScript,
  sshdConfig,
} from "./scripts.js";
import type { RescueHost, RescueHostSpec } from "./types.js";

const run = promisify(execFile);

/** Every host directory starts with this; the marker file inside identifies it for `sweep`. */
export const HOST_DIR_PREFIX = "hetznix-rescue-";
export const MARKER_FILE = "hetznix-rescue.json";
export const MARKER_KIND = "hetznix-rescue-host/1";

export interface HostMarker {
  kind: typeof MARKER_KIND;
  ownerPid: number;
  /** Start time of the owner process (field 22 of /proc/PID/stat), to tell a live owner from a reused pid. */
  ownerStart: string;
  serverId: number;
  ip: string;
  diskPath: string;
  loop?: string;
  initPid?: number;
}

export interface HostSettings {
  workDir: string;
  sshPort: number;
  ramDisk: string;
  startTimeoutMs: number;
  log: (line: string) => void;
}

/** A started rescue host; extends the contract with what tests and diagnostics need. */
export interface StartedRescueHost extends RescueHost {
  /** `SHA256:...` of the host's freshly generated ed25519 host key. */
  readonly hostKeyFingerprint: string;
  /** Port the proxy listens on (22 unless configured otherwise). */
  readonly port: number;
  /** The host's private directory (removed by stop). */
  readonly dir: string;
  /** `loopN` serving the disk while the host runs. */
  readonly loopDevice: string;
  /** `pid:[inode]` of the host's pid namespace, to find its processes from outside. */
  readonly pidNamespace: string;
  /** Connections cut by `dropAfterBytes` so far. */
  readonly droppedConnections: number;
  /** Last lines sshd and the namespace init printed (diagnostics). */
  recentLog(): string[];
}

export async function startRescueHost(
  spec: RescueHostSpec,
  settings: HostSettings,
  onStopped: () => void,
): Promise<StartedRescueHost> {
  const log: string[] = [];
  const remember = (line: string): void => {
    log.push(line);
    if (log.length > 50) log.shift();
    settings.log(`[rescue ${spec.serverId}] ${line}`);
  };

  const dir = await mkdtemp(join(settings.workDir, `${HOST_DIR_PREFIX}${spec.serverId}-`));
  const marker: HostMarker = {
    kind: MARKER_KIND,
    ownerPid: process.pid,
    ownerStart: await processStart(process.pid),
    serverId: spec.serverId,
    ip: spec.ip,
    diskPath: spec.diskPath,
  };
  const saveMarker = (): Promise<void> => writeFile(join(dir, MARKER_FILE), JSON.stringify(marker) + "\n");

  let proxy: Proxy | undefined;
  let loop: LoopDevice | undefined;
  let child: ChildProcess | undefined;
  let childExited: Promise<void> = Promise.resolve();
  let initPid: number | undefined;
  let pidNamespace = "";
  let stopping: Promise<void> | undefined;
  let dropAfterBytes: number | undefined;

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await proxy?.close();
      await killNamespace(child, childExited, initPid, pidNamespace);
      if (loop !== undefined) await releaseLoop(loop.name, spec.diskPath);
      await rm(dir, { recursive: true, force: true });
      onStopped();
    })();
    return stopping;
  };

  try {
    await saveMarker();
    await writeFile(join(dir, "init.sh"), initScript({ ramDisk: settings.ramDisk }), { mode: 0o700 });
    await writeFile(join(dir, "authorized_keys"), spec.authorizedKeys.map((k) => k.trim() + "\n").join(""), {
      mode: 0o600,
    });
    await mkdir(join(dir, "bin"), { mode: 0o755 });
    await writeFile(join(dir, "bin", "power"), powerScript(), { mode: 0o755 });
    for (const name of ["poweroff", "halt", "reboot", "shutdown", "systemctl"]) {
      await symlink("power", join(dir, "bin", name));
    }
    await run("ssh-keygen", [
      "-q",
      "-t",
      "ed25519",
      "-N",
      "",
      "-C",
      `hetznix-rescue-${spec.serverId}`,
      "-f",
      join(dir, "ssh_host_ed25519_key"),
    ]);
    const hostKeyFingerprint = fingerprintOf(await readFile(join(dir, "ssh_host_ed25519_key.pub"), "utf8"));

    const sshdPort = await freePort(spec.ip);
    await writeFile(join(dir, "sshd_config"), sshdConfig({ ip: spec.ip, port: sshdPort }), { mode: 0o600 });

    proxy = await startProxy({
      listenHost: spec.ip,
      listenPort: settings.sshPort,
      targetHost: spec.ip,
      targetPort: sshdPort,
      dropAfterBytes: () => dropAfterBytes,
    }).catch((err: unknown) => {
      throw new Error(
        `rescue host ${spec.serverId}: cannot listen on ${spec.ip}:${settings.sshPort}: ${String(err)}`,
      );
    });

    loop = await attachLoop(spec.diskPath);
    marker.loop = loop.name;
    await saveMarker();

    const proc = spawn(
      "setpriv",
      [
        "--pdeathsig",
        "KILL",
        "--",
        "unshare",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
        "/bin/bash",
        join(dir, "init.sh"),
        dir,
        String(loop.major),
        String(loop.minor),
      ],
      {
        stdio: ["ignore", "pipe", "pipe"],
        env: { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C.UTF-8" },
      },
    );
    child = proc;
    childExited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));

    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(`rescue host ${spec.serverId}: sshd not ready after ${settings.startTimeoutMs} ms`),
          ),
        settings.startTimeoutMs,
      );
      let holding: Promise<void> | undefined;
      createInterface({ input: proc.stdout! }).on("line", (line) => {
        if (line.startsWith(INIT_PID_PREFIX)) {
          initPid = Number(line.slice(INIT_PID_PREFIX.length));
          marker.initPid = initPid;
          void saveMarker().catch(() => undefined);
        } else if (line === INIT_HOLDING && loop !== undefined) {
          // Lazy detach: the device stays while the namespace holds /dev/sda open and goes away on its last
          // close, so even a SIGKILLed emulator leaves no loop device behind once the namespace is gone.
          holding = detachLoopIfOurs(loop.name, spec.diskPath);
          holding.catch(() => undefined); // reported below once sshd is up
        } else if (line.startsWith(POWER_PREFIX)) {
          const action = line.slice(POWER_PREFIX.length);
          remember(`power: ${action}`);
          setImmediate(() => (action === "reboot" ? spec.onReboot() : spec.onPowerOff()));
        } else {
          remember(line);
        }
      });
      createInterface({ input: proc.stderr! }).on("line", (line) => {
        remember(line);
        if (holding !== undefined && /Server listening on /.test(line)) {
          clearTimeout(timer);
          holding.then(resolve, (err: unknown) =>
            reject(new Error(`cannot lazily detach ${loop?.path}: ${String(err)}`)),
          );
        }
      });
      proc.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(
          new Error(
            `rescue host ${spec.serverId}: namespace exited during start (code ${code}, signal ${signal}):\n` +
              log.slice(-10).join("\n"),
          ),
        );
      });
      proc.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    await ready;
    proc.once("exit", (code, signal) => {
      if (stopping === undefined) remember(`rescue host ended by itself (code ${code}, signal ${signal})`);
    });
    if (initPid === undefined) throw new Error("namespace init did not report its pid");
    pidNamespace = await readlink(`/proc/${initPid}/ns/pid`);

    const p = proxy;
    return {
      serverId: spec.serverId,
      ip: spec.ip,
      port: settings.sshPort,
      dir,
      hostKeyFingerprint,
      loopDevice: loop.name,
      pidNamespace,
      get dropAfterBytes() {
        return dropAfterBytes;
      },
      set dropAfterBytes(v: number | undefined) {
        dropAfterBytes = v;
      },
      get bytesIn() {
        return p.bytesIn;
      },
      get bytesOut() {
        return p.bytesOut;
      },
      get droppedConnections() {
        return p.dropped;
      },
      recentLog: () => [...log],
      stop,
    };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}

async function killNamespace(
  child: ChildProcess | undefined,
  exited: Promise<void>,
  initPid: number | undefined,
  pidNamespace: string,
): Promise<void> {
  if (child === undefined) return;
  if (child.exitCode === null && child.signalCode === null) {
    // Killing pid 1 of the namespace makes the kernel kill all of its processes; unshare (our child) exits once
    // they are all gone. Check the namespace first so a recycled pid is never hit.
    let killedInit = false;
    if (initPid !== undefined && pidNamespace !== "") {
      const ns = await readlink(`/proc/${initPid}/ns/pid`).catch(() => "");
      if (ns === pidNamespace) {
        try {
          process.kill(initPid, "SIGKILL");
          killedInit = true;
        } catch {
          // already gone
        }
      }
    }
    if (!killedInit) child.kill("SIGKILL"); // --kill-child passes SIGKILL on to pid 1
  }
  await withTimeout(exited, 15_000);
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
      await sleep(100);
    }
    throw new Error(`processes of ${pidNamespace} survived SIGKILL`);
  }
}

async function releaseLoop(name: string, diskPath: string): Promise<void> {
  // The lazy detach normally frees the device on the namespace's last close; the kernel may finish that a moment
  // later. Detach explicitly if it is still ours (e.g. start failed before the lazy detach).
  for (let i = 0; i < 50; i++) {
    if (!(await loopServes(name, diskPath))) return;
    if (i === 10 || i === 30) await detachLoopIfOurs(name, diskPath).catch(() => undefined);
    await sleep(100);
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

async function freePort(host: string): Promise<number> {
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

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}
