/**
 * The hetznix client, as a child process so its CPU time and memory are measured alone. Two modes:
 * - "data": one data phase against a server already in rescue: connect, discard, stream the image compressed,
 *   verify: `writeAndVerify` from src/upload, the same function the upload runs;
 * - "upload": a whole `uploadImage` (inspect, hash, lookup, server, rescue, data phase, shutdown, snapshot, cleanup).
 * Prints one JSON line with its own timings.
 *
 * Input: argv[2] = JSON ClientRequest; the emulator's endpoint and token come from the environment (the token is a
 * random one of the local emulator; never printed).
 */
import { readFile } from "node:fs/promises";
import { HCloudClient } from "../src/hcloud/index.js";
import {
  UploadContext,
  uploadImage,
  writeAndVerify,
  type UploadOptions,
  type WritePlan,
} from "../src/upload/sequence.js";
import {
  ENDPOINT_ENV,
  TOKEN_ENV,
  type ClientRequest,
  type ClientResult,
  type DataPhaseRequest,
  type UploadRequest,
} from "./protocol.js";
import type { SshKeyPair } from "../src/ssh/keys.js";

async function main(): Promise<void> {
  const req = JSON.parse(process.argv[2] ?? "{}") as ClientRequest;
  const endpoint = process.env[ENDPOINT_ENV];
  const token = process.env[TOKEN_ENV];
  if (!endpoint || !token) throw new Error(`${ENDPOINT_ENV} and ${TOKEN_ENV} must be set`);
  const pollMs = req.mode === "upload" ? req.pollMs : undefined;
  const client = new HCloudClient({
    token,
    endpoint,
    ...(pollMs ? { waitDefaults: { pollDelay: () => pollMs } } : {}),
  });
  const result = req.mode === "data" ? await dataPhase(client, req) : await upload(client, req);
  process.stdout.write(JSON.stringify(result) + "\n");
}

async function dataPhase(client: HCloudClient, req: DataPhaseRequest): Promise<ClientResult> {
  const server = await client.servers.getById(req.serverId);
  const privateKey = await readFile(req.keyFile, "utf8");
  const pair: SshKeyPair = { publicKey: req.publicKey, privateKey, fingerprint: "" };
  const ctx = new UploadContext("upload", { client }, req.image);
  const plan: WritePlan = {
    path: req.image,
    compression: "none",
    remoteFormat: "raw",
    expectedBytes: req.imageBytes,
    codec: req.codec,
    ...(req.sha256 ? { payloadSha256: req.sha256 } : {}),
  };
  const started = process.hrtime.bigint();
  const written = await writeAndVerify(ctx, server, pair, plan, undefined);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return {
    seconds,
    steps: ctx.steps.timings.map((t) => ({
      step: t.step,
      status: t.status,
      durationMs: t.durationMs,
      startMs: t.startMs,
      ...(t.detail ? { detail: t.detail } : {}),
    })),
    bytesRead: ctx.bytesRead,
    bytesSent: ctx.bytesSent,
    transfer: written.transfer,
  };
}

async function upload(client: HCloudClient, req: UploadRequest): Promise<ClientResult> {
  const started = process.hrtime.bigint();
  // What was read (and compressed) ahead while the server was being created and booted: the bytes already read
  // when the write step's first progress arrives.
  let writeStarted = false;
  let readAhead: number | undefined;
  const options: UploadOptions = {
    client,
    image: { path: req.image },
    architecture: "x86",
    location: "fsn1",
    ...(req.codec ? { codec: req.codec } : {}),
    ...(req.force ? { force: true } : {}),
    ...(req.base ? { base: req.base } : {}),
    ...(req.series ? { series: req.series } : {}),
    onEvent: (e) => {
      if (e.kind === "step" && e.step === "write" && e.status === "start") writeStarted = true;
      if (e.kind === "data" && e.phase === "write" && writeStarted && readAhead === undefined)
        readAhead = e.bytesRead;
    },
  };
  const r = await uploadImage(options);
  // The level chosen from the link (step "measure"), else the one the transfer names ("zstd -3 -T0, incremental").
  const named = /\bzstd (?:-(\d+)|--fast=(\d+))/.exec(r.transfer ?? "");
  const level =
    r.levelChoice?.level ?? (named ? (named[1] ? Number(named[1]) : -Number(named[2])) : undefined);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return {
    seconds,
    steps: r.steps.map((t) => ({
      step: t.step,
      status: t.status,
      durationMs: t.durationMs,
      startMs: t.startMs,
      ...(t.detail ? { detail: t.detail } : {}),
    })),
    bytesRead: r.bytesRead,
    bytesSent: r.bytesSent,
    ...(r.transfer ? { transfer: r.transfer } : {}),
    reused: r.reused,
    imageId: r.imageId,
    ...(readAhead !== undefined ? { readAheadBytes: readAhead } : {}),
    ...(level !== undefined ? { level } : {}),
    ...(r.incremental !== undefined ? { incremental: r.incremental } : {}),
    ...(r.fallback !== undefined ? { fallback: r.fallback } : {}),
  };
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench client: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
