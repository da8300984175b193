/**
 * API faults (429 and 503 bursts, a location out of capacity), an SSH connection dropped mid-stream, and aborts
 * (Ctrl-C): each ends in a good snapshot or a clean failure, and nothing is left.
 */
import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import {
  CleanupIncompleteError,
  cleanupTemporary,
  isUploadError,
  type UploadEvent,
} from "../src/upload/index.js";
import {
  MiB,
  addFault,
  assertNoTemporaryResources,
  clearFaults,
  snapshotContentSha,
  snapshotIds,
  startUploadEnv,
  type UploadTestEnv,
  uploadX86,
} from "./support/upload.js";

describe("upload: faults", { timeout: 600_000 }, () => {
  let env: UploadTestEnv;

  /** A fresh image (distinct content each time, so nothing is deduplicated). */
  const image = (totalMiB = 6, randomMiB = 2) => env.freshImage(totalMiB, randomMiB);

  /** The next `count` requests matching `method` and `path` fail with `code`. */
  const burst = (method: string, path: string, code: string, count: number) =>
    addFault(env, { kind: "http", method, path, code, count });

  before(async () => {
    env = await startUploadEnv("127.81.4.");
  });

  afterEach(async () => {
    await clearFaults(env);
  });

  after(async () => {
    await env?.close();
  });

  it("429 bursts on creating the key and the server, and on polling actions: still a good snapshot", async () => {
    const img = await image();
    await burst("POST", "/ssh_keys", "rate_limit_exceeded", 2);
    await burst("POST", "/servers", "rate_limit_exceeded", 3);
    await burst("GET", "/actions", "rate_limit_exceeded", 3);
    const r = await uploadX86(env, { path: img.path });
    assert.equal(r.sha256, img.sha);
    assert.equal(await snapshotContentSha(env, r.imageId, img.size), img.sha);
    await assertNoTemporaryResources(env);
  });

  it("503 bursts on power on, create_image and deleting the server: still a good snapshot and a clean end", async () => {
    const img = await image();
    await burst("POST", "/servers/*/actions/poweron", "unavailable", 2);
    await burst("POST", "/servers/*/actions/create_image", "unavailable", 2);
    await burst("DELETE", "/servers/*", "unavailable", 2);
    const r = await uploadX86(env, { path: img.path });
    assert.equal(r.sha256, img.sha);
    assert.equal(await snapshotContentSha(env, r.imageId, img.size), img.sha);
    assert.deepEqual(r.leftovers, []);
    await assertNoTemporaryResources(env);
  });

  it("the cheapest type's first location is out of capacity: the next location is used", async () => {
    const img = await image();
    await addFault(env, { kind: "capacity", location: "fsn1", serverType: "cx23" });
    const notes: string[] = [];
    const r = await uploadX86(
      env,
      { path: img.path },
      {
        onEvent: (e) => {
          if (e.kind === "note") notes.push(e.message);
        },
      },
    );
    assert.equal(r.serverType, "cx23");
    assert.notEqual(r.location, "fsn1");
    assert.ok(
      notes.some((m) => /cx23 in fsn1 is out of capacity/.test(m)),
      notes.join("\n"),
    );
    assert.equal(await snapshotContentSha(env, r.imageId, img.size), img.sha);
    await assertNoTemporaryResources(env);
  });

  /** Records "connection lost" notes; at the first, lets later connections through (before the next is made). */
  const dropOnce =
    (notes: string[]) =>
    (e: UploadEvent): void => {
      if (e.kind !== "note" || !/connection lost/.test(e.message)) return;
      notes.push(e.message);
      for (const s of env.te.emulator.state.servers.list()) {
        const host = env.te.emulator.state.host(s.id);
        if (host) host.dropAfterBytes = undefined;
      }
      void clearFaults(env);
    };

  it("an SSH connection dropped mid-stream once: the data phase starts again and the snapshot is good", async () => {
    const img = await image(8, 4);
    await addFault(env, { kind: "ssh_drop", afterBytes: 1 * MiB });
    const notes: string[] = [];
    const onEvent = dropOnce(notes);
    // A fixed level: no link probe before the stream, so the drop after 1 MiB hits the image's bytes.
    const r = await uploadX86(env, { path: img.path }, { onEvent, codec: { codec: "zstd", level: 3 } });
    assert.equal(notes.length, 1, "one drop, one retry");
    assert.equal(r.sha256, img.sha);
    assert.ok(r.bytesSent > 4 * MiB, "the data was sent again after the drop");
    assert.equal(r.steps.filter((s) => s.step === "connect").length, 2);
    assert.equal(await snapshotContentSha(env, r.imageId, img.size), img.sha);
    await assertNoTemporaryResources(env);
  });

  it("an SSH connection dropped while the link is measured: the data phase starts again", async () => {
    const img = await image(8, 4);
    await addFault(env, { kind: "ssh_drop", afterBytes: 1 * MiB });
    const notes: string[] = [];
    const onEvent = dropOnce(notes);
    const r = await uploadX86(env, { path: img.path }, { onEvent });
    assert.equal(notes.length, 1, notes.join("\n"));
    assert.equal(r.sha256, img.sha);
    assert.equal(r.steps.filter((s) => s.step === "connect").length, 2);
    assert.equal(r.steps.filter((s) => s.step === "measure" && s.status === "done").length, 1);
    assert.ok(r.levelChoice, "the level was chosen on the second connection");
    assert.equal(await snapshotContentSha(env, r.imageId, img.size), img.sha);
    await assertNoTemporaryResources(env);
  });

  it("an SSH connection that keeps dropping: a clean failure, nothing snapshotted", async () => {
    const img = await image(8, 4);
    const before = await snapshotIds(env);
    await addFault(env, { kind: "ssh_drop", afterBytes: 1 * MiB });
    const fixedLevel = { codec: { codec: "zstd", level: 3 } } as const; // no link probe: the drops hit the stream
    await assert.rejects(uploadX86(env, { path: img.path }, fixedLevel), (err: unknown) => {
      assert.ok(isUploadError(err, "remote_command_failed"), String(err));
      assert.match((err as Error).message, /SSH connection lost during writing the image \(after 2 attempt/);
      return true;
    });
    assert.deepEqual(await snapshotIds(env), before);
    await assertNoTemporaryResources(env);
  });

  it("aborted while the server boots (Ctrl-C): an 'aborted' error and everything removed", async () => {
    const img = await image();
    const before = await snapshotIds(env);
    const controller = new AbortController();
    const onEvent = (e: UploadEvent) => {
      if (e.kind === "step" && e.step === "poweron" && e.status === "start")
        controller.abort(new Error("Ctrl-C"));
    };
    await assert.rejects(
      uploadX86(env, { path: img.path }, { signal: controller.signal, onEvent }),
      (err: unknown) => isUploadError(err, "aborted"),
    );
    assert.deepEqual(await snapshotIds(env), before);
    await assertNoTemporaryResources(env);
  });

  it("aborted during the data phase: everything removed", async () => {
    const img = await image(8, 6);
    const controller = new AbortController();
    const onEvent = (e: UploadEvent) => {
      if (e.kind === "data" && e.phase === "write" && e.bytesSent > 0) controller.abort(new Error("Ctrl-C"));
    };
    await assert.rejects(
      uploadX86(env, { path: img.path }, { signal: controller.signal, onEvent }),
      (err: unknown) => isUploadError(err, "aborted"),
    );
    await assertNoTemporaryResources(env);
  });

  it("a second Ctrl-C stops cleanup: the error lists what is left and how to remove it", async () => {
    const img = await image();
    const run = new AbortController();
    const cleanup = new AbortController();
    cleanup.abort(new Error("second Ctrl-C"));
    const onEvent = (e: UploadEvent) => {
      if (e.kind === "step" && e.step === "rescue" && e.status === "start") run.abort(new Error("Ctrl-C"));
    };
    let runId = "";
    await assert.rejects(
      uploadX86(
        env,
        { path: img.path },
        { signal: run.signal, cleanupSignal: cleanup.signal, onEvent, runId: "leftovertest1" },
      ),
      (err: unknown) => {
        assert.ok(err instanceof CleanupIncompleteError, String(err));
        const kinds = err.leftovers.map((l) => l.kind).sort();
        assert.deepEqual(kinds, ["server", "ssh_key"]);
        assert.match(err.message, /hcloud server delete \d+/);
        assert.match(err.message, /hcloud ssh-key delete \d+/);
        runId = "leftovertest1";
        return true;
      },
    );
    // What is left carries the run's labels: cleanup by run id removes it.
    const outcome = await cleanupTemporary({ client: env.client, runId });
    assert.equal(outcome.deleted.length, 2);
    await assertNoTemporaryResources(env);
  });
});
