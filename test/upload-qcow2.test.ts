/**
 * qcow2 safety and tidiness. A qcow2 image naming a backing file or an external data file would make `qemu-img
 * convert` read that file of the machine converting it (this one, or the rescue system) into the snapshot: refused on
 * both sides before any conversion. A local conversion killed midway (Ctrl-C, SIGTERM, or the process killed
 * outright) leaves neither qemu-img running nor a temporary raw file.
 */
import assert from "node:assert/strict";
import { chmod, mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { isUploadError, type UploadOptions } from "../src/upload/index.js";
import { startCli } from "./support/cli.js";
import { startHttp, type TestHttpServer } from "./support/http.js";
import { processes, remainingAfter } from "./support/procs.js";
import {
  MiB,
  assertNoTemporaryResources,
  makeQcow2Image,
  run,
  snapshotIds,
  startUploadEnv,
  type UploadTestEnv,
  uploadX86,
} from "./support/upload.js";

describe("upload: qcow2 safety", { timeout: 600_000 }, () => {
  let env: UploadTestEnv;
  let http: TestHttpServer | undefined;
  let base = "";
  /** A clean qcow2 and one of the same virtual size with a backing file; the URL serves one to sniff, one to get. */
  let clean: Buffer;
  let evil: Buffer;

  before(async () => {
    env = await startUploadEnv("127.83.3.");
    const raw = join(env.dir, "clean.raw");
    await writeFile(raw, Buffer.alloc(MiB, 3));
    await makeQcow2Image(raw, join(env.dir, "clean.qcow2"));
    // /etc/passwd exists in the rescue system too: its bytes would end up in the snapshot.
    await qemuImgCreate(join(env.dir, "swap.qcow2"), ["-b", "/etc/passwd", "-F", "raw"]);
    clean = await readFile(join(env.dir, "clean.qcow2"));
    evil = await readFile(join(env.dir, "swap.qcow2"));
    http = await startHttp((req, res) => {
      // A server that changes what it serves: the sniffing Range request gets the clean image, the download the other.
      const body = req.headers.range ? clean : evil;
      res.writeHead(200, { "Content-Length": String(req.method === "HEAD" ? evil.length : body.length) });
      res.end(req.method === "HEAD" ? undefined : body);
    });
    base = http.base;
  });

  after(async () => {
    await http?.close();
    await env?.close();
  });

  /** `qemu-img create -f qcow2 ARGS FILE 1M` */
  async function qemuImgCreate(path: string, args: string[]): Promise<void> {
    await run("qemu-img", ["create", "-q", "-f", "qcow2", ...args, path, "1M"]);
  }

  async function expectRefused(image: UploadOptions["image"], extra: Partial<UploadOptions>, says: RegExp) {
    const before = await snapshotIds(env);
    await assert.rejects(uploadX86(env, image, extra), (err: unknown) => {
      assert.ok(isUploadError(err, "unsafe_image"), String(err));
      assert.match((err as Error).message, says);
      return true;
    });
    assert.deepEqual(await snapshotIds(env), before, "nothing snapshotted");
    await assertNoTemporaryResources(env);
  }

  it("a qcow2 with a backing file (/etc/shadow) is refused before anything is created", async () => {
    const path = join(env.dir, "shadow.qcow2");
    await qemuImgCreate(path, ["-b", "/etc/shadow", "-F", "raw"]);
    await expectRefused({ path }, {}, /backing file \/etc\/shadow/);
  });

  it("the same without qemu-img here (the rescue system would convert it): refused before anything is created", async () => {
    const path = join(env.dir, "shadow2.qcow2");
    await qemuImgCreate(path, ["-b", "/etc/shadow", "-F", "raw"]);
    await expectRefused({ path }, { tools: { qemuImg: false } }, /backing file \/etc\/shadow/);
  });

  it("a qcow2 with an external data file is refused", async () => {
    const data = join(env.dir, "outside.raw");
    await writeFile(data, Buffer.alloc(MiB, 9));
    const path = join(env.dir, "datafile.qcow2");
    await qemuImgCreate(path, ["-o", `data_file=${data},data_file_raw=on`]);
    await expectRefused({ path }, {}, /external data file/);
  });

  it("a URL that serves a backing-file qcow2 to the rescue system (but a clean one to the sniffer) is refused there", async () => {
    await expectRefused({ url: `${base}/image.qcow2` }, {}, /backing file/);
  });

  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    it(`a local conversion interrupted by ${signal} leaves no qemu-img and no temporary raw file`, async () => {
      const work = join(env.dir, `conv-${signal}`);
      const bin = join(work, "bin");
      const tmp = join(work, "tmp");
      await mkdir(bin, { recursive: true });
      await mkdir(tmp, { recursive: true });
      // The real qemu-img, its conversion slowed to 2 MiB/s so it is still running when the signal comes.
      const real = (await run("sh", ["-c", "command -v qemu-img"])).stdout.trim();
      await writeFile(
        join(bin, "qemu-img"),
        `#!/bin/sh\nif [ "$1" = convert ]; then shift; exec ${real} convert -r 2M "$@"; fi\nexec ${real} "$@"\n`,
      );
      await chmod(join(bin, "qemu-img"), 0o755);
      const img = await env.freshImage(32, 32);
      const qcow2 = join(work, "big.qcow2");
      await makeQcow2Image(img.path, qcow2);
      const converting = (p: { name: string; cmdline: string }) =>
        p.name === "qemu-img" && p.cmdline.includes(qcow2) && p.cmdline.includes(" convert ");
      const cli = startCli(["upload", "--image-path", qcow2, "--architecture", "x86"], {
        home: env.dir,
        endpoint: env.te.emulator.endpoint,
        token: env.te.token,
        env: { PATH: `${bin}:${process.env["PATH"] ?? ""}`, TMPDIR: tmp },
      });
      try {
        let seen = false;
        for (let i = 0; i < 300 && !seen; i++) {
          seen = (await processes()).some(converting);
          if (!seen) await new Promise((r) => setTimeout(r, 50));
        }
        assert.ok(seen, `the conversion started\n${cli.stderr()}`);
        await new Promise((r) => setTimeout(r, 500));
        cli.child.kill(signal);
        const out = await cli.done;
        if (signal === "SIGTERM") assert.equal(out.code, 130, out.stderr);
        assert.deepEqual(await remainingAfter(converting), [], "no qemu-img is left converting");
        const left = (await readdir(tmp)).filter((n) => !n.startsWith("tsx-")); // tsx keeps its cache there
        assert.deepEqual(left, [], "no temporary file or directory is left");
        await assertNoTemporaryResources(env);
      } finally {
        cli.child.kill("SIGKILL");
        for (const p of (await processes()).filter(converting)) process.kill(p.pid, "SIGKILL");
        await rm(work, { recursive: true, force: true });
      }
    });
  }
});
