/**
 * Choosing the zstd level from the link and the CPU. On a slow link a higher level sends fewer bytes; on a fast one a
 * lower level keeps up. Both sides are measured at the start of the data phase: the link with a short probe through
 * the SSH connection (probeLink), the compressor by compressing a sample of the image at a few levels
 * (measureLevel). `chooseLevel` is the decision, a pure function of those measurements.
 *
 * The model, per byte of image data (zero blocks are never compressed or sent, see extents.ts):
 *   CPU time  = (compress seconds per byte at the level + other client work per byte) / cores
 *   link time = compressed bytes per byte (the level's ratio) / link rate
 *   time      = the larger of the two (compression, hashing and sending run at once)
 * The level with the least time wins; among levels within TIE of the best, the one sending the fewest bytes.
 */
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { open } from "node:fs/promises";
import { Readable } from "node:stream";
import type { SshConnection } from "../ssh/index.js";
import { exec } from "../ssh/index.js";
import { bashCommand, parseResult } from "../run/remote.js";
import { EXTENT_BLOCK, isZero } from "./extents.js";

/**
 * The levels measured, lowest first (each one costs more to measure than the one before); -1 is `--fast=1`. The first
 * ALWAYS_MEASURED are measured on every link, the others while a tighter level could still keep up. None above 6: the
 * benchmark measured zstd -9 -T0 taking the client past 300 MB (tree sum 341 MiB on 2 cores), for about 5% fewer
 * bytes than -6 on its image.
 */
export const CANDIDATE_LEVELS: readonly number[] = [-1, 1, 3, 6];
export const ALWAYS_MEASURED = 3;

/** zstd's arguments for a level (negative: --fast=N). */
export function levelArgs(level: number): string[] {
  if (level < 0) return [`--fast=${-level}`];
  return [...(level > 19 ? ["--ultra"] : []), `-${level}`];
}

/** How a level reads in messages: "-6", "--fast=1". */
export function levelName(level: number): string {
  return level < 0 ? `--fast=${-level}` : `-${level}`;
}
/** Levels within this share of the best time count as equally fast. */
export const TIE = 0.03;

export interface LevelSample {
  level: number;
  /** Single-threaded compression: seconds per input byte. */
  secondsPerByte: number;
  /** Compressed bytes per input byte. */
  ratio: number;
}

export interface LevelInput {
  /** The link's measured rate towards the server, bytes per second. */
  linkBytesPerSecond: number;
  /** Cores the client may use (zstd runs one worker per core). */
  cores: number;
  /** Other client CPU per byte of data (hashing, encryption), seconds. */
  otherSecondsPerByte: number;
  /** Measured levels, any order. */
  samples: readonly LevelSample[];
}

export interface LevelEstimate {
  level: number;
  /** Estimated seconds per byte of data: CPU-bound, link-bound, the larger. */
  cpu: number;
  link: number;
  time: number;
}

export interface LevelChoice {
  level: number;
  estimates: LevelEstimate[];
  /** "link" when the chosen level leaves the link the bottleneck, "cpu" when compression is. */
  bound: "link" | "cpu";
  /**
   * Whether a level above every measured one might still do better: true while the highest measured level is
   * link-bound (a slower, tighter level could still keep up). Measuring can stop when false.
   */
  measureHigher: boolean;
}

export function estimate(input: LevelInput, s: LevelSample): LevelEstimate {
  const cores = Math.max(1, input.cores);
  const cpu = (s.secondsPerByte + input.otherSecondsPerByte) / cores;
  const link = s.ratio / Math.max(1, input.linkBytesPerSecond);
  return { level: s.level, cpu, link, time: Math.max(cpu, link) };
}

/** The level to use, from the measurements. Pure. Throws without samples. */
export function chooseLevel(input: LevelInput): LevelChoice {
  const samples = [...input.samples].sort((a, b) => a.level - b.level);
  if (samples.length === 0) throw new Error("chooseLevel: no measured level");
  const estimates = samples.map((s) => estimate(input, s));
  const best = Math.min(...estimates.map((e) => e.time));
  // Among the (nearly) fastest, send the fewest bytes.
  const near = samples.filter((_, i) => estimates[i]!.time <= best * (1 + TIE));
  const chosen = near.reduce((a, b) => (b.ratio < a.ratio ? b : a));
  const e = estimates[samples.indexOf(chosen)]!;
  const top = estimates[estimates.length - 1]!;
  return {
    level: chosen.level,
    estimates,
    bound: e.cpu >= e.link ? "cpu" : "link",
    measureHigher: top.cpu < top.link,
  };
}

/** A human line for a choice, e.g. "zstd -6: link 98 Mbit/s, 1 core; -3 would take 12% longer". */
export function describeChoice(choice: LevelChoice, input: LevelInput): string {
  const mbit = (input.linkBytesPerSecond * 8) / 1e6;
  const chosen = choice.estimates.find((e) => e.level === choice.level)!;
  const others = choice.estimates
    .filter((e) => e.level !== choice.level)
    .map(
      (e) =>
        `${levelName(e.level)} ${e.time >= chosen.time ? "+" : ""}${Math.round((e.time / chosen.time - 1) * 100)}%`,
    );
  return (
    `${levelName(choice.level)} chosen for a ${mbit.toFixed(0)} Mbit/s link and ${input.cores} core(s), ${choice.bound}-bound` +
    (others.length ? ` (estimated time of the others: ${others.join(", ")})` : "")
  );
}

// ---- measurements ----

/** Bytes of image data compressed per measured level. */
export const SAMPLE_BYTES = 4 * 1024 * 1024;

/**
 * Up to SAMPLE_BYTES of the image's non-zero blocks, from four places spread over the file (reading at most 16 blocks
 * of EXTENT_BLOCK). Empty when the file has none there.
 */
export async function readSample(path: string, size: number): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    const parts: Buffer[] = [];
    let have = 0;
    const per = SAMPLE_BYTES / 4;
    for (const at of [0.15, 0.4, 0.6, 0.85]) {
      let pos = Math.floor((size * at) / EXTENT_BLOCK) * EXTENT_BLOCK;
      for (let tries = 0; tries < 4 && pos < size && have < SAMPLE_BYTES; tries++, pos += EXTENT_BLOCK) {
        const buf = Buffer.alloc(Math.min(EXTENT_BLOCK, size - pos));
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        const block = buf.subarray(0, bytesRead);
        if (isZero(block)) continue;
        parts.push(block.subarray(0, Math.min(per, block.length)));
        have += Math.min(per, block.length);
        break;
      }
    }
    return Buffer.concat(parts);
  } finally {
    await fh.close();
  }
}

/**
 * zstd's own benchmark of one level on the sample file (`zstd -bLEVEL -i0 --single-thread`: in memory, timed inside
 * zstd, no pipes), in a bounded wait. Its "MB/s" are 10^6 bytes per second.
 */
export function measureLevel(
  zstd: string,
  level: number,
  sampleFile: string,
  timeoutMs = 10_000,
): Promise<LevelSample> {
  const args = [
    ...(level < 0 ? [`--fast=${-level}`, "-b"] : [`-b${level}`]),
    "-i0",
    "--single-thread",
    sampleFile,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(zstd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    const take = (c: Buffer) => (out = (out + c.toString("latin1")).slice(-4096));
    child.stdout.on("data", take);
    child.stderr.on("data", take);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      const m = [...out.matchAll(/(\d+) ->\s+(\d+) \(x[\d.]+\),\s+([\d.]+) MB\/s/g)].pop();
      if (code !== 0 || !m)
        return reject(new Error(`zstd ${args.join(" ")} failed (${code}): ${out.trim()}`));
      const [inBytes, outBytes, mbps] = [Number(m[1]), Number(m[2]), Number(m[3])];
      if (!(inBytes > 0 && mbps > 0)) return reject(new Error(`zstd benchmark: ${m[0]}`));
      resolve({ level, secondsPerByte: 1 / (mbps * 1e6), ratio: outBytes / inBytes });
    });
  });
}

/** Seconds per byte of sha256 in this process (what hashing the image while streaming costs). */
export function measureHash(sample: Buffer): number {
  const started = process.hrtime.bigint();
  createHash("sha256").update(sample).digest();
  return Number(process.hrtime.bigint() - started) / 1e9 / Math.max(1, sample.length);
}

export interface ProbeResult {
  bytesPerSecond: number;
  bytes: number;
  seconds: number;
}

/** Seconds the remote side of the probe drops first (connection start, window growth). */
export const PROBE_WARMUP_S = 0.08;

/**
 * The link's rate towards the server: random bytes into the rescue system for about `ms` (at most `maxBytes`). The
 * remote side drops the first PROBE_WARMUP_S and times the rest itself, from there to the end of the input, so the
 * start of the command and its exit do not count.
 */
export async function probeLink(
  conn: SshConnection,
  opts: { ms?: number; maxBytes?: number; signal?: AbortSignal } = {},
): Promise<ProbeResult> {
  const ms = opts.ms ?? 250;
  const maxBytes = opts.maxBytes ?? 64 * 1024 * 1024;
  const chunk = randomBytes(256 * 1024); // incompressible; SSH does not compress here anyway
  let sent = 0;
  let started = 0n;
  const input = new Readable({
    read() {
      if (started === 0n) started = process.hrtime.bigint();
      const elapsed = Number(process.hrtime.bigint() - started) / 1e6;
      if (sent >= maxBytes || elapsed >= ms) {
        this.push(null);
        return;
      }
      sent += chunk.length;
      this.push(chunk);
    },
  });
  const command =
    `timeout ${PROBE_WARMUP_S} cat > /dev/null || true; s=$(date +%s%N); n=$(wc -c); e=$(date +%s%N); ` +
    'echo "HETZNIX-RESULT bytes=$n ns=$(( e - s ))"';
  const r = await exec(conn, bashCommand(command), {
    stdin: input,
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  const result = parseResult(r.stdoutTail) ?? {};
  const bytes = Number(result["bytes"]);
  const seconds = Number(result["ns"]) / 1e9;
  if (r.exitCode !== 0 || !(bytes > 0) || !(seconds > 0)) {
    throw new Error(`the link probe failed (exit ${String(r.exitCode)}: ${r.stderrTail.trim()})`);
  }
  return { bytesPerSecond: bytes / seconds, bytes, seconds };
}
