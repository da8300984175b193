/**
 * Shared by the upload tests: an emulator with real rescue hosts in its own work directory, a fast client, image
 * builders, and the checks that nothing is left behind (servers, SSH keys, processes, loop devices, mounts).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { uploadImage, type UploadOptions, type UploadResult } from "../../src/upload/index.js";
import { HCloudClient, type Server } from "../../src/hcloud/index.js";
import { assertNoHostResidue } from "./disk.js";
import { startTestEmulator, type TestEmulator, type TestEmulatorOptions } from "./emulator.js";

export { assertNoHostResidue };

export const run = promisify(execFile);
export const MiB = 1024 * 1024;

/** Waits of the upload tests: fast polling, bounded waits. */
export const waits = { pollIntervalMs: 30, actionTimeoutMs: 60_000, shutdownTimeoutMs: 30_000 };

/** Upload `image` as an x86 snapshot with the test waits; `extra` adds or overrides options. */
export function uploadX86(
  env: UploadTestEnv,
  image: UploadOptions["image"],
  extra: Partial<UploadOptions> = {},
): Promise<UploadResult> {
  return uploadImage({ client: env.client, image, architecture: "x86", waits, ...extra });
}

/** An image file with its content hash and size. */
export interface TestImage {
  path: string;
  sha: string;
  size: number;
}

export interface UploadTestEnv {
  te: TestEmulator;
  client: HCloudClient;
  /** Scratch directory for images (removed by close). */
  dir: string;
  /** The rescue manager's work directory (host directories live here). */
  rescueDir: string;
  /** A client with the given token (e.g. a wrong one). */
  clientWithToken(token: string): HCloudClient;
  /** A new raw image in `dir` with distinct content each time (so nothing is deduplicated); see makeRawImage. */
  freshImage(totalMiB: number, randomMiB: number): Promise<TestImage>;
  close(): Promise<void>;
}

export function fastClient(endpoint: string, token: string): HCloudClient {
  return new HCloudClient({
    token,
    endpoint,
    waitDefaults: { pollDelay: () => 40 },
    retry: { baseDelayMs: 20, maxDelayMs: 200, maxTries: 6, maxTotalMs: 20_000 },
    timeoutMs: 20_000,
  });
}

export async function startUploadEnv(
  ipPrefix: string,
  options: Omit<TestEmulatorOptions, "ipPrefix"> & { ramDisk?: string } = {},
): Promise<UploadTestEnv> {
  const dir = await mkdtemp(join(tmpdir(), "hetznix-upload-test-"));
  const rescueDir = join(dir, "rescue");
  await mkdir(rescueDir);
  const { ramDisk, ...emuOptions } = options;
  let te: TestEmulator;
  try {
    te = await startTestEmulator({
      speed: 200,
      ...emuOptions,
      ipPrefix,
      hosts: "real",
      hostOptions: { workDir: rescueDir, ...(ramDisk ? { ramDisk } : {}) },
    });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const client = fastClient(te.emulator.endpoint, te.token);
  // The hash cache of uploads (and of CLI children, which inherit the environment) goes to this run's directory.
  const previousCache = process.env["XDG_CACHE_HOME"];
  process.env["XDG_CACHE_HOME"] = join(dir, "cache");
  let images = 0;
  return {
    te,
    client,
    dir,
    rescueDir,
    clientWithToken: (token) => fastClient(te.emulator.endpoint, token),
    async freshImage(totalMiB, randomMiB) {
      const path = join(dir, `fresh-${++images}.raw`);
      const buf = await makeRawImage(path, totalMiB, randomMiB);
      return { path, sha: sha256(buf), size: buf.length };
    },
    async close() {
      if (previousCache === undefined) delete process.env["XDG_CACHE_HOME"];
      else process.env["XDG_CACHE_HOME"] = previousCache;
      try {
        await te.close();
        await assertNoHostResidue(te.stateDir, rescueDir);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}

/** Delete every server of the emulator and wait for the deletes (test teardown; failures are ignored). */
export async function deleteAllServers(env: UploadTestEnv): Promise<void> {
  for (const s of await env.client.servers.all()) {
    const a = await env.client.servers.delete(s.id).catch(() => undefined);
    if (a) await env.client.waitForActions([a], { timeoutMs: 60_000 }).catch(() => undefined);
  }
}

/** No server and no SSH key exist in the emulator (what every upload must leave). */
export async function assertNoTemporaryResources(env: UploadTestEnv): Promise<void> {
  const servers = await env.client.servers.all();
  const keys = await env.client.sshKeys.all();
  assert.deepEqual(
    servers.map((s) => `${s.id} ${s.name} ${s.status}`),
    [],
    "no server is left",
  );
  assert.deepEqual(
    keys.map((k) => `${k.id} ${k.name}`),
    [],
    "no SSH key is left",
  );
  const hosts = await readdir(env.rescueDir);
  assert.deepEqual(hosts, [], "no rescue host directory is left (no sshd, loop device or mount)");
}

export async function snapshotIds(env: UploadTestEnv): Promise<number[]> {
  const images = await env.client.images.all({ type: "snapshot" });
  return images.map((i) => i.id).sort((a, b) => a - b);
}

/** After the emulator stopped: no loop device serves a file of its state dir; no mount or process of its hosts. */
export function sha256(buf: Buffer): string {
  return createHash("sha256").update(buf).digest("hex");
}

export async function sha256File(path: string, length?: number): Promise<string> {
  const h = createHash("sha256");
  const stream = createReadStream(path, length !== undefined ? { start: 0, end: length - 1 } : {});
  for await (const chunk of stream as AsyncIterable<Buffer>) h.update(chunk);
  return h.digest("hex");
}

/**
 * A raw image of `totalMiB` with `randomMiB` of random data spread in a few places and zeros elsewhere, plus a
 * recognisable MBR signature.
 */
export async function makeRawImage(path: string, totalMiB: number, randomMiB: number): Promise<Buffer> {
  const buf = Buffer.alloc(totalMiB * MiB);
  const pieces = Math.max(1, Math.min(4, randomMiB));
  const per = Math.floor((randomMiB * MiB) / pieces);
  for (let i = 0; i < pieces; i++) {
    const at = Math.floor(((i + 0.5) * buf.length) / (pieces + 1));
    randomBytes(per).copy(buf, at);
  }
  buf[510] = 0x55;
  buf[511] = 0xaa;
  await writeFile(path, buf);
  return buf;
}

/** The raw image `raw` converted to qcow2 at `path` with qemu-img. */
export async function makeQcow2Image(raw: string, path: string): Promise<void> {
  await run("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, path]);
}

/** A small ext4 filesystem image made with `mke2fs -d` from a directory with a few files. */
export async function makeExt4Image(path: string, sizeMiB: number, work: string): Promise<void> {
  const content = join(work, "ext4-content");
  await mkdir(join(content, "etc"), { recursive: true });
  await writeFile(join(content, "etc", "hostname"), "hetznix-test\n");
  await writeFile(join(content, "random.bin"), randomBytes(512 * 1024));
  await run("mke2fs", ["-q", "-F", "-t", "ext4", "-d", content, "-E", "root_owner=0:0", path, `${sizeMiB}M`]);
}

/** Compress `path` with a command-line tool into `out`. */
export async function compressWith(
  tool: "gzip" | "bzip2" | "xz" | "zstd",
  path: string,
  out: string,
): Promise<void> {
  const args =
    tool === "zstd" ? ["-q", "-c", "-3", path] : tool === "xz" ? ["-c", "-1", "-T0", path] : ["-c", path];
  const { stdout } = await run(tool, args, { encoding: "buffer", maxBuffer: 512 * MiB });
  await writeFile(out, stdout);
}

/** sha256 of the first `length` bytes of the emulator's disk file of snapshot `imageId`. */
export async function snapshotContentSha(
  env: UploadTestEnv,
  imageId: number,
  length: number,
): Promise<string> {
  const image = env.te.emulator.state.images.find(imageId);
  assert.ok(image?.disk, `snapshot ${imageId} has a disk file`);
  return sha256File(join(env.te.stateDir, image.disk), length);
}

/** Add a fault through the emulator's admin endpoint. */
export async function addFault(env: UploadTestEnv, fault: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${env.te.emulator.adminUrl}/faults`, {
    method: "POST",
    headers: { Authorization: `Bearer ${env.te.token}`, "Content-Type": "application/json" },
    body: JSON.stringify(fault),
    signal: AbortSignal.timeout(10_000),
  });
  assert.ok(res.status < 300, `adding fault answered ${res.status}: ${await res.text()}`);
}

export async function clearFaults(env: UploadTestEnv): Promise<void> {
  const res = await fetch(`${env.te.emulator.adminUrl}/faults`, {
    method: "DELETE",
    headers: { Authorization: `Bearer ${env.te.token}` },
    signal: AbortSignal.timeout(10_000),
  });
  await res.body?.cancel();
  assert.ok(res.status < 300, `clearing faults answered ${res.status}`);
}

/**
 * Runs `fn` with a normal (non-temporary) cx23 server to write to, created and running, and deletes the server
 * afterwards whatever `fn` does.
 */
export async function withTargetServer<T>(
  env: UploadTestEnv,
  target: { name: string; location?: string },
  fn: (server: Server) => Promise<T>,
): Promise<T> {
  const created = await env.client.servers.create({
    name: target.name,
    server_type: "cx23",
    image: "ubuntu-24.04",
    ...(target.location ? { location: target.location } : {}),
  });
  await env.client.waitForActions([created.action as never, ...created.nextActions], { timeoutMs: 30_000 });
  try {
    return await fn(created.server);
  } finally {
    const action = await env.client.servers.delete(created.server.id);
    await env.client.waitForActions([action], { timeoutMs: 30_000 });
  }
}
