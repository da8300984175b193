/**
 * Bad input: each case is a clear error (a code to branch on, a message naming the problem), nothing is created and
 * nothing is left behind.
 */
import assert from "node:assert/strict";
import { chmod, mkdir, readFile, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { HCloudError } from "../src/hcloud/index.js";
import { isUploadError, uploadImage, type UploadErrorCode, type UploadOptions } from "../src/upload/index.js";
import {
  addFault,
  assertNoTemporaryResources,
  clearFaults,
  compressWith,
  makeQcow2Image,
  makeRawImage,
  run,
  snapshotIds,
  startUploadEnv,
  type UploadTestEnv,
  waits,
  uploadX86,
} from "./support/upload.js";

describe("upload: bad input", { timeout: 600_000 }, () => {
  let env: UploadTestEnv;
  let raw = "";

  before(async () => {
    // A small rescue RAM disk, so a qcow2 converted there can be too large for it.
    env = await startUploadEnv("127.81.3.", { ramDisk: "96m" });
    raw = join(env.dir, "ok.raw");
    await makeRawImage(raw, 4, 1);
  });

  after(async () => {
    await env?.close();
  });

  async function expectFailure(
    opts: Partial<UploadOptions>,
    code: UploadErrorCode,
    message: RegExp,
  ): Promise<void> {
    const before = await snapshotIds(env);
    await assert.rejects(uploadX86(env, { path: raw }, opts), (err: unknown) => {
      assert.ok(isUploadError(err, code), `expected ${code}, got ${String(err)}`);
      assert.match((err as Error).message, message);
      return true;
    });
    assert.deepEqual(await snapshotIds(env), before, "no snapshot was created");
    await assertNoTemporaryResources(env);
  }

  it("missing file", async () => {
    await expectFailure(
      { image: { path: join(env.dir, "nope.img") } },
      "source_unreadable",
      /nope\.img does not exist/,
    );
  });

  it("a directory instead of a file", async () => {
    const d = join(env.dir, "adir");
    await mkdir(d);
    await expectFailure({ image: { path: d } }, "source_unreadable", /not a regular file/);
  });

  it("a file this user may not read (checked as an unprivileged user: root reads everything)", async (t) => {
    if (process.getuid?.() !== 0) return t.skip("switching to an unprivileged user needs root");
    const dir = join(env.dir, "perm");
    await mkdir(dir, { mode: 0o755 });
    await chmod(env.dir, 0o755);
    const secret = join(dir, "secret.img");
    await writeFile(secret, Buffer.alloc(4096, 1), { mode: 0o600 });
    const script = join(dir, "open.mts");
    const source = new URL("../src/upload/source.ts", import.meta.url).href;
    // The child loads everything it needs as root (the checkout may sit in a directory only root can enter, as CI's
    // clone does), then drops to nobody before opening the file.
    await writeFile(
      script,
      `import { openFileSource } from ${JSON.stringify(source)};\n` +
        `process.setgroups([]); process.setgid(65534); process.setuid(65534);\n` +
        `try { await openFileSource(${JSON.stringify(secret)}); console.log("opened"); }\n` +
        `catch (e) { console.log(JSON.stringify({ uid: process.getuid(), code: e.code, message: e.message })); }\n`,
      { mode: 0o600 },
    );
    const { stdout } = await run(process.execPath, ["--import", "tsx", script], {
      timeout: 60_000,
      cwd: new URL("..", import.meta.url).pathname,
    });
    const r = JSON.parse(stdout.trim().split("\n").pop() ?? "{}") as {
      uid?: number;
      code?: string;
      message?: string;
    };
    assert.equal(r.uid, 65534, "the check ran as nobody");
    assert.equal(r.code, "source_unreadable");
    assert.match(r.message ?? "", /not readable \(permission denied\)/);
  });

  it("empty file", async () => {
    const e = join(env.dir, "empty.img");
    await writeFile(e, "");
    await expectFailure({ image: { path: e } }, "source_unreadable", /is empty/);
  });

  it("image larger than the largest disk available (stops before reading it whole)", async () => {
    const big = join(env.dir, "huge.img");
    await writeFile(big, "");
    await truncate(big, 1100 * 1e9); // sparse: costs nothing
    await expectFailure(
      { image: { path: big } },
      "image_too_large",
      /larger than the largest x86 disk available \(960 GB\)/,
    );
  });

  it("image larger than the disk of the server type asked for", async () => {
    const big = join(env.dir, "big.img");
    await writeFile(big, "");
    await truncate(big, 45 * 1e9);
    await expectFailure(
      { image: { path: big }, serverType: "cx23", architecture: undefined },
      "image_too_large",
      /cx23/,
    );
  });

  for (const tool of ["gzip", "bzip2", "xz", "zstd"] as const) {
    it(`truncated ${tool} data is found before anything is created`, async () => {
      const c = join(env.dir, `ok.raw.${tool}`);
      await compressWith(tool, raw, c);
      const data = await readFile(c);
      const cut = join(env.dir, `cut.${tool}`);
      await writeFile(cut, data.subarray(0, Math.floor(data.length * 0.7)));
      await expectFailure({ image: { path: cut } }, "corrupt_source", /truncated or corrupt/);
    });
  }

  it("corrupt gzip data (garbage after a valid header) is found before anything is created", async () => {
    const c = join(env.dir, "ok.raw.gz");
    await compressWith("gzip", raw, c);
    const data = await readFile(c);
    for (let i = 200; i < data.length - 8; i += 97) data[i] = (data[i] ?? 0) ^ 0x5a;
    const bad = join(env.dir, "bad.gz");
    await writeFile(bad, data);
    await expectFailure({ image: { path: bad } }, "corrupt_source", /truncated or corrupt/);
  });

  it("unknown format (a zip archive)", async () => {
    const z = join(env.dir, "image.zip");
    await writeFile(z, Buffer.concat([Buffer.from([0x50, 0x4b, 0x03, 0x04]), Buffer.alloc(4096, 1)]));
    await expectFailure({ image: { path: z } }, "unknown_format", /zip archive, not a disk image/);
  });

  it("a format flag that contradicts the magic bytes", async () => {
    await expectFailure({ format: "qcow2" }, "invalid_argument", /--format qcow2/);
  });

  it("unknown architecture", async () => {
    await expectFailure({ architecture: "mips" as never }, "invalid_argument", /Unknown architecture mips/);
  });

  it("unknown server type", async () => {
    await expectFailure(
      { architecture: undefined, serverType: "cx9000" },
      "unknown_server_type",
      /Unknown server type cx9000/,
    );
  });

  it("labels that break Hetzner's label rules", async () => {
    await expectFailure({ labels: { "bad key": "x" } }, "invalid_label", /bad key/);
    await expectFailure({ labels: { ok: "v".repeat(64) } }, "invalid_label", /longer than 63/);
    await expectFailure({ labels: { "hetznix/sha256-a": "x" } }, "invalid_label", /reserved/);
  });

  it("no location with capacity: every pair tried, then a clear error", async () => {
    for (const loc of ["fsn1", "nbg1", "hel1"]) {
      for (const type of ["cax11", "cax21", "cax31", "cax41"]) {
        await addFault(env, { kind: "capacity", location: loc, serverType: type });
      }
    }
    try {
      await expectFailure({ architecture: "arm" }, "no_capacity", /tried cax11 in fsn1, .*cax41 in hel1/);
    } finally {
      await clearFaults(env);
    }
  });

  it("an invalid token (401): nothing is created", async () => {
    const before = await snapshotIds(env);
    await assert.rejects(
      uploadImage({
        client: env.clientWithToken("wrong-token"),
        image: { path: raw },
        architecture: "x86",
        waits,
      }),
      (err: unknown) => err instanceof HCloudError && err.status === 401 && err.code === "unauthorized",
    );
    assert.deepEqual(await snapshotIds(env), before);
    await assertNoTemporaryResources(env);
  });

  it("qcow2 too large for the rescue RAM disk (no qemu-img here): checked before sending it", async () => {
    const src = join(env.dir, "big-q.raw");
    await makeRawImage(src, 48, 40);
    const q = join(env.dir, "big.qcow2");
    await makeQcow2Image(src, q);
    await expectFailure(
      { image: { path: q }, tools: { qemuImg: false } },
      "rescue_space",
      /does not fit in the rescue system's RAM disk/,
    );
  });
});
