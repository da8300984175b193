/**
 * The Quick start demo: the whole story on the built-in emulator, run as a user would run it.
 *
 *  1. build a sample NixOS-like disk image with Nix (GPT, ESP, an ext4 root labelled nixos holding a Nix store with a
 *     small system, its profile and Nix database; scripts/sample/);
 *  2. start `hetznix emulator` (real hosts: an sshd per running server on 127.x addresses);
 *  3. `hetznix upload` the image, with the progress a user sees; upload it again: found by content;
 *  4. create a server from the snapshot: it boots its own disk, the metadata agent runs at boot; SSH in as root with
 *     the key given at create and show the system profile and what the agent wrote;
 *  5. publish signed releases (the image's system, then a new one) into a binary cache and a channel served by a
 *     static HTTP server, and `hetznix apply` the channel over SSH: the new system runs;
 *  6. roll the channel back and apply again: the old one runs; a replayed old record is refused;
 *  7. a second server, and `hetznix deploy` of a new release to every server labelled role=web;
 *  8. clean up: servers, key, snapshot, emulator, temporary files; check that nothing is left.
 *
 * Needs root (loop devices, namespaces) and the Debian packages scripts/setup.sh installs.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { HCloudClient } from "../src/hcloud/index.js";
import { buildSampleImage, buildTestSystem } from "./sample/image.js";
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
    // The demo's known hosts, deploy outcomes and hash cache stay in its own directory (removed at the end).
    const env = {
      ...process.env,
      HCLOUD_ENDPOINT: started.endpoint,
      HCLOUD_TOKEN: token,
      XDG_STATE_HOME: join(work, "state-home"),
      XDG_CACHE_HOME: join(work, "cache-home"),
    };
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
      labels: { role: "web" },
    });
    const servers = [created.server];
    try {
      await client.waitForActions([...(created.action ? [created.action] : []), ...created.nextActions]);
      const ip = (await client.servers.getById(created.server.id)).public_net.ipv4?.ip;
      if (!ip) throw new Error("the server has no IPv4 address");
      process.stdout.write(`server ${created.server.id} "web-1" is running at ${ip}\n`);
      shown(`ssh root@${ip}   # with the key given at create, which the metadata agent installed at boot`);
      const conn = await connect({
        host: ip,
        privateKey: key.privateKey,
        maxAttempts: 30,
        maxTotalMs: 60_000,
      });
      const show = async (cmd: string, ok = [0]) => {
        shown(cmd);
        const r = await exec(conn, cmd, { tailLines: 40 });
        if (!ok.includes(r.exitCode ?? -1)) throw new Error(`${cmd} failed on the server: ${r.stderrTail}`);
        const out = [r.stderrTail, r.stdoutTail].filter((t) => t).join("\n");
        process.stdout.write(out ? `${out}\n` : "");
        return r.stdoutTail;
      };
      try {
        await show("hostname");
        const current = await show("readlink /run/current-system");
        if (current !== sample.systemPath)
          throw new Error(`the server runs ${current}, not the image's system ${sample.systemPath}`);
        await show("cat /var/lib/hetznix/authorized_keys.d/root | cut -c1-60");
        await show("ls /run/systemd/network && cat /run/systemd/network/50-hetznix-public-*.network");

        title("5. Publish signed releases, as CI would, and apply one on the server");
        const pub = join(work, "pub");
        const keyFile = join(work, "release.key");
        const hetznix = (args: string[]) => {
          shown(`hetznix ${quoted(args)}`);
          return run(process.execPath, [...cli, ...args], { env });
        };
        await hetznix(["release", "keygen", "--name", "demo-releases-1", "--out", keyFile]);
        const publicKey = (await readFile(`${keyFile}.pub`, "utf8")).trim();
        await mkdir(pub, { recursive: true });
        const web = await startStaticServer(pub);
        const channelUrl = `${web.url}/releases/channels/production.json`;
        const publish = (storePath: string) =>
          hetznix([
            "release",
            "publish",
            "--store-path",
            storePath,
            "--channel",
            "production",
            "--releases",
            join(pub, "releases"),
            "--cache",
            join(pub, "cache"),
            "--cache-url",
            `${web.url}/cache`,
            "--signing-key",
            keyFile,
          ]);
        process.stdout.write("release 1: the system the image runs; release 2: a new version of it\n");
        await publish(sample.systemPath);
        const v2 = await buildTestSystem({ label: "demo-v2" });
        await publish(v2);
        const apply = `hetznix apply --channel ${channelUrl} --trusted-key ${publicKey} --health-check 'test -d /nix/store'`;
        await show(apply);
        await show(
          "readlink /run/current-system; nix-env -p /nix/var/nix/profiles/system --list-generations",
        );
        await show("cat /var/log/hetznix-test-switch.log");

        title("6. Roll the channel back, and apply again");
        await hetznix([
          "release",
          "rollback",
          "--releases",
          join(pub, "releases"),
          "--channel",
          "production",
          "--signing-key",
          keyFile,
        ]);
        await hetznix(["release", "list", "--releases", join(pub, "releases"), "--channel", "production"]);
        await show(apply);
        const back = await show("readlink /run/current-system");
        if (back !== sample.systemPath) throw new Error(`after the rollback the server runs ${back}`);
        process.stdout.write("a replayed old record is refused:\n");
        await show(`${apply.replace("channels/production.json", "releases/production/2.json")}`, [3]);

        title("7. Deploy to every server labelled role=web: magic rollback, a summary");
        const second = await client.servers.create({
          name: "web-2",
          server_type: "cx23",
          image: snapshot.id,
          location: "fsn1",
          ssh_keys: [sshKey.id],
          labels: { role: "web" },
        });
        servers.push(second.server);
        await client.waitForActions([...(second.action ? [second.action] : []), ...second.nextActions]);
        await publish(await buildTestSystem({ label: "demo-v3" }));
        const sshKeyFile = join(work, "id_ed25519");
        await writeFile(sshKeyFile, key.privateKey, { mode: 0o600 });
        await hetznix([
          "deploy",
          "--selector",
          "role=web",
          "--channel",
          channelUrl,
          "--trusted-key",
          publicKey,
          "--ssh-key",
          sshKeyFile,
          "--parallel",
          "2",
        ]);
      } finally {
        await conn.close();
      }
    } finally {
      title("8. Clean up");
      await Promise.all(
        servers.map(async (s) =>
          client.waitForActions([await client.servers.delete(s.id)]).catch(() => undefined),
        ),
      );
      await client.sshKeys.delete(sshKey.id).catch(() => undefined);
      await client.images.delete(snapshot.id).catch(() => undefined);
      process.stdout.write(
        `deleted servers ${servers.map((s) => s.id).join(", ")}, SSH key ${sshKey.id} and snapshot ${snapshot.id}\n`,
      );
    }
  } finally {
    if (emulator) await stopChild(emulator);
    for (const child of children) await stopChild(child);
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

/** Any static HTTP server serves a binary cache and releases; the demo uses Python's, on loopback. */
async function startStaticServer(dir: string): Promise<{ url: string }> {
  const port = await new Promise<number>((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const p = (probe.address() as AddressInfo).port;
      probe.close(() => resolve(p));
    });
  });
  const args = ["-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", dir];
  shown(`python3 ${args.join(" ")} &   # any static HTTP server will do`);
  const child = spawn("python3", args, { stdio: "ignore" });
  children.add(child);
  child.on("exit", () => children.delete(child));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    const up = await fetch(`${url}/`).then(
      (r) => r.body?.cancel().then(() => true),
      () => false,
    );
    if (up) return { url };
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the static HTTP server did not start");
}
