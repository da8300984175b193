/**
 * Running the measured hetznix client (bench/client.ts) in a child process, for bench/main.ts and
 * bench/incremental.ts; and the small helpers both reports use (load average, writing a markdown report).
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { format, resolveConfig } from "prettier";
import { installSignalHandlers, runCleanups } from "./cleanup.js";
import { clientCommand, cpuPlan, type CpuPlan } from "./cpu.js";
import { removeActiveShaping, sweepShaping } from "./shape.js";
import { measureChild, type Measurement } from "./measure.js";
import { ENDPOINT_ENV, TOKEN_ENV, type ClientRequest, type ClientResult } from "./protocol.js";
import type { BenchEmulator } from "./target.js";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const WORK = join(ROOT, "bench", ".work");
const CLIENT = join(ROOT, "bench", "client.ts");

/** The environment of a client child: the emulator's endpoint and its (random, local) token. */
export function childEnv(bench: BenchEmulator): NodeJS.ProcessEnv {
  return { ...process.env, [ENDPOINT_ENV]: bench.emulator.endpoint, [TOKEN_ENV]: bench.emulator.token };
}

/** Run the client child with `req`, placed on the plan's client cores, measured. */
export function runClient(
  req: ClientRequest,
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
  plan: CpuPlan = cpuPlan("shared"),
): Promise<Measurement> {
  const c = clientCommand(plan, process.execPath, ["--import", "tsx", CLIENT, JSON.stringify(req)]);
  return measureChild(c.cmd, c.args, {
    cwd: ROOT,
    env,
    timeoutMs,
  });
}

/** The client's JSON line, or an error with its exit code and the tail of its stderr. */
export function parseClientResult(m: Measurement): ClientResult {
  const line = m.stdout.trim().split("\n").pop() ?? "";
  if (m.exitCode !== 0 || !line.startsWith("{")) {
    throw new Error(
      `client failed (exit ${m.exitCode}): ${m.stderrTail.trim().split("\n").slice(-3).join(" / ")}`,
    );
  }
  return JSON.parse(line) as ClientResult;
}

/** The first three fields of /proc/loadavg ("0.12 0.30 0.41"). */
export async function loadAverage(): Promise<string> {
  const text = await readFile("/proc/loadavg", "utf8").catch(() => "n/a n/a n/a");
  return text.split(" ").slice(0, 3).join(" ");
}

/** Write markdown formatted as `prettier --check .` (npm run lint) expects, tables aligned. */
export async function writeMarkdown(file: string, md: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const formatted = await format(md, { ...((await resolveConfig(file)) ?? {}), filepath: file });
  await writeFile(file, formatted);
}

/** Where a section of BENCHMARKS.md kept by another benchmark starts and ends (its id: e.g. "incremental"). */
function markers(id: string): [string, string] {
  return [`<!-- bench-section:${id} -->`, `<!-- /bench-section:${id} -->`];
}

/** `doc` with the section `id` set to `body` (replaced where it is, else appended at the end). */
export function setSection(doc: string, id: string, body: string): string {
  const [start, end] = markers(id);
  const block = `${start}\n\n${body.trim()}\n\n${end}\n`;
  const a = doc.indexOf(start);
  const b = doc.indexOf(end);
  if (a >= 0 && b > a) return doc.slice(0, a) + block + doc.slice(b + end.length).replace(/^\n/, "");
  return `${doc.trimEnd()}\n\n${block}`;
}

/** The sections of `previous` (kept by other benchmarks) carried into `doc`, which replaces it. */
export function carrySections(previous: string, doc: string): string {
  let out = doc;
  const re = /<!-- bench-section:([a-z0-9-]+) -->\n([\s\S]*?)\n<!-- \/bench-section:\1 -->/g;
  for (let m = re.exec(previous), i = 0; m && i < 100; m = re.exec(previous), i++) {
    out = setSection(out, m[1]!, m[2]!);
  }
  return out;
}

/**
 * Run a benchmark as the process's whole life: `first` (e.g. moving into a network namespace: nothing is started
 * or swept before it), then signal handlers and the sweep of a previous run's tc qdisc, then `body`; at the end,
 * success or not, the shaping and every registered cleanup are undone. Exits 0, or 1 with the error logged.
 */
export function runBenchmark(
  log: (line: string) => void,
  body: () => Promise<void>,
  first: () => Promise<void> = async () => undefined,
): void {
  const run = async (): Promise<void> => {
    await first();
    installSignalHandlers(log);
    try {
      if (await sweepShaping()) log("removed a previous run's tc qdisc");
      await body();
    } finally {
      await removeActiveShaping();
      await runCleanups(log);
    }
  };
  run().then(
    () => process.exit(0),
    (err: unknown) => {
      log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      process.exit(1);
    },
  );
}
