/**
 * The benchmark's rescue hosts: an in-process emulator with real rescue hosts (a real sshd per server, /dev/sda =
 * the server's disk on a loop device, a byte-counting proxy on <ip>:22), and one temporary server booted into
 * rescue for the data-phase runs. The baseline and hetznix write to the same server's disk.
 */
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { startEmulator, type RunningEmulator } from "../src/emulator/index.js";
import { sweep } from "../src/emulator/hosts/index.js";
import { HCloudClient } from "../src/hcloud/index.js";
import { generateKeyPair, type SshKeyPair } from "../src/ssh/keys.js";
import { run } from "./images.js";
import { onCleanup } from "./cleanup.js";

const OWNER_FILE = "owner.pid";

/** Remove emulator directories (state, sparse disks) of earlier runs whose process is gone. */
async function sweepEmulatorDirs(workDir: string): Promise<void> {
  for (const entry of await readdir(workDir)) {
    if (!entry.startsWith("emulator-")) continue;
    const dir = join(workDir, entry);
    const pid = Number(await readFile(join(dir, OWNER_FILE), "utf8").catch(() => "0"));
    if (pid > 0 && pid !== process.pid && isAlive(pid)) continue;
    await rm(dir, { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface BenchEmulator {
  /** This emulator's private directory (state, disks, the benchmark key); removed by stop(). */
  dir: string;
  emulator: RunningEmulator;
  client: HCloudClient;
  /** Byte counters of a server's rescue host (the proxy in front of its sshd), when it runs. */
  rescueCounters(serverId: number): { bytesIn: number; bytesOut: number } | undefined;
  stop(): Promise<void>;
}

/**
 * Start an emulator with real rescue hosts. `speed` divides its modelled latencies (1 = like Hetzner). The API token
 * is random and local to this process; it is passed to client children through their environment only.
 */
export async function startBenchEmulator(
  workDir: string,
  speed: number,
  ipPrefix: string,
): Promise<BenchEmulator> {
  // Rescue hosts live under one fixed directory, so the sweep at start finds what a crashed run left behind.
  const rescueDir = join(workDir, "rescue");
  await mkdir(rescueDir, { recursive: true });
  await sweep({ workDir: rescueDir }).catch(() => undefined);
  await sweepEmulatorDirs(workDir);
  const dir = await mkdtemp(join(workDir, "emulator-"));
  await writeFile(join(dir, OWNER_FILE), String(process.pid));
  const token = randomBytes(24).toString("hex");
  const emulator = await startEmulator({
    token,
    stateDir: join(dir, "state"),
    speed,
    ipPrefix,
    hosts: "real",
    hostOptions: { workDir: rescueDir },
    // The benchmark makes few calls, but never let the rate limit shape a measurement.
    rateLimit: { limit: 100_000, refillPerSecond: 1000 },
  });
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await emulator.stop().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  const unregister = onCleanup(`emulator ${ipPrefix}*`, stop);
  const client = new HCloudClient({
    token,
    endpoint: emulator.endpoint,
    waitDefaults: { pollDelay: () => Math.max(50, 1000 / speed) },
  });
  return {
    dir,
    emulator,
    client,
    rescueCounters: (serverId) => {
      const host = emulator.state.host(serverId);
      return host ? { bytesIn: host.bytesIn, bytesOut: host.bytesOut } : undefined;
    },
    stop: unregister,
  };
}

export interface RescueTarget {
  serverId: number;
  ip: string;
  /** The throwaway benchmark key, in memory (for hetznix) ... */
  pair: SshKeyPair;
  /** ... and in a 0600 file (for the OpenSSH baseline), removed at the end. */
  keyFile: string;
  /** OpenSSH client options shared by the baseline and the helper commands. */
  sshArgs: string[];
  /** Run a command in the rescue system (untimed helper, e.g. discarding the disk between runs). */
  exec(command: string): Promise<string>;
}

/** Create a server in the emulator, boot it into rescue with a fresh key, and wait until its sshd answers. */
export async function bootRescueTarget(bench: BenchEmulator): Promise<RescueTarget> {
  const { client } = bench;
  const pair = generateKeyPair("hetznix-bench");
  const key = await client.sshKeys.create({ name: `bench-${Date.now()}`, publicKey: pair.publicKey });
  const created = await client.servers.create({
    name: `bench-${Date.now()}`,
    server_type: "cx23",
    image: "debian-12",
    location: "fsn1",
    start_after_create: false,
  });
  await client.waitForActions([...(created.action ? [created.action] : []), ...created.nextActions]);
  const rescue = await client.servers.enableRescue(created.server.id, {
    type: "linux64",
    ssh_keys: [key.id],
  });
  await client.waitForActions([rescue.action]);
  await client.waitForActions([await client.servers.poweron(created.server.id)]);
  const server = await client.servers.getById(created.server.id);
  const ip = server.public_net.ipv4?.ip;
  if (!ip) throw new Error(`server ${server.id} has no IPv4 address`);

  // A throwaway key made for this benchmark run only, for a local emulated server; written 0600 for ssh -i and
  // deleted at the end (also by the next run's sweep if this one is killed). Never printed.
  const keyDir = await mkdtemp(join(bench.dir, "key-"));
  const keyFile = join(keyDir, "id_ed25519");
  await writeFile(keyFile, pair.privateKey, { mode: 0o600 });
  await chmod(keyFile, 0o600);
  onCleanup("benchmark key", () => rm(keyDir, { recursive: true, force: true }));

  const sshArgs = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=10",
    "-i",
    keyFile,
    `root@${ip}`,
  ];
  const exec = (command: string) => run("ssh", [...sshArgs, command]);
  // Bounded wait for sshd: 60 tries, 0.5 s apart.
  let lastError: unknown;
  for (let i = 0; i < 60; i++) {
    try {
      await exec("true");
      lastError = undefined;
      break;
    } catch (err) {
      lastError = err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  if (lastError) throw new Error(`rescue host ${ip} never answered: ${String(lastError)}`);
  return { serverId: server.id, ip, pair, keyFile, sshArgs, exec };
}
