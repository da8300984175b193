/**
 * Statistics and the markdown report: medians, ratios against the baseline and the limit of the same run, the
 * targets from the issue with met / not met, and the machine, date and command beside the figures.
 */
import { readFile } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { execFileSync, spawnSync } from "node:child_process";

export function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

export interface RunSample {
  wallSeconds: number;
  cpuSeconds: number;
  maxRssBytes: number;
  peakTreeRssBytes: number;
  /** Bytes through the shaped link towards the server (tc class counter: payload + TCP/IP headers). */
  wireUpBytes: number;
  wireDownBytes: number;
  /** Bytes the rescue host's proxy counted client -> server (SSH stream), when known. */
  proxyInBytes?: number;
}

export interface ConfigResult {
  /** e.g. "baseline", "hetznix zstd -3 -T0". */
  label: string;
  kind: "baseline" | "hetznix";
  /** CPU placement: split (each side its own cores) or shared. */
  placement: "split" | "shared";
  rateMbit: number;
  samples: RunSample[];
  /** hetznix: how each run sent the data (codec and level, as the client reported it). */
  transfers?: string[];
  /** Error of a failed run, if any. */
  errors: string[];
}

export interface Summary {
  label: string;
  kind: "baseline" | "hetznix";
  placement: "split" | "shared";
  transfers: string[];
  rateMbit: number;
  runs: number;
  wall: number;
  cpu: number;
  maxRss: number;
  peakTreeRss: number;
  wireUp: number;
  errors: string[];
}

export function summarize(r: ConfigResult): Summary {
  const m = (f: (s: RunSample) => number) => median(r.samples.map(f));
  return {
    label: r.label,
    kind: r.kind,
    placement: r.placement,
    transfers: r.transfers ?? [],
    rateMbit: r.rateMbit,
    runs: r.samples.length,
    wall: m((s) => s.wallSeconds),
    cpu: m((s) => s.cpuSeconds),
    maxRss: Math.max(0, ...r.samples.map((s) => s.maxRssBytes)),
    peakTreeRss: Math.max(0, ...r.samples.map((s) => s.peakTreeRssBytes)),
    wireUp: m((s) => s.wireUpBytes),
    errors: r.errors,
  };
}

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  openssh: string;
  zstd: string;
}

export async function machineInfo(): Promise<MachineInfo> {
  let cpuModel = cpus()[0]?.model ?? "unknown";
  try {
    const info = await readFile("/proc/cpuinfo", "utf8");
    const m = /model name\s*:\s*(.+)/.exec(info);
    if (m) cpuModel = m[1]!.trim();
  } catch {
    // keep os.cpus()
  }
  const version = (cmd: string, args: string[]): string => {
    try {
      const r = execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
      return r.trim().split("\n")[0] ?? "";
    } catch {
      return "unknown";
    }
  };
  // `ssh -V` prints its version on stderr.
  const openssh = spawnSync("ssh", ["-V"], { encoding: "utf8" }).stderr?.trim() || "unknown";
  return {
    cpuModel,
    cores: cpus().length,
    memoryGiB: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    kernel: version("uname", ["-r"]),
    node: process.version,
    openssh,
    zstd: `zstd ${/v\d+\.\d+\.\d+/.exec(version("zstd", ["--version"]))?.[0] ?? "unknown"}`,
  };
}

export const fmt = {
  s: (x: number) => (Number.isFinite(x) ? `${x < 10 ? x.toFixed(2) : x.toFixed(1)} s` : "n/a"),
  x: (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)}x` : "n/a"),
  mb: (x: number) => (Number.isFinite(x) && x > 0 ? `${(x / 1e6).toFixed(0)} MB` : "n/a"),
  mib: (x: number) => (Number.isFinite(x) && x > 0 ? `${(x / 1024 ** 2).toFixed(0)} MiB` : "n/a"),
  gb: (x: number) => `${(x / 1e9).toFixed(2)} GB`,
};

export function table(head: string[], rows: string[][]): string {
  const lines = [`| ${head.join(" | ")} |`, `| ${head.map(() => "---").join(" | ")} |`];
  for (const r of rows) lines.push(`| ${r.join(" | ")} |`);
  return lines.join("\n");
}

/** "met", or "NOT met" with how far off: `value` against a minimum or a maximum. */
export function verdict(value: number, target: number, kind: "min" | "max"): string {
  if (!Number.isFinite(value)) return "NOT measured";
  const ok = kind === "min" ? value >= target : value <= target;
  if (ok) return "met";
  const off = kind === "min" ? (1 - value / target) * 100 : (value / target - 1) * 100;
  return `NOT met (${off.toFixed(0)}% ${kind === "min" ? "short" : "over"})`;
}

/** The compression the runs reported, e.g. "zstd --fast=1 -T0 (3)", or "-" when none did. */
export function levelsUsed(transfers: readonly string[]): string {
  if (transfers.length === 0) return "-";
  const counts = new Map<string, number>();
  for (const t of transfers) counts.set(t, (counts.get(t) ?? 0) + 1);
  return [...counts].map(([t, n]) => `${t} (${n})`).join(", ");
}
