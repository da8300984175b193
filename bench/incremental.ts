/**
 * `npm run bench:incremental [-- --quick]`: a full upload of a new image version against an incremental one
 * (`base`: the previous version's snapshot), on links shaped with tc, with real rescue hosts from the emulator
 * (issue 16).
 *
 * 1. A realistic image pair (bench/pair.ts: two mke2fs -d ext4 images of store-like trees, the second with 5% of
 *    the store paths dropped and 10% added), cached under bench/.work/; its block statistics (same offset,
 *    elsewhere, new) and the zstd size of the new blocks alone (what an ideal incremental upload must send).
 * 2. The old image is uploaded once as the base snapshot (not timed, unshaped).
 * 3. Per link rate: whole uploads of the new image (`force`, so nothing is reused), full and incremental
 *    interleaved (the order alternating per round), each with an empty hash cache; each run's snapshot is deleted
 *    after it. Medians when more than one run.
 * Runs in a network namespace of its own (bench/netns.ts). Everything started (emulator, rescue hosts, tc qdisc,
 * children, caches) is removed at the end and on Ctrl-C.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { MiB } from "./images.js";
import {
  ensurePair,
  pairBlockStats,
  pairNewBlocks,
  type BlockStats,
  type ImagePair,
  type NewBlocksSize,
} from "./pair.js";
import { isStopping, onCleanup } from "./cleanup.js";
import { cpuPlan, placeOwnTree, type CpuMode, type CpuPlan } from "./cpu.js";
import { measureLoopbackRate, shapeLoopback, type Shaping } from "./shape.js";
import { startBenchEmulator, type BenchEmulator } from "./target.js";
import {
  childEnv,
  loadAverage,
  parseClientResult,
  ROOT,
  runBenchmark,
  runClient,
  setSection,
  WORK,
  writeMarkdown,
} from "./run-client.js";
import { runInOwnNetns } from "./netns.js";
import type { ClientResult, UploadRequest } from "./protocol.js";
import { fmt, machineInfo, median, table, verdict, type MachineInfo } from "./report.js";
import { DEFAULT_ZSTD_LEVEL } from "../src/upload/compress.js";
import { levelName } from "../src/upload/level.js";

/** The emulator's address block (every server it makes gets one; the shaping covers the block's port 22). */
const PREFIX = "127.78.40.";
/** A spare address of the block where shaping is checked with a plain TCP transfer before it is relied on. */
const CHECK_IP = `${PREFIX}250`;
const SECTION = "incremental";
/** Both images' snapshots are one series (label hetznix/series), as two versions of one system's image are. */
const SERIES = "bench-pair";

const log = (line: string): void => {
  process.stderr.write(`[bench:incremental ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
};

type Mode = "full" | "incremental";

interface Options {
  quick: boolean;
  sizeBytes: number;
  seed: number;
  rates: number[];
  runs: number;
  /** The emulator's speed: its modelled control-plane latencies are divided by this. */
  speed: number;
  cpu: CpuMode;
  out: string[];
  /** Where the run's figures are kept as JSON (for --render). */
  json: string;
  /** Make the report from a run kept as JSON instead of measuring. */
  render?: string;
  command: string;
  note?: string;
}

const HELP = `npm run bench:incremental [-- options]

Full vs incremental upload of a realistic new image version (issue 16), on links shaped with tc, against the
emulator's real rescue hosts, in a network namespace of its own. Needs root, tc, unshare, OpenSSH, zstd, e2fsprogs
and GNU time. The image pair is cached in bench/.work/pairs/.

  --quick             a 512 MiB pair, one run per mode and rate (writes bench/.work/incremental-quick.md)
  --size-mib N        size of each image (default 4096; --quick 512)
  --seed N            the pair generator's seed (default 1)
  --rates LIST        link rates in Mbit/s (default 100,1000)
  --runs N            runs per mode and rate (default 2; --quick 1)
  --speed N           the emulator's speed (default 100: Hetzner's modelled latencies / 100)
  --cpu split|shared  split: the client on its own core(s), the emulator and rescue hosts on the others (default)
  --out FILE          write the report there (default: bench/.work/incremental.md and, full runs, its section of
                      BENCHMARKS.md; --quick: bench/.work/incremental-quick.md)
  --note TEXT         a paragraph put under the report's title
  --json FILE         keep the run's figures there (default bench/.work/incremental.json, --quick: -quick.json)
  --render FILE       make the report from figures kept by --json, measuring nothing
`;

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean", default: false },
      "size-mib": { type: "string" },
      seed: { type: "string" },
      rates: { type: "string" },
      runs: { type: "string" },
      speed: { type: "string" },
      cpu: { type: "string" },
      out: { type: "string" },
      note: { type: "string" },
      json: { type: "string" },
      render: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    process.exit(0);
  }
  const int = (v: string | undefined, d: number, min: number): number => {
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`expected an integer >= ${min}, got ${v}`);
    return n;
  };
  const quick = values.quick;
  const cpu = values.cpu ?? "split";
  if (cpu !== "split" && cpu !== "shared") throw new Error(`unknown CPU mode ${cpu}`);
  const out = values.out
    ? [resolve(values.out)]
    : quick
      ? [join(WORK, "incremental-quick.md")]
      : [join(WORK, "incremental.md"), join(ROOT, "BENCHMARKS.md")];
  const shown = argv.filter((a, i) => a !== "--note" && argv[i - 1] !== "--note" && !a.startsWith("--note="));
  return {
    quick,
    sizeBytes: int(values["size-mib"], quick ? 512 : 4096, 16) * MiB,
    seed: int(values.seed, 1, 0),
    rates: (values.rates ?? "100,1000").split(",").map((r) => int(r, 0, 1)),
    runs: int(values.runs, quick ? 1 : 2, 1),
    speed: int(values.speed, 100, 1),
    cpu,
    out,
    json: resolve(values.json ?? join(WORK, quick ? "incremental-quick.json" : "incremental.json")),
    ...(values.render ? { render: resolve(values.render) } : {}),
    command: ["npm run bench:incremental", ...(shown.length ? ["--", ...shown] : [])].join(" "),
    ...(values.note ? { note: values.note } : {}),
  };
}

// ---- runs ----

interface Sample {
  wall: number;
  /** tc class counters of the shaped link: towards the servers (up) and back (down). */
  wireUp: number;
  wireDown: number;
  cpu: number;
  peakRss: number;
  result: ClientResult;
}

interface ModeResult {
  mode: Mode;
  rate: number;
  samples: Sample[];
  errors: string[];
}

interface Setup {
  opts: Options;
  bench: BenchEmulator;
  pair: ImagePair;
  plan: CpuPlan;
  baseId: number;
}

/**
 * Run `fn` with a client environment whose hash cache is empty and its own (removed afterwards): the image is
 * hashed as on a machine that never saw it (CI), in every run.
 */
async function withEmptyCache<T>(
  bench: BenchEmulator,
  fn: (env: NodeJS.ProcessEnv) => Promise<T>,
): Promise<T> {
  const cacheDir = await mkdtemp(join(WORK, "cache-"));
  const removeCache = onCleanup("hash cache", () => rm(cacheDir, { recursive: true, force: true }));
  try {
    return await fn({ ...childEnv(bench), XDG_CACHE_HOME: cacheDir });
  } finally {
    await removeCache();
  }
}

/** The client's action polling, as fast as the emulator's speed makes actions. */
function pollMs(opts: Options): number {
  return Math.max(20, Math.round(1000 / opts.speed));
}

/** Whole upload of the new image, full or onto the base; its snapshot deleted afterwards. */
async function oneRun(setup: Setup, mode: Mode, shaping: Shaping): Promise<Sample> {
  const { opts, bench, pair, plan, baseId } = setup;
  await placeOwnTree(plan.rescue ?? plan.all);
  const req: UploadRequest = {
    mode: "upload",
    image: pair.new.path,
    force: true,
    series: SERIES,
    pollMs: pollMs(opts),
    ...(mode === "incremental" ? { base: String(baseId) } : {}),
  };
  const expected = (pair.new.fileBytes * 8) / (shaping.rateMbit * 1e6);
  const timeoutMs = Math.round(Math.max(900, expected * 4 + 300) * 1000);
  const before = await shaping.counters();
  const m = await withEmptyCache(bench, (env) => runClient(req, env, timeoutMs, plan));
  const after = await shaping.counters();
  const result = parseClientResult(m);
  if (!result.reused && result.imageId !== undefined && result.imageId !== baseId) {
    await bench.client.images.delete(result.imageId).catch((err: unknown) => {
      log(`  could not delete snapshot ${result.imageId}: ${String(err)}`);
    });
  }
  if (result.reused) throw new Error(`the upload reused snapshot ${result.imageId} (force was ignored)`);
  if (mode === "incremental" && !result.incremental) {
    throw new Error(`no incremental upload: ${result.fallback ?? "the client reported none"}`);
  }
  return {
    wall: result.seconds,
    wireUp: after.up.bytes - before.up.bytes,
    wireDown: after.down.bytes - before.down.bytes,
    cpu: m.cpuSeconds,
    peakRss: m.peakTreeRssBytes,
    result,
  };
}

/** The base snapshot: the old image uploaded once (untimed, before any shaping). */
async function uploadBase(bench: BenchEmulator, pair: ImagePair, opts: Options): Promise<number> {
  const req: UploadRequest = { mode: "upload", image: pair.old.path, series: SERIES, pollMs: pollMs(opts) };
  const m = await withEmptyCache(bench, (env) => runClient(req, env, 3_600_000));
  const r = parseClientResult(m);
  if (r.imageId === undefined) throw new Error("the base upload reported no snapshot");
  log(`base snapshot ${r.imageId} (${fmt.s(r.seconds)}, ${mb(r.bytesSent)} sent)`);
  return r.imageId;
}

async function checkShaping(rate: number): Promise<number> {
  const check = await shapeLoopback({ target: CHECK_IP, rateMbit: rate });
  try {
    return await measureLoopbackRate(CHECK_IP, Math.round((rate * 1e6 * 1.5) / 8));
  } finally {
    await check.remove();
  }
}

interface Results {
  baseId: number;
  modes: ModeResult[];
  /** Rate of the shaping check (Mbit/s) per link rate. */
  checkedRates: Record<string, number>;
}

async function measure(opts: Options, pair: ImagePair): Promise<Results> {
  const bench = await startBenchEmulator(WORK, opts.speed, PREFIX);
  const plan = cpuPlan(opts.cpu);
  const modes: ModeResult[] = [];
  const checkedRates: Record<string, number> = {};
  try {
    log(`uploading the old image as the base snapshot (untimed)`);
    const baseId = await uploadBase(bench, pair, opts);
    const setup: Setup = { opts, bench, pair, plan, baseId };
    for (const rate of opts.rates) {
      if (isStopping()) break;
      const measured = await checkShaping(rate);
      checkedRates[String(rate)] = measured;
      log(`shaping check at ${rate} Mbit/s: ${measured.toFixed(1)} Mbit/s measured`);
      if (measured > rate * 1.2 || measured < rate * 0.5) {
        throw new Error(`shaping does not hold: ${measured.toFixed(1)} Mbit/s measured for ${rate} Mbit/s`);
      }
      const full: ModeResult = { mode: "full", rate, samples: [], errors: [] };
      const incr: ModeResult = { mode: "incremental", rate, samples: [], errors: [] };
      const shaping = await shapeLoopback({ target: `${PREFIX}0/24`, port: 22, rateMbit: rate });
      try {
        for (let i = 0; i < opts.runs && !isStopping(); i++) {
          // Interleaved, the order alternating: neither mode always runs on a warmer page cache.
          const order = i % 2 === 0 ? [full, incr] : [incr, full];
          for (const r of order) {
            if (isStopping()) break;
            log(`${rate} Mbit/s: ${r.mode} upload, run ${i + 1}/${opts.runs}`);
            try {
              const s = await oneRun(setup, r.mode, shaping);
              r.samples.push(s);
              const inc = s.result.incremental;
              log(
                `  ${fmt.s(s.wall)}, up ${mb(s.wireUp)}, down ${mb(s.wireDown)}, sent ${mb(s.result.bytesSent)}` +
                  (inc
                    ? `, blocks kept ${inc.blocks.kept} copied ${inc.blocks.copied} sent ${inc.blocks.sent} zero ${inc.blocks.zero}`
                    : "") +
                  ` (${s.result.steps.map((t) => `${t.step} ${(t.durationMs / 1000).toFixed(1)}`).join(", ")})`,
              );
            } catch (err) {
              r.errors.push((err as Error).message);
              log(`  failed: ${(err as Error).message}`);
            }
          }
        }
      } finally {
        await shaping.remove();
      }
      modes.push(full, incr);
    }
    return { baseId, modes, checkedRates };
  } finally {
    await placeOwnTree(cpuPlan("shared").all).catch(() => 0);
    await bench.stop();
  }
}

// ---- report ----

interface PairFacts {
  pair: ImagePair;
  stats: BlockStats;
  /** zstd size of the new blocks alone, per level used. */
  newBlocks: [number, NewBlocksSize][];
}

/** Steps shorter than this in every mode are summed into "other" in the steps table. */
const MINOR_STEP_SECONDS = 0.05;

/**
 * Median seconds per step (skipped steps left out), in the order the steps ran. A step name that occurs twice in
 * a run (an incremental upload has a "plan" of the server and one of the blocks) counts as the sum of both.
 */
function stepMedians(samples: Sample[]): Map<string, number> {
  const acc = new Map<string, number[]>();
  for (const s of samples) {
    const run = new Map<string, number>();
    for (const t of s.result.steps) {
      if (t.status !== "skipped") run.set(t.step, (run.get(t.step) ?? 0) + t.durationMs / 1000);
    }
    for (const [k, v] of run) acc.set(k, [...(acc.get(k) ?? []), v]);
  }
  return new Map([...acc].map(([k, v]) => [k, median(v)]));
}

/** The steps table: one row per mode, the steps that took time as columns, the rest as "other". */
function stepsTable(runs: ModeResult[]): string | undefined {
  const medians = runs.map((r) => stepMedians(r.samples));
  const names: string[] = [];
  for (const m of medians) for (const k of m.keys()) if (!names.includes(k)) names.push(k);
  const major = names.filter((n) => medians.some((m) => (m.get(n) ?? 0) >= MINOR_STEP_SECONDS));
  if (major.length === 0) return undefined;
  return table(
    ["steps (medians)", ...major, "other"],
    runs.map((r, i) => {
      const m = medians[i]!;
      const other = [...m].filter(([k]) => !major.includes(k)).reduce((a, [, v]) => a + v, 0);
      return [r.mode, ...major.map((n) => (m.has(n) ? fmt.s(m.get(n)!) : "-")), m.size ? fmt.s(other) : "-"];
    }),
  );
}

/** The command as run, without the options that only say where files go (they change no figure). */
function shownCommand(command: string): string {
  return command.replace(/ --(?:out|json|render)(?:=| )\S+/g, "").replace(/ --$/, "");
}

/** The sample whose time is nearest the median of all. */
function nearestMedian(samples: Sample[]): Sample | undefined {
  const mid = median(samples.map((s) => s.wall));
  return [...samples].sort((a, b) => Math.abs(a.wall - mid) - Math.abs(b.wall - mid))[0];
}

/** Bytes in MB, with two decimals below 10 MB (fmt.mb rounds to whole MB). */
function mb(bytes: number): string {
  if (!Number.isFinite(bytes)) return "n/a";
  return bytes < 10e6 ? `${(bytes / 1e6).toFixed(2)} MB` : `${(bytes / 1e6).toFixed(0)} MB`;
}

/** The zstd level most runs used (the default level when a run named none). */
function levelOf(samples: Sample[]): number {
  const counts = new Map<number, number>();
  for (const s of samples) {
    const l = s.result.level ?? DEFAULT_ZSTD_LEVEL;
    counts.set(l, (counts.get(l) ?? 0) + 1);
  }
  return [...counts].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0]?.[0] ?? DEFAULT_ZSTD_LEVEL;
}

/** The levels the runs used, each with its count when they differ: "zstd -3", "zstd -1 (1), --fast=1 (1)". */
function levelsShown(samples: Sample[]): string {
  const counts = new Map<string, number>();
  for (const s of samples) {
    const l = levelName(s.result.level ?? DEFAULT_ZSTD_LEVEL);
    counts.set(l, (counts.get(l) ?? 0) + 1);
  }
  if (counts.size === 0) return "-";
  if (counts.size === 1) return `zstd ${[...counts.keys()][0]!}`;
  return `zstd ${[...counts].map(([l, n]) => `${l} (${n})`).join(", ")}`;
}

/** Everything a report is made from (kept as JSON beside the report, so it can be made again: --render). */
interface Run {
  opts: Options;
  machine: MachineInfo;
  facts: PairFacts;
  results: Results | undefined;
  startedAt: string;
  seconds: number;
  load: { before: string; after: string };
}

function render(run: Run): string {
  const { opts, machine, facts, results, seconds, load } = run;
  const startedAt = new Date(run.startedAt);
  const { pair, stats } = facts;
  const lines: string[] = [];
  lines.push(`## Incremental upload (${opts.quick ? "quick run" : "full run"})`, "");
  if (opts.note) lines.push(opts.note, "");
  lines.push(
    "Made by `npm run bench:incremental` (full: two 4 GiB images) or `npm run bench:incremental -- --quick` " +
      "(512 MiB, one run; writes bench/.work/incremental-quick.md); `-- --help` lists the options. It runs in a " +
      "network namespace of its own.",
    "",
    `- Date: ${startedAt.toISOString().replace("T", " ").slice(0, 16)} UTC; took ${(seconds / 60).toFixed(1)} min`,
    `- Command: \`${shownCommand(opts.command)}\``,
    `- Load (1, 5, 15 min averages from /proc/loadavg) at the start: ${load.before}; at the end: ${load.after}`,
    `- Machine: ${machine.cores} x ${machine.cpuModel}, ${machine.memoryGiB} GiB RAM, Linux ${machine.kernel}, ` +
      `Node ${machine.node}, ${machine.openssh}, ${machine.zstd}`,
    `- Image pair (bench/pair.ts, seed ${pair.spec.seed}): two ext4 images of ${fmt.mib(pair.spec.sizeBytes)} made ` +
      `by \`mke2fs -d\` with a fixed UUID and hash seed, from store-like trees: the old one ${pair.old.storePaths} ` +
      `store paths, ${pair.old.files} files, ${fmt.gb(pair.old.fileBytes)}; the new one drops ${pair.dropped} of ` +
      `those paths and adds ${pair.added} new (hash-named) ones: ${pair.new.storePaths} paths, ${pair.new.files} ` +
      `files, ${fmt.gb(pair.new.fileBytes)}.`,
    `- Of the new image's ${stats.blocks} non-zero 4 KiB blocks: **${stats.percent.sameOffset.toFixed(1)}%** at ` +
      `the same offset in the old image, **${stats.percent.elsewhere.toFixed(1)}%** elsewhere in it, ` +
      `**${stats.percent.new.toFixed(1)}%** new (issue 16 measured 0.2% / 91.7% / 8.2% on its pair).`,
    `- New blocks alone (the new image's blocks the old one holds nowhere, concatenated, \`zstd LEVEL -T0\`): ` +
      facts.newBlocks
        .map(
          ([level, n]) =>
            `${mb(n.compressedBytes)} at zstd ${levelName(level)} (${n.blocks} blocks, ${mb(n.rawBytes)} raw)`,
        )
        .join("; ") +
      ": what an ideal incremental upload sends at least.",
    `- Each run: a whole \`uploadImage\` of the new image in a child process (bench/client.ts) with \`force\` (the ` +
      `snapshot of the same content made by the previous run is deleted anyway) and an empty hash cache, against the ` +
      `emulator at speed ${opts.speed} (its modelled API and boot latencies / ${opts.speed}: the control plane is ` +
      `nearly free, so the times are the data work: hashing, planning, copying, sending, verifying, snapshotting); ` +
      `incremental = the same with \`base\` = the old image's snapshot (uploaded once before, untimed). Rescue hosts: ` +
      `real sshd, /dev/sda = a loop device over a sparse file; the link to every server's port 22 shaped with tc htb ` +
      `on \`lo\` (both directions, no added delay). CPU placement: ${opts.cpu === "split" ? `the client on core ${cpuPlan("split").client}, this process with the emulator and the rescue hosts on core ${cpuPlan("split").rescue}` : "shared"}.`,
    `- Time = inside the client around \`uploadImage\`. Wire = the tc class counters of the shaped link (SSH payload ` +
      `plus TCP/IP headers, all connections of the run, towards the server "up" and back "down": this includes the ` +
      `link probe of the step "measure" that picks the zstd level, and anything the rescue side sends back, such as ` +
      `block hashes); "sent" = the data stream's bytes as the client counted them (compressed, before SSH). Medians ` +
      `of the runs.`,
    "",
  );
  const targets: string[][] = [];
  if (results) {
    for (const rate of opts.rates) {
      const full = results.modes.find((m) => m.rate === rate && m.mode === "full");
      const incr = results.modes.find((m) => m.rate === rate && m.mode === "incremental");
      if (!full || !incr) continue;
      const checked = results.checkedRates[String(rate)];
      lines.push(
        `### ${rate} Mbit/s (shaping check: ${checked !== undefined ? checked.toFixed(1) : "n/a"} Mbit/s measured)`,
        "",
      );
      const fullWall = median(full.samples.map((s) => s.wall));
      const rows = [full, incr].map((r) => {
        const m = (f: (s: Sample) => number) => median(r.samples.map(f));
        const inc = r.samples.map((s) => s.result.incremental).filter((x) => x);
        const blocks = inc.length
          ? (["kept", "copied", "sent", "zero"] as const)
              .map((k) => `${k} ${median(inc.map((x) => x!.blocks[k]))}`)
              .join(", ") +
            `; ${median(inc.map((x) => x!.copyRuns))} copy runs` +
            (inc.some((x) => x!.cyclesBroken > 0)
              ? `, ${median(inc.map((x) => x!.cyclesBroken))} cycles broken (${median(inc.map((x) => x!.staged))} blocks staged)`
              : "")
          : "-";
        return [
          r.mode + (r.errors.length ? ` (${r.errors.length} failed)` : ""),
          String(r.samples.length),
          fmt.s(m((s) => s.wall)),
          fmt.x(m((s) => s.wall) / fullWall),
          mb(m((s) => s.wireUp)),
          mb(m((s) => s.wireDown)),
          mb(m((s) => s.result.bytesSent)),
          levelsShown(r.samples),
          fmt.s(m((s) => s.cpu)),
          fmt.mib(Math.max(0, ...r.samples.map((s) => s.peakRss))),
          blocks,
        ];
      });
      lines.push(
        table(
          [
            "",
            "runs",
            "time",
            "vs full",
            "wire up",
            "wire down",
            "sent",
            "level",
            "client CPU",
            "client peak memory",
            "blocks (4 KiB)",
          ],
          rows,
        ),
        "",
      );
      const steps = stepsTable([full, incr]);
      if (steps) lines.push(steps, "");
      const typical = nearestMedian(incr.samples);
      if (typical) {
        lines.push(
          `The incremental run nearest the median (${fmt.s(typical.wall)}), step by step (steps overlap where one ` +
            `starts before the previous ends; steps under ${MINOR_STEP_SECONDS} s left out):`,
          "",
          table(
            ["step", "starts at", "duration", "detail"],
            typical.result.steps
              .filter((t) => t.status !== "skipped" && t.durationMs / 1000 >= MINOR_STEP_SECONDS)
              .map((t) => [
                t.step,
                fmt.s(t.startMs / 1000),
                fmt.s(t.durationMs / 1000),
                (t.detail ?? "").replace(/\|/g, "/").slice(0, 120),
              ]),
          ),
          "",
        );
      }
      for (const e of [
        ...full.errors.map((e) => `full: ${e}`),
        ...incr.errors.map((e) => `incremental: ${e}`),
      ]) {
        lines.push(`- Failed: ${e}`);
      }
      if (full.errors.length || incr.errors.length) lines.push("");
      const incrWall = median(incr.samples.map((s) => s.wall));
      const ratio = incrWall / fullWall;
      if (rate === 100) {
        targets.push([
          "incremental upload at 100 Mbit/s takes < 0.25x the full upload's time",
          `${fmt.x(ratio)} (${fmt.s(incrWall)} vs ${fmt.s(fullWall)})`,
          verdict(ratio, 0.25, "max"),
        ]);
      } else {
        targets.push([
          `(not a goal) incremental vs full time at ${rate} Mbit/s`,
          `${fmt.x(ratio)} (${fmt.s(incrWall)} vs ${fmt.s(fullWall)})`,
          "-",
        ]);
      }
      const level = incr.samples.length ? levelOf(incr.samples) : undefined;
      const ideal = facts.newBlocks.find(([l]) => l === level)?.[1];
      const up = median(incr.samples.map((s) => s.wireUp));
      const vsIdeal = ideal ? up / ideal.compressedBytes : NaN;
      targets.push([
        `incremental bytes on the wire at ${rate} Mbit/s within 1.3x of the new blocks alone (zstd ${level !== undefined ? levelName(level) : "?"})`,
        `${fmt.x(vsIdeal)} (${mb(up)} vs ${ideal ? mb(ideal.compressedBytes) : "n/a"}; full upload ${mb(median(full.samples.map((s) => s.wireUp)))})`,
        verdict(vsIdeal, 1.3, "max"),
      ]);
    }
  } else {
    lines.push("The uploads were not measured (see the log).", "");
  }
  if (targets.length) lines.push("### Goals (issue 16)", "", table(["goal", "measured", ""], targets), "");
  return lines.join("\n");
}

// ---- main ----

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const run = opts.render ? await loadRun(opts) : await measureRun(opts);
  const md = render(run);
  for (const file of opts.out) {
    const previous = await readFile(file, "utf8").catch(() => "");
    // BENCHMARKS.md holds bench/main.ts's report: this one is its own section there.
    const doc = file === join(ROOT, "BENCHMARKS.md") ? setSection(previous, SECTION, md) : md;
    await writeMarkdown(file, doc);
    log(`wrote ${file}`);
  }
  process.stdout.write(md + "\n");
}

/** A run saved by --json (or by default beside bench/.work's report), with this command's outputs. */
async function loadRun(opts: Options): Promise<Run> {
  const run = JSON.parse(await readFile(opts.render!, "utf8")) as Run;
  // Where the report goes, and its note (e.g. findings written after the run), come from this command.
  return { ...run, opts: { ...run.opts, out: opts.out, ...(opts.note ? { note: opts.note } : {}) } };
}

async function measureRun(opts: Options): Promise<Run> {
  const startedAt = new Date().toISOString();
  const loadBefore = await loadAverage();
  const t0 = Date.now();
  await mkdir(WORK, { recursive: true });
  const pair = await ensurePair({ sizeBytes: opts.sizeBytes, seed: opts.seed }, WORK, log);
  log(`block statistics of the pair`);
  const stats = await pairBlockStats(pair);
  log(
    `new image: ${stats.blocks} non-zero blocks: ${stats.percent.sameOffset.toFixed(1)}% same offset, ` +
      `${stats.percent.elsewhere.toFixed(1)}% elsewhere, ${stats.percent.new.toFixed(1)}% new`,
  );
  const machine = await machineInfo();
  const results = isStopping() ? undefined : await measure(opts, pair);
  // The new blocks alone, at each level the incremental uploads used (the default level when none ran).
  const levels = new Set<number>(
    results?.modes
      .filter((m) => m.mode === "incremental" && m.samples.length)
      .map((m) => levelOf(m.samples)) ?? [],
  );
  if (levels.size === 0) levels.add(DEFAULT_ZSTD_LEVEL);
  const newBlocks: PairFacts["newBlocks"] = [];
  for (const level of levels) {
    if (isStopping()) break;
    log(`zstd ${levelName(level)} of the new blocks alone`);
    newBlocks.push([level, await pairNewBlocks(pair, level)]);
  }
  const run: Run = {
    opts,
    machine,
    facts: { pair, stats, newBlocks },
    results,
    startedAt,
    seconds: (Date.now() - t0) / 1000,
    load: { before: loadBefore, after: await loadAverage() },
  };
  await writeFile(opts.json, JSON.stringify(run, null, 2) + "\n");
  log(`wrote ${opts.json}`);
  return run;
}

runBenchmark(log, main, async () => {
  // Bad options and --help are answered before the namespace; the run itself happens inside it.
  parseOptions(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error("the benchmark needs root (tc, loop devices, namespaces)");
  await runInOwnNetns(fileURLToPath(import.meta.url), process.argv.slice(2));
});
