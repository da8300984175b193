/**
 * Parallel uploads, write-to-disk, and cleanup's age rule, against the emulator over real SSH.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  cleanupTemporary,
  isUploadError,
  parseDuration,
  temporaryLabels,
  uploadImages,
  writeToDisk,
  type UploadResult,
} from "../src/upload/index.js";
import { randomPublicKey } from "./support/emulator.js";
import {
  assertNoTemporaryResources,
  makeRawImage,
  sha256,
  sha256File,
  snapshotContentSha,
  startUploadEnv,
  type UploadTestEnv,
  waits,
  withTargetServer,
} from "./support/upload.js";

describe("upload: parallel, write-to-disk, cleanup", { timeout: 600_000 }, () => {
  let env: UploadTestEnv;

  before(async () => {
    env = await startUploadEnv("127.81.5.");
  });

  after(async () => {
    await env?.close();
  });

  it("uploads two images in parallel, each with its own architecture", async () => {
    const a = join(env.dir, "a.raw");
    const b = join(env.dir, "b.raw");
    const [bufA, bufB] = await Promise.all([makeRawImage(a, 6, 2), makeRawImage(b, 5, 2)]);
    const settled = await uploadImages([
      { client: env.client, image: { path: a }, architecture: "x86", waits },
      { client: env.client, image: { path: b }, architecture: "arm", waits },
    ]);
    assert.equal(settled.length, 2);
    const [ra, rb] = settled.map((s) => {
      if (s.status === "rejected") throw s.reason;
      return s.value;
    }) as [UploadResult, UploadResult];
    assert.equal(ra.architecture, "x86");
    assert.equal(rb.architecture, "arm");
    assert.notEqual(ra.runId, rb.runId);
    assert.notEqual(ra.imageId, rb.imageId);
    assert.equal(ra.sha256, sha256(bufA));
    assert.equal(rb.sha256, sha256(bufB));
    assert.equal(await snapshotContentSha(env, ra.imageId, bufA.length), sha256(bufA));
    assert.equal(await snapshotContentSha(env, rb.imageId, bufB.length), sha256(bufB));
    await assertNoTemporaryResources(env);
  });

  it("write-to-disk writes an existing server's disk, verifies it, and leaves it off (or on with start)", async () => {
    await withTargetServer(env, { name: "target", location: "nbg1" }, async ({ id: serverId }) => {
      const img = join(env.dir, "w.raw");
      const buf = await makeRawImage(img, 7, 2);
      const r = await writeToDisk({ client: env.client, server: "target", image: { path: img }, waits });
      assert.equal(r.serverId, serverId);
      assert.equal(r.sha256, sha256(buf));
      assert.equal(r.started, false);
      const server = await env.client.servers.getById(serverId);
      assert.equal(server.status, "off");
      const record = env.te.emulator.state.servers.find(serverId);
      assert.ok(record);
      assert.equal(await sha256File(join(env.te.stateDir, record.disk), buf.length), sha256(buf));
      assert.deepEqual(await env.client.sshKeys.all(), [], "the temporary key is removed");

      const img2 = join(env.dir, "w2.raw");
      const buf2 = await makeRawImage(img2, 5, 1);
      const r2 = await writeToDisk({
        client: env.client,
        server: serverId,
        image: { path: img2 },
        start: true,
        waits,
      });
      assert.equal(r2.started, true);
      assert.equal((await env.client.servers.getById(serverId)).status, "running");
      assert.equal(await sha256File(join(env.te.stateDir, record.disk), buf2.length), sha256(buf2));

      await assert.rejects(
        writeToDisk({ client: env.client, server: "no-such-server", image: { path: img2 }, waits }),
        (err: unknown) => isUploadError(err, "unknown_server"),
      );
    });
    await assertNoTemporaryResources(env);
  });

  it("cleanup deletes only temporary resources older than the limit, and a dry run deletes nothing", async () => {
    const now = Date.now();
    const old = temporaryLabels("oldrun0001", now - 2 * 3_600_000);
    const young = temporaryLabels("newrun0001", now - 10 * 60_000);
    const mk = (name: string, labels: Record<string, string>) =>
      env.client.sshKeys.create({ name, publicKey: randomPublicKey(name), labels });
    await mk("old-key", old);
    await mk("young-key", young);
    await mk("users-own-key", { team: "ops" });
    const oldServer = await env.client.servers.create({
      name: "old-server",
      server_type: "cx23",
      image: "ubuntu-24.04",
      location: "fsn1",
      start_after_create: false,
      labels: old,
    });
    const youngServer = await env.client.servers.create({
      name: "young-server",
      server_type: "cx23",
      image: "ubuntu-24.04",
      location: "fsn1",
      start_after_create: false,
      labels: young,
    });
    await env.client.waitForActions([oldServer.action as never, youngServer.action as never], {
      timeoutMs: 30_000,
    });

    const dry = await cleanupTemporary({
      client: env.client,
      olderThanMs: parseDuration("1h"),
      dryRun: true,
    });
    assert.deepEqual(dry.deleted.map((i) => i.name).sort(), ["old-key", "old-server"]);
    assert.equal((await env.client.sshKeys.all()).length, 3, "a dry run deletes nothing");

    const real = await cleanupTemporary({ client: env.client, olderThanMs: parseDuration("1h") });
    assert.deepEqual(real.deleted.map((i) => i.name).sort(), ["old-key", "old-server"]);
    assert.deepEqual(real.kept.map((i) => i.name).sort(), ["young-key", "young-server"]);
    assert.deepEqual(real.failed, []);
    assert.deepEqual((await env.client.sshKeys.all()).map((k) => k.name).sort(), [
      "users-own-key",
      "young-key",
    ]);
    assert.deepEqual(
      (await env.client.servers.all()).map((s) => s.name),
      ["young-server"],
    );

    const rest = await cleanupTemporary({ client: env.client, olderThanMs: parseDuration("5m") });
    assert.deepEqual(rest.deleted.map((i) => i.name).sort(), ["young-key", "young-server"]);
    const own = (await env.client.sshKeys.all()).find((k) => k.name === "users-own-key");
    assert.ok(own, "resources without hetznix's temporary label are never touched");
    await env.client.sshKeys.delete(own.id);
    await assertNoTemporaryResources(env);
  });

  it("parses durations", () => {
    assert.equal(parseDuration("90s"), 90_000);
    assert.equal(parseDuration("1h30m"), 5_400_000);
    assert.equal(parseDuration("0"), 0);
    assert.equal(parseDuration("2d"), 2 * 86_400_000);
    assert.throws(
      () => parseDuration("1 hour"),
      (e: unknown) => isUploadError(e, "invalid_argument"),
    );
  });
});
