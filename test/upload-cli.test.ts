/**
 * The CLI commands (upload, write-to-disk, cleanup) as a user runs them: a child process against the emulator.
 * Checks the JSON output, the text output (the image id on stdout), errors, and Ctrl-C (SIGINT) cleanup.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  assertNoTemporaryResources,
  snapshotIds,
  startUploadEnv,
  type UploadTestEnv,
  withTargetServer,
} from "./support/upload.js";

const MAIN = new URL("../src/cli/main.ts", import.meta.url).pathname;

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

describe("upload: CLI", { timeout: 600_000 }, () => {
  let env: UploadTestEnv;

  before(async () => {
    env = await startUploadEnv("127.81.6.");
  });

  after(async () => {
    await env?.close();
  });

  function cli(
    args: string[],
    opts: { token?: string | null; onStderr?: (text: string, child: ReturnType<typeof spawn>) => void } = {},
  ): Promise<Outcome> {
    const childEnv: Record<string, string> = {
      PATH: process.env["PATH"] ?? "",
      HOME: env.dir,
      HCLOUD_CONFIG: join(env.dir, "no-such-cli.toml"),
      HCLOUD_ENDPOINT: env.te.emulator.endpoint,
    };
    const token = opts.token === undefined ? env.te.token : opts.token;
    if (token !== null) childEnv["HCLOUD_TOKEN"] = token;
    const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], {
      env: childEnv,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => {
      stderr += c.toString();
      opts.onStderr?.(stderr, child);
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`hetznix ${args.join(" ")} did not finish in 120 s\n${stderr}`));
      }, 120_000);
      child.on("close", (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr });
      });
    });
  }

  const image = (totalMiB = 5, randomMiB = 1) => env.freshImage(totalMiB, randomMiB);

  it("upload --output json prints one JSON object: image id, labels, reused, bytes, step durations", async () => {
    const img = await image();
    const out = await cli([
      "upload",
      "--image-path",
      img.path,
      "--architecture",
      "x86",
      "--labels",
      "os=nixos,channel=25.11",
      "--description",
      "test image",
      "--output",
      "json",
    ]);
    assert.equal(out.code, 0, out.stderr);
    const r = JSON.parse(out.stdout) as Record<string, unknown>;
    assert.equal(typeof r["image_id"], "number");
    assert.equal(r["reused"], false);
    assert.equal(r["description"], "test image");
    assert.equal(r["sha256"], img.sha);
    const labels = r["labels"] as Record<string, string>;
    assert.equal(labels["os"], "nixos");
    assert.equal(labels["channel"], "25.11");
    assert.equal(labels["hetznix/sha256-a"], img.sha.slice(0, 32));
    assert.equal(r["bytes_read"], 5 * 1024 * 1024);
    assert.ok((r["bytes_sent"] as number) > 0 && (r["bytes_sent"] as number) < 5 * 1024 * 1024);
    const steps = r["steps"] as { step: string; duration_ms: number }[];
    assert.ok(steps.some((s) => s.step === "write" && typeof s.duration_ms === "number"));
    assert.ok((await snapshotIds(env)).includes(r["image_id"] as number));

    const again = await cli([
      "upload",
      "--image-path",
      img.path,
      "--architecture",
      "x86",
      "--output",
      "json",
    ]);
    assert.equal(again.code, 0, again.stderr);
    const r2 = JSON.parse(again.stdout) as Record<string, unknown>;
    assert.equal(r2["reused"], true);
    assert.equal(r2["image_id"], r["image_id"]);
    await assertNoTemporaryResources(env);
  });

  it("upload in text mode prints the image id alone on stdout and the steps on stderr", async () => {
    const img = await image();
    const out = await cli(["upload", "--image-path", img.path, "--architecture", "x86"]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /^\d+\n$/);
    assert.match(out.stderr, /write image: ok/);
    assert.match(out.stderr, /verify disk: ok/);
    assert.match(out.stderr, /Created snapshot \d+/);
    await assertNoTemporaryResources(env);
  });

  it("several --image-path with one --architecture each upload in parallel; so does a manifest", async () => {
    const a = await image();
    const b = await image();
    const out = await cli([
      "upload",
      "--image-path",
      a.path,
      "--architecture",
      "x86",
      "--image-path",
      b.path,
      "--architecture",
      "arm",
      "--output",
      "json",
    ]);
    assert.equal(out.code, 0, out.stderr);
    const r = JSON.parse(out.stdout) as {
      images: { architecture: string; sha256: string }[];
      failed: number;
    };
    assert.equal(r.failed, 0);
    assert.deepEqual(
      r.images.map((i) => [i.architecture, i.sha256]),
      [
        ["x86", a.sha],
        ["arm", b.sha],
      ],
    );
    const c = await image();
    const manifest = join(env.dir, "images.yaml");
    await writeFile(
      manifest,
      `images:\n  - path: ${c.path}\n    architecture: arm\n    labels: { role: web }\n  - path: ${a.path}\n    architecture: x86\n`,
    );
    const m = await cli(["upload", "--manifest", manifest, "--output", "json"]);
    assert.equal(m.code, 0, m.stderr);
    const mr = JSON.parse(m.stdout) as { images: { reused: boolean; labels: Record<string, string> }[] };
    assert.equal(mr.images[0]?.labels["role"], "web");
    assert.equal(mr.images[1]?.reused, true);
    await assertNoTemporaryResources(env);
  });

  it("no token: a clear error, exit status 1, nothing created", async () => {
    const img = await image();
    const before = await snapshotIds(env);
    const out = await cli(["upload", "--image-path", img.path, "--architecture", "x86"], { token: null });
    assert.equal(out.code, 1);
    assert.match(out.stderr, /token/i);
    assert.equal(out.stdout, "");
    assert.deepEqual(await snapshotIds(env), before);
    await assertNoTemporaryResources(env);
  });

  it("an invalid token, bad labels and a missing architecture are reported as JSON errors", async () => {
    const img = await image();
    const bad = await cli(["upload", "--image-path", img.path, "--architecture", "x86", "--output", "json"], {
      token: "wrong",
    });
    assert.equal(bad.code, 1);
    assert.equal((JSON.parse(bad.stdout) as { error: { code: string } }).error.code, "unauthorized");
    const labels = await cli([
      "upload",
      "--image-path",
      img.path,
      "--architecture",
      "x86",
      "--labels",
      "a b=c",
      "--output",
      "json",
    ]);
    assert.equal(labels.code, 1);
    assert.equal((JSON.parse(labels.stdout) as { error: { code: string } }).error.code, "invalid_label");
    const usage = await cli(["upload", "--image-path", img.path]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--architecture/);
    await assertNoTemporaryResources(env);
  });

  it("Ctrl-C (SIGINT) during an upload removes the temporary server and key, exit status 130", async () => {
    const img = await image(8, 4);
    let sent = false;
    const out = await cli(["upload", "--image-path", img.path, "--architecture", "x86", "--force"], {
      onStderr: (text, child) => {
        if (!sent && /create temporary server: ok/.test(text)) {
          sent = true;
          child.kill("SIGINT");
        }
      },
    });
    assert.ok(sent, out.stderr);
    assert.equal(out.code, 130, out.stderr);
    assert.match(out.stderr, /SIGINT: stopping and removing temporary resources/);
    assert.match(out.stderr, /clean up: ok/);
    await assertNoTemporaryResources(env);
  });

  it("write-to-disk and cleanup commands", async () => {
    await withTargetServer(env, { name: "cli-target" }, async (server) => {
      const img = await image();
      const w = await cli([
        "write-to-disk",
        "--server",
        "cli-target",
        "--image-path",
        img.path,
        "--output",
        "json",
      ]);
      assert.equal(w.code, 0, w.stderr);
      const r = JSON.parse(w.stdout) as { server_id: number; sha256: string; started: boolean };
      assert.equal(r.server_id, server.id);
      assert.equal(r.sha256, img.sha);
      assert.equal(r.started, false);
    });
    const c = await cli(["cleanup", "--older-than", "0s", "--dry-run", "--output", "json"]);
    assert.equal(c.code, 0, c.stderr);
    const cr = JSON.parse(c.stdout) as { dry_run: boolean; deleted: unknown[] };
    assert.equal(cr.dry_run, true);
    assert.deepEqual(cr.deleted, []);
    const bad = await cli(["cleanup", "--older-than", "soon"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid duration "soon"/);
    await assertNoTemporaryResources(env);
  });
});
