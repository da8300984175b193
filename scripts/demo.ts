/**
 * The Quick start demo: the whole story on the built-in emulator, run as a user would run it.
 *
 *  1. build a sample NixOS-like disk image with Nix (GPT, ESP, an ext4 root labelled nixos holding a Nix store with a
 *     small system, its profile and Nix database; scripts/sample/);
 *  2. start `hetznix emulator` (real hosts: an sshd per running server on 127.x addresses);
 *  3. `hetznix upload` the image, with the progress a user sees; upload it again: found by content;
 *  4. create a server from the snapshot: it boots its own disk, the metadata agent runs at boot; SSH in as root with
 *     the key given at create and show the system profile and what the agent wrote;
 *  5. clean up: server, key, snapshot, emulator, temporary files; check that nothing is left.
 *
 * Needs root (loop devices, namespaces) and the Debian packages scripts/setup.sh installs.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { HCloudClient } from "../src/hcloud/index.js";
import { buildSampleImage } from "./sample/image.js";
import { connect, exec, generateKeyPair } from "../src/ssh/index.js";

const repo = fileURLToPath(new URL("..", import.meta.url));
const cli = [join(repo, "node_modules/tsx/dist/cli.mjs"), join(repo, "src/cli/main.ts")];
const token = "demo-token-0123456789abcdef";
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

function title(text: string): void {
  process.stdout.write(`\n${bold(`== ${text}`)}\n`);
}

function shown(cmd: string): void {
  process.stdout.write(`${bold("$")} ${cmd}\n`);
}

/** Arguments as a user would type them in a shell. */
function quoted(args: string[]): string {
  return args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(" ");
}

function run(
  file: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; quiet?: boolean } = {},
): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      stdio: opts.quiet ? ["ignore", "ignore", "inherit"] : "inherit",
      env: opts.env ?? process.env,
    });
    children.add(child);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      children.delete(child);
      if (code === 0) resolve();
      else reject(new Error(`${file} ${args.join(" ")} ended with ${signal ?? `exit status ${code}`}`));
    });
  });
}

const children = new Set<ChildProcess>();

async function sha256Of(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

async function startEmulator(stateDir: string): Promise<{ child: ChildProcess; endpoint: string }> {
  const args = ["emulator", "--listen", "127.0.0.1:0", "--state-dir", stateDir];
  args.push("--speed", "20", "--ip-prefix", "127.87.0.", "--json");
  shown(`HETZNIX_EMULATOR_TOKEN=$TOKEN hetznix ${args.join(" ")} &`);
  const child = spawn(process.execPath, [...cli, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, HETZNIX_EMULATOR_TOKEN: token },
  });
  children.add(child);
  child.on("exit", () => children.delete(child));
  const lines = createInterface({ input: child.stdout! });
  const endpoint = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the emulator did not start within 30 s")), 30_000);
    child.on("exit", (code) => reject(new Error(`the emulator exited with status ${code}`)));
    lines.once("line", (line) => {
      clearTimeout(timer);
      resolve((JSON.parse(line) as { endpoint: string }).endpoint);
    });
  });
  process.stdout.write(`emulator listening on ${endpoint}\n`);
  return { child, endpoint };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  await exited;
  clearTimeout(timer);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new Error(
      "the demo needs root (loop devices and namespaces for the emulated servers): run it as root",
    );
  }
  const work = await mkdtemp(join(tmpdir(), "hetznix-demo-"));
  let emulator: ChildProcess | undefined;
  let left: string[] = [];
  const rescueDirsBefore = await rescueDirs();
  const stopAll = async () => {
    for (const child of children) await stopChild(child);
    await rm(work, { recursive: true, force: true });
  };
  const onSignal = (signal: NodeJS.Signals) => {
    process.stderr.write(`\n${signal}: stopping the demo and cleaning up\n`);
    void stopAll().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    title("1. Build a sample NixOS-like disk image with Nix");
    const sample = await buildSampleImage({ out: join(work, "nixos.img") });
    const image = sample.path;
    const sha = await sha256Of(image);
    process.stdout.write(
      `${image}: ${sample.sizeBytes / 1024 / 1024} MiB raw (GPT: ESP + ext4 "nixos"), sha256 ${sha.slice(0, 16)}…\n` +
        `system ${sample.systemPath}\n`,
    );

    title("2. Start the local Hetzner Cloud emulator");
    const started = await startEmulator(join(work, "state"));
    emulator = started.child;
    const env = { ...process.env, HCLOUD_ENDPOINT: started.endpoint, HCLOUD_TOKEN: token };
    process.stdout.write(`export HCLOUD_ENDPOINT=${started.endpoint} HCLOUD_TOKEN=…\n`);

    title("3. Upload it as a snapshot");
    const uploadArgs = [
      "upload",
      "--image-path",
      image,
      "--architecture",
      "x86",
      "--description",
      "hetznix demo",
    ];
    uploadArgs.push("--labels", "app=demo");
    shown(`hetznix ${quoted(uploadArgs)}`);
    await run(process.execPath, [...cli, ...uploadArgs], { env });

    title("Upload the same image again: found by content, nothing created");
    shown(`hetznix ${quoted(uploadArgs)}`);
    await run(process.execPath, [...cli, ...uploadArgs], { env });

    title("4. A server from the snapshot boots its own disk");
    const client = new HCloudClient({ token, endpoint: started.endpoint });
    const [snapshot] = await client.images.all({ type: "snapshot", labelSelector: "app=demo" });
    if (!snapshot) throw new Error("no snapshot labelled app=demo was found");
    process.stdout.write(
      `snapshot ${snapshot.id}: "${snapshot.description}", ${snapshot.architecture}, disk ${snapshot.disk_size} GB, ` +
        `image ${snapshot.image_size?.toFixed(3)} GB stored\n`,
    );
    const key = generateKeyPair("hetznix-demo");
    const sshKey = await client.sshKeys.create({ name: "hetznix-demo", publicKey: key.publicKey });
    shown(
      `hcloud server create --name web-1 --type cx23 --image ${snapshot.id} --ssh-key hetznix-demo --location fsn1`,
    );
    const created = await client.servers.create({
      name: "web-1",
      server_type: "cx23",
      image: snapshot.id,
      location: "fsn1",
      ssh_keys: [sshKey.id],
    });
    const server = created.server;
    try {
      await client.waitForActions([...(created.action ? [created.action] : []), ...created.nextActions]);
      const ip = (await client.servers.getById(server.id)).public_net.ipv4?.ip;
      if (!ip) throw new Error("the server has no IPv4 address");
      process.stdout.write(`server ${server.id} "${server.name}" is running at ${ip}\n`);
      shown(`ssh root@${ip}   # with the key given at create, which the metadata agent installed at boot`);
      const conn = await connect({
        host: ip,
        privateKey: key.privateKey,
        maxAttempts: 30,
        maxTotalMs: 60_000,
      });
      try {
        const show = async (cmd: string) => {
          shown(cmd);
          const r = await exec(conn, cmd, { tailLines: 40 });
          if (r.exitCode !== 0) throw new Error(`${cmd} failed on the server: ${r.stderrTail}`);
          process.stdout.write(r.stdoutTail ? `${r.stdoutTail}\n` : "");
          return r.stdoutTail;
        };
        await show("hostname");
        const current = await show("readlink /run/current-system");
        if (current !== sample.systemPath)
          throw new Error(`the server runs ${current}, not the image's system ${sample.systemPath}`);
        await show("nix-env -p /nix/var/nix/profiles/system --list-generations");
        await show("cat /var/lib/hetznix/authorized_keys.d/root | cut -c1-60");
        await show("ls /run/systemd/network && cat /run/systemd/network/50-hetznix-public-*.network");
      } finally {
        await conn.close();
      }
    } finally {
      title("5. Clean up");
      await client.waitForActions([await client.servers.delete(server.id)]).catch(() => undefined);
      await client.sshKeys.delete(sshKey.id).catch(() => undefined);
      await client.images.delete(snapshot.id).catch(() => undefined);
      process.stdout.write(`deleted server ${server.id}, SSH key ${sshKey.id} and snapshot ${snapshot.id}\n`);
    }
  } finally {
    if (emulator) await stopChild(emulator);
    left = await leftovers(work, rescueDirsBefore);
    await stopAll();
  }
  if (left.length) throw new Error(`left behind after the emulator stopped:\n  ${left.join("\n  ")}`);
  process.stdout.write("emulator stopped; checked: no sshd, loop device, mount or temporary file is left\n");
}

/** The emulator's hosts keep their sshd config, host key and fifo in such directories. */
async function rescueDirs(): Promise<string[]> {
  return (await readdir(tmpdir())).filter((n) => n.startsWith("hetznix-host-"));
}

/**
 * What a clean stop must not leave: loop devices over files under `dir`, mounts and processes that mention it,
 * rescue host directories (with their sshd) that were not there before the demo.
 */
async function leftovers(dir: string, rescueDirsBefore: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const d of await rescueDirs()) if (!rescueDirsBefore.includes(d)) found.push(`host directory ${d}`);
  const loops = await new Promise<string>((resolve) => {
    const child = spawn("losetup", ["--list", "--noheadings", "--output", "NAME,BACK-FILE"]);
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.on("close", () => resolve(out));
    child.on("error", () => resolve(""));
  });
  found.push(
    ...loops
      .split("\n")
      .filter((l) => l.includes(dir))
      .map((l) => `loop device ${l.trim()}`),
  );
  const mounts = await readFile("/proc/self/mountinfo", "utf8");
  found.push(
    ...mounts
      .split("\n")
      .filter((l) => l.includes(dir))
      .map((l) => `mount ${l}`),
  );
  for (const pid of (await readdir("/proc")).filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid)) {
    const cmd = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (cmd.includes(dir) || cmd.includes("127.87.0."))
      found.push(`process ${pid}: ${cmd.replace(/\0/g, " ")}`);
  }
  return found;
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
