/**
 * The emulator with real rescue hosts (helper modules in src/emulator/rescue): enable_rescue + poweron boots an sshd
 * on the server's loopback address with /dev/sda = the server's disk; `poweroff` inside powers the server off and
 * ends rescue mode; create_image copies what was written; a server made from the snapshot starts with that data;
 * and its own rescue system reads it back over SSH; an ssh_drop fault reaches the running host; an API shutdown
 * stops the host; stopping the emulator leaves no sshd, loop device, mount or host directory. Needs root (loop devices,
 * namespaces) and OpenSSH's sshd.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, execOrThrow, generateKeyPair } from "../src/ssh/index.js";
import { startTestEmulator, type TestEmulator } from "./support/emulator.js";
import { assertNoHostResidue, readAt } from "./support/disk.js";

const canRun = process.getuid?.() === 0 && existsSync("/usr/sbin/sshd");
const MiB = 1024 * 1024;

function listening(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port }, () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

interface ServerBody {
  id: number;
  status: string;
  rescue_enabled: boolean;
  public_net: { ipv4: { ip: string } };
}

describe("emulator with real rescue hosts", { skip: !canRun && "needs root and /usr/sbin/sshd" }, () => {
  const keys = generateKeyPair("emulator-rescue-test");
  let t: TestEmulator;
  let keyId = 0;

  let rescueDir = "";

  before(async () => {
    rescueDir = await mkdtemp(join(tmpdir(), "hetznix-emulator-rescue-test-"));
    t = await startTestEmulator({
      ipPrefix: "127.77.15.",
      speed: 100,
      hosts: "real",
      hostOptions: { workDir: rescueDir },
    });
    const k = await t.api<{ ssh_key: { id: number } }>("POST", "/ssh_keys", {
      name: "rescue",
      public_key: keys.publicKey,
    });
    keyId = k.body.ssh_key.id;
  });
  after(async () => {
    const stateDir = t?.stateDir;
    await t?.close();
    // Stopping the emulator stops every rescue host: no sshd, loop device, mount or host directory is left.
    if (stateDir) await assertNoHostResidue(stateDir, rescueDir);
    assert.deepEqual(await readdir(rescueDir), [], "no rescue host directory is left");
    await rm(rescueDir, { recursive: true, force: true });
  });

  async function server(id: number): Promise<ServerBody> {
    return (await t.api<{ server: ServerBody }>("GET", `/servers/${id}`)).body.server;
  }

  async function action(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
    const r = await t.api<{ action: { id: number } }>(method, path, body);
    assert.ok(r.status === 201 || r.status === 200, `${path}: ${r.status} ${JSON.stringify(r.body)}`);
    const [done] = await t.waitActions([r.body.action.id], 30_000);
    assert.equal(done?.status, "success", `${path}: ${JSON.stringify(done)}`);
    return r.body;
  }

  it("boots the rescue system on power on, writes the disk, powers off from inside, snapshots the data", async () => {
    const c = await t.api<{ server: ServerBody; action: { id: number } }>("POST", "/servers", {
      name: "rescue-1",
      server_type: "cx23",
      image: "ubuntu-24.04",
      start_after_create: false,
    });
    assert.equal(c.status, 201);
    const id = c.body.server.id;
    const ip = c.body.server.public_net.ipv4.ip;
    await t.waitActions([c.body.action.id]);
    await action("POST", `/servers/${id}/actions/enable_rescue`, { type: "linux64", ssh_keys: [keyId] });
    await action("POST", `/servers/${id}/actions/poweron`);
    let s = await server(id);
    assert.equal(s.status, "running");
    assert.equal(s.rescue_enabled, true);

    const pattern = randomBytes(MiB);
    const conn = await connect({
      host: ip,
      privateKey: keys.privateKey,
      maxAttempts: 10,
      maxTotalMs: 30_000,
    });
    try {
      await execOrThrow(conn, "dd of=/dev/sda bs=64K seek=32 conv=fsync status=none && sync", {
        stdin: pattern,
      });

      // An ssh_drop fault added at run time reaches the running host.
      const add = await fetch(`${t.emulator.adminUrl}/faults`, {
        method: "POST",
        headers: { Authorization: `Bearer ${t.token}` },
        body: JSON.stringify({ kind: "ssh_drop", server_id: id, after_bytes: 12345 }),
      });
      assert.equal(add.status, 201);
      assert.equal(t.emulator.state.host(id)?.dropAfterBytes, 12345);
      const del = await fetch(`${t.emulator.adminUrl}/faults`, {
        method: "DELETE",
        headers: { Authorization: `Bearer ${t.token}` },
      });
      assert.equal(del.status, 204);
      assert.equal(t.emulator.state.host(id)?.dropAfterBytes, undefined);

      // `poweroff` inside the rescue system: the connection ends, the server goes off, rescue mode ends.
      await execOrThrow(conn, "poweroff").catch(() => undefined);
    } finally {
      await conn.close();
    }
    s = await t.waitFor(
      "server off",
      async () => {
        const x = await server(id);
        return x.status === "off" ? x : undefined;
      },
      20_000,
    );
    assert.equal(s.rescue_enabled, false);
    await t.waitFor("rescue host gone", async () => ((await listening(ip, 22)) ? undefined : true), 20_000);

    const disk = join(t.stateDir, "disks", `server-${id}.img`);
    assert.deepEqual(await readAt(disk, 2 * MiB, MiB), pattern);

    const ci = await action("POST", `/servers/${id}/actions/create_image`, { labels: { test: "rescue" } });
    const imageId = (ci.image as { id: number }).id;
    const img = await t.api<{ image: { status: string; image_size: number } }>("GET", `/images/${imageId}`);
    assert.equal(img.body.image.status, "available");
    assert.ok(img.body.image.image_size > 0, `image_size ${img.body.image.image_size}`);
    assert.deepEqual(await readAt(join(t.stateDir, "disks", `image-${imageId}.img`), 2 * MiB, MiB), pattern);

    // A server created from the snapshot starts with the same data on a bigger disk.
    const c2 = await t.api<{ server: ServerBody; action: { id: number }; next_actions: { id: number }[] }>(
      "POST",
      "/servers",
      { name: "rescue-2", server_type: "cx33", image: imageId, start_after_create: false },
    );
    assert.equal(c2.status, 201);
    await t.waitActions([c2.body.action.id], 30_000);
    const disk2 = join(t.stateDir, "disks", `server-${c2.body.server.id}.img`);
    assert.deepEqual(await readAt(disk2, 2 * MiB, MiB), pattern);

    // ... and its own rescue system reads the same bytes from its /dev/sda over SSH.
    const id2 = c2.body.server.id;
    await action("POST", `/servers/${id2}/actions/enable_rescue`, { ssh_keys: [keyId] });
    await action("POST", `/servers/${id2}/actions/poweron`);
    const ip2 = (await server(id2)).public_net.ipv4.ip;
    assert.notEqual(ip2, ip, "each server has its own address");
    const conn2 = await connect({
      host: ip2,
      privateKey: keys.privateKey,
      maxAttempts: 10,
      maxTotalMs: 30_000,
    });
    try {
      const read = await execOrThrow(conn2, "dd if=/dev/sda bs=64K skip=32 count=16 status=none | sha256sum");
      const expected = createHash("sha256").update(pattern).digest("hex");
      assert.equal(read.stdoutTail.trim().split(/\s+/)[0], expected);
    } finally {
      await conn2.close();
    }

    // Rescue again, then an API shutdown (ACPI) stops the host and the server goes off.
    await action("POST", `/servers/${id}/actions/enable_rescue`, { ssh_keys: [keyId] });
    await action("POST", `/servers/${id}/actions/poweron`);
    assert.ok(t.emulator.state.host(id), "rescue host running");
    await action("POST", `/servers/${id}/actions/shutdown`);
    await t.waitFor(
      "off after ACPI shutdown",
      async () => ((await server(id)).status === "off" ? true : undefined),
      20_000,
    );
    assert.equal(t.emulator.state.host(id), undefined);
    assert.equal(await listening(ip, 22), false);

    for (const sid of [id, c2.body.server.id]) await action("DELETE", `/servers/${sid}`);
  });
});
