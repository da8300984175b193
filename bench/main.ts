/**
 * `npm run bench [-- --quick]`: hetznix's upload against today's tool (hcloud-upload-image's data path) and against
 * the physical limit, on links shaped with tc, with real rescue hosts from the emulator.
 *
 * 1. A realistic image (ext4 in a raw disk image, real files from this machine), cached under bench/.work/.
 * 2. Data phase, on one emulated server in rescue, per link rate: the baseline (OpenSSH client, the file on stdin,
 *    `dd of=/dev/sda bs=4M conv=sparse && sync`), hetznix's `writeAndVerify` per codec, and the limit (zstd -3 size
 *    / rate, or zstd -3's own time where longer). Runs are interleaved; medians are reported.
 * 3. A whole upload against the emulator at its real latencies (speed 1), each step's start, duration and share,
 *    next to the sum of the steps (the same steps strictly one after another); then the same upload again, which
 *    must find the existing snapshot.
 * Everything started (emulator, rescue hosts, tc qdisc, children, key file) is removed at the end and on Ctrl-C.
 */
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import {
  ensureImage,
  FULL_IMAGE,
  QUICK_IMAGE,
  MiB,
  zstdSize,
  type BenchImage,
  type ImageSpec,
} from "./images.js";
import { isStopping, onCleanup } from "./cleanup.js";
import { measureChild, type Measurement } from "./measure.js";
import { clientCommand, cpuPlan, placeOwnTree, type CpuMode, type CpuPlan } from "./cpu.js";
import { measureLoopbackRate, shapeLoopback, type Shaping } from "./shape.js";
import {
  carrySections,
  childEnv,
  loadAverage,
  parseClientResult,
  ROOT,
  runBenchmark,
  runClient,
  WORK,
  writeMarkdown,
} from "./run-client.js";
import { bootRescueTarget, startBenchEmulator, type BenchEmulator, type RescueTarget } from "./target.js";
import { type ClientResult, type DataPhaseRequest, type StepRecord } from "./protocol.js";
import {
  fmt,
  levelsUsed,
  machineInfo,
  median,
  summarize,
  table,
  verdict,
  type ConfigResult,
  type RunSample,
  type Summary,
} from "./report.js";
import type { CodecSpec } from "../src/upload/compress.js";

const BASELINE_COMMAND = "bash -c 'set -euo pipefail && dd of=/dev/sda bs=4M conv=sparse && sync'";
/** Address blocks of the two emulators (data phase: fast control plane; whole upload: real latencies). */
const DATA_PREFIX = "127.78.9.";
const WHOLE_PREFIX = "127.78.11.";
/** A spare address where shaping is checked with a plain TCP transfer before it is relied on. */
const CHECK_IP = "127.78.10.9";

const log = (line: string): void => {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
};

interface Options {
  quick: boolean;
  image: ImageSpec;
  rates: number[];
  runs: number;
  /** Baseline runs per rate (Mbit/s -> runs); `default` for rates not listed. */
  baselineRuns: { default: number; perRate: Map<number, number> };
  /** Runs of each codec after the first (the comparison). */
  codecRuns: number;
  codecs: CodecSpec[];
  whole: boolean;
  wholeRate: number;
  /** CPU placements of the data phase, the first is the headline (split: each side its own cores). */
  cpuModes: CpuMode[];
  data: boolean;
  out: string[];
  command: string;
  /** A paragraph put under the title (e.g. why this is a quick run's table). */
  note?: string;
}

function parseCodec(text: string): CodecSpec {
  const [codec, level, threads] = text.split(":");
  if (codec !== "zstd" && codec !== "gzip" && codec !== "none") throw new Error(`unknown codec ${text}`);
  return {
    codec,
    ...(level ? { level: Number(level) } : {}),
    ...(threads ? { threads: Number(threads) } : {}),
  };
}

function codecLabel(c: CodecSpec): string {
  if (c.codec === "zstd")
    return c.level === undefined ? "zstd, level chosen" : `zstd -${c.level} -T${c.threads ?? 0}`;
  if (c.codec === "gzip") return `gzip -${c.level ?? 1}`;
  return "uncompressed";
}

/** "N" or "RATE:N,RATE:N" (e.g. 100:1,1000:3: one baseline run at 100 Mbit/s, three at 1 Gbit/s). */
function parseBaselineRuns(
  text: string | undefined,
  fallback: number,
  int: (v: string | undefined, d: number, min: number) => number,
): Options["baselineRuns"] {
  const perRate = new Map<number, number>();
  if (text === undefined) return { default: fallback, perRate };
  if (!text.includes(":")) return { default: int(text, fallback, 0), perRate };
  for (const part of text.split(",")) {
    const [rate, runs] = part.split(":");
    perRate.set(int(rate, 0, 1), int(runs, 0, 0));
  }
  return { default: fallback, perRate };
}

/** The command as typed, without --note's text. */
function commandLine(argv: string[]): string {
  const shown: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--note") i++;
    else if (!a.startsWith("--note=")) shown.push(a);
  }
  return ["npm run bench", ...(shown.length ? ["--", ...shown] : [])].join(" ");
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean", default: false },
      runs: { type: "string" },
      "baseline-runs": { type: "string" },
      "codec-runs": { type: "string" },
      rates: { type: "string" },
      codecs: { type: "string" },
      "image-mib": { type: "string" },
      "skip-whole": { type: "boolean", default: false },
      "skip-data": { type: "boolean", default: false },
      "whole-rate": { type: "string" },
      cpu: { type: "string" },
      out: { type: "string" },
      "write-benchmarks": { type: "boolean", default: false },
      note: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      [
        "npm run bench -- [--quick] [options]",
        "  --quick              1 GiB image, fewer runs (under 10 minutes); writes bench/.work/quick.md",
        "  --runs N             hetznix runs per configuration (default 5; quick 3)",
        "  --baseline-runs N    baseline runs per rate (default 3; quick 2), or per rate: 100:1,1000:3",
        "  --rates 100,1000     link rates in Mbit/s",
        "  --codecs LIST        hetznix codecs, e.g. zstd,zstd:1:0,gzip:1 (codec:level:threads); the first is the",
        "                       headline, the others a comparison",
        "  --codec-runs N       runs of each codec after the first (default 1)",
        "  --image-mib N        a custom image of N MiB (smoke tests)",
        "  --skip-data / --skip-whole   leave out the data-phase or the whole-upload part",
        "  --whole-rate N       link rate of the whole upload (default 100)",
        "  --cpu LIST           data-phase CPU placements, the first the headline: split (client and rescue side on",
        "                       cores of their own, as on Hetzner) and/or shared (default split,shared)",
        "  --out FILE           where the markdown goes (default BENCHMARKS.md; quick: bench/.work/quick.md)",
        "  --write-benchmarks   also write BENCHMARKS.md (for a quick run)",
        "  --note TEXT          a paragraph under the report's title",
        "",
      ].join("\n"),
    );
    process.exit(0);
  }
  const quick = values.quick;
  const int = (v: string | undefined, d: number, min: number): number => {
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`expected an integer >= ${min}, got ${v}`);
    return n;
  };
  let image = quick ? QUICK_IMAGE : FULL_IMAGE;
  if (values["image-mib"] !== undefined) {
    const mib = int(values["image-mib"], 0, 16);
    image = { name: `custom-${mib}m`, sizeBytes: mib * MiB, fileBytes: Math.round(mib * MiB * 0.33) };
  }
  const out: string[] = [];
  if (values.out) out.push(resolve(values.out));
  else out.push(quick ? join(WORK, "quick.md") : join(ROOT, "BENCHMARKS.md"));
  if (values["write-benchmarks"] && !out.includes(join(ROOT, "BENCHMARKS.md")))
    out.push(join(ROOT, "BENCHMARKS.md"));
  return {
    quick,
    image,
    rates: (values.rates ?? "100,1000").split(",").map((r) => int(r, 0, 1)),
    runs: int(values.runs, quick ? 3 : 5, 1),
    baselineRuns: parseBaselineRuns(values["baseline-runs"], quick ? 2 : 3, int),
    codecRuns: int(values["codec-runs"], 1, 1),
    codecs: (values.codecs ?? "zstd").split(",").map(parseCodec),
    whole: !values["skip-whole"],
    wholeRate: int(values["whole-rate"], 100, 1),
    cpuModes: (values.cpu ?? "split,shared").split(",").map((m) => {
      if (m !== "split" && m !== "shared") throw new Error(`unknown CPU mode ${m}`);
      return m;
    }),
    data: !values["skip-data"],
    out,
    command: commandLine(argv),
    ...(values.note ? { note: values.note } : {}),
  };
}

// ---- data phase ----

interface DataResults {
  configs: ConfigResult[];
  /** Per rate: measured rate of the shaping check (Mbit/s). */
  checkedRates: Map<number, number>;
  /** hetznix per-step medians (connect, discard, write, verify) per config label + rate. */
  steps: Map<string, Record<string, number>>;
}

/** What local work over the image costs on this machine (for the limit and the sequential comparison). */
interface LocalCosts {
  /** zstd -3 -T0 over the image: the client's compression time. */
  compress: { seconds: number; bytes: number };
  /** Seconds to hash the whole image with the tools a rescue system could use. */
  hashTools: { tool: string; seconds: number }[];
  /** A separate sha256 pass over the image in node (what the upload's hash step does). */
  nodeHashSeconds: number;
}

async function measureLocal(image: BenchImage): Promise<LocalCosts> {
  log(`timing zstd -3 -T0 over the image (the client's compression time, for the limit)`);
  const compress = await zstdSize(image.path, 3, 0);
  log(`zstd -3 -T0: ${fmt.s(compress.seconds)}, ${fmt.mb(compress.bytes)}`);
  const hashes = await hashTools(image.path);
  const script =
    'const {createHash}=require("node:crypto");const {createReadStream}=require("node:fs");' +
    'const h=createHash("sha256");createReadStream(process.argv[1],{highWaterMark:1<<20})' +
    '.on("data",(c)=>h.update(c)).on("end",()=>{h.digest("hex")});';
  const m = await measureChild(process.execPath, ["-e", script, image.path], { timeoutMs: 300_000 });
  const nodeHashSeconds = m.exitCode === 0 ? m.wallSeconds : NaN;
  log(
    `hashing the image: ${hashes.map((h) => `${h.tool} ${fmt.s(h.seconds)}`).join(", ")}, node ${fmt.s(nodeHashSeconds)}`,
  );
  return { compress, hashTools: hashes, nodeHashSeconds };
}

/** How long `sha256sum` and `openssl dgst -sha256` take over the image here (the rescue side hashes the stream). */
async function hashTools(path: string): Promise<{ tool: string; seconds: number }[]> {
  const out: { tool: string; seconds: number }[] = [];
  for (const [tool, cmd] of [
    ["sha256sum", "sha256sum"],
    ["openssl dgst -sha256", "openssl dgst -sha256"],
  ] as const) {
    try {
      const m = await measureChild("sh", ["-c", `${cmd} > /dev/null`], {
        stdinFile: path,
        timeoutMs: 300_000,
      });
      if (m.exitCode === 0) out.push({ tool, seconds: m.wallSeconds });
    } catch {
      // tool missing: leave it out
    }
  }
  return out;
}

async function oneRun(
  kind: "baseline" | "hetznix",
  target: RescueTarget,
  bench: BenchEmulator,
  shaping: Shaping,
  image: BenchImage,
  codec: CodecSpec,
  timeoutMs: number,
  plan: CpuPlan,
): Promise<{ sample: RunSample; steps?: StepRecord[]; transfer?: string }> {
  // This process's tree (emulator, proxies, rescue hosts) on the rescue side's cores; the client on its own.
  await placeOwnTree(plan.rescue ?? plan.all);
  // Same start for both: an empty (discarded) disk, nothing pending in the page cache.
  await target.exec("blkdiscard --force /dev/sda && sync");
  const before = await shaping.counters();
  const proxyBefore = bench.rescueCounters(target.serverId);
  let m: Measurement;
  let wall: number;
  let steps: StepRecord[] | undefined;
  let transfer: string | undefined;
  if (kind === "baseline") {
    const c = clientCommand(plan, "ssh", [...target.sshArgs, BASELINE_COMMAND]);
    m = await measureChild(c.cmd, c.args, {
      stdinFile: image.path,
      timeoutMs,
    });
    if (m.exitCode !== 0) throw new Error(`baseline failed (exit ${m.exitCode}): ${m.stderrTail.trim()}`);
    wall = m.wallSeconds;
  } else {
    const req: DataPhaseRequest = {
      mode: "data",
      serverId: target.serverId,
      image: image.path,
      imageBytes: image.sizeBytes,
      keyFile: target.keyFile,
      publicKey: target.pair.publicKey,
      codec,
    };
    m = await runClient(req, childEnv(bench), timeoutMs, plan);
    const r = parseClientResult(m);
    wall = r.seconds;
    steps = r.steps;
    transfer = r.transfer;
  }
  const after = await shaping.counters();
  const proxyAfter = bench.rescueCounters(target.serverId);
  const sample: RunSample = {
    wallSeconds: wall,
    cpuSeconds: m.cpuSeconds,
    maxRssBytes: m.maxRssBytes,
    peakTreeRssBytes: m.peakTreeRssBytes,
    wireUpBytes: after.up.bytes - before.up.bytes,
    wireDownBytes: after.down.bytes - before.down.bytes,
    ...(proxyBefore && proxyAfter ? { proxyInBytes: proxyAfter.bytesIn - proxyBefore.bytesIn } : {}),
  };
  return { sample, ...(steps ? { steps } : {}), ...(transfer ? { transfer } : {}) };
}

async function dataPhase(opts: Options, image: BenchImage): Promise<DataResults> {
  const bench = await startBenchEmulator(WORK, 100, DATA_PREFIX);
  const configs: ConfigResult[] = [];
  const checkedRates = new Map<number, number>();
  const stepSamples = new Map<string, Record<string, number[]>>();
  try {
    const target = await bootRescueTarget(bench);
    log(`rescue host ${target.ip} (server ${target.serverId}) answers`);
    for (const rate of opts.rates) {
      if (isStopping()) break;
      // Check the shaping with a plain TCP transfer (about 1.5 s of data) on a spare address first.
      const check = await shapeLoopback({ target: CHECK_IP, rateMbit: rate });
      let measured: number;
      try {
        measured = await measureLoopbackRate(CHECK_IP, Math.round((rate * 1e6 * 1.5) / 8));
      } finally {
        await check.remove();
      }
      checkedRates.set(rate, measured);
      log(`shaping check at ${rate} Mbit/s: ${measured.toFixed(1)} Mbit/s measured`);
      if (measured > rate * 1.2 || measured < rate * 0.5) {
        throw new Error(`shaping does not hold: ${measured.toFixed(1)} Mbit/s measured for ${rate} Mbit/s`);
      }
      const shaping = await shapeLoopback({ target: target.ip, port: 22, rateMbit: rate });
      try {
        const expected = (image.sizeBytes * 8) / (rate * 1e6);
        const timeoutMs = Math.round(Math.max(120, expected * 3 + 60) * 1000);
        const baseline: ConfigResult = {
          label: "baseline",
          kind: "baseline",
          placement: opts.cpuModes[0] ?? "split",
          rateMbit: rate,
          samples: [],
          errors: [],
        };
        // One configuration per codec and CPU placement; the first placement is the headline.
        const ours: { cfg: ConfigResult; codec: CodecSpec; codecIndex: number; plan: CpuPlan }[] = [];
        for (const mode of opts.cpuModes) {
          for (const [codecIndex, codec] of opts.codecs.entries()) {
            ours.push({
              cfg: {
                label: `hetznix, ${codecLabel(codec)}${mode === "shared" ? ", shared cores" : ""}`,
                kind: "hetznix",
                placement: mode,
                rateMbit: rate,
                samples: [],
                errors: [],
              },
              codec,
              codecIndex,
              plan: cpuPlan(mode),
            });
          }
        }
        // The baseline is link-bound at these rates: it runs with the headline placement only.
        const basePlan = cpuPlan(opts.cpuModes[0] ?? "split");
        const baselineRuns = opts.baselineRuns.perRate.get(rate) ?? opts.baselineRuns.default;
        const rounds = Math.max(opts.runs, baselineRuns, opts.codecs.length > 1 ? opts.codecRuns : 0);
        for (let i = 0; i < rounds && !isStopping(); i++) {
          if (i < baselineRuns) {
            log(`${rate} Mbit/s: baseline run ${i + 1}/${baselineRuns}`);
            try {
              const { sample } = await oneRun(
                "baseline",
                target,
                bench,
                shaping,
                image,
                { codec: "none" },
                timeoutMs,
                basePlan,
              );
              baseline.samples.push(sample);
              log(
                `  ${fmt.s(sample.wallSeconds)}, cpu ${fmt.s(sample.cpuSeconds)}, up ${fmt.mb(sample.wireUpBytes)}`,
              );
            } catch (err) {
              baseline.errors.push((err as Error).message);
              log(`  failed: ${(err as Error).message}`);
            }
          }
          for (const { cfg, codec, codecIndex, plan } of ours) {
            const runs = codecIndex === 0 ? opts.runs : opts.codecRuns;
            if (i >= runs || isStopping()) continue;
            log(`${rate} Mbit/s: ${cfg.label} run ${i + 1}/${runs}`);
            try {
              const { sample, steps, transfer } = await oneRun(
                "hetznix",
                target,
                bench,
                shaping,
                image,
                codec,
                timeoutMs,
                plan,
              );
              if (transfer) (cfg.transfers ??= []).push(transfer);
              cfg.samples.push(sample);
              const key = `${cfg.label}@${rate}`;
              const acc = stepSamples.get(key) ?? {};
              for (const s of steps ?? []) (acc[s.step] ??= []).push(s.durationMs / 1000);
              stepSamples.set(key, acc);
              log(
                `  ${fmt.s(sample.wallSeconds)}, cpu ${fmt.s(sample.cpuSeconds)}, up ${fmt.mb(sample.wireUpBytes)}, ` +
                  `peak ${fmt.mib(sample.peakTreeRssBytes)} (${(steps ?? []).map((s) => `${s.step} ${(s.durationMs / 1000).toFixed(1)}`).join(", ")})`,
              );
            } catch (err) {
              cfg.errors.push((err as Error).message);
              log(`  failed: ${(err as Error).message}`);
            }
          }
        }
        if (baselineRuns > 0) configs.push(baseline);
        configs.push(...ours.map((o) => o.cfg));
      } finally {
        await shaping.remove();
      }
    }
  } finally {
    await placeOwnTree(cpuPlan("shared").all).catch(() => 0);
    await bench.stop();
  }
  const steps = new Map<string, Record<string, number>>();
  for (const [key, acc] of stepSamples) {
    steps.set(key, Object.fromEntries(Object.entries(acc).map(([k, v]) => [k, median(v)])));
  }
  return { configs, checkedRates, steps };
}

// ---- whole upload at real latencies ----

interface WholeResults {
  rateMbit: number;
  first?: { wall: number; cpu: number; peak: number; result: ClientResult };
  again?: { wall: number; result: ClientResult };
  errors: string[];
}

async function wholeUpload(opts: Options, image: BenchImage): Promise<WholeResults> {
  const out: WholeResults = { rateMbit: opts.wholeRate, errors: [] };
  const bench = await startBenchEmulator(WORK, 1, WHOLE_PREFIX);
  // Every server of this emulator gets an address in WHOLE_PREFIX: shape them all (their sshd port only).
  const shaping = await shapeLoopback({ target: `${WHOLE_PREFIX}0/24`, port: 22, rateMbit: opts.wholeRate });
  // A hash cache of this run only: the first upload must not find a hash a previous run remembered.
  const cacheDir = await mkdtemp(join(WORK, "cache-"));
  const removeCache = onCleanup("hash cache", () => rm(cacheDir, { recursive: true, force: true }));
  try {
    const env = { ...childEnv(bench), XDG_CACHE_HOME: cacheDir };
    const expected = (image.sizeBytes * 8) / (opts.wholeRate * 1e6);
    const timeoutMs = Math.round((expected * 2 + 600) * 1000);
    log(`whole upload at real latencies (${opts.wholeRate} Mbit/s link)`);
    try {
      const m = await runClient({ mode: "upload", image: image.path }, env, timeoutMs);
      const result = parseClientResult(m);
      out.first = { wall: result.seconds, cpu: m.cpuSeconds, peak: m.peakTreeRssBytes, result };
      log(`  ${fmt.s(result.seconds)} (image ${result.imageId}, reused ${result.reused})`);
    } catch (err) {
      out.errors.push(`first upload: ${(err as Error).message}`);
      log(`  failed: ${(err as Error).message}`);
    }
    if (out.first && !isStopping()) {
      log(`the same upload again (the snapshot exists)`);
      try {
        const m = await runClient({ mode: "upload", image: image.path }, env, 120_000);
        const result = parseClientResult(m);
        out.again = { wall: m.wallSeconds, result };
        log(
          `  ${fmt.s(result.seconds)} inside the client, ${fmt.s(m.wallSeconds)} with process start (reused ${result.reused})`,
        );
      } catch (err) {
        out.errors.push(`second upload: ${(err as Error).message}`);
        log(`  failed: ${(err as Error).message}`);
      }
    }
  } finally {
    await shaping.remove();
    await bench.stop();
    await removeCache();
  }
  return out;
}

// ---- report ----

function render(
  opts: Options,
  machine: Awaited<ReturnType<typeof machineInfo>>,
  image: BenchImage,
  local: LocalCosts,
  data: DataResults | undefined,
  whole: WholeResults | undefined,
  startedAt: Date,
  seconds: number,
  load: { before: string; after: string },
): string {
  const lines: string[] = [];
  const kind = opts.quick ? "quick run" : "full run";
  lines.push(`# Benchmarks (${kind})`, "");
  if (opts.note) lines.push(opts.note, "");
  lines.push(
    "Made by `npm run bench` (full: 4 GiB image; the Date line says how long the run below took) or `npm run bench -- --quick` (1 GiB image, " +
      "under 10 minutes; writes bench/.work/quick.md). Needs root, tc, OpenSSH, zstd, e2fsprogs and GNU time; the " +
      "images are cached in bench/.work/. `npm run bench -- --help` lists the options.",
    "",
  );
  lines.push(
    `- Date: ${startedAt.toISOString().replace("T", " ").slice(0, 16)} UTC; took ${(seconds / 60).toFixed(1)} min`,
    `- Command: \`${opts.command}\``,
    `- Load (1, 5, 15 min averages from /proc/loadavg) at the start: ${load.before}; at the end: ${load.after}`,
    `- Machine: ${machine.cores} x ${machine.cpuModel}, ${machine.memoryGiB} GiB RAM, Linux ${machine.kernel}, Node ${machine.node}, ${machine.openssh}, ${machine.zstd}`,
    `- Image: ${image.name}, ext4 in a ${fmt.mib(image.sizeBytes)} raw disk image holding ${image.files} real files ` +
      `(${fmt.gb(image.fileBytes)} from /usr/share/doc, /usr/bin, /usr/sbin, /usr/lib); zstd -3: ${fmt.mb(image.zstd3Bytes)}`,
    `- Rescue host: the emulator's (real OpenSSH sshd in its own namespaces, /dev/sda = a loop device over a sparse file ` +
      `on this machine's disk), on loopback, the link shaped with tc htb on \`lo\` (both directions, no added delay).`,
    `- Baseline: hcloud-upload-image's data path for a local file: \`ssh root@IP "${BASELINE_COMMAND}" < image\` ` +
      `(OpenSSH client, the file on stdin as it is).`,
    `- hetznix: \`writeAndVerify\` from src/upload (connect; blkdiscard while the link is probed and the zstd level ` +
      `chosen; the extent stream, compressed; the rescue system writes it and reads the disk back behind itself; ` +
      `verify = the rest of that read-back and the sha256 comparison), in a child process with no hash cache; the ` +
      `client hashes the image while streaming it, as a default upload of a new image does (no snapshot of its size ` +
      `exists, so it skips the separate hash pass); its time is taken inside the child around that call (node's ` +
      `start-up left out; the baseline's time includes ssh's start, about 0.1 s).`,
    `- CPU placement: ${opts.cpuModes
      .map((m) =>
        m === "split"
          ? `"own cores" (split): the client (hetznix's child process, or the baseline's ssh) on core ${cpuPlan("split").client}, ` +
            `this process with the emulator, its TCP proxies and the rescue host (sshd and everything it runs) on ` +
            `core ${cpuPlan("split").rescue} (taskset; kernel work such as the loop device's writes is not placed), as ` +
            `on Hetzner, where they are different machines`
          : `"shared cores": both sides anywhere on the ${machine.cores} cores`,
      )
      .join("; ")}. The targets are judged on the first; the baseline runs with it only (it is link-bound).`,
    `- Limit: zstd -3 size / link rate, or zstd -3 -T0's own time over the image where that is longer.`,
    `- Medians of the runs; CPU = user+sys of the client's process tree; memory = peak of the tree's summed RSS ` +
      `(sampled every 100 ms) and of its largest process (rusage); wire = bytes through the shaped link towards ` +
      `the server (tc counter: SSH payload plus TCP/IP headers).`,
    "",
  );
  const targets: string[][] = [];
  if (data) {
    lines.push("## Data phase", "");
    for (const rate of opts.rates) {
      const summaries = data.configs.filter((c) => c.rateMbit === rate).map(summarize);
      const base = summaries.find((s) => s.kind === "baseline");
      const limit = Math.max((image.zstd3Bytes * 8) / (rate * 1e6), local.compress.seconds);
      const checked = data.checkedRates.get(rate);
      lines.push(
        `### ${rate} Mbit/s (shaping check: ${checked !== undefined ? checked.toFixed(1) : "n/a"} Mbit/s measured)`,
        "",
      );
      const rows: string[][] = [
        [
          "limit",
          "-",
          fmt.s(limit),
          base ? fmt.x(base.wall / limit) : "n/a",
          "1.00x",
          fmt.mb(image.zstd3Bytes),
          "-",
          "-",
        ],
      ];
      for (const s of summaries) {
        rows.push([
          s.label + (s.errors.length ? ` (${s.errors.length} failed)` : ""),
          String(s.runs),
          fmt.s(s.wall),
          base ? fmt.x(base.wall / s.wall) : "n/a",
          fmt.x(s.wall / limit),
          fmt.mb(s.wireUp),
          fmt.s(s.cpu),
          `${fmt.mib(s.peakTreeRss)} (${fmt.mib(s.maxRss)})`,
        ]);
      }
      lines.push(
        table(
          [
            "",
            "runs",
            "data phase",
            "speed-up vs baseline",
            "vs limit",
            "wire bytes up",
            "client CPU",
            "client peak memory (largest process)",
          ],
          rows,
        ),
        "",
      );
      const stepRows: string[][] = [];
      for (const s of summaries.filter((x) => x.kind === "hetznix")) {
        const st = data.steps.get(`${s.label}@${rate}`);
        if (!st) continue;
        stepRows.push([
          s.label,
          ...["connect", "discard", "measure", "write", "verify"].map((k) =>
            st[k] === undefined ? "-" : fmt.s(st[k]),
          ),
          fmt.x((st["write"] ?? NaN) / limit),
          base ? fmt.x(base.wall / (st["write"] ?? NaN)) : "n/a",
          levelsUsed(s.transfers),
        ]);
      }
      if (stepRows.length) {
        lines.push(
          table(
            [
              "hetznix steps (medians)",
              "connect",
              "discard",
              "measure",
              "write",
              "verify",
              "write vs limit",
              "baseline / write",
              "compression used (runs)",
            ],
            stepRows,
          ),
          "",
        );
      }
      const main = summaries.find((s) => s.kind === "hetznix");
      const shared = summaries.find((s) => s.kind === "hetznix" && s.placement === "shared" && s !== main);
      if (main && base) {
        const speedup = base.wall / main.wall;
        const where = main.placement === "split" ? " (own cores)" : " (shared cores)";
        const also = (f: (x: Summary) => string) => (shared ? `; shared cores: ${f(shared)}` : "");
        if (rate === 100) {
          targets.push([
            `data phase at 100 Mbit/s >= 8x faster than the baseline${where}`,
            fmt.x(speedup) + also((x) => fmt.x(base.wall / x.wall)),
            verdict(speedup, 8, "min"),
          ]);
          const vsLimit = main.wall / limit;
          targets.push([
            `data phase at 100 Mbit/s within 1.15x of the limit${where}`,
            fmt.x(vsLimit) + also((x) => fmt.x(x.wall / limit)),
            verdict(vsLimit, 1.15, "max"),
          ]);
        }
        if (rate === 1000) {
          targets.push([
            `data phase at 1 Gbit/s >= 4x faster than the baseline${where}`,
            fmt.x(speedup) + also((x) => fmt.x(base.wall / x.wall)),
            verdict(speedup, 4, "min"),
          ]);
        }
      }
    }
    if (local.hashTools.length) {
      lines.push(
        `Where the time goes: the client reads and hashes the whole image (sha256 in node), compresses only its ` +
          `non-zero blocks (${fmt.gb(image.dataBytes)} of ${fmt.gb(image.sizeBytes)}: the extent stream) and ` +
          `encrypts them for SSH; the rescue side decrypts, decompresses, writes the runs, and reads the whole image ` +
          `back behind the writer into one sha256. Hashing this image here takes ` +
          local.hashTools
            .map(
              (h) =>
                `${fmt.s(h.seconds)} with ${h.tool} (${((image.sizeBytes / h.seconds) * 1e-6).toFixed(0)} MB/s)`,
            )
            .join(", ") +
          `; zstd -3 -T0 takes ${fmt.s(local.compress.seconds)} over it.`,
        "",
      );
    }
    const peak = Math.max(
      0,
      ...data.configs.filter((c) => c.kind === "hetznix").map((c) => summarize(c).peakTreeRss),
    );
    targets.push([
      `client peak memory < 300 MB (${fmt.mib(image.sizeBytes)} image; tree sum)`,
      fmt.mb(peak),
      peak > 0 ? verdict(peak, 300e6, "max") : "NOT measured",
    ]);
  }
  if (whole) {
    lines.push(`## Whole upload against the emulator at real latencies (${whole.rateMbit} Mbit/s link)`, "");
    if (whole.first) {
      const r = whole.first.result;
      const total = r.seconds;
      const done = r.steps.filter((s) => s.status !== "skipped");
      const sum = done.reduce((a, s) => a + s.durationMs / 1000, 0);
      // Strictly one after another: the steps as they ran, plus the work that ran hidden under other steps done
      // on its own: a separate hash pass (when the upload hashed while streaming) and compressing the read-ahead.
      const hashedWhileStreaming = !r.steps.some((s) => s.step === "hash" && s.status === "done");
      const hashPass = hashedWhileStreaming ? local.nodeHashSeconds : 0;
      const readAhead = r.readAheadBytes ?? 0;
      const readAheadCompress = (readAhead / image.sizeBytes) * local.compress.seconds;
      const sequential = sum + hashPass + readAheadCompress;
      const saved = sequential - total;
      lines.push(
        table(
          ["step", "starts at", "duration", "share of the upload"],
          r.steps.map((s) =>
            s.status === "skipped"
              ? [s.step, fmt.s(s.startMs / 1000), `skipped${s.detail ? `: ${s.detail}` : ""}`, "-"]
              : [
                  s.step,
                  fmt.s(s.startMs / 1000),
                  fmt.s(s.durationMs / 1000),
                  `${((s.durationMs / 1000 / total) * 100).toFixed(1)}%`,
                ],
          ),
        ),
        "",
        `- Whole upload: ${fmt.s(total)} (client CPU ${fmt.s(whole.first.cpu)}, peak memory ${fmt.mib(whole.first.peak)}); ` +
          `sent ${fmt.mb(r.bytesSent)} for ${fmt.mib(image.sizeBytes)} read (${r.transfer ?? "?"}).`,
        `- Overlap: ` +
          (hashedWhileStreaming
            ? `the image was hashed while streaming (no separate pass; a pass over it takes ${fmt.s(hashPass)} ` +
              `here, measured); `
            : `the image was hashed in its own step before anything was created; `) +
          (r.readAheadBytes !== undefined
            ? `${fmt.mib(readAhead)} of it were read and compressed during the server's creation and boot ` +
              `(read-ahead; about ${fmt.s(readAheadCompress)} of zstd -3 -T0 work at its measured rate). `
            : `the read-ahead before the write step was not observed. `) +
          `The same steps strictly one after another: ${fmt.s(sequential)} (the step durations, ${fmt.s(sum)}, ` +
          `plus the hidden work); overlap saves ${fmt.s(saved)} (${((saved / sequential) * 100).toFixed(1)}%).`,
        "",
      );
      targets.push([
        "whole upload: work that can overlap the waits does",
        `${fmt.s(saved)} of ${fmt.s(sequential)} overlapped`,
        saved > 0.5 ? "shown" : "little overlap",
      ]);
    }
    if (whole.again) {
      const r = whole.again.result;
      lines.push(
        `- The same upload again (the snapshot exists): ${fmt.s(r.seconds)} inside the client ` +
          `(${fmt.s(whole.again.wall)} including process start), reused: ${String(r.reused)}; steps: ` +
          r.steps
            .map(
              (s) => `${s.step} ${fmt.s(s.durationMs / 1000)}${s.status === "skipped" ? " (skipped)" : ""}`,
            )
            .join(", "),
        "",
      );
      targets.push([
        "repeat upload of the unchanged image (its snapshot exists) answers in < 1 s",
        fmt.s(r.seconds),
        r.reused === true ? verdict(r.seconds, 1, "max") : "NOT met (not reused)",
      ]);
    }
    for (const e of whole.errors) lines.push(`- Failed: ${e}`);
    lines.push("");
  }
  if (targets.length) lines.push("## Targets", "", table(["target", "measured", ""], targets), "");
  const failures =
    data?.configs.flatMap((c) => c.errors.map((e) => `${c.label} @ ${c.rateMbit} Mbit/s: ${e}`)) ?? [];
  if (failures.length) lines.push("## Failed runs", "", ...failures.map((f) => `- ${f}`), "");
  return lines.join("\n");
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error("the benchmark needs root (tc, loop devices, namespaces)");
  const startedAt = new Date();
  const loadBefore = await loadAverage();
  const t0 = Date.now();
  await mkdir(WORK, { recursive: true });
  const [image, machine] = await Promise.all([ensureImage(opts.image, WORK, log), machineInfo()]);
  log(
    `image ${image.name}: ${fmt.mib(image.sizeBytes)}, ${image.files} files, zstd -3 ${fmt.mb(image.zstd3Bytes)}`,
  );
  const local = await measureLocal(image);
  const data = opts.data ? await dataPhase(opts, image) : undefined;
  const whole = opts.whole ? await wholeUpload(opts, image) : undefined;
  const load = { before: loadBefore, after: await loadAverage() };
  const md = render(opts, machine, image, local, data, whole, startedAt, (Date.now() - t0) / 1000, load);
  for (const file of opts.out) {
    // Sections other benchmarks keep in the same file (bench/incremental.ts's) stay.
    const previous = await readFile(file, "utf8").catch(() => "");
    await writeMarkdown(file, carrySections(previous, md));
    log(`wrote ${file}`);
  }
  process.stdout.write(md);
}

// Bad options and --help are answered before anything is swept or started.
runBenchmark(log, main, async () => {
  parseOptions(process.argv.slice(2));
});
