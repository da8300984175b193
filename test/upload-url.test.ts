/**
 * Images from URLs: a local HTTP server in the test serves them; the rescue system downloads (it shares the loopback
 * network). A 404, an unreachable URL, a truncated download and truncated compressed data all fail cleanly with
 * nothing snapshotted and nothing left.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { isUploadError, writeToDisk } from "../src/upload/index.js";
import {
  assertNoTemporaryResources,
  compressWith,
  makeRawImage,
  sha256,
  sha256File,
  snapshotContentSha,
  snapshotIds,
  startUploadEnv,
  type UploadTestEnv,
  waits,
  withTargetServer,
  uploadX86,
} from "./support/upload.js";

describe("upload: URLs", { timeout: 600_000 }, () => {
  let env: UploadTestEnv;
  let http: Server;
  let base = "";
  let rawBuf: Buffer;
  let slowBuf: Buffer;
  const files = new Map<string, Buffer>();
  const requests: string[] = [];

  before(async () => {
    env = await startUploadEnv("127.81.2.");
    const raw = join(env.dir, "u.raw");
    rawBuf = await makeRawImage(raw, 8, 2);
    files.set("/u.raw", rawBuf);
    slowBuf = await makeRawImage(join(env.dir, "slow.raw"), 3, 3);
    await compressWith("zstd", raw, join(env.dir, "u.raw.zst"));
    const zst = await readFile(join(env.dir, "u.raw.zst"));
    files.set("/u.raw.zst", zst);
    files.set("/cut.raw.zst", zst.subarray(0, Math.floor(zst.length * 0.6)));
    http = createServer((req, res) => {
      requests.push(`${req.method} ${req.url}`);
      const url = req.url ?? "/";
      if (url === "/truncated.raw") {
        // Announces the whole image, sends half, then breaks the connection.
        res.writeHead(200, { "Content-Length": String(rawBuf.length) });
        if (req.method === "HEAD") return res.end();
        res.write(rawBuf.subarray(0, rawBuf.length / 2), () => res.destroy());
        return;
      }
      if (url === "/slow.raw") {
        // 3 MiB over about 3 s, so the download's progress can be watched.
        const body = slowBuf;
        res.writeHead(200, { "Content-Length": String(body.length) });
        if (req.method === "HEAD") return res.end();
        if (req.headers.range) return res.end(body);
        let i = 0;
        const chunk = body.length / 12;
        const timer = setInterval(() => {
          if (res.destroyed || i >= 12) {
            clearInterval(timer);
            if (!res.destroyed) res.end();
            return;
          }
          res.write(body.subarray(i * chunk, (i + 1) * chunk));
          i++;
        }, 250);
        res.on("close", () => clearInterval(timer));
        return;
      }
      const body = files.get(url);
      if (!body) {
        res.writeHead(404, { "Content-Type": "text/plain" });
        return res.end("not found\n");
      }
      res.writeHead(200, { "Content-Length": String(body.length) });
      res.end(req.method === "HEAD" ? undefined : body);
    });
    await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  });

  after(async () => {
    await new Promise<void>((resolve) => (http ? http.close(() => resolve()) : resolve()));
    http?.closeAllConnections();
    await env?.close();
  });

  it("uploads a raw image the rescue system downloads, checked with a HEAD request first", async () => {
    requests.length = 0;
    const r = await uploadX86(env, { url: `${base}/u.raw` });
    assert.equal(requests[0], "HEAD /u.raw", "HEAD first");
    assert.equal(r.sha256, sha256(rawBuf));
    assert.equal(r.rawSize, rawBuf.length);
    assert.equal(r.bytesSent, 0, "nothing goes through this machine");
    assert.match(r.transfer ?? "", /downloaded by the rescue system/);
    assert.equal(await snapshotContentSha(env, r.imageId, rawBuf.length), sha256(rawBuf));
    await assertNoTemporaryResources(env);
  });

  it("a zstd URL of the same content is found after download: no second snapshot", async () => {
    const before = await snapshotIds(env);
    const r = await uploadX86(env, { url: `${base}/u.raw.zst` });
    assert.equal(r.sourceCompression, "zstd");
    assert.equal(r.reused, true);
    assert.equal(r.sha256, sha256(rawBuf));
    assert.deepEqual(await snapshotIds(env), before);
    await assertNoTemporaryResources(env);
  });

  it("write-to-disk from a URL: the rescue system downloads onto the server's disk", async () => {
    await withTargetServer(env, { name: "url-target" }, async (server) => {
      const r = await writeToDisk({
        client: env.client,
        server: "url-target",
        image: { url: `${base}/u.raw.zst` },
        waits,
      });
      assert.equal(r.sha256, sha256(rawBuf));
      assert.equal(r.sourceCompression, "zstd");
      const record = env.te.emulator.state.servers.find(server.id);
      assert.ok(record);
      assert.equal(await sha256File(join(env.te.stateDir, record.disk), rawBuf.length), sha256(rawBuf));
      assert.equal((await env.client.servers.getById(server.id)).status, "off");
    });
    await assertNoTemporaryResources(env);
  });

  it("shows the rescue system's download progress while it downloads", async () => {
    const progress: number[] = [];
    const r = await uploadX86(
      env,
      { url: `${base}/slow.raw` },
      {
        onEvent: (e) => {
          if (e.kind === "data" && e.phase === "write") {
            assert.equal(e.total, slowBuf.length);
            progress.push(e.bytesRead);
          }
        },
      },
    );
    assert.equal(r.sha256, sha256(slowBuf));
    assert.ok(progress.length > 0, "progress was reported during the download");
    assert.ok(progress.every((n) => n > 0 && n <= slowBuf.length + 64 * 1024));
    await assertNoTemporaryResources(env);
  });

  it("a URL answering 404 fails before anything is created", async () => {
    const before = await snapshotIds(env);
    await assert.rejects(
      uploadX86(env, { url: `${base}/missing.img` }),
      (err: unknown) => isUploadError(err, "url_unavailable") && /404/.test((err as Error).message),
    );
    assert.deepEqual(await snapshotIds(env), before);
    await assertNoTemporaryResources(env);
  });

  it("an unreachable URL fails before anything is created", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    await assert.rejects(
      uploadX86(env, { url: `http://127.0.0.1:${port}/x.img` }),
      (err: unknown) =>
        isUploadError(err, "url_unavailable") && /ECONNREFUSED|reach/.test((err as Error).message),
    );
    await assertNoTemporaryResources(env);
  });

  it("a truncated download fails the upload and nothing is snapshotted", async () => {
    const before = await snapshotIds(env);
    await assert.rejects(
      uploadX86(env, { url: `${base}/truncated.raw` }, { force: true }),
      (err: unknown) => {
        assert.ok(isUploadError(err, "remote_command_failed"), String(err));
        assert.match((err as Error).message, /last lines of its output/);
        return true;
      },
    );
    assert.deepEqual(await snapshotIds(env), before);
    await assertNoTemporaryResources(env);
  });

  it("truncated compressed data fails in the rescue system, showing the decompressor's error", async () => {
    const before = await snapshotIds(env);
    await assert.rejects(uploadX86(env, { url: `${base}/cut.raw.zst` }), (err: unknown) => {
      assert.ok(isUploadError(err, "remote_command_failed"), String(err));
      assert.match((err as Error).message, /zstd|truncated|premature|end/i);
      return true;
    });
    assert.deepEqual(await snapshotIds(env), before);
    await assertNoTemporaryResources(env);
  });
});
