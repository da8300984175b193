/**
 * One host: what a running server runs. A real OpenSSH sshd for root in its own mount, pid and UTS namespaces,
 * confined to a root of its own (init.ts says what is in it), behind a byte-counting proxy on <ip>:22. The kind:
 * - rescue: the rescue system; /dev/sda is the server's disk; keys from enable_rescue; fresh host key per boot.
 * - system: the server's NixOS-like root file system (ext4 labelled nixos) with its /nix, /etc/nix, /var and /root;
 *   the metadata agent runs at boot and sshd takes root's keys from the file it wrote; host keys on the disk.
 * - plain: a system image (ubuntu-24.04, ...) with an empty disk: keys from create, like cloud-init does.
 * - none: nothing bootable; nothing listens.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, open, readlink, rm, symlink, writeFile, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { shellQuote } from "../../run/remote.js";
import { fingerprintOf } from "../../ssh/keys.js";
import {
  HOSTKEY_PREFIX,
  INIT_HOLDING,
  INIT_PID_PREFIX,
  LOG_PREFIX,
  POWER_PREFIX,
  hetznixWrapper,
  initScript,
  powerScript,
  sshdConfig,
} from "./init.js";
import { attachLoop, detachLoopIfOurs, type LoopDevice } from "./loop.js";
import { freePort, killNamespace, processStart, processesInPidNamespace, releaseLoop } from "./process.js";

export { processStart, processesInPidNamespace };
import { hetznixPackage } from "./package.js";
import { probeDisk, type PartitionInfo } from "./probe.js";
import { startProxy, type Proxy } from "./proxy.js";
import type { Host, HostKind, HostSpec, VolumeSpec } from "./types.js";

const run = promisify(execFile);

/** Every host directory starts with this; the marker file inside identifies it for `sweep`. */
export const HOST_DIR_PREFIX = "hetznix-host-";
export const MARKER_FILE = "hetznix-host.json";
export const MARKER_KIND = "hetznix-host/2";

export interface HostMarker {
  kind: typeof MARKER_KIND;
  ownerPid: number;
  /** Start time of the owner process (field 22 of /proc/PID/stat), to tell a live owner from a reused pid. */
  ownerStart: string;
  serverId: number;
  ip: string;
  diskPath: string;
  loop?: string;
  /** Every loop device of the host (the whole disk first, then partitions). */
  loops?: string[];
  /** Loop devices of volumes (name and backing file). */
  volumeLoops?: { name: string; path: string }[];
  initPid?: number;
}

export interface HostSettings {
  workDir: string;
  sshPort: number;
  ramDisk: string;
  startTimeoutMs: number;
  log: (line: string) => void;
  hetznixCode: "running" | "dist";
}

/** A started host; extends the contract with what tests and diagnostics need. */
export interface StartedHost extends Host {
  /** `SHA256:...` of the host's ed25519 host key (empty for `none`). */
  readonly hostKeyFingerprint: string;
  /** Port the proxy listens on (22 unless configured otherwise). */
  readonly port: number;
  /** The host's private directory (removed by stop). */
  readonly dir: string;
  /** `loopN` serving the disk while the host runs ("" for `none`). */
  readonly loopDevice: string;
  /** `pid:[inode]` of the host's pid namespace, to find its processes from outside ("" for `none`). */
  readonly pidNamespace: string;
  /** Connections cut by `dropAfterBytes` so far. */
  readonly droppedConnections: number;
  /** Last lines sshd and the namespace init printed (diagnostics). */
  recentLog(): string[];
}

interface DiskDecision {
  kind: Exclude<HostKind, "rescue">;
  rootPart?: number | "disk";
  partitions?: PartitionInfo[];
  why: string;
}

/** Decides what a disk boot runs: a system host, a plain host, or nothing (with the reason). */
async function diskKind(spec: HostSpec): Promise<DiskDecision> {
  const contents = await probeDisk(spec.diskPath);
  if (contents.nixosRoot !== undefined) {
    const where = contents.nixosRoot === "disk" ? "the whole disk" : `partition ${contents.nixosRoot}`;
    return {
      kind: "system",
      rootPart: contents.nixosRoot,
      partitions: contents.partitions,
      why: `NixOS root file system on ${where}`,
    };
  }
  if (contents.allocatedBytes === 0 && spec.systemImage)
    return { kind: "plain", why: `system image ${spec.systemImage} (its files are not modelled)` };
  const parts = contents.partitions
    .map((p) => `${p.number}: ${p.fsType ?? "no file system"}${p.label ? ` labelled ${p.label}` : ""}`)
    .join("; ");
  return {
    kind: "none",
    why:
      contents.allocatedBytes === 0
        ? "the disk is empty: nothing to boot, nothing answers on port 22"
        : `no ext4 file system labelled nixos on the disk (${parts || "no partition table"}): nothing to boot, nothing answers on port 22`,
  };
}

export async function startHost(
  spec: HostSpec,
  settings: HostSettings,
  onStopped: () => void,
): Promise<StartedHost> {
  const log: string[] = [];
  const remember = (line: string): void => {
    log.push(line);
    if (log.length > 80) log.shift();
    settings.log(`[server ${spec.serverId}] ${line}`);
  };

  const decided:
    DiskDecision | { kind: "rescue"; why: string; rootPart?: undefined; partitions?: undefined } =
    spec.boot === "rescue" ? { kind: "rescue", why: "rescue system" } : await diskKind(spec);
  const kind: HostKind = decided.kind;
  if (kind === "none") {
    remember(decided.why);
    let stopped = false;
    return {
      serverId: spec.serverId,
      ip: spec.ip,
      kind,
      description: decided.why,
      dropAfterBytes: undefined,
      bytesIn: 0,
      bytesOut: 0,
      hostKeyFingerprint: "",
      port: settings.sshPort,
      dir: "",
      loopDevice: "",
      pidNamespace: "",
      droppedConnections: 0,
      recentLog: () => [...log],
      stop: async () => {
        if (!stopped) {
          stopped = true;
          onStopped();
        }
      },
    };
  }

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
  const loops: LoopDevice[] = [];
  let child: ChildProcess | undefined;
  let childExited: Promise<void> = Promise.resolve();
  let initPid: number | undefined;
  let pidNamespace = "";
  let stopping: Promise<void> | undefined;
  let dropAfterBytes: number | undefined;
  let hostKeyLine = "";
  /** Volumes attached now: their /dev name and the handle that keeps the (lazily detached) loop device. */
  const volumes = new Map<number, { dev: string; loop: LoopDevice; held: FileHandle; mountedAt?: string }>();
  /** Every volume loop device of this boot, released at stop (one detached live may linger while mounted). */
  const volumeLoops: { name: string; path: string }[] = [];
  let volumeQueue: Promise<void> = Promise.resolve();

  const inHost = (script: string): Promise<unknown> => {
    if (initPid === undefined) throw new Error("the host has no init");
    // The pid namespace too: the host's /proc only shows its own processes (mknod -m needs /proc/self).
    return run("nsenter", ["--target", String(initPid), "--mount", "--pid", "--", "/bin/sh", "-c", script], {
      timeout: 20_000,
    });
  };

  /** A volume appears as the next free /dev/sdX, held open by us so the lazily detached loop device stays. */
  const attachVolume = async (v: VolumeSpec): Promise<void> => {
    const taken = new Set([...volumes.values()].map((x) => x.dev));
    const dev = [..."bcdefghijklmnopq"].map((c) => `sd${c}`).find((d) => !taken.has(d));
    if (!dev) throw new Error(`server ${spec.serverId}: no free disk name for volume ${v.id}`);
    const loop = await attachLoop(v.path);
    volumeLoops.push({ name: loop.name, path: v.path });
    marker.volumeLoops = [...volumeLoops];
    await saveMarker();
    const held = await open(loop.path, "r+");
    try {
      await detachLoopIfOurs(loop.name, v.path);
      await inHost(
        `mknod -m 660 /dev/${dev} b ${loop.major} ${loop.minor} && mkdir -p /dev/disk/by-id && ` +
          `ln -sfn ../../${dev} /dev/disk/by-id/scsi-0HC_Volume_${v.id}` +
          (v.mount
            ? ` && mkdir -p ${v.mount.at} && mount -t ${v.mount.fsType} /dev/${dev} ${v.mount.at}`
            : ""),
      );
    } catch (err) {
      await held.close();
      throw err;
    }
    volumes.set(v.id, { dev, loop, held, ...(v.mount ? { mountedAt: v.mount.at } : {}) });
    remember(`volume ${v.id} attached as /dev/${dev}`);
  };

  const detachVolume = async (id: number): Promise<void> => {
    const v = volumes.get(id);
    if (!v) return;
    volumes.delete(id);
    const unmount = v.mountedAt ? `umount -l ${v.mountedAt}; rmdir ${v.mountedAt}; ` : "";
    await inHost(`${unmount}rm -f /dev/${v.dev} /dev/disk/by-id/scsi-0HC_Volume_${id}`).catch(
      () => undefined,
    );
    await v.held.close();
    remember(`volume ${id} detached (/dev/${v.dev})`);
  };

  const syncVolumes = (wanted: VolumeSpec[]): Promise<void> => {
    volumeQueue = volumeQueue.then(async () => {
      if (stopping !== undefined) return;
      for (const id of [...volumes.keys()]) if (!wanted.some((w) => w.id === id)) await detachVolume(id);
      for (const w of wanted) if (!volumes.has(w.id)) await attachVolume(w);
    });
    return volumeQueue;
  };

  const stop = (opts: { graceful?: boolean } = {}): Promise<void> => {
    stopping ??= (async () => {
      await proxy?.close();
      await volumeQueue.catch(() => undefined);
      await killNamespace(child, childExited, initPid, pidNamespace, opts.graceful === true);
      for (const v of volumes.values()) await v.held.close().catch(() => undefined);
      volumes.clear();
      for (const l of loops) await releaseLoop(l.name, spec.diskPath);
      for (const l of volumeLoops) await releaseLoop(l.name, l.path);
      await rm(dir, { recursive: true, force: true });
      onStopped();
    })();
    return stopping;
  };

  try {
    await saveMarker();
    await mkdir(join(dir, "root"), { mode: 0o755 });
    await writeFile(join(dir, "init.sh"), initScript(), { mode: 0o700 });
    if (kind !== "system") {
      await writeFile(
        join(dir, "authorized_keys"),
        spec.authorizedKeys.map((k) => k.trim() + "\n").join(""),
        {
          mode: 0o600,
        },
      );
      await run("ssh-keygen", [
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        `hetznix-${kind}-${spec.serverId}`,
        "-f",
        join(dir, "ssh_host_ed25519_key"),
      ]);
    }
    const pkg = hetznixPackage(settings.hetznixCode);
    await mkdir(join(dir, "bin"), { mode: 0o755 });
    await writeFile(join(dir, "bin", "power"), powerScript(), { mode: 0o755 });
    for (const name of ["poweroff", "halt", "reboot", "shutdown", "systemctl"]) {
      await symlink("power", join(dir, "bin", name));
    }
    if (pkg?.hostCommand) {
      const [, ...rest] = pkg.hostCommand;
      const main = rest[rest.length - 1] as string;
      const loader = rest[0] === "--import" ? rest[1] : undefined;
      await writeFile(join(dir, "bin", "hetznix"), hetznixWrapper(loader, main), { mode: 0o755 });
    }

    const sshdPort = await freePort(spec.ip);
    await writeFile(join(dir, "sshd_config"), sshdConfig({ ip: spec.ip, port: sshdPort, kind }), {
      mode: 0o600,
    });

    proxy = await startProxy({
      listenHost: spec.ip,
      listenPort: settings.sshPort,
      targetHost: spec.ip,
      targetPort: sshdPort,
      dropAfterBytes: () => dropAfterBytes,
    }).catch((err: unknown) => {
      throw new Error(
        `host ${spec.serverId}: cannot listen on ${spec.ip}:${settings.sshPort}: ${String(err)}`,
      );
    });

    loop = await attachLoop(spec.diskPath);
    loops.push(loop);
    marker.loop = loop.name;
    marker.loops = loops.map((l) => l.name);
    await saveMarker();
    const partDevs: string[] = [];
    let rootPart = "";
    if (kind === "system" && typeof decided.rootPart === "number") {
      // The root partition as a device of its own (/dev/sdaN in the host): a loop device over its byte range.
      const part = decided.partitions?.find((p) => p.number === decided.rootPart);
      if (!part) throw new Error(`partition ${decided.rootPart} vanished from ${spec.diskPath}`);
      const partLoop = await attachLoop(spec.diskPath, { offset: part.start, sizeLimit: part.size });
      loops.push(partLoop);
      marker.loops = loops.map((l) => l.name);
      await saveMarker();
      partDevs.push(`${part.number}=${partLoop.major}:${partLoop.minor}`);
      rootPart = String(part.number);
    }
    const env = [
      `KIND=${kind}`,
      `HOST_NAME=${shellQuote(kind === "rescue" ? "rescue" : spec.hostname)}`,
      `RAMDISK=${shellQuote(settings.ramDisk)}`,
      `DISK_DEV=${loop.major}:${loop.minor}`,
      `PART_DEVS=${shellQuote(partDevs.join(" "))}`,
      `ROOT_PART=${shellQuote(rootPart)}`,
      `METADATA_URL=${shellQuote(spec.metadataUrl ?? "")}`,
      `AGENT=(${kind === "system" && pkg ? pkg.command.map(shellQuote).join(" ") : ""})`,
      `PACKAGE_DIR=${shellQuote(pkg?.hostCommand ? pkg.dir : "")}`,
      `PACKAGE_ENTRIES=(${pkg?.hostCommand ? pkg.entries.map(shellQuote).join(" ") : ""})`,
    ];
    await writeFile(join(dir, "host.env"), env.join("\n") + "\n", { mode: 0o600 });

    const proc = spawn(
      "setpriv",
      [
        "--pdeathsig",
        "KILL",
        "--",
        "unshare",
        "--mount",
        "--pid",
        "--uts",
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
        "/bin/bash",
        join(dir, "init.sh"),
        dir,
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
        () => reject(new Error(`host ${spec.serverId}: sshd not ready after ${settings.startTimeoutMs} ms`)),
        settings.startTimeoutMs,
      );
      let holding: Promise<void> | undefined;
      createInterface({ input: proc.stdout! }).on("line", (line) => {
        if (line.startsWith(INIT_PID_PREFIX)) {
          initPid = Number(line.slice(INIT_PID_PREFIX.length));
          marker.initPid = initPid;
          void saveMarker().catch(() => undefined);
        } else if (line.startsWith(HOSTKEY_PREFIX)) {
          hostKeyLine = line.slice(HOSTKEY_PREFIX.length);
        } else if (line === INIT_HOLDING && loops.length > 0) {
          // Lazy detach: a device stays while the namespace holds it open (/dev/sda, the mounted root) and goes
          // away on its last close, so even a SIGKILLed emulator leaves no loop device once the namespace is gone.
          holding = Promise.all(loops.map((l) => detachLoopIfOurs(l.name, spec.diskPath))).then(
            () => undefined,
          );
          holding.catch(() => undefined); // reported below once sshd is up
        } else if (line.startsWith(POWER_PREFIX)) {
          const action = line.slice(POWER_PREFIX.length);
          remember(`power: ${action}`);
          setImmediate(() => (action === "reboot" ? spec.onReboot() : spec.onPowerOff()));
        } else if (line.startsWith(LOG_PREFIX)) {
          remember(line.slice(LOG_PREFIX.length));
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
            `host ${spec.serverId}: namespace exited during start (code ${code}, signal ${signal}):\n` +
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
      if (stopping === undefined) remember(`host ended by itself (code ${code}, signal ${signal})`);
    });
    if (initPid === undefined) throw new Error("namespace init did not report its pid");
    pidNamespace = await readlink(`/proc/${initPid}/ns/pid`);
    await syncVolumes(spec.volumes ?? []);

    const p = proxy;
    const loopName = loop.name;
    return {
      serverId: spec.serverId,
      ip: spec.ip,
      kind,
      description: decided.why,
      port: settings.sshPort,
      dir,
      hostKeyFingerprint: hostKeyLine ? fingerprintOf(hostKeyLine) : "",
      loopDevice: loopName,
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
      syncVolumes,
    };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}
