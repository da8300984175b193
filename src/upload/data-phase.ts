/**
 * The data phase: connect, discard, measure the link and compressor, write, verify; retried from the start on a
 * dropped SSH connection. How each kind of source is written is in writers.ts.
 */
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import type { Server } from "../hcloud/schema.js";
import { ExecError, type SshConnection, type SshKeyPair } from "../ssh/index.js";
import { ConnectionLostError } from "../run/remote.js";
import { UploadError } from "./errors.js";
import { discardCommand } from "./rescue.js";
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
import type { LocalStream } from "./stream.js";
import { tool } from "./tools.js";
import type { LevelReport, UploadContext } from "./context.js";
import { checkServerExists, connectRescue } from "./server-steps.js";
import { writeOnce, type WriteOutcome, type WritePlan } from "./writers.js";

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
