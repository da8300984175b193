/**
 * End to end against the emulator over real SSH: raw, gz, bz2, xz, zstd and qcow2 files (qcow2 converted here with
 * qemu-img, and in the rescue system when qemu-img is "absent"), idempotent re-upload, and the bytes of each
 * snapshot compared with the source.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { uploadImage, type UploadEvent } from "../src/upload/index.js";
import {
  MiB,
  assertNoTemporaryResources,
  compressWith,
  makeExt4Image,
  makeQcow2Image,
  makeRawImage,
  run,
  sha256,
  sha256File,
  snapshotContentSha,
  snapshotIds,
  startUploadEnv,
  type UploadTestEnv,
  waits,
  uploadX86,
} from "./support/upload.js";

describe("upload: formats", { timeout: 600_000 }, () => {
  let env: UploadTestEnv;
  let raw = "";
  let rawSha = "";
  const rawSize = 12 * MiB;

  before(async () => {
    env = await startUploadEnv("127.81.1.");
    raw = join(env.dir, "disk.img");
    const buf = await makeRawImage(raw, 12, 3);
    rawSha = sha256(buf);
  });

  after(async () => {
    await env?.close();
  });

  it("uploads a raw image compressed on the fly, and the snapshot holds exactly its bytes", async () => {
    const events: UploadEvent[] = [];
    const r = await uploadX86(
      env,
      { path: raw },
      { labels: { os: "nixos" }, onEvent: (e) => events.push(e) },
    );
    assert.equal(r.reused, false);
    assert.equal(r.sha256, rawSha);
    assert.equal(r.rawSize, rawSize);
    assert.equal(r.bytesRead, rawSize);
    assert.equal(r.bytesHashed, 0, "read once: hashed while streaming");
    assert.ok(r.bytesSent < rawSize / 2, `zeros cost almost nothing: sent ${r.bytesSent} of ${rawSize}`);
    assert.ok(r.bytesSent > 3 * MiB * 0.9, "the random part is sent");
    assert.equal(r.labels["os"], "nixos");
    assert.equal(r.labels["hetznix/sha256-a"], rawSha.slice(0, 32));
    assert.equal(r.labels["hetznix/sha256-b"], rawSha.slice(32));
    assert.equal(r.labels["hetznix/size"], String(rawSize));
    assert.equal(await snapshotContentSha(env, r.imageId, rawSize), rawSha);
    const image = await env.client.images.getById(r.imageId);
    assert.equal(image.type, "snapshot");
    assert.equal(image.architecture, "x86");
    const done = events
      .filter((e) => e.kind === "step" && e.status === "done")
      .map((e) => (e.kind === "step" ? e.step : ""));
    const lookup = r.steps.find((s) => s.step === "lookup");
    assert.match(
      lookup?.detail ?? "",
      /not a duplicate; hashing while streaming/,
      "no same-size snapshot: no hash pass",
    );
    assert.ok(r.steps.some((s) => s.step === "hash" && s.status === "skipped"));
    for (const step of [
      "inspect",
      "catalogue",
      "plan",
      "server",
      "rescue",
      "poweron",
      "connect",
      "write",
      "verify",
      "shutdown",
      "snapshot",
      "cleanup",
    ]) {
      assert.ok(done.includes(step as never), `step ${step} reported done`);
    }
    assert.ok(
      events.some((e) => e.kind === "data" && e.phase === "write"),
      "data progress reported",
    );
    assert.deepEqual(r.leftovers, []);
    await assertNoTemporaryResources(env);
  });

  it("re-uploading the same content returns the existing snapshot and creates nothing", async () => {
    const before = await snapshotIds(env);
    const copy = join(env.dir, "copy.img");
    await run("cp", ["--sparse=always", raw, copy]);
    const r = await uploadX86(env, { path: copy });
    assert.equal(r.reused, true);
    assert.equal(r.sha256, rawSha);
    assert.deepEqual(await snapshotIds(env), before);
    assert.ok(before.includes(r.imageId));
    assert.equal(r.bytesSent, 0);
    assert.equal(r.bytesHashed, rawSize);
    assert.ok(
      r.steps.some((s) => s.step === "hash" && s.status === "done"),
      "a same-size snapshot exists: hashed first",
    );
    assert.ok(!r.steps.some((s) => s.step === "server"), "no server step");
    await assertNoTemporaryResources(env);
  });

  it("--force uploads again; another architecture is a different snapshot", async () => {
    const before = await snapshotIds(env);
    const forced = await uploadX86(env, { path: raw }, { force: true });
    assert.equal(forced.reused, false);
    assert.equal(forced.sha256, rawSha, "hashed while streaming");
    const arm = await uploadImage({ client: env.client, image: { path: raw }, architecture: "arm", waits });
    assert.equal(arm.reused, false);
    assert.equal(arm.architecture, "arm");
    assert.match(arm.serverType ?? "", /^ca/, "an Arm server type was used");
    const after = await snapshotIds(env);
    assert.equal(after.length, before.length + 2);
    await assertNoTemporaryResources(env);
  });

  for (const codec of ["gzip", "none"] as const) {
    it(`--codec ${codec}: the wire codec is a parameter (zstd is only the default)`, async () => {
      const r = await uploadX86(
        env,
        { path: raw },
        { force: true, codec: { codec, level: 1 }, tools: codec === "gzip" ? { pigz: false } : {} },
      );
      assert.equal(r.sha256, rawSha);
      assert.equal(r.transfer, codec === "gzip" ? "gzip -1 (node:zlib)" : "none");
      if (codec === "none") assert.ok(r.bytesSent >= rawSize, "uncompressed: every byte is sent");
      else assert.ok(r.bytesSent < rawSize / 2);
      assert.equal(await snapshotContentSha(env, r.imageId, rawSize), rawSha);
      await assertNoTemporaryResources(env);
    });
  }

  for (const tool of ["gzip", "bzip2", "xz", "zstd"] as const) {
    it(`uploads a ${tool}-compressed ext4 image as is and the rescue system decompresses it`, async () => {
      const fs = join(env.dir, `fs-${tool}.ext4`);
      await makeExt4Image(fs, 8, join(env.dir, `w-${tool}`));
      // Distinct content per codec, so no upload is deduplicated against another.
      await run("debugfs", ["-w", "-R", `set_super_value volume_name ${tool}`, fs]);
      const fsSha = await sha256File(fs);
      const compressed = join(env.dir, `fs-${tool}.ext4.${tool}`);
      await compressWith(tool, fs, compressed);
      const events: UploadEvent[] = [];
      const r = await uploadX86(env, { path: compressed }, { onEvent: (e) => events.push(e) });
      const expectCompression = { gzip: "gz", bzip2: "bz2", xz: "xz", zstd: "zstd" }[tool];
      assert.equal(r.sourceCompression, expectCompression);
      assert.equal(r.sha256, fsSha);
      assert.equal(r.rawSize, 8 * MiB);
      assert.match(r.transfer ?? "", /as is/);
      const compressedSize = (await import("node:fs")).statSync(compressed).size;
      assert.equal(r.bytesRead, compressedSize);
      assert.equal(r.bytesSent, compressedSize, "a compressed file goes over the wire unchanged");
      assert.equal(await snapshotContentSha(env, r.imageId, 8 * MiB), fsSha);
      await assertNoTemporaryResources(env);
    });
  }

  it("converts qcow2 to raw here with qemu-img, and the snapshot holds the raw image", async () => {
    const src = join(env.dir, "q-src.raw");
    const buf = await makeRawImage(src, 10, 2);
    const q = join(env.dir, "disk.qcow2");
    await makeQcow2Image(src, q);
    const r = await uploadX86(env, { path: q });
    assert.equal(r.sourceFormat, "qcow2");
    assert.equal(r.sha256, sha256(buf));
    assert.equal(r.rawSize, 10 * MiB);
    assert.ok(r.steps.some((s) => s.step === "convert" && s.status === "done"));
    assert.equal(await snapshotContentSha(env, r.imageId, 10 * MiB), sha256(buf));
    await assertNoTemporaryResources(env);
  });

  it("without qemu-img here, converts qcow2 in the rescue system after checking it fits", async () => {
    const src = join(env.dir, "q2-src.raw");
    const buf = await makeRawImage(src, 9, 2);
    const q = join(env.dir, "disk2.qcow2");
    await makeQcow2Image(src, q);
    const r = await uploadX86(env, { path: q }, { tools: { qemuImg: false } });
    assert.equal(r.sha256, sha256(buf));
    assert.equal(r.rawSize, 9 * MiB);
    assert.match(r.transfer ?? "", /converted in the rescue system/);
    assert.equal(await snapshotContentSha(env, r.imageId, 9 * MiB), sha256(buf));
    // The same content uploaded again the same way is found after writing: no new snapshot.
    const before = await snapshotIds(env);
    const again = await uploadX86(env, { path: q }, { tools: { qemuImg: false } });
    assert.equal(again.reused, true);
    assert.equal(again.imageId, r.imageId);
    assert.deepEqual(await snapshotIds(env), before);
    await assertNoTemporaryResources(env);
  });

  it("a file in the Nix store is identified by its store path (no hashing first), then found again", async () => {
    const store = join(env.dir, "store");
    const obj = join(store, "0c9p8s5bj7x0ax2pcm1y8l2zzrn0ad1p-nixos-image");
    await run("mkdir", ["-p", obj]);
    const img = join(obj, "nixos.img");
    const buf = await makeRawImage(img, 6, 1);
    const r = await uploadX86(env, { path: img }, { storeDir: store });
    assert.equal(r.reused, false);
    assert.ok(
      r.steps.some((s) => s.step === "hash" && s.status === "skipped"),
      "no hash pass before creating",
    );
    assert.equal(r.sha256, sha256(buf), "hashed while streaming");
    assert.match(r.labels["hetznix/nix-store"] ?? "", /^0c9p8s5bj7x0ax2pcm1y8l2zzrn0ad1p-[0-9a-f]{16}$/);
    const again = await uploadX86(env, { path: img }, { storeDir: store });
    assert.equal(again.reused, true);
    assert.equal(again.imageId, r.imageId);
    await writeFile(join(env.dir, "unused"), "");
    await assertNoTemporaryResources(env);
  });
});
