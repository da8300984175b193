/**
 * Runs that must end, and end clean: the read-ahead stream (file reader and zstd) stops when the connect step fails
 * or is interrupted; a URL download that stalls or crawls is stopped with a clear error; a URL is fetched literally
 * (no curl globbing). URLs are served by a small HTTP server of the test on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { isUploadError, type UploadEvent, type UploadOptions } from "../src/upload/index.js";
import { startHttp, type TestHttpServer } from "./support/http.js";
import { remainingAfter } from "./support/procs.js";
import {
  MiB,
  assertNoTemporaryResources,
  sha256,
  snapshotContentSha,
  snapshotIds,
  startUploadEnv,
  type UploadTestEnv,
  uploadX86,
} from "./support/upload.js";

describe("upload: reliability", { timeout: 600_000 }, () => {
  let env: UploadTestEnv;
  let http: TestHttpServer | undefined;
  let base = "";
  const requests: string[] = [];
  /** What `/glob.raw?v=[1-2]` serves, and the two halves of another image that v=1 and v=2 serve. */
  const literal = image(2 * MiB);
  const other = image(2 * MiB);
  /** Served at 1 KiB/s after its first 64 KiB. */
  const trickle = image(4 * MiB);
  /** Served at about 256 KiB/s: steady, but too slow for a deadline set from its size. */
  const crawl = image(4 * MiB);

  before(async () => {
    env = await startUploadEnv("127.83.2.");
    http = await startHttp((req, res) => {
      const url = req.url ?? "/";
      requests.push(`${req.method} ${url}`);
      const send = (body: Buffer) => {
        res.writeHead(200, { "Content-Length": String(body.length) });
        res.end(req.method === "HEAD" ? undefined : body);
      };
      if (url === "/glob.raw?v=[1-2]") return send(literal);
      if (url === "/glob.raw?v=1") return send(other.subarray(0, MiB));
      if (url === "/glob.raw?v=2") return send(other.subarray(MiB));
      if (url === "/trickle.raw" || url === "/crawl.raw") {
        const body = url === "/trickle.raw" ? trickle : crawl;
        res.writeHead(200, { "Content-Length": String(body.length) });
        if (req.method === "HEAD") return res.end();
        // The sniffing (Range) request is answered at once; the download comes fast for 64 KiB, then slowly.
        if (req.headers.range) return res.end(body);
        let at = 64 * 1024;
        res.write(body.subarray(0, at));
        const [chunk, everyMs] = url === "/trickle.raw" ? [1024, 1000] : [64 * 1024, 250];
        const timer = setInterval(() => {
          if (res.destroyed || at >= body.length) {
            clearInterval(timer);
            if (!res.destroyed) res.end();
            return;
          }
          res.write(body.subarray(at, at + chunk));
          at += chunk;
        }, everyMs);
        res.on("close", () => clearInterval(timer));
        return;
      }
      res.writeHead(404);
      res.end();
    });
    base = http.base;
  });

  after(async () => {
    await http?.close();
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

  it("a URL is fetched literally: '?v=[1-2]' is one URL, not a curl glob of two files", async () => {
    requests.length = 0;
    const r = await uploadX86(env, { url: `${base}/glob.raw?v=[1-2]` });
    assert.ok(!requests.some((q) => /v=[12]$/.test(q)), `no globbed request: ${requests.join(", ")}`);
    assert.equal(r.sha256, sha256(literal), "the snapshot holds what the URL serves");
    assert.equal(await snapshotContentSha(env, r.imageId, literal.length), sha256(literal));
    await assertNoTemporaryResources(env);
  });

  /**
   * Uploads `path` of the test's HTTP server with download limits, expecting a download_stalled error whose message
   * matches `says`, nothing snapshotted and nothing left. Bounded whatever happens: without limits the run would
   * never end, so it is aborted after 60 s.
   */
  async function expectStalled(path: string, download: UploadOptions["download"], says: RegExp) {
    const before = await snapshotIds(env);
    const controller = new AbortController();
    const guard = setTimeout(() => controller.abort(new Error("still downloading after 60 s")), 60_000);
    try {
      await assert.rejects(
        uploadX86(
          env,
          { url: `${base}${path}` },
          { signal: controller.signal, ...(download ? { download } : {}) },
        ),
        (err: unknown) => {
          assert.ok(isUploadError(err, "download_stalled"), String(err));
          assert.ok((err as Error).message.includes(`${base}${path}`), "the message names the URL");
          assert.match((err as Error).message, says);
          return true;
        },
      );
    } finally {
      clearTimeout(guard);
    }
    assert.deepEqual(await snapshotIds(env), before);
    await assertNoTemporaryResources(env);
  }

  it("a download that stalls (1 KiB/s) fails with a clear error and everything is removed", async () => {
    await expectStalled(
      "/trickle.raw",
      { lowSpeedBytesPerSecond: 32 * 1024, lowSpeedSeconds: 3 },
      /stalled: less than 32\.0 KiB\/s for 3 s/,
    );
  });

  it("a steady download too slow for its announced size hits the deadline: clear error, everything removed", async () => {
    // 4 MiB at 1 MiB/s + 2 s: a 6 s deadline for a download that takes 16 s.
    await expectStalled(
      "/crawl.raw",
      { lowSpeedBytesPerSecond: 1024, deadlineBaseSeconds: 2, deadlineBytesPerSecond: MiB },
      /not finished within 6 s/,
    );
  });

  for (const [what, bytes] of [
    ["a 1-byte image", Buffer.from([7])],
    ["an image of 3 sectors and 5 bytes", Buffer.alloc(3 * 512 + 5, 1)],
  ] as const) {
    it(`${what} is uploaded, with a warning that it is not whole 512-byte sectors`, async () => {
      const path = join(env.dir, `odd-${bytes.length}.img`);
      await writeFile(path, bytes);
      const notes: string[] = [];
      const r = await uploadX86(
        env,
        { path },
        {
          onEvent: (e) => {
            if (e.kind === "note") notes.push(e.message);
          },
        },
      );
      assert.equal(r.rawSize, bytes.length);
      const warnings = notes.filter((n) => /not a whole number of 512-byte sectors/.test(n));
      assert.equal(warnings.length, 1, notes.join("\n"));
      assert.match(warnings[0] ?? "", new RegExp(`${bytes.length} bytes?`));
      await assertNoTemporaryResources(env);
    });
  }
});

/** A raw image of `size` bytes: random data with an MBR signature. */
function image(size: number): Buffer {
  const buf = randomBytes(size);
  buf[510] = 0x55;
  buf[511] = 0xaa;
  return buf;
}
