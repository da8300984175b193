/**
 * Servers boot what is on their disks: the sample NixOS-like image, uploaded with hetznix, boots a system host (its
 * own /nix and /var from the disk, the metadata agent run at boot, root's keys from the file the agent wrote, host
 * keys kept on the disk); a system image boots a plain host with the create-time keys; a disk with nothing bootable
 * answers nothing. Hosts are confined (the machine's secrets, the emulator's state and other disks out of reach),
 * and nothing is left behind by power cycles, deletes, or SIGTERM of an emulator whose state directory vanished.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFile, readdir, rm } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { buildSampleImage, type SampleImage } from "../scripts/sample/image.js";
import { HCloudClient, type Server } from "../src/hcloud/index.js";
import { connect, execOrThrow, exec, generateKeyPair, type SshKeyPair } from "../src/ssh/index.js";
import { uploadImage } from "../src/upload/index.js";
import { assertNoHostResidue } from "./support/disk.js";
import { spawnEmulator } from "./support/emulator-process.js";
import { startUploadEnv, uploadX86, waits, type UploadTestEnv } from "./support/upload.js";

const canRun = process.getuid?.() === 0;

/** Polls `check` every 50 ms until it returns a value, at most `ms`. */
async function until<T>(what: string, check: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (let i = 0; i < 100_000; i++) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function portAnswers(host: string, port = 22): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (v: boolean) => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(2000, () => done(false));
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}

async function createServer(
  client: HCloudClient,
  name: string,
  image: number | string,
  keyIds: number[],
): Promise<Server> {
  const created = await client.servers.create({
    name,
    server_type: "cx23",
    image,
    location: "fsn1",
    ssh_keys: keyIds,
  });
  await client.waitForActions([created.action as never, ...created.nextActions], { timeoutMs: 60_000 });
  const s = await client.servers.getById(created.server.id);
  assert.equal(s.status, "running");
  return s;
}

async function deleteServer(client: HCloudClient, id: number): Promise<void> {
  const a = await client.servers.delete(id);
  await client.waitForActions([a], { timeoutMs: 60_000 });
}

function ssh(server: Server, keys: SshKeyPair, hostKeyFingerprint?: string) {
  const host = server.public_net.ipv4?.ip;
  assert.ok(host, "the server has an IPv4 address");
  return connect({
    host,
    privateKey: keys.privateKey,
    maxAttempts: 30,
    maxTotalMs: 30_000,
    ...(hostKeyFingerprint ? { expectedHostKeyFingerprint: hostKeyFingerprint } : {}),
  });
}

describe("emulated servers boot their disks", { skip: !canRun && "needs root" }, () => {
  let env: UploadTestEnv;
  let sample: SampleImage;
  let snapshotId = 0;
  const keys = generateKeyPair("hosts-test");
  let keyId = 0;

  before(async () => {
    env = await startUploadEnv("127.77.30.");
    sample = await buildSampleImage({ out: join(env.dir, "nixos.img") });
    const up = await uploadX86(env, { path: sample.path }, { useStoreIdentity: false });
    snapshotId = up.imageId;
    keyId = (await env.client.sshKeys.create({ name: "me", publicKey: keys.publicKey })).id;
  });

  after(async () => {
    if (!env) return;
    for (const s of await env.client.servers.all())
      await deleteServer(env.client, s.id).catch(() => undefined);
    await env.close();
  });

  it("a server from the uploaded sample image boots its NixOS root: the agent's files, the metadata key, /var and the host key survive a reboot", async () => {
    const server = await createServer(env.client, "web-1", snapshotId, [keyId]);
    const conn = await ssh(server, keys);
    const firstKey = conn.hostKeyFingerprint;
    const marker = randomBytes(8).toString("hex");
    try {
      const r = await execOrThrow(
        conn,
        [
          "hostname",
          "readlink /run/current-system",
          "cat /var/lib/hetznix/authorized_keys.d/root",
          "ls /run/systemd/network",
          "cat /etc/hostname",
          "nix-store -q --requisites /run/current-system | wc -l",
          `mkdir -p /var/lib/test && echo ${marker} > /var/lib/test/marker`,
        ].join("; "),
      );
      const lines = r.stdoutTail.split("\n");
      assert.equal(lines[0], "web-1", "the agent set the host name from the metadata");
      assert.equal(lines[1], sample.systemPath, "the system profile is the booted system");
      assert.ok(
        r.stdoutTail.includes(keys.publicKey.split(" ")[1] as string),
        "the agent wrote the create-time key",
      );
      assert.match(
        r.stdoutTail,
        /50-hetznix-public-[0-9a-f]{12}\.network/,
        "the agent wrote the network unit",
      );
      assert.ok(Number(lines[lines.length - 1]) >= 2, "the disk's Nix database knows the system's closure");
    } finally {
      await conn.close();
    }

    const reboot = await env.client.servers.reboot(server.id);
    await env.client.waitForActions([reboot], { timeoutMs: 60_000 });
    // Same host key as before the reboot: the client pins it.
    const again = await ssh(server, keys, firstKey);
    try {
      const r = await execOrThrow(again, "cat /var/lib/test/marker; readlink /run/current-system");
      assert.equal(r.stdoutTail, `${marker}\n${sample.systemPath}`);
    } finally {
      await again.close();
    }

    // The deployed state is on the disk: a snapshot of it carries the marker to a new server.
    const off = await env.client.servers.poweroff(server.id);
    await env.client.waitForActions([off], { timeoutMs: 60_000 });
    const img = await env.client.servers.createImage(server.id, {
      type: "snapshot",
      description: "web-1 state",
    });
    await env.client.waitForActions([img.action], { timeoutMs: 60_000 });
    const copy = await createServer(env.client, "web-2", img.image.id, [keyId]);
    const conn2 = await ssh(copy, keys);
    try {
      const r = await execOrThrow(conn2, "cat /var/lib/test/marker; hostname");
      assert.equal(r.stdoutTail, `${marker}\nweb-2`);
    } finally {
      await conn2.close();
    }
    await deleteServer(env.client, copy.id);
    await deleteServer(env.client, server.id);
    await env.client.images.delete(img.image.id);
  });

  it("poweroff inside a system host powers the server off; poweron boots it again", async () => {
    const server = await createServer(env.client, "web-3", snapshotId, [keyId]);
    const conn = await ssh(server, keys);
    await exec(conn, "poweroff").catch(() => undefined);
    await conn.close();
    await until("server off", async () =>
      (await env.client.servers.getById(server.id)).status === "off" ? true : undefined,
    );
    assert.equal(await portAnswers(server.public_net.ipv4?.ip as string), false, "nothing listens when off");
    const on = await env.client.servers.poweron(server.id);
    await env.client.waitForActions([on], { timeoutMs: 60_000 });
    const back = await ssh(server, keys);
    assert.equal((await execOrThrow(back, "hostname")).stdoutTail, "web-3");
    await back.close();
    await deleteServer(env.client, server.id);
  });

  it("a system image server takes its create-time key; a disk with nothing bootable answers nothing", async () => {
    const plain = await createServer(env.client, "ubuntu-1", "ubuntu-24.04", [keyId]);
    const conn = await ssh(plain, keys);
    try {
      const r = await execOrThrow(conn, "id -u; hostname; test -b /dev/sda && echo disk");
      assert.equal(r.stdoutTail, "0\nubuntu-1\ndisk");
    } finally {
      await conn.close();
    }
    await deleteServer(env.client, plain.id);

    const junk = await env.freshImage(8, 1);
    const up = await uploadX86(env, { path: junk.path });
    const dead = await createServer(env.client, "junk-1", up.imageId, [keyId]);
    assert.equal(await portAnswers(dead.public_net.ipv4?.ip as string), false, "nothing answers on port 22");
    const view = env.te.emulator.state.debugView() as {
      servers: { id: number; host: { kind: string; description: string } | null }[];
    };
    const host = view.servers.find((s) => s.id === dead.id)?.host;
    assert.equal(host?.kind, "none");
    assert.match(host?.description ?? "", /no ext4 file system labelled nixos/);
    await deleteServer(env.client, dead.id);
    await env.client.images.delete(up.imageId);
  });

  it("from inside a system or rescue host, the machine's secrets, the emulator's state and other servers' disks are out of reach", async () => {
    const sys = await createServer(env.client, "web-4", snapshotId, [keyId]);
    const other = await createServer(env.client, "web-5", snapshotId, [keyId]);
    const machineShadow = await readFile("/etc/shadow", "utf8");
    const machineHostKey = await readFile("/etc/ssh/ssh_host_ed25519_key", "utf8").catch(() => "");
    const probes = [
      `cat /etc/shadow`,
      `ls ${env.te.stateDir} 2>&1 || echo STATE-HIDDEN`,
      `ls ${env.rescueDir} 2>&1 || echo HOSTS-HIDDEN`,
      `ls /dev`,
      `mount -o remount,rw /usr 2>&1 || echo NO-REMOUNT`,
      `mknod /tmp/vda b 253 0 2>&1 || echo NO-MKNOD`,
      `(echo 3 > /proc/sys/vm/drop_caches) 2>&1 || echo PROC-SYS-RO`,
      `ls /proc | grep -c '^[0-9]'`,
      `cat /etc/ssh/ssh_host_ed25519_key 2>/dev/null`,
    ].join("; echo ---; ");
    const check = async (server: Server, label: string) => {
      const conn = await ssh(server, keys);
      try {
        const out = (await exec(conn, probes, { tailLines: 200 })).stdoutTail;
        const parts = out.split("---\n");
        assert.notEqual(parts[0], machineShadow, `${label}: /etc/shadow is not the machine's`);
        assert.match(parts[0] ?? "", /^root:\*:/, `${label}: its own shadow without passwords`);
        assert.match(out, /STATE-HIDDEN/, `${label}: the state directory is out of reach`);
        assert.match(out, /HOSTS-HIDDEN/, `${label}: other hosts' directories are out of reach`);
        const devs = (parts[3] ?? "").split("\n").filter((d) => /^(sd|vd|loop|nvme)/.test(d));
        assert.ok(
          devs.every((d) => /^sda\d*$/.test(d)),
          `${label}: only its own disk under /dev, got ${devs.join(" ")}`,
        );
        assert.match(out, /NO-REMOUNT/, `${label}: cannot remount the userland`);
        assert.match(out, /NO-MKNOD/, `${label}: cannot make device nodes`);
        assert.match(out, /Read-only file system\nPROC-SYS-RO/, `${label}: /proc/sys is read-only`);
        const processes = parseInt(parts[7] ?? "", 10);
        assert.ok(processes > 0 && processes < 20, `${label}: sees only its own processes (${processes})`);
        // Line 3 of an OpenSSH private key is key material (lines 1-2 are the same for every ed25519 key).
        const secret = machineHostKey.split("\n")[2];
        if (secret) assert.ok(!out.includes(secret), `${label}: not the machine's host key`);
      } finally {
        await conn.close();
      }
    };
    await check(sys, "system host");
    // The same from the rescue system of the other server.
    const rescue = await env.client.servers.enableRescue(other.id, { type: "linux64", ssh_keys: [keyId] });
    await env.client.waitForActions([rescue.action], { timeoutMs: 60_000 });
    const reset = await env.client.servers.reset(other.id);
    await env.client.waitForActions([reset], { timeoutMs: 60_000 });
    await check(other, "rescue host");
    await deleteServer(env.client, sys.id);
    await deleteServer(env.client, other.id);
  });
});

describe(
  "an emulator stopped by SIGTERM with system hosts running",
  { skip: !canRun && "needs root" },
  () => {
    it("leaves nothing behind, also after its state directory was removed", async () => {
      const emu = await spawnEmulator("hetznix-hosts-sigterm-", "127.77.31.");
      const { child, dir, stateDir, hostsTmp, token, exited } = emu;
      try {
        const endpoint = await emu.endpoint;
        const client = new HCloudClient({ token, endpoint, waitDefaults: { pollDelay: () => 40 } });
        const sample = await buildSampleImage({ out: join(dir, "nixos.img") });
        const up = await uploadImage({
          client,
          image: { path: sample.path },
          architecture: "x86",
          waits,
          useStoreIdentity: false,
        });
        const keys = generateKeyPair("sigterm");
        const key = await client.sshKeys.create({ name: "k", publicKey: keys.publicKey });
        const servers = await Promise.all(
          ["a", "b"].map((n) => createServer(client, `sys-${n}`, up.imageId, [key.id])),
        );
        const conn = await ssh(servers[0] as Server, keys);
        assert.equal((await execOrThrow(conn, "hostname")).stdoutTail, "sys-a");
        await conn.close();
        assert.ok(
          (await readdir(hostsTmp)).some((d) => d.startsWith("hetznix-host-")),
          "hosts are running",
        );

        await rm(stateDir, { recursive: true, force: true });
        child.kill("SIGTERM");
        const code = await Promise.race([
          exited,
          new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 60_000)),
        ]);
        assert.notEqual(code, "timeout", `the first SIGTERM stops it (stderr: ${emu.stderr()})`);
        assert.deepEqual(
          (await readdir(hostsTmp)).filter((d) => d.startsWith("hetznix-")),
          [],
          "no host directory (and so no host key) is left",
        );
        await assertNoHostResidue(stateDir, hostsTmp);
        for (const s of servers) assert.equal(await portAnswers(s.public_net.ipv4?.ip as string), false);
      } finally {
        if (child.exitCode === null) child.kill("SIGKILL");
        await exited;
        await rm(dir, { recursive: true, force: true });
      }
    });
  },
);
