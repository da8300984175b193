import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { inspect, promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { createDiskStore, createHostManager } from "../src/emulator/hosts/index.js";
import {
  connect,
  exec,
  execOrThrow,
  ExecError,
  generateKeyPair,
  SshConnectError,
  type SshConnection,
} from "../src/ssh/index.js";

const run = promisify(execFile);
const MiB = 1024 * 1024;
const IP = "127.66.3.2";

/** `total` bytes of a deterministic pseudo-random stream, generated on demand; `digest()` once consumed. */
function generated(total: number): { stream: Readable; digest: () => string } {
  const hash = createHash("sha256");
  let produced = 0;
  let counter = 0;
  const stream = new Readable({
    highWaterMark: 256 * 1024,
    read() {
      if (produced >= total) {
        this.push(null);
        return;
      }
      const size = Math.min(256 * 1024, total - produced);
      const chunk = Buffer.alloc(size);
      // Cheap, non-constant content: a counter block hashed into each 32-byte slot of the first KiB, repeated.
      const seed = createHash("sha256").update(String(counter++)).digest();
      for (let off = 0; off < size; off += seed.length)
        seed.copy(chunk, off, 0, Math.min(seed.length, size - off));
      produced += size;
      hash.update(chunk);
      this.push(chunk);
    },
  });
  return { stream, digest: () => hash.digest("hex") };
}

describe("ssh keys", () => {
  it("generates ed25519 keys in memory that never show their private half", async () => {
    const k = generateKeyPair("test-comment");
    assert.match(k.publicKey, /^ssh-ed25519 AAAA[0-9A-Za-z+/=]+ test-comment$/);
    assert.match(k.privateKey, /BEGIN OPENSSH PRIVATE KEY/);
    assert.ok(!JSON.stringify(k).includes("PRIVATE"));
    assert.ok(!inspect(k).includes("PRIVATE"));
    assert.ok(!Object.keys(k).includes("privateKey"));
    const dir = await mkdtemp(join(tmpdir(), "ssh-keys-test-"));
    try {
      await writeFile(join(dir, "k.pub"), k.publicKey + "\n");
      const { stdout } = await run("ssh-keygen", ["-l", "-f", join(dir, "k.pub")]);
      assert.equal(stdout.split(" ")[1], k.fingerprint);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    assert.notEqual(generateKeyPair().publicKey, k.publicKey);
  });
});

describe("ssh connect", () => {
  it("gives up after maxAttempts against a port where nothing listens", async () => {
    const attempts: number[] = [];
    const err = await connect({
      host: "127.66.3.9",
      privateKey: generateKeyPair().privateKey,
      maxAttempts: 4,
      initialDelayMs: 10,
      maxDelayMs: 40,
      onAttempt: (a) => attempts.push(a.attempt),
    }).then(
      () => assert.fail("connect should fail"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof SshConnectError);
    assert.equal(err.attempts, 4);
    assert.deepEqual(attempts, [1, 2, 3, 4]);
    assert.match(err.message, /127\.66\.3\.9:22.*4 attempt/);
    assert.match(String(err.lastError?.message), /ECONNREFUSED/);
  });

  it("gives up once maxTotalMs has passed even with attempts left", async () => {
    const err = await connect({
      host: "127.66.3.9",
      privateKey: generateKeyPair().privateKey,
      maxAttempts: 100_000,
      maxTotalMs: 600,
      initialDelayMs: 50,
      maxDelayMs: 100,
    }).then(
      () => assert.fail("connect should fail"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof SshConnectError);
    assert.ok(err.attempts >= 1 && err.attempts < 100, `attempts ${err.attempts}`);
  });

  it("stops retrying when aborted", async () => {
    const ac = new AbortController();
    let seen = 0;
    await assert.rejects(
      connect({
        host: "127.66.3.9",
        privateKey: generateKeyPair().privateKey,
        maxAttempts: 1000,
        initialDelayMs: 20,
        maxDelayMs: 20,
        signal: ac.signal,
        onAttempt: (a) => {
          seen = a.attempt;
          if (a.attempt === 3) ac.abort(new Error("stop now"));
        },
      }),
      /stop now/,
    );
    assert.equal(seen, 3);
  });
});

describe("ssh exec against a real sshd", () => {
  const keys = generateKeyPair("ssh-exec-test");
  const manager = createHostManager();
  let workDir = "";
  let conn: SshConnection;
  let fingerprint = "";

  before(async () => {
    workDir = await mkdtemp(join(tmpdir(), "ssh-exec-test-"));
    await createDiskStore().create(join(workDir, "disk.raw"), 8 * MiB);
    const host = await manager.start({
      serverId: 1,
      ip: IP,
      hostname: "s1",
      boot: "rescue",
      authorizedKeys: [keys.publicKey],
      diskPath: join(workDir, "disk.raw"),
      onPowerOff: () => undefined,
      onReboot: () => undefined,
    });
    fingerprint = host.hostKeyFingerprint;
    conn = await connect({ host: IP, privateKey: keys.privateKey, maxAttempts: 5 });
  });

  after(async () => {
    await conn?.close();
    await manager.stopAll();
    await rm(workDir, { recursive: true, force: true });
  });

  it("reports the host key and accepts a pinned one, refusing a wrong pin at once", async () => {
    assert.equal(conn.hostKeyFingerprint, fingerprint);
    const pinned = await connect({
      host: IP,
      privateKey: keys.privateKey,
      expectedHostKeyFingerprint: fingerprint,
    });
    await pinned.close();
    const err = await connect({
      host: IP,
      privateKey: keys.privateKey,
      expectedHostKeyFingerprint: "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
      maxAttempts: 5,
    }).then(
      () => assert.fail("should refuse"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof SshConnectError);
    assert.equal(err.attempts, 1);
    assert.match(err.message, /expected SHA256:AAAA/);
  });

  it("streams 200 MB of stdin generated on the fly; the remote hash matches", async () => {
    const total = 200 * MiB;
    const src = generated(total);
    let lastProgress = 0;
    const r = await execOrThrow(conn, "sha256sum", {
      stdin: src.stream,
      onProgress: (p) => (lastProgress = p.stdinBytes),
    });
    assert.equal(r.stdinBytes, total);
    assert.equal(lastProgress, total);
    assert.equal(r.stdoutTail.split(" ")[0], src.digest());
  });

  it("streams large stdout to a slow consumer without keeping it", async () => {
    let received = 0;
    let slowCalls = 0;
    const r = await execOrThrow(conn, "head -c 33554432 /dev/zero", {
      onStdout: async (chunk) => {
        received += chunk.length;
        if (slowCalls++ % 64 === 0) await new Promise((res) => setTimeout(res, 5));
      },
    });
    assert.equal(received, 32 * MiB);
    assert.equal(r.stdoutBytes, 32 * MiB);
    assert.ok(Buffer.byteLength(r.stdoutTail) <= 4096);
  });

  it("returns exit codes and signals", async () => {
    assert.equal((await exec(conn, "exit 7")).exitCode, 7);
    assert.equal((await exec(conn, "true")).exitCode, 0);
    const killed = await exec(conn, "kill -KILL $$");
    assert.equal(killed.exitCode, null);
    assert.equal(killed.signal, "KILL");
  });

  it("execOrThrow shows the command, the status and only the last lines of output", async () => {
    const command = "for i in $(seq 1 30); do echo err-line-$i >&2; echo out-line-$i; done; exit 3";
    const err = await execOrThrow(conn, command).then(
      () => assert.fail("should throw"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ExecError);
    assert.equal(err.kind, "exit-status");
    assert.equal(err.exitCode, 3);
    assert.match(err.message, /exited with status 3/);
    assert.ok(err.message.includes("for i in $(seq 1 30)"));
    assert.match(err.message, /err-line-30\n/);
    assert.match(err.message, /out-line-30$/);
    assert.ok(err.message.includes("err-line-11\n"));
    assert.ok(!err.message.includes("err-line-10\n"), "only the last 20 lines");
    assert.equal(err.result.stderrTail.split("\n").length, 20);
  });

  it("bounds tails by bytes too", async () => {
    const r = await exec(conn, "head -c 100000 /dev/zero | tr '\\0' x", { tailBytes: 1000 });
    assert.equal(r.stdoutTail, "x".repeat(1000));
  });

  it("destroys a stdin stream the command stops reading, and still gives the status", async () => {
    const src = generated(64 * MiB);
    const r = await exec(conn, "head -c 1000 >/dev/null; exit 5", { stdin: src.stream });
    assert.equal(r.exitCode, 5);
    assert.ok(src.stream.destroyed);
  });

  it("aborts a running command", async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error("user abort")), 200);
    const err = await exec(conn, "sleep 30", { signal: ac.signal }).then(
      () => assert.fail("should abort"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ExecError);
    assert.equal(err.kind, "aborted");
    assert.equal((await execOrThrow(conn, "echo still-usable")).stdoutTail, "still-usable");
  });

  it("fails clearly when the connection is gone", async () => {
    const c = await connect({ host: IP, privateKey: keys.privateKey });
    const pending = exec(c, "sleep 30");
    setTimeout(() => c.client.destroy(), 200);
    const err = await pending.then(
      () => assert.fail("should fail"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ExecError);
    assert.equal(err.kind, "connection-lost");
    assert.match(err.message, /sleep 30/);
    await assert.rejects(exec(c, "true"), ExecError);
  });
});
