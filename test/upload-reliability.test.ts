/**
 * Runs that must end, and end clean: the read-ahead stream (file reader and zstd) stops when the connect step fails
 * or is interrupted.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { isUploadError, type UploadEvent } from "../src/upload/index.js";
import { remainingAfter } from "./support/procs.js";
import {
  MiB,
  assertNoTemporaryResources,
  startUploadEnv,
  type UploadTestEnv,
  uploadX86,
} from "./support/upload.js";

describe("upload: reliability", { timeout: 600_000 }, () => {
  let env: UploadTestEnv;

  before(async () => {
    env = await startUploadEnv("127.83.2.");
  });

  after(async () => {
    await env?.close();
  });

  /** zstd processes this test process started that are still there (after a short grace to be reaped). */
  const strayCompressors = () => remainingAfter((p) => p.ppid === process.pid && p.name === "zstd");

  describe("the read-ahead stream stops when the connect step does not complete", () => {
    // More compressed data than the read-ahead holds: zstd blocks on a full pipe until someone reads or kills it.
    const readAheadBytes = 1 * MiB;
    // Nothing listens on port 23 of the rescue host: every SSH attempt is refused.
    const closedPort = { port: 23, maxAttempts: 3, maxTotalMs: 3000 };

    it("connect fails: the upload fails and its zstd is gone", async () => {
      const img = await env.freshImage(16, 12);
      await assert.rejects(
        uploadX86(env, { path: img.path }, { readAheadBytes, ssh: closedPort }),
        (err: unknown) => /cannot connect to .* over SSH/.test(String(err)),
      );
      assert.deepEqual(await strayCompressors(), [], "no zstd of the run is left");
      await assertNoTemporaryResources(env);
    });

    it("interrupted while connecting (Ctrl-C): aborted, and its zstd is gone", async () => {
      const img = await env.freshImage(16, 12);
      const controller = new AbortController();
      const onEvent = (e: UploadEvent) => {
        if (e.kind === "step" && e.step === "connect" && e.status === "start")
          setTimeout(() => controller.abort(new Error("Ctrl-C")), 200);
      };
      await assert.rejects(
        uploadX86(
          env,
          { path: img.path },
          {
            readAheadBytes,
            ssh: { ...closedPort, maxTotalMs: 60_000, maxAttempts: 100 },
            signal: controller.signal,
            onEvent,
          },
        ),
        (err: unknown) => isUploadError(err, "aborted"),
      );
      assert.deepEqual(await strayCompressors(), [], "no zstd of the run is left");
      await assertNoTemporaryResources(env);
    });
  });
});
