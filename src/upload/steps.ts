/**
 * The steps shared by upload and write-to-disk, each a small function reporting through the run's StepRunner and
 * registering every temporary resource the moment it exists: the run context, the catalogue, the temporary key and
 * server, booting the rescue system, the data phase (connect, discard, write, verify; retried on a dropped SSH
 * connection) and shutting down.
 */
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { isHCloudError, isNotFound } from "../hcloud/errors.js";
import type { Architecture, Location, Server, ServerType } from "../hcloud/schema.js";
import { ExecError, connect, generateKeyPair, type SshConnection, type SshKeyPair } from "../ssh/index.js";
import { defaultCodec, type CodecSpec } from "./compress.js";
import { convertQcow2ToRaw } from "./convert.js";
import { RunContext, type RunOptions, type RunOutcome } from "../run/context.js";
import { throwIfAborted } from "../run/errors.js";
import type { RunEvent } from "../run/events.js";
import { temporaryName } from "../run/labels.js";
import { ConnectionLostError, runScript as runRemote, type RunScriptOptions } from "../run/remote.js";
import { serverResource, sshKeyResource } from "../run/resources.js";
import { pause } from "../util/time.js";
import { UploadError } from "./errors.js";
import type { Candidate, Plan } from "./plan.js";
import {
  DEFAULT_DOWNLOAD_LIMITS,
  DOWNLOAD_FAILED_MARK,
  EXIT_BAD_STREAM,
  EXIT_NO_ROOM,
  EXIT_SIZE_MISMATCH,
  EXIT_UNSAFE_QCOW2,
  WRITTEN_MARK,
  downloadDeadlineSeconds,
  type DownloadLimits,
  discardCommand,
  downloadProgressScript,
  extentWriteScript,
  verifyScript,
  writeScript,
  type WriteInput,
} from "./rescue.js";
import {
  openFileSource,
  openUrlSource,
  type Compression,
  type FileSource,
  type ImageFormat,
  type ImageSource,
} from "./source.js";
import {
  ALWAYS_MEASURED,
  CANDIDATE_LEVELS,
  chooseLevel,
  describeChoice,
  measureHash,
  measureLevel,
  probeLink,
  readSample,
  type LevelInput,
  type LevelSample,
} from "./level.js";
import { DEFAULT_READ_AHEAD_BYTES, startLocalStream, type LocalStream } from "./stream.js";
import { tool, type LocalTools } from "./tools.js";

export type ImageInput = { path: string } | { url: string };

export type { WaitSettings } from "../run/context.js";

/** The steps of upload and write-to-disk, in the order they run. */
export type UploadStep =
  | "inspect"
  | "convert"
  | "hash"
  | "catalogue"
  | "lookup"
  | "plan"
  | "ssh-key"
  | "server"
  | "rescue"
  | "poweron"
  | "connect"
  | "discard"
  | "measure"
  | "write"
  | "verify"
  | "shutdown"
  | "snapshot"
  | "cleanup";

export type UploadEvent = RunEvent<UploadStep>;

export interface SshSettings {
  /** Port of the rescue system's sshd (default 22). */
  port?: number;
  /** Connection attempts (default 100) and total time (default 180 s). */
  maxAttempts?: number;
  maxTotalMs?: number;
}

/** Options shared by upload and write-to-disk. */
export interface CommonOptions extends RunOptions<UploadStep> {
  /** Override detection (must agree with the magic bytes). */
  compression?: Compression | "auto";
  format?: ImageFormat | "auto";
  /** Wire codec for images that are not compressed already (default zstd when installed, else gzip). */
  codec?: CodecSpec;
  tools?: LocalTools;
  /** Directory for a qcow2 converted to raw on this machine (default os.tmpdir()). */
  tmpDir?: string;
  /** Compressed bytes kept ready while the server boots (default DEFAULT_READ_AHEAD_BYTES, 24 MiB). */
  readAheadBytes?: number;
  ssh?: SshSettings;
  /** Attempts of the data phase when the SSH connection drops (default 2: one retry from the start). */
  writeAttempts?: number;
  /** Limits of a URL download by the rescue system (default DEFAULT_DOWNLOAD_LIMITS). */
  download?: Partial<DownloadLimits>;
}

/** System images preferred as the (never booted) base of the temporary server. */
const BASE_IMAGE_PREFERENCE = ["debian-12", "ubuntu-24.04", "debian-13", "ubuntu-22.04"];

export interface Catalogue {
  serverTypes: ServerType[];
  locations: Location[];
}

/** The run of an upload or write-to-disk: the shared run context plus the bytes read, sent and hashed. */
export class UploadContext extends RunContext<CommonOptions, UploadStep> {
  bytesRead = 0;
  bytesSent = 0;
  bytesHashed = 0;
  /** The odd-size warning was given (once per run). */
  oddSizeNoted = false;
  /** The zstd level chosen from the measured link and CPU (kept for a retried data phase). */
  levelChoice: LevelReport | undefined;

  override outcome(): UploadOutcome {
    return {
      ...super.outcome(),
      bytesRead: this.bytesRead,
      bytesSent: this.bytesSent,
      ...(this.levelChoice ? { levelChoice: this.levelChoice } : {}),
    };
  }

  /** A script in the rescue system, its errors named for this operation. */
  runScript(conn: SshConnection, script: string, what: string, opts: RunScriptOptions = {}) {
    return runRemote(conn, script, what, {
      operation: this.operation,
      makeError: (code, message, cause) =>
        new UploadError(code as UploadError["code"], message, cause === undefined ? undefined : { cause }),
      ...opts,
    });
  }
}

/** What upload and write-to-disk report about the run itself. */
export interface UploadOutcome extends RunOutcome<UploadStep> {
  /** Bytes read from the local source for sending (the data phase). */
  bytesRead: number;
  /** Bytes sent over SSH (after compression). */
  bytesSent: number;
  /** The compression level chosen at the start of the data phase, and from what. */
  levelChoice?: LevelReport;
}

/** What the step "measure" found and chose. */
export interface LevelReport {
  level: number;
  /** The probe's rate towards the server. */
  linkMbitPerSecond: number;
  cores: number;
  bound: "link" | "cpu";
  /** The measured levels: single-threaded MB/s of input and compressed/input ratio on the image's sample. */
  measured: { level: number; mbPerSecond: number; ratio: number }[];
  detail: string;
}

// ---- Steps shared with write-to-disk ----

/** Step "inspect": open the file or URL and sniff its compression and format. */
export function inspectSource(
  ctx: UploadContext,
  input: ImageInput,
  storeDir?: string,
): Promise<ImageSource> {
  const { compression, format, tools } = ctx.opts;
  const srcOpts = {
    ...(compression ? { compression } : {}),
    ...(format ? { format } : {}),
    ...(tools ? { tools } : {}),
    ...(storeDir ? { storeDir } : {}),
    signal: ctx.signal,
  };
  return ctx.steps.run<ImageSource>(
    "inspect",
    () => ("path" in input ? openFileSource(input.path, srcOpts) : openUrlSource(input.url, srcOpts)),
    (s) =>
      `${s.format}${s.compression !== "none" ? `, ${s.compression}-compressed` : ""}, ${s.kind === "file" ? `${s.fileSize} bytes` : s.contentLength !== undefined ? `${s.contentLength} bytes` : "size unknown"}`,
  );
}

/**
 * Step "convert": a qcow2 file to a raw file on this machine with qemu-img, registered for removal. Returns the raw
 * file, or undefined when qemu-img is not installed here (the rescue system converts it then).
 */
export async function convertLocally(ctx: UploadContext, src: FileSource): Promise<string | undefined> {
  const qemuImg = tool(ctx.opts.tools, "qemuImg");
  if (!qemuImg) return undefined;
  const converted = await ctx.steps.run(
    "convert",
    () =>
      convertQcow2ToRaw(qemuImg, src.realPath, {
        ...(ctx.opts.tmpDir ? { dir: ctx.opts.tmpDir } : {}),
        signal: ctx.signal,
        virtualSize: src.qcow2VirtualSize ?? 0,
      }),
    `qcow2 -> raw with qemu-img (${src.qcow2VirtualSize} bytes)`,
  );
  ctx.registry.add({
    kind: "file",
    name: "the raw image converted from qcow2 (a file without a name)",
    removeHint: "nothing: the system frees it when hetznix exits",
    remove: () => converted.remove(),
  });
  return converted.rawPath;
}

/** Bytes of a disk sector: every disk, so every disk image, is a whole number of them. */
export const SECTOR_BYTES = 512;

/**
 * Warns (once per run) when the raw image is not a whole number of 512-byte sectors: it is then most likely not a
 * disk image at all (a wrong file, a truncated download). It is written as it is.
 */
export function noteOddSize(ctx: UploadContext, rawSize: number | undefined): void {
  if (rawSize === undefined || rawSize % SECTOR_BYTES === 0 || ctx.oddSizeNoted) return;
  ctx.oddSizeNoted = true;
  ctx.steps.note(
    `the image is ${rawSize} byte${rawSize === 1 ? "" : "s"}, not a whole number of 512-byte sectors as disk images are: it is probably not a disk image (it is written as it is; the rest of the disk reads as zeros)`,
  );
}

/** The image as this machine sends it (after a local conversion or hash pass, if any). */
export interface LocalImage {
  /** The file to stream (converted raw for a qcow2 converted here); none for a URL. */
  path?: string;
  /** Compression of that file (or of the URL's bytes). */
  compression: Compression;
  /** raw: written directly; qcow2: converted in the rescue system. */
  remoteFormat: ImageFormat;
  /** sha256/size of the raw image when hashed before creating anything. */
  sha256?: string;
  rawSize?: number;
}

/** What the data phase sends and what the rescue system checks, for a source and its local form. */
export function planWrite(ctx: UploadContext, src: ImageSource, local: LocalImage): WritePlan {
  const wp: WritePlan = {
    ...(local.path !== undefined ? { path: local.path } : {}),
    ...(src.kind === "url" ? { url: src.url } : {}),
    ...(src.kind === "url" && src.contentLength !== undefined ? { downloadBytes: src.contentLength } : {}),
    compression: local.compression,
    remoteFormat: local.remoteFormat,
    codec: ctx.opts.codec ?? { codec: defaultCodec(ctx.opts.tools) },
    // The raw image's hash is the payload's only when the payload is the raw image (not a qcow2 converted remotely).
    ...(local.sha256 && local.remoteFormat === "raw" ? { payloadSha256: local.sha256 } : {}),
    ...(src.format === "qcow2" ? { virtualSize: src.qcow2VirtualSize } : {}),
  };
  if (local.remoteFormat === "raw" && local.rawSize !== undefined) wp.expectedBytes = local.rawSize;
  if (local.remoteFormat === "qcow2") {
    const qsize = src.kind === "file" ? src.fileSize : src.contentLength;
    if (qsize !== undefined) wp.expectedBytes = qsize;
  }
  if (
    src.kind === "url" &&
    src.compression === "none" &&
    src.contentLength !== undefined &&
    src.format === "raw"
  ) {
    wp.expectedBytes = src.contentLength;
  }
  return wp;
}

/** Start reading (and compressing) a write plan's file; the read-ahead fills while the server boots. */
export function startStream(ctx: UploadContext, wp: WritePlan & { path: string }): LocalStream {
  return startLocalStream({
    path: wp.path,
    fileCompression: wp.compression,
    codec: wp.codec,
    hash: wp.payloadSha256 === undefined,
    extents: wp.remoteFormat === "raw",
    readAheadBytes: ctx.opts.readAheadBytes ?? DEFAULT_READ_AHEAD_BYTES,
    ...(ctx.opts.tools ? { tools: ctx.opts.tools } : {}),
  });
}

export async function fetchCatalogue(ctx: UploadContext): Promise<Catalogue> {
  const [serverTypes, locations] = await Promise.all([
    ctx.client.serverTypes.all({ signal: ctx.signal }),
    ctx.client.locations.all({ signal: ctx.signal }),
  ]);
  return { serverTypes, locations };
}

/** An OpenSSH ed25519 public key line whose key blob is well formed (type string + 32-byte key). */
export async function createTemporaryKey(
  ctx: UploadContext,
  kind: "upload" | "write",
): Promise<{ pair: SshKeyPair; id: number }> {
  return ctx.steps.run(
    "ssh-key",
    async () => {
      const pair = generateKeyPair(`hetznix-${ctx.runId}`);
      const name = temporaryName(ctx.runId, kind);
      ctx.createdSomething = true;
      const key = await ctx.client.sshKeys.create(
        { name, publicKey: pair.publicKey, labels: ctx.labels },
        { signal: ctx.signal },
      );
      ctx.known.sshKeys.add(key.id);
      ctx.registry.add(sshKeyResource(ctx.client, key.id, key.name));
      return { pair, id: key.id };
    },
    (r) => `key ${r.id}`,
  );
}

async function pickBaseImage(ctx: UploadContext, architecture: Architecture): Promise<string | number> {
  const images = await ctx.client.images.all({ type: "system", architecture, signal: ctx.signal });
  for (const name of BASE_IMAGE_PREFERENCE) {
    const found = images.find((i) => i.name === name && !i.deprecated);
    if (found) return found.id;
  }
  const any = images.find((i) => !i.deprecated) ?? images[0];
  if (!any)
    throw new UploadError(
      "no_capacity",
      `No ${architecture} system image to create the temporary server from`,
    );
  return any.id;
}

/** Create the temporary server, trying the planned pairs in order on 412 resource_unavailable. */
export async function createTemporaryServer(
  ctx: UploadContext,
  plan: Plan,
  keyId: number,
): Promise<{ server: Server; candidate: Candidate }> {
  return ctx.steps.run(
    "server",
    async () => {
      const baseImage = await pickBaseImage(ctx, plan.architecture);
      const tried: string[] = [];
      for (const candidate of plan.candidates) {
        throwIfAborted(ctx.signal, ctx.operation);
        const name = temporaryName(ctx.runId, "upload");
        let created;
        try {
          ctx.createdSomething = true;
          created = await ctx.client.servers.create(
            {
              name,
              server_type: candidate.serverType,
              image: baseImage,
              location: candidate.location,
              ssh_keys: [keyId],
              start_after_create: false,
              labels: ctx.labels,
              public_net: { enable_ipv4: true, enable_ipv6: false },
            },
            { signal: ctx.signal },
          );
        } catch (err) {
          if (isHCloudError(err, "resource_unavailable")) {
            tried.push(`${candidate.serverType} in ${candidate.location}`);
            ctx.steps.note(
              `${candidate.serverType} in ${candidate.location} is out of capacity; trying the next`,
            );
            continue;
          }
          throw err;
        }
        ctx.known.servers.add(created.server.id);
        ctx.registry.add(serverResource(ctx.client, created.server.id, created.server.name));
        const actions = [...(created.action ? [created.action] : []), ...created.nextActions];
        if (actions.length > 0) await ctx.wait(actions);
        return { server: created.server, candidate };
      }
      throw new UploadError(
        "no_capacity",
        `No capacity for a temporary ${plan.architecture} server; tried ${tried.join(", ")}`,
      );
    },
    (r) => `${r.candidate.serverType} in ${r.candidate.location} (server ${r.server.id})`,
  );
}

export async function bootRescue(
  ctx: UploadContext,
  serverId: number,
  keyId: number,
  alreadyRunning = false,
) {
  await ctx.steps.run("rescue", async () => {
    const r = await ctx.client.servers.enableRescue(
      serverId,
      { type: "linux64", ssh_keys: [keyId] },
      { signal: ctx.signal },
    );
    await ctx.wait([r.action]);
  });
  return ctx.steps.run(
    "poweron",
    async () => {
      const action = alreadyRunning
        ? await ctx.client.servers.reset(serverId, { signal: ctx.signal })
        : await ctx.client.servers.poweron(serverId, { signal: ctx.signal });
      await ctx.wait([action]);
      return ctx.client.servers.getById(serverId, { signal: ctx.signal });
    },
    alreadyRunning ? "reset into rescue" : undefined,
  );
}

/** The error of a server that disappeared under the run. */
function serverDeleted(ctx: UploadContext, server: Server): UploadError {
  return new UploadError(
    "server_deleted",
    `Server ${server.name} (${server.id}) was deleted while the ${ctx.operation} was using it (by someone else, or by \`hetznix cleanup\` with a short --older-than); nothing was written to a snapshot`,
  );
}

/** Throws server_deleted when the server no longer exists (or is being deleted). */
async function checkServerExists(ctx: UploadContext, server: Server): Promise<void> {
  try {
    const now = await ctx.client.servers.getById(server.id, { signal: ctx.signal });
    if (now.status === "deleting") throw serverDeleted(ctx, server);
  } catch (err) {
    if (isNotFound(err)) throw serverDeleted(ctx, server);
    throw err;
  }
}

/**
 * Watches, while SSH connection attempts go on, that the server still exists (every few polls); aborts the returned
 * signal with a server_deleted error as soon as it does not, so a deleted server does not cost minutes of retries.
 */
function watchServer(ctx: UploadContext, server: Server): { signal: AbortSignal; stop(): void } {
  const gone = new AbortController();
  const stop = new AbortController();
  const both = AbortSignal.any([stop.signal, ctx.signal]);
  const interval = ctx.waits.pollIntervalMs * 5;
  void (async () => {
    for (let i = 0; i < 1_000_000 && !both.aborted; i++) {
      await pause(interval, both);
      if (both.aborted) return;
      try {
        await checkServerExists(ctx, server);
      } catch (err) {
        if (err instanceof UploadError && err.code === "server_deleted") gone.abort(err);
        // Other errors (the API briefly unreachable): SSH attempts go on; checked again next time.
      }
      if (gone.signal.aborted) return;
    }
  })();
  return {
    signal: AbortSignal.any([gone.signal, ctx.signal]),
    stop: () => stop.abort(),
  };
}

export async function connectRescue(
  ctx: UploadContext,
  server: Server,
  pair: SshKeyPair,
): Promise<SshConnection> {
  const host = server.public_net.ipv4?.ip;
  if (!host)
    throw new UploadError(
      "invalid_argument",
      `Server ${server.id} has no public IPv4 address to reach its rescue system`,
    );
  const ssh = ctx.opts.ssh ?? {};
  const watch = watchServer(ctx, server);
  return ctx.steps.run(
    "connect",
    () =>
      connect({
        host,
        port: ssh.port ?? 22,
        username: "root",
        privateKey: pair.privateKey,
        maxAttempts: ssh.maxAttempts ?? 100,
        maxTotalMs: ssh.maxTotalMs ?? 180_000,
        signal: watch.signal,
        onAttempt: (a) => {
          if (a.attempt % 10 === 0) {
            ctx.steps.note(
              `SSH to ${host} not ready after ${a.attempt - 1} attempts (${Math.round(a.elapsedMs / 1000)} s): ${a.lastError?.message ?? "no answer"}`,
            );
          }
        },
      })
        .catch((err: unknown) => {
          if (ctx.signal.aborted) throw ctx.aborted();
          if (watch.signal.aborted) throw watch.signal.reason;
          throw err;
        })
        .finally(() => watch.stop()),
    (c) => `${host} after ${c.attempts} attempt(s)`,
  );
}

/** What the data phase sends and how the rescue system handles it. */
export interface WritePlan {
  /** Local file to stream (raw, converted raw, compressed file, or qcow2 for conversion in the rescue system). */
  path?: string;
  url?: string;
  /** Compression of the file as stored / of the URL's bytes. */
  compression: Compression;
  /** raw: written directly; qcow2: converted in the rescue system. */
  remoteFormat: ImageFormat;
  /** Exact payload size when known (raw: raw size; qcow2: file size), checked on the server. */
  expectedBytes?: number;
  virtualSize?: number;
  /** A URL's Content-Length (for download progress). */
  downloadBytes?: number;
  /** The payload's sha256 when known before sending (from the local hash pass). */
  payloadSha256?: string;
  codec: CodecSpec;
}

export interface WriteOutcome {
  /** sha256 and size of the raw image now on the disk (verified). */
  sha256: string;
  rawSize: number;
  transfer: string;
  /** Bytes of the image sent as data (the rest were zero blocks, skipped), when sent as an extent stream. */
  dataBytes?: number;
}

/**
 * Connect, discard, write and verify. Retried from the start (new connection) when the SSH connection drops, up to
 * `writeAttempts` times. `firstStream` is a local stream started early (read-ahead) for the first attempt; this
 * function owns it from the call on and stops it on every way out.
 */
export async function writeAndVerify(
  ctx: UploadContext,
  server: Server,
  pair: SshKeyPair,
  wp: WritePlan,
  firstStream: LocalStream | undefined,
): Promise<WriteOutcome> {
  const attempts = Math.max(1, ctx.opts.writeAttempts ?? 2);
  let early = firstStream;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    // Compressing a sample needs no server: it runs while the connection is made.
    const calibrating = ctx.levelChoice ? undefined : startCalibration(ctx, wp, early);
    let measuring: Promise<void> | undefined;
    let conn: SshConnection;
    try {
      conn = await connectRescue(ctx, server, pair);
    } catch (err) {
      // A connect step that failed or was interrupted must stop the read-ahead stream too: its compressor, blocked
      // on a full pipe, would keep the process alive forever.
      early?.destroy();
      await calibrating?.dispose();
      throw err;
    }
    try {
      measuring = calibrating ? measureAndChoose(ctx, conn, calibrating) : undefined;
      await Promise.all([
        ctx.steps.run("discard", () =>
          ctx.runScript(conn, discardCommand(), "blkdiscard", { signal: ctx.signal }),
        ),
        measuring,
      ]);
      let plan = wp;
      if (ctx.levelChoice && wp.codec.codec === "zstd" && wp.codec.level === undefined) {
        if (early?.switchable) early.switchable.setLevel(ctx.levelChoice.level);
        plan = { ...wp, codec: { ...wp.codec, level: ctx.levelChoice.level } };
      }
      const run = await writeOnce(ctx, conn, plan, early);
      early = undefined;
      const written = await ctx.steps.run("verify", () => run.verify(), run.verifyDetail);
      return written;
    } catch (err) {
      early?.destroy();
      early = undefined;
      // A lost connection may mean the server itself is gone: then retrying is pointless.
      if (err instanceof ConnectionLostError && !ctx.signal.aborted) await checkServerExists(ctx, server);
      if (err instanceof ConnectionLostError && attempt < attempts && !ctx.signal.aborted) {
        ctx.steps.note(
          `${err.message}; starting the data phase again on a new connection (attempt ${attempt + 1} of ${attempts})`,
        );
        continue;
      }
      if (err instanceof ConnectionLostError) {
        throw new UploadError("remote_command_failed", `${err.message} (after ${attempts} attempt(s))`, {
          cause: err,
        });
      }
      throw err;
    } finally {
      await conn.close().catch(() => undefined);
      await measuring?.catch(() => undefined);
      await calibrating?.dispose();
    }
  }
  throw new UploadError("remote_command_failed", "the data phase did not complete");
}

interface Calibrating {
  zstd: string;
  /** The sample (in a temporary file), its hash cost and the first levels measured (cheap, needed on every link). */
  first: Promise<{ sampleFile: string; hashSecondsPerByte: number; samples: LevelSample[] } | undefined>;
  /** Remove the sample file (after the first measurements, whatever happened). */
  dispose(): Promise<void>;
}

/**
 * Start measuring the compressor when the level is hetznix's to choose: zstd without a level given, a local file
 * compressed on the fly. Undefined otherwise.
 */
function startCalibration(
  ctx: UploadContext,
  wp: WritePlan,
  early: LocalStream | undefined,
): Calibrating | undefined {
  if (wp.codec.codec !== "zstd" || wp.codec.level !== undefined || wp.path === undefined) return undefined;
  if (wp.compression !== "none") return undefined;
  if (early && !early.switchable) return undefined;
  const zstd = tool(ctx.opts.tools, "zstd");
  if (!zstd) return undefined;
  const path = wp.path;
  let dir: string | undefined;
  const first = (async () => {
    const size = (await stat(path)).size;
    const sample = await readSample(path, size);
    if (sample.length < 64 * 1024) return undefined;
    const hashSecondsPerByte = measureHash(sample);
    dir = await mkdtemp(join(ctx.opts.tmpDir ?? tmpdir(), "hetznix-sample-"));
    const sampleFile = join(dir, "sample");
    await writeFile(sampleFile, sample, { mode: 0o600 });
    const samples: LevelSample[] = [];
    for (const level of CANDIDATE_LEVELS.slice(0, ALWAYS_MEASURED)) {
      samples.push(await measureLevel(zstd, level, sampleFile));
    }
    return { sampleFile, hashSecondsPerByte, samples };
  })();
  first.catch(() => undefined);
  return {
    zstd,
    first,
    async dispose() {
      await first.catch(() => undefined);
      if (dir) await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Step "measure": the link's rate (a short probe through the connection) and the compressor's speed and ratio at
 * rising levels on a sample of the image, until a level is CPU-bound (a higher one could only be slower); then
 * chooseLevel. Best effort: without a measurement the default level stays.
 */
async function measureAndChoose(ctx: UploadContext, conn: SshConnection, cal: Calibrating): Promise<void> {
  await ctx.steps
    .run(
      "measure",
      async () => {
        const [probe, first] = await Promise.all([
          probeLink(conn, { signal: ctx.signal }).catch((err: unknown) => {
            // A dropped connection is the data phase's to retry, as in any other of its steps.
            if (err instanceof ExecError && (err.kind === "connection-lost" || err.kind === "channel-failed"))
              throw new ConnectionLostError(`SSH connection lost during measuring the link`, { cause: err });
            throw err;
          }),
          cal.first.catch(() => undefined),
        ]);
        if (!first) return undefined;
        const cores = Math.max(1, availableParallelism());
        const samples = [...first.samples];
        const input = (): LevelInput => ({
          linkBytesPerSecond: probe.bytesPerSecond,
          cores,
          otherSecondsPerByte: first.hashSecondsPerByte,
          samples,
        });
        let choice = chooseLevel(input());
        for (const level of CANDIDATE_LEVELS.slice(samples.length)) {
          if (!choice.measureHigher || ctx.signal.aborted) break;
          samples.push(await measureLevel(cal.zstd, level, first.sampleFile));
          choice = chooseLevel(input());
        }
        const report: LevelReport = {
          level: choice.level,
          linkMbitPerSecond: Math.round((probe.bytesPerSecond * 8) / 1e5) / 10,
          cores,
          bound: choice.bound,
          measured: samples.map((x) => ({
            level: x.level,
            mbPerSecond: Math.round(1 / x.secondsPerByte / 1e5) / 10,
            ratio: Math.round(x.ratio * 1000) / 1000,
          })),
          detail: describeChoice(choice, input()),
        };
        ctx.levelChoice = report;
        return report;
      },
      (r) => (r ? `zstd ${r.detail}` : "no sample of data to measure: default level"),
    )
    .catch((err: unknown) => {
      if (ctx.signal.aborted || err instanceof ConnectionLostError) throw err;
      ctx.steps.note(`measuring the link and compressor failed (${(err as Error).message}); zstd -3 it is`);
    });
}

/** A write that finished: what it wrote, and how to prove the disk holds it (the step "verify"). */
interface WriteRun {
  verify(): Promise<WriteOutcome>;
  verifyDetail: (w: WriteOutcome) => string;
}

function verifiedDetail(w: WriteOutcome): string {
  return `sha256 ${w.sha256.slice(0, 16)}... matches`;
}

/** The classic verification: read the disk back after the write and hash it. */
function readBackAfterwards(ctx: UploadContext, conn: SshConnection, written: WriteOutcome): WriteRun {
  return {
    async verify() {
      const r = await ctx.runScript(conn, verifyScript(written.rawSize), "verifying the disk", {
        signal: ctx.signal,
      });
      checkDiskHash(r["disk-sha256"], written.sha256, written.rawSize);
      return written;
    },
    verifyDetail: (w) => `${verifiedDetail(w)} (read back after the write)`,
  };
}

function checkDiskHash(disk: string | undefined, expected: string, bytes: number): void {
  if (disk !== expected) {
    throw new UploadError(
      "verification_failed",
      `The disk's first ${bytes} bytes hash to ${disk ?? "(nothing)"}, the image to ${expected}`,
    );
  }
}

async function writeOnce(
  ctx: UploadContext,
  conn: SshConnection,
  wp: WritePlan,
  early: LocalStream | undefined,
): Promise<WriteRun> {
  if (wp.url !== undefined) {
    const written = await ctx.steps.run(
      "write",
      () => writeFromUrl(ctx, conn, wp),
      (r) => `${r.rawSize} bytes, ${r.transfer}`,
    );
    return readBackAfterwards(ctx, conn, written);
  }
  const path = wp.path;
  if (path === undefined) throw new Error("write plan without path or url");
  const stream = early ?? startStream(ctx, { ...wp, path });
  if (stream.framing === "extents") return writeExtents(ctx, conn, wp, path, stream);
  const written = await ctx.steps.run(
    "write",
    () => writeImageStream(ctx, conn, wp, path, stream),
    (r) => `${r.rawSize} bytes, ${r.transfer}`,
  );
  return readBackAfterwards(ctx, conn, written);
}

/** Progress of a local stream as the write step's data events (bytes read from the file, bytes sent). */
function progressOf(ctx: UploadContext, stream: LocalStream, total: number) {
  const baseRead = ctx.bytesRead;
  const baseSent = ctx.bytesSent;
  let lastEmit = 0;
  const emit = (force = false) => {
    const now = Date.now();
    if (!force && now - lastEmit < 200) return;
    lastEmit = now;
    ctx.steps.data("write", ctx.bytesRead, ctx.bytesSent, total);
  };
  return {
    onProgress: (p: { stdinBytes: number }) => {
      ctx.bytesSent = baseSent + p.stdinBytes;
      ctx.bytesRead = baseRead + stream.bytesRead();
      emit();
    },
    done: () => {
      ctx.bytesRead = baseRead + stream.bytesRead();
      emit(true);
    },
  };
}

/** A local failure (corrupt data, compressor) explains a remote failure better than the remote tail. */
async function preferLocalFailure(stream: LocalStream, err: unknown): Promise<never> {
  stream.destroy();
  const local = await stream.finish().then(
    () => undefined,
    (e: unknown) => e,
  );
  if (local instanceof UploadError && !(err instanceof ConnectionLostError)) throw local;
  throw err;
}

/**
 * The extent stream: the rescue system writes the image's non-zero runs and reads the disk back behind itself while
 * the rest is still arriving. The step "write" ends when the last run is written and flushed (the script says so on
 * stdout); "verify" waits for the rest of the read-back and compares the disk's sha256 with the image's.
 */
async function writeExtents(
  ctx: UploadContext,
  conn: SshConnection,
  wp: WritePlan,
  path: string,
  stream: LocalStream,
): Promise<WriteRun> {
  const script = extentWriteScript({
    compression: stream.wireCompression,
    ...(wp.expectedBytes !== undefined ? { expectedBytes: wp.expectedBytes } : {}),
  });
  const total = (await stat(path)).size;
  const progress = progressOf(ctx, stream, total);
  let markSeen: () => void = () => undefined;
  const written = new Promise<void>((resolve) => (markSeen = resolve));
  let stdout = "";
  const remote = ctx.runScript(conn, script, "writing the image", {
    stdin: stream.output,
    exitCodes: {
      [EXIT_NO_ROOM]: "rescue_space",
      [EXIT_SIZE_MISMATCH]: "corrupt_source",
      [EXIT_BAD_STREAM]: "remote_command_failed",
    },
    signal: ctx.signal,
    onProgress: progress.onProgress,
    onStdout: (chunk) => {
      if (stdout.length < 4096) stdout += chunk.toString("latin1");
      if (stdout.includes(WRITTEN_MARK)) markSeen();
    },
  });
  remote.catch(() => undefined); // awaited below; this only keeps an early failure from being unhandled
  let hashTool: string | undefined;
  const outcome = await ctx.steps.run(
    "write",
    async (): Promise<WriteOutcome> => {
      try {
        await Promise.race([written, remote]);
      } catch (err) {
        return preferLocalFailure(stream, err);
      }
      const local = await stream.finish();
      progress.done();
      const sha256 = wp.payloadSha256 ?? local.sha256;
      const stats = stream.extentStats();
      if (!sha256 || !stats) throw new Error("extent stream finished without its hash or statistics");
      return { sha256, rawSize: stats.totalBytes, transfer: stream.description, dataBytes: stats.dataBytes };
    },
    (r) =>
      `${r.rawSize} bytes, ${r.transfer}; zero blocks skipped: ${r.dataBytes ?? 0} bytes sent as data in ${stream.extentStats()?.extents ?? 0} run(s)`,
  );
  return {
    async verify() {
      const r = await remote;
      if (Number(r["disk-bytes"]) !== outcome.rawSize) {
        throw new UploadError(
          "verification_failed",
          `The rescue system read back ${r["disk-bytes"] ?? "no"} bytes, the image has ${outcome.rawSize}`,
        );
      }
      checkDiskHash(r["disk-sha256"], outcome.sha256, outcome.rawSize);
      hashTool = r["hash-tool"];
      return outcome;
    },
    verifyDetail: (w) =>
      `${verifiedDetail(w)} (read back behind the writer${hashTool ? `, ${hashTool}` : ""})`,
  };
}

/** Any other local file: its bytes as they are (compressed file) or compressed on the fly, hashed on both sides. */
async function writeImageStream(
  ctx: UploadContext,
  conn: SshConnection,
  wp: WritePlan,
  path: string,
  stream: LocalStream,
): Promise<WriteOutcome> {
  const input: WriteInput = { kind: "stdin" };
  const script = writeScript({
    input,
    compression: stream.wireCompression,
    format: wp.remoteFormat,
    ...(wp.expectedBytes !== undefined ? { expectedBytes: wp.expectedBytes } : {}),
    ...(wp.virtualSize !== undefined ? { virtualSize: wp.virtualSize } : {}),
  });
  // Progress counts bytes read from the local file.
  const progress = progressOf(ctx, stream, (await stat(path)).size);
  let result: Record<string, string>;
  try {
    result = await ctx.runScript(conn, script, "writing the image", {
      stdin: stream.output,
      exitCodes: {
        [EXIT_NO_ROOM]: "rescue_space",
        [EXIT_SIZE_MISMATCH]: "corrupt_source",
        [EXIT_UNSAFE_QCOW2]: "unsafe_image",
      },
      signal: ctx.signal,
      onProgress: progress.onProgress,
    });
  } catch (err) {
    return preferLocalFailure(stream, err);
  }
  const local = await stream.finish();
  progress.done();
  const expected = wp.payloadSha256 ?? local.sha256;
  const streamSha = result["stream-sha256"];
  const streamBytes = Number(result["stream-bytes"]);
  if (!expected || streamSha !== expected) {
    throw new UploadError(
      "verification_failed",
      `The rescue system received data hashing to ${streamSha ?? "(nothing)"}, but the image hashes to ${expected ?? "(unknown)"}`,
    );
  }
  if (wp.remoteFormat === "qcow2") {
    const raw = result["raw-sha256"];
    const rawBytes = Number(result["raw-bytes"]);
    if (!raw || !/^[0-9a-f]{64}$/.test(raw))
      throw new UploadError("verification_failed", "no raw hash after conversion");
    return {
      sha256: raw,
      rawSize: rawBytes,
      transfer: `${stream.description}, converted in the rescue system`,
    };
  }
  return { sha256: streamSha, rawSize: streamBytes, transfer: stream.description };
}

async function writeFromUrl(ctx: UploadContext, conn: SshConnection, wp: WritePlan): Promise<WriteOutcome> {
  const url = wp.url as string;
  const limits: DownloadLimits = { ...DEFAULT_DOWNLOAD_LIMITS, ...ctx.opts.download };
  const maxSeconds = downloadDeadlineSeconds(limits, wp.downloadBytes);
  const script = writeScript({
    input: { kind: "url", url, limits, ...(maxSeconds !== undefined ? { maxSeconds } : {}) },
    compression: wp.compression,
    format: wp.remoteFormat,
    ...(wp.expectedBytes !== undefined ? { expectedBytes: wp.expectedBytes } : {}),
    ...(wp.virtualSize !== undefined ? { virtualSize: wp.virtualSize } : {}),
  });
  // Progress: the rescue system downloads, so poll what its curl has read (/proc/PID/io) on a second channel.
  const stopPolling = new AbortController();
  const pollSignal = AbortSignal.any([stopPolling.signal, ctx.signal]);
  const polling = (async () => {
    for (let i = 0; i < 1_000_000 && !pollSignal.aborted; i++) {
      await pause(PROGRESS_POLL_MS, pollSignal);
      if (pollSignal.aborted) break;
      try {
        const r = await ctx.runScript(conn, downloadProgressScript(), "reading download progress", {
          signal: pollSignal,
        });
        const n = Number(r["rchar"]);
        if (Number.isFinite(n) && n > 0) ctx.steps.data("write", n, 0, wp.downloadBytes);
      } catch {
        // Progress is best effort.
      }
    }
  })();
  const curl = new CurlFailure();
  let result: Record<string, string>;
  try {
    result = await ctx.runScript(conn, script, "downloading and writing the image", {
      signal: ctx.signal,
      exitCodes: { [EXIT_NO_ROOM]: "rescue_space", [EXIT_UNSAFE_QCOW2]: "unsafe_image" },
      onStderr: (chunk) => curl.read(chunk),
    });
  } catch (err) {
    throw curl.explain(url, limits, maxSeconds, wp.downloadBytes) ?? err;
  } finally {
    stopPolling.abort();
    await polling;
  }
  const streamSha = result["stream-sha256"];
  const streamBytes = Number(result["stream-bytes"]);
  if (!streamSha || !/^[0-9a-f]{64}$/.test(streamSha) || !Number.isFinite(streamBytes) || streamBytes <= 0) {
    throw new UploadError("verification_failed", "The rescue system did not report what it downloaded");
  }
  if (wp.remoteFormat === "qcow2") {
    const raw = result["raw-sha256"];
    if (!raw || !/^[0-9a-f]{64}$/.test(raw))
      throw new UploadError("verification_failed", "no raw hash after conversion");
    return {
      sha256: raw,
      rawSize: Number(result["raw-bytes"]),
      transfer: "downloaded by the rescue system, converted there",
    };
  }
  return { sha256: streamSha, rawSize: streamBytes, transfer: "downloaded by the rescue system" };
}

/** Reads the download stage's stderr: curl's own message and the exit status it reported, if it failed. */
class CurlFailure {
  private text = "";
  read(chunk: Buffer): void {
    // Only the last few KiB matter (curl's message and the mark come at the end).
    this.text = (this.text + chunk.toString("utf8")).slice(-8192);
  }

  /** A download_stalled error when curl gave up on a stalled or too slow download (exit 28), else undefined. */
  explain(
    url: string,
    limits: DownloadLimits,
    maxSeconds: number | undefined,
    announced: number | undefined,
  ): UploadError | undefined {
    const exit = new RegExp(`${DOWNLOAD_FAILED_MARK} curl-exit=(\\d+)`).exec(this.text)?.[1];
    if (exit !== "28") return undefined;
    const said = /curl: \(28\)[^\n]*/.exec(this.text)?.[0] ?? "curl: (28)";
    const kib = (n: number) => `${(n / 1024).toFixed(1)} KiB/s`;
    const after =
      "nothing was snapshotted; check the server that hosts the image, or download it yourself and upload it with --image-path";
    if (/too slow/i.test(said)) {
      return new UploadError(
        "download_stalled",
        `The rescue system's download of ${url} stalled: less than ${kib(limits.lowSpeedBytesPerSecond)} for ${limits.lowSpeedSeconds} s (${said}); ${after}`,
      );
    }
    if (maxSeconds !== undefined && /timed out after/i.test(said)) {
      return new UploadError(
        "download_stalled",
        `The rescue system's download of ${url} was not finished within ${maxSeconds} s, the time allowed for ${announced ?? "?"} bytes (${limits.deadlineBaseSeconds} s plus ${kib(limits.deadlineBytesPerSecond)}) (${said}); ${after}`,
      );
    }
    return new UploadError(
      "url_unavailable",
      `The rescue system could not connect to ${url} in time (${said}); nothing was snapshotted`,
    );
  }
}

/** How often the download progress of the rescue system is read. */
const PROGRESS_POLL_MS = 1000;

export async function shutdownAndWait(ctx: UploadContext, serverId: number): Promise<void> {
  await ctx.steps.run("shutdown", async () => {
    const action = await ctx.client.servers.shutdown(serverId, { signal: ctx.signal });
    await ctx.wait([action]);
    try {
      await ctx.client.servers.waitForStatus(serverId, "off", {
        signal: ctx.signal,
        timeoutMs: ctx.waits.shutdownTimeoutMs,
        intervalMs: ctx.waits.pollIntervalMs,
      });
      return;
    } catch (err) {
      if (ctx.signal.aborted) throw ctx.aborted();
      ctx.steps.note(
        `server ${serverId} did not power off within ${ctx.waits.shutdownTimeoutMs} ms; cutting power (${(err as Error).message})`,
      );
    }
    const off = await ctx.client.servers.poweroff(serverId, { signal: ctx.signal });
    await ctx.wait([off]);
    await ctx.client.servers.waitForStatus(serverId, "off", {
      signal: ctx.signal,
      timeoutMs: ctx.waits.shutdownTimeoutMs,
      intervalMs: ctx.waits.pollIntervalMs,
    });
  });
}
