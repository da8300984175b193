/**
 * The Quick start demo: the whole story on the built-in emulator, run as a user would run it.
 *
 *  1. build a small sample disk image: an ext4 filesystem with real files in it (mke2fs -d, no mounting);
 *  2. start `hetznix emulator` (real rescue hosts: sshd over loop devices on 127.x addresses);
 *  3. `hetznix upload` the image, with the progress a user sees;
 *  4. upload it again: the snapshot with the same content is found, nothing is created;
 *  5. show the snapshot, create a server from it, boot it into rescue and show over SSH that its disk holds the same
 *     bytes and the same files;
 *  6. clean up: server, key, snapshot, emulator, temporary files.
 *
 * Needs root (loop devices, mount namespaces) and the Debian packages scripts/setup.sh installs.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { HCloudClient } from "../src/hcloud/index.js";
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

/** A sample root filesystem: a few real files from this machine plus a marker, in a 256 MiB ext4 image. */
async function buildSampleImage(dir: string): Promise<string> {
  const tree = join(dir, "tree");
  await mkdir(join(tree, "etc"), { recursive: true });
  await mkdir(join(tree, "bin"), { recursive: true });
  await writeFile(join(tree, "etc/os-release"), 'NAME="hetznix demo"\nID=hetznix-demo\n');
  await writeFile(join(tree, "README"), `Built by the hetznix demo on ${new Date().toISOString()}\n`);
  for (const bin of ["/bin/bash", "/usr/bin/sha256sum", "/usr/bin/zstd"]) {
    await copyFile(bin, join(tree, "bin", bin.split("/").pop() ?? "file")).catch(() => undefined);
  }
  const image = join(dir, "sample.img");
  shown(`mke2fs -q -t ext4 -d ${tree} ${image} 256M`);
  await run("mke2fs", ["-q", "-F", "-t", "ext4", "-L", "nixos", "-d", tree, image, "256M"], { quiet: true });
  return image;
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
      "the demo needs root (loop devices and mount namespaces for the rescue hosts): run it as root",
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
    title("1. Build a sample NixOS-like disk image (ext4 with real files)");
    const image = await buildSampleImage(work);
    const sha = await sha256Of(image);
    process.stdout.write(`sample image: 256 MiB raw, sha256 ${sha.slice(0, 16)}…\n`);

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

    title("4. Upload the same image again: found by content, nothing created");
    shown(`hetznix ${quoted(uploadArgs)}`);
    await run(process.execPath, [...cli, ...uploadArgs], { env });

    title("5. The snapshot, and a server made from it");
    const client = new HCloudClient({ token, endpoint: started.endpoint });
    const [snapshot] = await client.images.all({ type: "snapshot", labelSelector: "app=demo" });
    if (!snapshot) throw new Error("no snapshot labelled app=demo was found");
    process.stdout.write(
      `snapshot ${snapshot.id}: "${snapshot.description}", ${snapshot.architecture}, disk ${snapshot.disk_size} GB, ` +
        `image ${snapshot.image_size?.toFixed(3)} GB stored\n  labels: ${Object.entries(snapshot.labels)
          .map(([k, v]) => `${k}=${v}`)
          .join(", ")}\n`,
    );
    const key = generateKeyPair("hetznix-demo");
    const sshKey = await client.sshKeys.create({ name: "hetznix-demo", publicKey: key.publicKey });
    const created = await client.servers.create({
      name: "demo-from-snapshot",
      server_type: "cx23",
      image: snapshot.id,
      location: "fsn1",
      ssh_keys: [sshKey.id],
      start_after_create: false,
    });
    const server = created.server;
    try {
      await client.waitForActions([...(created.action ? [created.action] : []), ...created.nextActions]);
      process.stdout.write(`server ${server.id} "${server.name}" created from snapshot ${snapshot.id}\n`);
      const rescue = await client.servers.enableRescue(server.id, { type: "linux64", ssh_keys: [sshKey.id] });
      await client.waitForActions([rescue.action]);
      await client.waitForActions([await client.servers.poweron(server.id)]);
      const ip = (await client.servers.getById(server.id)).public_net.ipv4?.ip;
      if (!ip) throw new Error("the server has no IPv4 address");
      process.stdout.write(`booted into rescue; ssh root@${ip}\n`);
      const conn = await connect({ host: ip, privateKey: key.privateKey });
      try {
        const size = 256 * 1024 * 1024;
        const check = await exec(conn, `head -c ${size} /dev/sda | sha256sum`);
        const remote = check.stdoutTail.trim().split(/\s+/)[0] ?? "";
        process.stdout.write(
          `sha256 of the first 256 MiB of the server's /dev/sda: ${remote.slice(0, 16)}…\n`,
        );
        if (remote !== sha) throw new Error(`the server's disk differs from the image (${remote} != ${sha})`);
        process.stdout.write("the same bytes as the sample image\n");
        const files = await exec(
          conn,
          "mkdir -p /mnt && mount -o ro /dev/sda /mnt && ls /mnt /mnt/etc; umount /mnt",
        );
        process.stdout.write(`files on it:\n${files.stdoutTail.replace(/^/gm, "  ")}\n`);
      } finally {
        conn.close();
      }
    } finally {
      title("6. Clean up");
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

/** The emulator's rescue hosts keep their sshd config, host key and fifo in such directories. */
async function rescueDirs(): Promise<string[]> {
  return (await readdir(tmpdir())).filter((n) => n.startsWith("hetznix-host-"));
}

/**
 * What a clean stop must not leave: loop devices over files under `dir`, mounts and processes that mention it,
 * rescue host directories (with their sshd) that were not there before the demo.
 */
async function leftovers(dir: string, rescueDirsBefore: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const d of await rescueDirs()) if (!rescueDirsBefore.includes(d)) found.push(`rescue host ${d}`);
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
