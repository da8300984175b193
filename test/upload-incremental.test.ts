/**
 * Incremental upload (--base) against the emulator with real rescue hosts and loop devices: the temporary server is
 * created from the base snapshot, the rescue system hashes the base's blocks, copies moved blocks in place and
 * receives only new ones; the snapshot holds exactly the new image (read from the emulator's snapshot disk file) and
 * fewer bytes went over SSH than a full upload's. Fallbacks say why; bad bases are errors; an interrupted run leaves
 * nothing. Images are synthetic: random 4 KiB blocks, moved, swapped, replaced, grown and shrunk.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { open, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { isUploadError, writeToDisk, type UploadEvent, type UploadResult } from "../src/upload/index.js";
import { runCli } from "./support/cli.js";
import { blockStats, makeImagePair } from "./support/image-pair.js";
import {
  addFault,
  assertNoTemporaryResources,
  clearFaults,
  sha256,
  snapshotContentSha,
  snapshotIds,
  startUploadEnv,
  type UploadTestEnv,
  sha256File,
  uploadX86,
  waits,
  withTargetServer,
} from "./support/upload.js";

const BLOCK = 4096;

function blocks(count: number): Buffer[] {
  return Array.from({ length: count }, () => randomBytes(BLOCK));
}

describe("upload: incremental (--base)", { timeout: 900_000 }, () => {
  let env: UploadTestEnv;
  let n = 0;
  /** The base's blocks (1024 random 4 KiB blocks, a zero gap in the middle) and its full upload. */
  let baseBlocks: Buffer[] = [];
  let baseImage: Buffer;
  let baseResult: UploadResult;

  before(async () => {
    env = await startUploadEnv("127.77.60.");
    baseBlocks = blocks(1024);
    baseImage = Buffer.concat([
      ...baseBlocks.slice(0, 512),
      Buffer.alloc(64 * BLOCK),
      ...baseBlocks.slice(512),
    ]);
    baseResult = await uploadX86(env, { path: await save("series-a", baseImage) });
  });

  after(async () => {
    await env?.close();
  });

  /** Write an image named `<series>-<n>.raw` (its default series is `<series>`). */
  async function save(series: string, image: Buffer): Promise<string> {
    const path = join(env.dir, `${series}-${++n}.raw`);
    await writeFile(path, image);
    return path;
  }

  /** The snapshot's disk holds `image` and only zeros after it, up to `upTo` bytes. */
  async function assertSnapshotHolds(imageId: number, image: Buffer, upTo: number): Promise<void> {
    assert.equal(
      await snapshotContentSha(env, imageId, image.length),
      sha256(image),
      "the snapshot holds the image",
    );
    const record = env.te.emulator.state.images.find(imageId);
    assert.ok(record?.disk);
    const fh = await open(join(env.te.stateDir, record.disk), "r");
    try {
      const rest = Buffer.alloc(Math.max(0, upTo - image.length));
      await fh.read(rest, 0, rest.length, image.length);
      assert.ok(rest.equals(Buffer.alloc(rest.length)), "nothing stale after the image");
    } finally {
      await fh.close();
    }
  }

  it("moved, new and changed blocks (first and last too): copied on the server, fewer bytes sent", async () => {
    // Shift by 3 blocks, new first and last blocks, 10% new blocks in the middle, a partial tail block.
    const moved = [...baseBlocks.slice(100, 400), ...baseBlocks.slice(0, 100), ...baseBlocks.slice(400)];
    const changed = moved.map((b, i) => (i % 10 === 5 ? randomBytes(BLOCK) : b));
    changed[0] = randomBytes(BLOCK);
    changed[changed.length - 1] = randomBytes(BLOCK);
    const image = Buffer.concat([...blocks(3), ...changed, randomBytes(512)]);
    const events: UploadEvent[] = [];
    const r = await uploadX86(
      env,
      { path: await save("series-a", image) },
      {
        base: "auto",
        onEvent: (e) => events.push(e),
      },
    );
    assert.ok(r.incremental, `incremental, not a fallback: ${r.fallback}`);
    assert.equal(r.incremental.base.id, baseResult.imageId);
    assert.equal(r.incremental.blockBytes, 4096);
    assert.ok(r.incremental.blocks.copied > 800, JSON.stringify(r.incremental));
    // New: 3 + 102 changed + first and last; cycles (regions swapping places) are staged, not sent.
    assert.ok(r.incremental.blocks.sent < 120, JSON.stringify(r.incremental));
    assert.ok(r.incremental.copyRuns >= 2);
    assert.ok(
      r.bytesSent < baseResult.bytesSent / 4,
      `incremental sent ${r.bytesSent} bytes, the full upload ${baseResult.bytesSent}`,
    );
    assert.equal(r.sha256, sha256(image));
    assert.equal(r.labels["hetznix/series"], "series-a");
    await assertSnapshotHolds(r.imageId, image, baseImage.length + BLOCK);
    const steps = new Set(
      events.filter((e) => e.kind === "step" && e.status === "done").map((e) => (e as { step: string }).step),
    );
    for (const s of ["base", "hash", "base-hash", "delta", "copy", "send", "verify", "snapshot"])
      assert.ok(steps.has(s), s);
    assert.ok(!steps.has("discard"), "the base is not discarded");
    await assertNoTemporaryResources(env);
  });

  it("a realistic pair (two mke2fs -d images, paths dropped and added): moved blocks found, few bytes sent", async () => {
    const pair = await makeImagePair(join(env.dir, "pair"));
    const stats = await blockStats(pair.old.path, pair.new.path);
    const share = stats.percent;
    assert.ok(
      share.elsewhere > 50 && share.sameOffset < 10,
      `the pair moves blocks: ${JSON.stringify(share)}`,
    );
    const series = { series: "realistic-pair" };
    const full = await uploadX86(env, { path: pair.old.path }, series);
    const r = await uploadX86(env, { path: pair.new.path }, { ...series, base: "auto" });
    assert.ok(r.incremental, `incremental, not a fallback: ${r.fallback}`);
    assert.equal(r.incremental.base.id, full.imageId);
    assert.ok(r.incremental.blocks.copied > r.incremental.blocks.sent, JSON.stringify(r.incremental));
    assert.ok(
      r.bytesSent < full.bytesSent / 2,
      `incremental sent ${r.bytesSent} bytes, the full upload of the old image ${full.bytesSent}`,
    );
    const image = await readFile(pair.new.path);
    await assertSnapshotHolds(r.imageId, image, image.length);
    await assertNoTemporaryResources(env);
  });

  it("the CLI: upload --base auto --series NAME --output json reports the blocks and bytes", async () => {
    const image = Buffer.concat([...baseBlocks.slice(0, 300), ...blocks(4), ...baseBlocks.slice(300)]);
    const path = await save("renamed", image);
    // auto picks the newest snapshot of the series: the previous test's, whose blocks are this image's but for ~110.
    const newest = (
      await env.client.images.all({ type: "snapshot", labelSelector: "hetznix/series=series-a" })
    ).sort((x, y) => y.id - x.id)[0];
    const out = await runCli(
      [
        "upload",
        "--image-path",
        path,
        "--architecture",
        "x86",
        "--base",
        "auto",
        "--series",
        "series-a",
        "--output",
        "json",
      ],
      { home: env.dir, endpoint: env.te.emulator.endpoint, token: env.te.token, timeoutMs: 180_000 },
    );
    assert.equal(out.code, 0, out.stderr);
    const r = JSON.parse(out.stdout) as {
      incremental: Record<string, unknown> | null;
      fallback: string | null;
      labels: Record<string, string>;
      image_id: number;
    };
    assert.ok(r.incremental, `fallback: ${r.fallback}`);
    assert.equal(r.fallback, null);
    assert.equal(r.labels["hetznix/series"], "series-a");
    assert.equal((r.incremental["base"] as { id: number }).id, newest?.id);
    assert.ok((r.incremental["blocks"] as { sent: number }).sent < 150);
    assert.equal(r.incremental["block_bytes"], 4096);
    assert.ok((r.incremental["bytes_sent"] as number) < image.length / 4);
    await assertSnapshotHolds(r.image_id, image, baseImage.length);
  });

  it("identical content (forced): nothing sent as data, still verified", async () => {
    const r = await uploadX86(
      env,
      { path: await save("series-a", baseImage) },
      {
        base: String(baseResult.imageId),
        force: true,
      },
    );
    assert.ok(r.incremental, r.fallback);
    assert.equal(r.incremental.blocks.sent, 0);
    assert.equal(r.incremental.blocks.copied, 0);
    assert.equal(r.incremental.bytesPlanned, 0);
    assert.ok(r.bytesSent < 20_000, `sent ${r.bytesSent}`);
    await assertSnapshotHolds(r.imageId, baseImage, baseImage.length);
  });

  it("two swapped blocks (a copy cycle), an image that grew and one that shrank", async () => {
    const swapped = [...baseBlocks];
    [swapped[10], swapped[700]] = [swapped[700] as Buffer, swapped[10] as Buffer];
    const cycle = Buffer.concat([...swapped.slice(0, 512), Buffer.alloc(64 * BLOCK), ...swapped.slice(512)]);
    const base = String(baseResult.imageId);
    const r1 = await uploadX86(env, { path: await save("series-a", cycle) }, { base });
    assert.ok(r1.incremental, r1.fallback);
    assert.ok(r1.incremental.cyclesBroken >= 1, JSON.stringify(r1.incremental));
    assert.equal(r1.incremental.blocks.sent, 0, "the cycle is staged in scratch space, not sent");
    // The scratch space past the image (where the swapped block was staged) is zeroed again.
    await assertSnapshotHolds(r1.imageId, cycle, baseImage.length + 4 * 1024 * 1024);

    const grown = Buffer.concat([baseImage, ...blocks(200)]);
    const r2 = await uploadX86(env, { path: await save("series-a", grown) }, { base });
    assert.ok(r2.incremental, r2.fallback);
    assert.equal(r2.incremental.blocks.sent, 200);
    await assertSnapshotHolds(r2.imageId, grown, grown.length);

    const shrunk = Buffer.concat(baseBlocks.slice(200, 600));
    const r3 = await uploadX86(env, { path: await save("series-a", shrunk) }, { base });
    assert.ok(r3.incremental, r3.fallback);
    assert.equal(r3.incremental.blocks.sent, 0);
    await assertSnapshotHolds(r3.imageId, shrunk, baseImage.length);
    await assertNoTemporaryResources(env);
  });

  it("falls back to a full write, saying why: no base of the series; a base sharing nothing", async () => {
    const other = Buffer.concat(blocks(256));
    const r1 = await uploadX86(env, { path: await save("series-b", other) }, { base: "auto" });
    assert.equal(r1.incremental, null);
    assert.match(r1.fallback ?? "", /no x86 snapshot of series series-b/);
    await assertSnapshotHolds(r1.imageId, other, other.length);

    const unrelated = Buffer.concat(blocks(256));
    const r2 = await uploadX86(env, { path: await save("series-b", unrelated) }, { base: "auto" });
    assert.equal(r2.incremental, null);
    assert.match(r2.fallback ?? "", /shares too little/);
    await assertSnapshotHolds(r2.imageId, unrelated, unrelated.length);
    await assertNoTemporaryResources(env);
  });

  it("a bad base is an error naming the fix: missing, not a snapshot, not hetznix's, other architecture", async () => {
    const path = await save("series-c", Buffer.concat(blocks(16)));
    const expectBase = (base: string, pattern: RegExp) =>
      assert.rejects(uploadX86(env, { path }, { base }), (err: unknown) => {
        assert.ok(isUploadError(err, "invalid_base"), String(err));
        assert.match(String(err), pattern);
        assert.match(String(err), /--base auto/);
        return true;
      });
    await expectBase("987654", /no image 987654/);
    await expectBase("ubuntu-24.04", /system image, not a snapshot/);
    await expectBase("no-such-description", /No snapshot has/);
    // A snapshot made from a plain server: not made by hetznix.
    const made = await snapshotOfServer("cx23", "ubuntu-24.04");
    await expectBase(String(made), /not made by hetznix/);
    const arm = await snapshotOfServer("cax11", "ubuntu-24.04", {
      "hetznix/image": "true",
      "hetznix/size": "65536",
    });
    await expectBase(String(arm), /arm snapshot; this upload is for x86/);
    await assertNoTemporaryResources(env);
  });

  /** A snapshot of a fresh (plain) server of `type`, with `labels`; the server is deleted. */
  async function snapshotOfServer(
    type: string,
    image: string,
    labels: Record<string, string> = {},
  ): Promise<number> {
    const created = await env.client.servers.create({ name: `plain-${++n}`, server_type: type, image });
    await env.client.waitForActions([created.action as never, ...created.nextActions], { timeoutMs: 30_000 });
    const snap = await env.client.servers.createImage(created.server.id, {
      type: "snapshot",
      description: `plain ${n}`,
      labels,
    });
    await env.client.waitForActions([snap.action], { timeoutMs: 30_000 });
    await env.client.waitForActions([await env.client.servers.delete(created.server.id)], {
      timeoutMs: 30_000,
    });
    return snap.image.id;
  }

  it("write-to-disk --base: the server's current disk is the base; only new blocks are sent", async () => {
    await withTargetServer(env, { name: "incr-target" }, async ({ id: serverId }) => {
      const first = await writeToDisk({
        client: env.client,
        server: serverId,
        image: { path: await save("wtd", baseImage) },
        waits,
      });
      assert.equal(first.incremental, undefined);
      const image = Buffer.concat([...blocks(2), ...baseBlocks.slice(500), ...baseBlocks.slice(0, 400)]);
      const r = await writeToDisk({
        client: env.client,
        server: serverId,
        image: { path: await save("wtd", image) },
        base: true,
        waits,
      });
      assert.ok(r.incremental, r.fallback);
      assert.equal(r.incremental.blocks.sent, 2);
      assert.ok(r.bytesSent < first.bytesSent / 4, `${r.bytesSent} vs ${first.bytesSent}`);
      const record = env.te.emulator.state.servers.find(serverId);
      assert.ok(record);
      assert.equal(await sha256File(join(env.te.stateDir, record.disk), image.length), sha256(image));
    });
    await assertNoTemporaryResources(env);
  });

  it("the SSH connection dropped while sending: a full write on a new connection, the snapshot still right", async () => {
    const image = Buffer.concat([...baseBlocks.slice(0, 600), ...blocks(400), ...baseBlocks.slice(600)]);
    const path = await save("series-a", image);
    await addFault(env, { kind: "ssh_drop", afterBytes: 512 * 1024 });
    const notes: string[] = [];
    const r = await uploadX86(
      env,
      { path },
      {
        base: String(baseResult.imageId),
        codec: { codec: "zstd", level: 3 },
        onEvent: (e) => {
          if (e.kind !== "note" || !/connection lost/.test(e.message)) return;
          notes.push(e.message);
          for (const s of env.te.emulator.state.servers.list()) {
            const host = env.te.emulator.state.host(s.id);
            if (host) host.dropAfterBytes = undefined;
          }
          void clearFaults(env);
        },
      },
    );
    assert.equal(notes.length, 1, notes.join("\n"));
    assert.equal(r.incremental, null);
    assert.match(r.fallback ?? "", /connection lost.*cannot be resumed/);
    await assertSnapshotHolds(r.imageId, image, baseImage.length);
    await assertNoTemporaryResources(env);
  });

  it("Ctrl-C during the copy phase: aborted, nothing left, no snapshot", async () => {
    const moved = Buffer.concat([...baseBlocks.slice(1), ...blocks(5)]);
    const path = await save("series-a", moved);
    const before = await snapshotIds(env);
    const controller = new AbortController();
    await assert.rejects(
      uploadX86(
        env,
        { path },
        {
          base: String(baseResult.imageId),
          signal: controller.signal,
          onEvent: (e) => {
            if (e.kind === "step" && e.step === "copy" && e.status === "start")
              controller.abort(new Error("Ctrl-C"));
          },
        },
      ),
      (err: unknown) => isUploadError(err, "aborted"),
    );
    assert.deepEqual(await snapshotIds(env), before);
    await assertNoTemporaryResources(env);
  });

  it("the base deleted during the run: a clear error, nothing left, no snapshot", async () => {
    const victimBlocks = blocks(64);
    const victim = await uploadX86(env, { path: await save("series-d", Buffer.concat(victimBlocks)) });
    const path = await save("series-d", Buffer.concat([...blocks(2), ...victimBlocks]));
    const before = (await snapshotIds(env)).filter((id) => id !== victim.imageId);
    await assert.rejects(
      uploadX86(
        env,
        { path },
        {
          base: String(victim.imageId),
          waits,
          onEvent: (e) => {
            if (e.kind === "step" && e.step === "server" && e.status === "done")
              void env.client.images.delete(victim.imageId);
          },
        },
      ),
      (err: unknown) => {
        assert.ok(isUploadError(err, "invalid_base"), String(err));
        assert.match(String(err), /was deleted during the upload/);
        return true;
      },
    );
    assert.deepEqual(await snapshotIds(env), before);
    await assertNoTemporaryResources(env);
  });
});
