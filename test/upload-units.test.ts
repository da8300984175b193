/**
 * The pure parts of the upload: magic-byte sniffing, the Nix store identity, planning from a catalogue, labels,
 * the rescue-side scripts (run with the real bash against a file standing in for /dev/sda), the manifest, and the
 * progress renderers.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import type { ServerType } from "../src/hcloud/index.js";
import { createProgressRenderer, dataLine } from "../src/ui/progress.js";
import { formatBytes, formatDuration } from "../src/ui/format.js";
import {
  contentLabels,
  identitySelector,
  isUploadError,
  parseLabels,
  planServer,
  sha256FromLabels,
  shellQuote,
  sniffBytes,
  storeIdentity,
  verifyScript,
  writeScript,
} from "../src/upload/index.js";
import { checkUserLabels } from "../src/upload/identity.js";
import { parseManifest } from "../src/upload/manifest.js";
import { parseResult } from "../src/upload/rescue.js";
import { generateKeyPair, isWellFormedEd25519 } from "../src/ssh/keys.js";
import { qcow2VirtualSize } from "../src/upload/source.js";

const run = promisify(execFile);

describe("upload units: sniffing", () => {
  const cases: [string, number[], string, string?][] = [
    ["gzip", [0x1f, 0x8b, 8, 0], "gz"],
    ["bzip2", [...Buffer.from("BZh91AY")], "bz2"],
    ["xz", [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0, 4], "xz"],
    ["zstd", [0x28, 0xb5, 0x2f, 0xfd, 0x24], "zstd"],
  ];
  for (const [name, bytes, compression] of cases) {
    it(`detects ${name} by its magic bytes`, () => {
      assert.deepEqual(sniffBytes(Buffer.from(bytes)), { compression, format: "raw" });
    });
  }

  it("detects qcow2 and reads its virtual size from a real header", async () => {
    const dir = await mkdtemp(join(tmpdir(), "hetznix-units-"));
    try {
      const q = join(dir, "x.qcow2");
      await run("qemu-img", ["create", "-q", "-f", "qcow2", q, "123M"]);
      const head = (await readFile(q)).subarray(0, 512);
      assert.deepEqual(sniffBytes(head), { compression: "none", format: "qcow2" });
      assert.equal(qcow2VirtualSize(head), 123 * 1024 * 1024);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("treats anything else as raw, and names formats it cannot take", () => {
    assert.deepEqual(sniffBytes(Buffer.alloc(1024)), { compression: "none", format: "raw" });
    assert.equal(sniffBytes(Buffer.from("PK\x03\x04rest")).unsupported, "zip archive");
    assert.equal(sniffBytes(Buffer.from("KDMV....")).unsupported, "VMDK disk");
    assert.equal(sniffBytes(Buffer.from([0x04, 0x22, 0x4d, 0x18, 0])).unsupported, "lz4 data");
  });

  it("identifies files in the Nix store by their store path", () => {
    const h = "0c9p8s5bj7x0ax2pcm1y8l2zzrn0ad1p";
    assert.equal(storeIdentity(`/nix/store/${h}-image`), h);
    const inner = storeIdentity(`/nix/store/${h}-image/nixos.img`);
    assert.match(inner ?? "", new RegExp(`^${h}-[0-9a-f]{16}$`));
    assert.notEqual(inner, storeIdentity(`/nix/store/${h}-image/other.img`));
    assert.equal(storeIdentity("/home/me/nixos.img"), undefined);
    assert.equal(storeIdentity("/nix/store/not-a-hash-image/x.img"), undefined);
    assert.equal(storeIdentity(`/s/${h}-image/nixos.img`, "/s"), inner);
    assert.ok((inner ?? "").length <= 63, "fits a label value");
  });
});

describe("upload units: planning", () => {
  const loc = (name: string) => ({
    id: 1,
    name,
    description: name,
    country: "DE",
    city: name,
    latitude: 0,
    longitude: 0,
    network_zone: "eu-central",
  });
  const locations = ["fsn1", "nbg1", "hel1", "ash"].map(loc);
  function type(
    name: string,
    arch: "x86" | "arm",
    disk: number,
    price: number,
    where: Record<string, boolean>,
    deprecated = false,
  ): ServerType {
    return {
      id: name.length,
      name,
      description: name,
      cores: 2,
      memory: 4,
      disk,
      cpu_type: "shared",
      storage_type: "local",
      architecture: arch,
      deprecated,
      prices: Object.keys(where).map((l) => ({
        location: l,
        price_hourly: { net: String(price), gross: String(price * 1.19) },
        price_monthly: { net: "0", gross: "0" },
        included_traffic: 0,
        price_per_tb_traffic: { net: "0", gross: "0" },
      })),
      locations: Object.entries(where).map(([l, available], i) => ({
        id: i,
        name: l,
        deprecation: null,
        available,
      })),
    };
  }
  const serverTypes = [
    type("cx23", "x86", 40, 0.005, { fsn1: true, nbg1: true, hel1: false }),
    type("cx33", "x86", 80, 0.008, { fsn1: true, nbg1: true }),
    type("cpx12", "x86", 40, 0.009, { fsn1: true, ash: true }),
    type("cx11", "x86", 20, 0.001, { fsn1: true }, true),
    type("cax11", "arm", 40, 0.006, { fsn1: true, hel1: true }),
  ];

  it("picks the cheapest orderable type whose disk holds the image, then the next pairs", () => {
    const p = planServer({ architecture: "x86", imageBytes: 5e9, serverTypes, locations });
    assert.equal(p.architecture, "x86");
    assert.deepEqual(
      p.candidates.map((c) => `${c.serverType}@${c.location}`),
      ["cx23@fsn1", "cx23@nbg1", "cx33@fsn1", "cx33@nbg1", "cpx12@fsn1", "cpx12@ash"],
      "deprecated cx11 and unavailable cx23@hel1 are left out",
    );
  });

  it("skips types whose disk is too small and puts a preferred location first", () => {
    const p = planServer({ architecture: "x86", imageBytes: 50e9, location: "nbg1", serverTypes, locations });
    assert.deepEqual(
      p.candidates.map((c) => `${c.serverType}@${c.location}`),
      ["cx33@nbg1", "cx33@fsn1"],
    );
  });

  it("takes the architecture from a named server type", () => {
    const p = planServer({ serverType: "cax11", serverTypes, locations });
    assert.equal(p.architecture, "arm");
    assert.deepEqual(
      p.candidates.map((c) => c.location),
      ["fsn1", "hel1"],
    );
  });

  it("explains impossible requests", () => {
    assert.throws(
      () => planServer({ architecture: "x86", imageBytes: 100e9, serverTypes, locations }),
      (e: unknown) =>
        isUploadError(e, "image_too_large") &&
        /largest x86 disk available \(80 GB\)/.test((e as Error).message),
    );
    assert.throws(
      () => planServer({ serverType: "cx9", serverTypes, locations }),
      (e: unknown) => isUploadError(e, "unknown_server_type"),
    );
    assert.throws(
      () => planServer({ serverType: "cax11", architecture: "x86", serverTypes, locations }),
      (e: unknown) => isUploadError(e, "invalid_argument"),
    );
    assert.throws(
      () => planServer({ serverTypes, locations }),
      (e: unknown) => isUploadError(e, "invalid_argument"),
    );
    assert.throws(
      () => planServer({ architecture: "x86", location: "mars1", serverTypes, locations }),
      /Unknown location mars1/,
    );
  });
});

describe("upload units: temporary keys", () => {
  it("only hands out well-formed ed25519 public keys", () => {
    for (let i = 0; i < 300; i++) {
      const pair = generateKeyPair("t");
      assert.ok(isWellFormedEd25519(pair.publicKey), pair.publicKey);
    }
    const blob = Buffer.alloc(50);
    blob.writeUInt32BE(11, 0);
    blob.write("ssh-ed25519", 4);
    blob.writeUInt32BE(31, 15);
    assert.equal(isWellFormedEd25519(`ssh-ed25519 ${blob.toString("base64")} short`), false);
  });
});

describe("upload units: labels", () => {
  const sha = "ab".repeat(32);

  it("splits the sha256 into two label values and finds it again", () => {
    const labels = contentLabels({ sha256: sha, rawSize: 42 });
    assert.equal(labels["hetznix/sha256-a"], sha.slice(0, 32));
    assert.equal(labels["hetznix/sha256-b"], sha.slice(32));
    assert.equal(labels["hetznix/size"], "42");
    assert.equal(sha256FromLabels(labels), sha);
    assert.equal(
      identitySelector({ sha256: sha }),
      `hetznix/sha256-a=${sha.slice(0, 32)},hetznix/sha256-b=${sha.slice(32)}`,
    );
    for (const v of Object.values(labels)) assert.ok(v.length <= 63);
  });

  it("parses --labels and rejects what Hetzner would reject", () => {
    assert.deepEqual(parseLabels("a=1, b=two,flag"), { a: "1", b: "two", flag: "" });
    assert.deepEqual(parseLabels(""), {});
    assert.throws(
      () => parseLabels("=x"),
      (e: unknown) => isUploadError(e, "invalid_label"),
    );
    assert.doesNotThrow(() => checkUserLabels({ "example.com/role": "web", os: "nixos" }));
    assert.throws(
      () => checkUserLabels({ "-bad": "x" }),
      (e: unknown) => isUploadError(e, "invalid_label"),
    );
    assert.throws(
      () => checkUserLabels({ ok: "bad value!" }),
      (e: unknown) => isUploadError(e, "invalid_label"),
    );
  });
});

describe("upload units: rescue scripts with the real bash", () => {
  let dir = "";
  let disk = "";
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hetznix-scripts-"));
    disk = join(dir, "sda");
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function bash(
    script: string,
    input: Buffer,
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = execFile("bash", ["-c", script], { encoding: "utf8" }, (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      });
      child.stdin?.end(input);
    });
  }

  it("writes a zstd stream to the disk, hashes it on the way, and the verify script agrees", async () => {
    await writeFile(disk, "");
    await truncate(disk, 8 * 1024 * 1024);
    const image = Buffer.alloc(3 * 1024 * 1024 + 5, 7);
    const { stdout: compressed } = await promisify(execFile)(
      "bash",
      ["-c", `head -c ${image.length} /dev/zero | tr '\\0' '\\7' | zstd -q -c`],
      { encoding: "buffer" },
    );
    const w = await bash(
      writeScript({
        input: { kind: "stdin" },
        compression: "zstd",
        format: "raw",
        device: disk,
        expectedBytes: image.length,
      }),
      compressed,
    );
    assert.equal(w.code, 0, w.stderr);
    const result = parseResult(w.stdout);
    const expected = (await import("node:crypto")).createHash("sha256").update(image).digest("hex");
    assert.deepEqual(result, { "stream-sha256": expected, "stream-bytes": String(image.length) });
    const v = await bash(verifyScript(image.length, disk), Buffer.alloc(0));
    assert.equal(parseResult(v.stdout)?.["disk-sha256"], expected);
  });

  it("fails with exit status 91 and says so when fewer bytes arrive than expected", async () => {
    const w = await bash(
      writeScript({
        input: { kind: "stdin" },
        compression: "none",
        format: "raw",
        device: disk,
        expectedBytes: 1000,
      }),
      Buffer.alloc(600, 1),
    );
    assert.equal(w.code, 91);
    assert.match(w.stderr, /received 600 bytes of image data, expected 1000/);
  });

  it("quotes any word safely", async () => {
    for (const word of ["plain", "it's", "a b", "$(touch /tmp/x)", "`id`", "semi;colon", "new\nline", ""]) {
      const { stdout } = await run("bash", ["-c", `printf %s ${shellQuote(word)}`]);
      assert.equal(stdout, word);
    }
  });
});

describe("upload units: manifest", () => {
  it("reads YAML and JSON lists and resolves paths against the manifest's directory", () => {
    const entries = parseManifest(
      "images:\n  - path: a.img\n    architecture: x86\n  - url: https://e.example/b.img\n    server_type: cax11\n",
      "/m",
    );
    assert.deepEqual(entries, [
      { path: "/m/a.img", architecture: "x86" },
      { url: "https://e.example/b.img", serverType: "cax11" },
    ]);
    assert.equal(parseManifest('[{"path": "/abs.img", "architecture": "arm"}]', "/m")[0]?.path, "/abs.img");
  });

  it("rejects malformed entries with a message naming the entry", () => {
    assert.throws(() => parseManifest("images: []", "/m"), /must list images/);
    assert.throws(() => parseManifest("- path: a\n", "/m"), /image 1: give architecture or server_type/);
    assert.throws(
      () => parseManifest("- path: a\n  url: b\n  architecture: x86\n", "/m"),
      /exactly one of path and url/,
    );
    assert.throws(
      () => parseManifest("- path: a\n  architecture: mips\n", "/m"),
      /unknown architecture mips/,
    );
    assert.throws(
      () => parseManifest("- path: a\n  architecture: x86\n  colour: red\n", "/m"),
      /unknown key colour/,
    );
  });
});

describe("upload units: progress rendering", () => {
  function sink(): { out: Writable & { columns?: number }; text: () => string } {
    let text = "";
    const out = new Writable({
      write(chunk: Buffer, _enc, cb) {
        text += chunk.toString();
        cb();
      },
    });
    return { out, text: () => text };
  }

  it("formats sizes, durations and the data line", () => {
    assert.equal(formatBytes(1536), "1.50 KiB");
    assert.equal(formatDuration(75_000), "1m15s");
    const line = dataLine(
      { kind: "data", subject: "x", phase: "write", bytesRead: 50, bytesSent: 20, total: 100 },
      10,
    );
    assert.match(line, /50%/);
    assert.match(line, /20 B sent/);
    assert.match(line, /ETA 5\.0s/);
  });

  it("plain mode prints one line per finished step and notes", () => {
    const s = sink();
    const r = createProgressRenderer({ mode: "plain", out: s.out });
    r.onEvent({ kind: "step", subject: "a.img", step: "write", status: "start" });
    r.onEvent({
      kind: "step",
      subject: "a.img",
      step: "write",
      status: "done",
      durationMs: 1500,
      detail: "12 bytes",
    });
    r.onEvent({ kind: "note", subject: "a.img", message: "fsn1 full" });
    r.onEvent({
      kind: "step",
      subject: "a.img",
      step: "verify",
      status: "failed",
      durationMs: 20,
      detail: "mismatch",
    });
    r.finish();
    assert.equal(
      s.text(),
      "write image: ok (1.5s) - 12 bytes\nnote: fsn1 full\nverify disk: FAILED (20ms) - mismatch\n",
    );
  });

  it("tty mode draws a live bar and replaces it by the finished step's line", () => {
    const s = sink();
    let t = 0;
    const r = createProgressRenderer({ mode: "tty", out: s.out, now: () => t });
    r.onEvent({ kind: "step", subject: "a", step: "write", status: "start" });
    t = 1000;
    r.onEvent({ kind: "data", subject: "a", phase: "write", bytesRead: 10, bytesSent: 5, total: 100 });
    t = 2000;
    r.onEvent({ kind: "data", subject: "a", phase: "write", bytesRead: 60, bytesSent: 30, total: 100 });
    r.onEvent({ kind: "step", subject: "a", step: "write", status: "done", durationMs: 2000 });
    r.finish();
    const text = s.text();
    assert.ok(text.includes("\x1b[1A\x1b[0J"), "the live line is cleared");
    assert.match(text, /\u2713 write image 2\.0s/);
    assert.match(text, /60 B sent|30 B sent/);
  });

  it("json mode prints nothing while running", () => {
    const s = sink();
    const r = createProgressRenderer({ mode: "json", out: s.out });
    r.onEvent({ kind: "note", subject: "a", message: "x" });
    r.finish();
    assert.equal(s.text(), "");
  });
});
