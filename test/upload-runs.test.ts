/**
 * Runs that overlap, lose answers, or meet `hetznix cleanup`: concurrent uploads of the same content converge on one
 * snapshot; a snapshot whose create_image answer was lost (or that Ctrl-C interrupted) is found by the run's label and
 * removed once it is created; a temporary server deleted mid-write ends the run at once; a run's heartbeat keeps
 * `cleanup --older-than` away from it however long it runs. The emulator runs at speed 20 here, so a snapshot takes
 * about a second to create: long enough to be seen `creating`.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, afterEach, before, describe, it } from "node:test";
import type { HCloudClient } from "../src/hcloud/index.js";
import {
  CleanupIncompleteError,
  RUN_LABEL,
  cleanupTemporary,
  contentLabels,
  isUploadError,
  temporaryLabels,
  type CleanupOutcome,
  type UploadEvent,
  type UploadResult,
} from "../src/upload/index.js";
import { pause } from "../src/util/time.js";
import { startApiProxy, type ApiProxy, type ProxyAction } from "./support/api-proxy.js";
import { randomPublicKey } from "./support/emulator.js";
import { startHttp, type TestHttpServer } from "./support/http.js";
import {
  MiB,
  assertNoTemporaryResources,
  fastClient,
  sha256,
  snapshotContentSha,
  snapshotIds,
  startUploadEnv,
  type UploadTestEnv,
  uploadX86,
} from "./support/upload.js";

const CREATE_IMAGE = /^\/servers\/\d+\/actions\/create_image$/;

describe("upload: overlapping, interrupted and cleaned-up runs", { timeout: 900_000 }, () => {
  let env: UploadTestEnv;
  let http: TestHttpServer | undefined;
  const proxies: ApiProxy[] = [];
  /** 2 MiB served at 256 KiB/s after the first 64 KiB: a download of about 8 s. */
  const slow = randomBytes(2 * MiB);
  slow[510] = 0x55;
  slow[511] = 0xaa;

  before(async () => {
    env = await startUploadEnv("127.83.4.", { speed: 20 });
    http = await startHttp((req, res) => {
      res.writeHead(200, { "Content-Length": String(slow.length) });
      if (req.method === "HEAD") return res.end();
      if (req.headers.range) return res.end(slow);
      let at = 64 * 1024;
      res.write(slow.subarray(0, at));
      const timer = setInterval(() => {
        if (res.destroyed || at >= slow.length) {
          clearInterval(timer);
          if (!res.destroyed) res.end();
          return;
        }
        res.write(slow.subarray(at, at + 64 * 1024));
        at += 64 * 1024;
      }, 250);
      res.on("close", () => clearInterval(timer));
    });
  });

  afterEach(async () => {
    await Promise.all(proxies.splice(0).map((p) => p.close()));
  });

  after(async () => {
    await http?.close();
    await env?.close();
  });

  /** A client whose requests go through a misbehaving proxy (see support/api-proxy.ts). */
  async function proxiedClient(
    decide: (req: { method: string; path: string }) => ProxyAction | Promise<ProxyAction>,
    onSwallowed?: () => void,
  ): Promise<{ client: HCloudClient; proxy: ApiProxy }> {
    const proxy = await startApiProxy(env.te.emulator.endpoint, decide, onSwallowed);
    proxies.push(proxy);
    return { client: fastClient(proxy.endpoint, env.te.token), proxy };
  }

  const createImage = (r: { method: string; path: string }) =>
    r.method === "POST" && CREATE_IMAGE.test(r.path);

  /** Exactly one new snapshot, holding the image; both results answer with it; nothing temporary left. */
  async function assertConverged(before: number[], results: UploadResult[], sha: string, size: number) {
    const added = (await snapshotIds(env)).filter((id) => !before.includes(id));
    assert.equal(added.length, 1, `one new snapshot, not ${JSON.stringify(added)}`);
    for (const r of results) assert.equal(r.imageId, added[0], "every run answers with it");
    assert.equal(await snapshotContentSha(env, added[0] as number, size), sha);
    await assertNoTemporaryResources(env);
  }

  describe("concurrent uploads of the same content converge on one snapshot", () => {
    it("two at once", async () => {
      const img = await env.freshImage(6, 2);
      const before = await snapshotIds(env);
      const results = await Promise.all([
        uploadX86(env, { path: img.path }),
        uploadX86(env, { path: img.path }),
      ]);
      await assertConverged(before, results, img.sha, img.size);
    });

    it("the second starting while the first writes", async () => {
      const img = await env.freshImage(6, 2);
      const before = await snapshotIds(env);
      let second: Promise<UploadResult> | undefined;
      const first = uploadX86(
        env,
        { path: img.path },
        {
          onEvent: (e) => {
            if (!second && e.kind === "step" && e.step === "write" && e.status === "start")
              second = uploadX86(env, { path: img.path });
          },
        },
      );
      const a = await first;
      assert.ok(second, "the second run started");
      await assertConverged(before, [a, await second], img.sha, img.size);
    });

    it("both past their last lookup before either snapshots: the lower id stays, the other run deletes its own", async () => {
      const img = await env.freshImage(6, 2);
      const before = await snapshotIds(env);
      // Hold each create_image until both runs have sent theirs: both looked and found nothing.
      let arrived = 0;
      const bothThere = new AbortController();
      const { client, proxy } = await proxiedClient(async (r): Promise<ProxyAction> => {
        if (!createImage(r)) return "pass";
        if (++arrived === 2) bothThere.abort();
        // Bounded: a run that never sends its create_image lets the other through after a minute.
        await pause(60_000, bothThere.signal);
        return "pass";
      });
      let results: UploadResult[];
      try {
        results = await Promise.all([
          uploadX86(env, { path: img.path }, { client }),
          uploadX86(env, { path: img.path }, { client }),
        ]);
      } finally {
        bothThere.abort();
      }
      assert.equal(arrived, 2, "both runs created a snapshot");
      assert.equal(proxy.swallowed.length, 0);
      await assertConverged(before, results, img.sha, img.size);
      assert.ok(
        results.some((r) => !r.reused) && results.some((r) => r.reused),
        "one run made the snapshot, the other answers with it",
      );
    });

    it("the snapshot of a run killed outright (its server and key left, heartbeat stale) is answered with at once", async () => {
      const img = await env.freshImage(6, 2);
      // What a run killed during its snapshot leaves: a finished snapshot of the content with the run's label, and its
      // temporary server and key, last seen two hours ago.
      const runId = "killedrun01";
      const longAgo = Date.now() - 2 * 3600_000;
      const labels = temporaryLabels(runId, longAgo);
      const key = await env.client.sshKeys.create({
        name: "killed-key",
        publicKey: randomPublicKey(),
        labels,
      });
      const created = await env.client.servers.create({
        name: "hetznix-upload-killedrun01",
        server_type: "cx23",
        image: "debian-12",
        start_after_create: false,
        labels,
      });
      await env.client.waitForActions([created.action as never], { timeoutMs: 30_000 });
      const made = await env.client.servers.createImage(created.server.id, {
        type: "snapshot",
        labels: { ...contentLabels({ sha256: img.sha, rawSize: img.size }), [RUN_LABEL]: runId },
      });
      await env.client.waitForActions([made.action], { timeoutMs: 30_000 });
      const controller = new AbortController();
      const guard = setTimeout(() => controller.abort(new Error("still waiting after 60 s")), 60_000);
      try {
        const r = await uploadX86(env, { path: img.path }, { signal: controller.signal });
        assert.equal(r.imageId, made.image.id);
        assert.equal(r.reused, true);
      } finally {
        clearTimeout(guard);
        await env.client.images.delete(made.image.id);
        await env.client.sshKeys.delete(key.id);
        const deleted = await env.client.servers.delete(created.server.id);
        await env.client.waitForActions([deleted], { timeoutMs: 30_000 });
      }
      await assertNoTemporaryResources(env);
    });
  });

  describe("a snapshot of a run that does not finish is removed", () => {
    it("create_image's answer is lost: the run fails, and the snapshot it made is removed once created", async () => {
      const img = await env.freshImage(6, 2);
      const before = await snapshotIds(env);
      const { client, proxy } = await proxiedClient((r) => (createImage(r) ? "lose" : "pass"));
      await assert.rejects(uploadX86(env, { path: img.path }, { client }), /create_image/);
      assert.equal(proxy.swallowed.length, 1, "the emulator made the snapshot");
      assert.deepEqual(await snapshotIds(env), before, "and it is gone");
      await assertNoTemporaryResources(env);
    });

    it("Ctrl-C while create_image's answer does not come: aborted, and the snapshot is removed", async () => {
      const img = await env.freshImage(6, 2);
      const before = await snapshotIds(env);
      const controller = new AbortController();
      const { client, proxy } = await proxiedClient(
        (r) => (createImage(r) ? "hang" : "pass"),
        () => controller.abort(new Error("Ctrl-C")),
      );
      await assert.rejects(uploadX86(env, { path: img.path }, { client, signal: controller.signal }), (err) =>
        isUploadError(err, "aborted"),
      );
      assert.equal(proxy.swallowed.length, 1, "the emulator made the snapshot");
      assert.deepEqual(await snapshotIds(env), before, "and it is gone");
      await assertNoTemporaryResources(env);
    });

    it("a second Ctrl-C while cleanup waits for the snapshot: a leftover with the command that removes it", async () => {
      const img = await env.freshImage(6, 2);
      const before = await snapshotIds(env);
      const cleanup = new AbortController();
      const notes: string[] = [];
      const onEvent = (e: UploadEvent) => {
        if (e.kind !== "note") return;
        notes.push(e.message);
        if (/still being created/.test(e.message)) cleanup.abort(new Error("second Ctrl-C"));
      };
      const { client } = await proxiedClient((r) => (createImage(r) ? "lose" : "pass"));
      const runId = "leftoverimage1";
      let imageId = 0;
      await assert.rejects(
        uploadX86(env, { path: img.path }, { client, cleanupSignal: cleanup.signal, onEvent, runId }),
        (err: unknown) => {
          assert.ok(err instanceof CleanupIncompleteError, String(err));
          const image = err.leftovers.find((l) => l.kind === "image");
          assert.ok(image?.id, `the snapshot is listed: ${err.message}`);
          imageId = image.id;
          assert.equal(image.removeHint, `hcloud image delete ${image.id}`);
          assert.match(err.message, new RegExp(`hcloud image delete ${image.id}`));
          return true;
        },
      );
      assert.ok(
        notes.some((n) => n.includes(`snapshot ${imageId}`)),
        notes.join("\n"),
      );
      // Remove by hand what the interrupted cleanup left: the snapshot once created, then the server and key.
      await env.te.waitFor(
        "the snapshot to be created",
        async () => ((await env.client.images.getById(imageId)).status === "available" ? true : undefined),
        30_000,
      );
      await env.client.images.delete(imageId);
      await cleanupTemporary({ client: env.client, runId });
      assert.deepEqual(await snapshotIds(env), before);
      await assertNoTemporaryResources(env);
    });
  });

  describe("runs and `hetznix cleanup --older-than`", () => {
    it("the temporary server deleted mid-write: the run fails at once, not after minutes of SSH retries", async () => {
      let deletedAt = 0;
      let deletion: Promise<CleanupOutcome> | undefined;
      const onEvent = (e: UploadEvent) => {
        if (!deletion && e.kind === "data" && e.phase === "write") {
          deletedAt = Date.now();
          deletion = cleanupTemporary({ client: env.client, olderThanMs: 0 });
        }
      };
      await assert.rejects(uploadX86(env, { url: `${http?.base}/slow.raw` }, { onEvent }), (err: unknown) => {
        assert.ok(isUploadError(err, "server_deleted"), String(err));
        assert.match((err as Error).message, /was deleted/);
        return true;
      });
      assert.ok(deletion, "the server was deleted during the write");
      assert.ok((await deletion).deleted.some((i) => i.kind === "server"));
      const took = Date.now() - deletedAt;
      assert.ok(took < 30_000, `failed ${took} ms after the deletion`);
      await assertNoTemporaryResources(env);
    });

    it("a run refreshes its heartbeat: `cleanup --older-than 2s` leaves it alone however long it runs", async () => {
      const kept: string[] = [];
      const deleted: string[] = [];
      let done = false;
      const started = Date.now();
      const upload = uploadX86(env, { url: `${http?.base}/slow.raw` }, { heartbeatMs: 300 }).finally(() => {
        done = true;
      });
      for (let i = 0; i < 200 && !done; i++) {
        const o = await cleanupTemporary({ client: env.client, olderThanMs: 2000 });
        deleted.push(...o.deleted.map((d) => `${d.kind} ${d.name}`));
        kept.push(...o.kept.map((d) => `${d.kind} ${d.name}`));
        await pause(400);
      }
      const r = await upload;
      const took = Date.now() - started;
      assert.ok(took > 5000, `the run lasted longer than the age limit several times over (${took} ms)`);
      assert.deepEqual(deleted, [], "cleanup removed nothing of the running upload");
      assert.ok(kept.length > 0, "cleanup saw the run's resources and kept them");
      assert.equal(r.sha256, sha256(slow));
      await assertNoTemporaryResources(env);
    });
  });
});
