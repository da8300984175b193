import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { access, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { createDiskStore, createHostManager, sweep } from "../src/emulator/hosts/index.js";
import type { StartedHost } from "../src/emulator/hosts/index.js";
import {
  MARKER_FILE,
  MARKER_KIND,
  processStart,
  processesInPidNamespace,
} from "../src/emulator/hosts/runtime.js";
import {
  connect,
  exec,
  execOrThrow,
  ExecError,
  generateKeyPair,
  type SshConnection,
} from "../src/ssh/index.js";
import { readAt } from "./support/disk.js";

const run = promisify(execFile);
const MiB = 1024 * 1024;
const IP = "127.66.2.2";

function waitFor<T>(what: string, register: (done: (v: T) => void) => void, ms = 15_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    register((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

async function assertHostGone(host: StartedHost, diskPath: string): Promise<void> {
  assert.deepEqual(await processesInPidNamespace(host.pidNamespace), [], "no process of the host remains");
  const { stdout } = await run("losetup", ["--noheadings", "--associated", diskPath]);
  assert.equal(stdout.trim(), "", "no loop device serves the disk");
  const mounts = await readFile("/proc/self/mountinfo", "utf8");
  assert.ok(!mounts.includes(host.dir), "no mount of the host remains");
  await assert.rejects(access(host.dir), "the host directory is removed");
  await assert.rejects(
    new Promise<void>((resolve, reject) => {
      const s = net.connect({ host: host.ip, port: host.port }, () => {
        s.destroy();
        resolve();
      });
      s.once("error", reject);
    }),
    "nothing listens on ip:22 any more",
  );
}

describe("rescue host", () => {
  const keys = generateKeyPair("rescue-host-test");
  const disks = createDiskStore();
  const power: string[] = [];
  const powerWaiters: Array<(what: string) => void> = [];
  const manager = createHostManager();
  let workDir = "";
  let diskPath = "";
  let host: StartedHost;
  let conn: SshConnection;

  const onPower = (what: string) => () => {
    power.push(what);
    powerWaiters.splice(0).forEach((w) => w(what));
  };

  before(async () => {
    workDir = await mkdtemp(join(tmpdir(), "rescue-host-test-"));
    diskPath = join(workDir, "disk.raw");
    await disks.create(diskPath, 64 * MiB);
    host = await manager.start({
      serverId: 42,
      ip: IP,
      hostname: "s42",
      boot: "rescue",
      authorizedKeys: [keys.publicKey],
      diskPath,
      onPowerOff: onPower("poweroff"),
      onReboot: onPower("reboot"),
    });
    conn = await connect({ host: IP, privateKey: keys.privateKey, maxAttempts: 5, maxTotalMs: 20_000 });
  });

  after(async () => {
    await conn?.close();
    await manager.stopAll();
    await rm(workDir, { recursive: true, force: true });
  });

  it("presents its fresh host key and serves root with the given key", async () => {
    assert.equal(conn.hostKeyFingerprint, host.hostKeyFingerprint);
    const r = await execOrThrow(conn, "id -u; test -b /dev/sda && echo block");
    assert.equal(r.stdoutTail, "0\nblock");
    assert.equal(manager.get(42), host);
  });

  it("rejects a key that is not authorized", async () => {
    const other = generateKeyPair("intruder");
    await assert.rejects(connect({ host: IP, privateKey: other.privateKey, maxAttempts: 1 }));
  });

  it("has the usual rescue tools", async () => {
    const tools = "bash dd blkdiscard wget curl gzip bzip2 xz zstd qemu-img sha256sum head sync";
    const r = await execOrThrow(
      conn,
      `for t in ${tools}; do command -v $t >/dev/null || echo missing $t; done`,
    );
    assert.equal(r.stdoutTail, "");
  });

  it("writes /dev/sda through to the disk file, reads it back, hashes it", async () => {
    const pattern = randomBytes(MiB);
    await execOrThrow(conn, "dd of=/dev/sda bs=64K seek=16 conv=fsync status=none", { stdin: pattern });
    assert.deepEqual(await readAt(diskPath, MiB, MiB), pattern);

    const prefix = await readAt(diskPath, 0, 3 * MiB);
    const r = await execOrThrow(conn, "head -c 3145728 /dev/sda | sha256sum");
    assert.equal(r.stdoutTail.split(" ")[0], createHash("sha256").update(prefix).digest("hex"));
  });

  it("discards with blkdiscard, punching holes in the disk file", async () => {
    await execOrThrow(conn, "dd if=/dev/urandom of=/dev/sda bs=1M count=8 conv=fsync status=none");
    const before = await disks.allocatedBytes(diskPath);
    assert.ok(before >= 8 * MiB, `allocated ${before}`);
    await execOrThrow(conn, "blkdiscard --force /dev/sda && sync");
    const afterDiscard = await disks.allocatedBytes(diskPath);
    assert.ok(afterDiscard < before - 7 * MiB, `allocated ${before} -> ${afterDiscard}`);
    assert.ok((await readAt(diskPath, 0, MiB)).every((b) => b === 0));
  });

  it("keeps /tmp, /root and /dev private", async () => {
    await execOrThrow(conn, "echo hi > /tmp/rescue-marker && echo hi > /root/rescue-marker");
    await assert.rejects(access("/tmp/rescue-marker"));
    await assert.rejects(access("/root/rescue-marker"));
    const r = await execOrThrow(conn, "ls /dev | tr '\\n' ' '");
    assert.match(r.stdoutTail, /\bsda\b/);
    assert.match(r.stdoutTail, /\burandom\b/);
    const hostDev = await readdir("/dev");
    assert.ok(!hostDev.includes("rescue-marker"));
  });

  it("counts bytes at the proxy", async () => {
    const inBefore = host.bytesIn;
    await execOrThrow(conn, "cat > /dev/null", { stdin: Buffer.alloc(2 * MiB) });
    assert.ok(host.bytesIn - inBefore >= 2 * MiB, `bytesIn grew by ${host.bytesIn - inBefore}`);
    assert.ok(host.bytesOut > 0);
  });

  it("drops connections after dropAfterBytes with a clear error", async () => {
    host.dropAfterBytes = MiB;
    try {
      const c2 = await connect({ host: IP, privateKey: keys.privateKey, maxAttempts: 3 });
      try {
        const err = await exec(c2, "cat > /dev/null", { stdin: Buffer.alloc(8 * MiB) }).then(
          () => assert.fail("exec should fail"),
          (e: unknown) => e,
        );
        assert.ok(err instanceof ExecError);
        assert.equal(err.kind, "connection-lost");
        assert.match(err.message, /cat > \/dev\/null/);
        assert.ok(err.result.stdinBytes > 0);
      } finally {
        await c2.close();
      }
      assert.ok(host.droppedConnections >= 1);
    } finally {
      host.dropAfterBytes = undefined;
    }
    // The long-lived connection was opened before and is under the limit only if it carried less; it may have
    // been cut too, so check a fresh one works again.
    const c3 = await connect({ host: IP, privateKey: keys.privateKey, maxAttempts: 3 });
    try {
      assert.equal((await execOrThrow(c3, "echo ok")).stdoutTail, "ok");
    } finally {
      await c3.close();
    }
  });

  it("reports reboot and poweroff commands after syncing", async () => {
    const c = await connect({ host: IP, privateKey: keys.privateKey, maxAttempts: 3 });
    try {
      for (const [command, expected] of [
        ["shutdown -r now", "reboot"],
        ["reboot", "reboot"],
        ["shutdown now", "poweroff"],
        ["shutdown -h now", "poweroff"],
        ["halt", "poweroff"],
        ["poweroff", "poweroff"],
        ["/sbin/poweroff", "poweroff"],
      ] as const) {
        const seen = waitFor<string>(command, (done) => powerWaiters.push(done));
        await execOrThrow(c, command);
        assert.equal(await seen, expected, command);
      }
    } finally {
      await c.close();
    }
  });

  it("stops completely, idempotently", async () => {
    await conn.close();
    await host.stop();
    await host.stop();
    assert.equal(manager.get(42), undefined);
    await assertHostGone(host, diskPath);
  });
});

describe("rescue host after its emulator is SIGKILLed", () => {
  it("leaves only its directory, which sweep removes", async () => {
    const workDir = await mkdtemp(join(tmpdir(), "rescue-crash-test-"));
    const diskPath = join(workDir, "disk.raw");
    await createDiskStore().create(diskPath, 16 * MiB);
    const hostsDir = join(workDir, "hosts");
    await run("mkdir", [hostsDir]);
    const script = `
      import { createHostManager } from ${JSON.stringify(new URL("../src/emulator/hosts/index.ts", import.meta.url).pathname)};
      const m = createHostManager({ workDir: ${JSON.stringify(hostsDir)} });
      const h = await m.start({ serverId: 7, ip: "127.66.2.7", hostname: "s7", boot: "rescue", authorizedKeys: [], diskPath: ${JSON.stringify(diskPath)},
        onPowerOff() {}, onReboot() {} });
      console.log(JSON.stringify({ dir: h.dir, ns: h.pidNamespace, loop: h.loopDevice }));
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      const line = await waitFor<string>(
        "the child emulator's host",
        (done) => {
          let out = "";
          child.stdout.on("data", (d: Buffer) => {
            out += d.toString();
            if (out.includes("\n")) done(out.split("\n")[0] ?? "");
          });
        },
        30_000,
      );
      const info = JSON.parse(line) as { dir: string; ns: string; loop: string };
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await exited;

      // pdeathsig takes the namespace down with the emulator; the loop device goes on its last close.
      for (let i = 0; i < 50 && (await processesInPidNamespace(info.ns)).length > 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual(await processesInPidNamespace(info.ns), []);
      let loops = "";
      for (let i = 0; i < 50; i++) {
        loops = (await run("losetup", ["--noheadings", "--associated", diskPath])).stdout.trim();
        if (loops === "") break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(loops, "");
      await access(info.dir); // the directory is what remains

      const res = await sweep({ workDir: hostsDir });
      assert.deepEqual(res.removedDirs, [info.dir]);
      assert.deepEqual(res.killedPids, []);
      await assert.rejects(access(info.dir));
    } finally {
      child.kill("SIGKILL");
      await sweep({ workDir: hostsDir });
      await rm(workDir, { recursive: true, force: true });
    }
  });
});

describe("rescue host manager", () => {
  it("runs hosts side by side, refuses a taken address cleanly, and stops all", async () => {
    const workDir = await mkdtemp(join(tmpdir(), "rescue-manager-test-"));
    const hostsDir = join(workDir, "hosts");
    await run("mkdir", [hostsDir]);
    const manager = createHostManager({ workDir: hostsDir });
    const keys = generateKeyPair();
    const disks = createDiskStore();
    const spec = async (serverId: number, ip: string) => {
      const diskPath = join(workDir, `disk-${serverId}.raw`);
      await disks.create(diskPath, 8 * MiB);
      return {
        serverId,
        ip,
        hostname: `s${serverId}`,
        boot: "rescue" as const,
        authorizedKeys: [keys.publicKey],
        diskPath,
        onPowerOff() {},
        onReboot() {},
      };
    };
    try {
      const [a, b] = await Promise.all([
        manager.start(await spec(1, "127.66.2.3")),
        manager.start(await spec(2, "127.66.2.4")),
      ]);
      assert.notEqual(a.loopDevice, b.loopDevice);
      assert.notEqual(a.hostKeyFingerprint, b.hostKeyFingerprint);
      await assert.rejects(manager.start(await spec(1, "127.66.2.5")), /already running/);
      await assert.rejects(manager.start(await spec(3, "127.66.2.4")), /cannot listen on 127\.66\.2\.4:22/);
      // The failed start left nothing: only the two running hosts' directories exist.
      assert.deepEqual(
        (await readdir(hostsDir)).sort(),
        [a.dir, b.dir].map((d) => d.slice(hostsDir.length + 1)).sort(),
      );
      const { stdout } = await run("losetup", ["--noheadings", "--associated", join(workDir, "disk-3.raw")]);
      assert.equal(stdout.trim(), "");

      for (const h of [a, b]) {
        const c = await connect({ host: h.ip, privateKey: keys.privateKey, maxAttempts: 3 });
        try {
          assert.equal(c.hostKeyFingerprint, h.hostKeyFingerprint);
          await execOrThrow(c, `printf 'host-%s' ${h.serverId} | dd of=/dev/sda conv=fsync status=none`);
        } finally {
          await c.close();
        }
      }
      assert.equal((await readAt(join(workDir, "disk-1.raw"), 0, 6)).toString(), "host-1");
      assert.equal((await readAt(join(workDir, "disk-2.raw"), 0, 6)).toString(), "host-2");

      await manager.stopAll();
      assert.equal(manager.get(1), undefined);
      await assertHostGone(a, join(workDir, "disk-1.raw"));
      await assertHostGone(b, join(workDir, "disk-2.raw"));
      assert.deepEqual(await readdir(hostsDir), []);
    } finally {
      await manager.stopAll();
      await rm(workDir, { recursive: true, force: true });
    }
  });
});

describe("sweep", () => {
  it("detaches a loop device a crashed start left attached, and leaves live owners alone", async () => {
    const workDir = await mkdtemp(join(tmpdir(), "rescue-sweep-test-"));
    const hostsDir = join(workDir, "hosts");
    const diskPath = join(workDir, "disk.raw");
    await createDiskStore().create(diskPath, 8 * MiB);
    let loop = "";
    try {
      loop = (await run("losetup", ["--find", "--show", diskPath])).stdout.trim();
      const dead = spawn("true");
      await new Promise((r) => dead.once("exit", r));
      const crashed = join(hostsDir, "hetznix-host-9-crashed");
      const live = join(hostsDir, "hetznix-host-10-live");
      await mkdir(crashed, { recursive: true });
      await mkdir(live, { recursive: true });
      const marker = { kind: MARKER_KIND, serverId: 9, ip: "127.66.2.9", diskPath, loop: loop.slice(5) };
      await writeFile(
        join(crashed, MARKER_FILE),
        JSON.stringify({ ...marker, ownerPid: dead.pid, ownerStart: "1" }),
      );
      await writeFile(
        join(live, MARKER_FILE),
        JSON.stringify({ ...marker, ownerPid: process.pid, ownerStart: await processStart(process.pid) }),
      );

      const res = await sweep({ workDir: hostsDir });
      assert.deepEqual(res.removedDirs, [crashed]);
      assert.deepEqual(res.detachedLoops, [loop.slice(5)]);
      assert.deepEqual(res.skippedLive, [live]);
      assert.equal((await run("losetup", ["--noheadings", "--associated", diskPath])).stdout.trim(), "");
      await access(live);
      await assert.rejects(access(crashed));
    } finally {
      const { stdout } = await run("losetup", ["--noheadings", "--output", "NAME", "--associated", diskPath]);
      for (const dev of stdout.split("\n").filter((l) => l.trim() !== ""))
        await run("losetup", ["-d", dev.trim()]);
      await rm(workDir, { recursive: true, force: true });
    }
  });
});
