import { MetadataError } from "./errors.js";

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses "500ms", "30s", "2m", "1h" or a bare number of seconds ("45") into milliseconds. */
export function parseDuration(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!match) throw new MetadataError("usage", `invalid duration "${text}" (expected e.g. 500ms, 30s, 2m)`);
  const value = Number(match[1]) * (UNITS[match[2] ?? "s"] ?? 1000);
  if (!Number.isFinite(value) || value <= 0) {
    throw new MetadataError("usage", `invalid duration "${text}" (must be greater than zero)`);
  }
  return Math.round(value);
}

/** 1500 -> "1.5s", 120000 -> "2m". */
export function formatDuration(ms: number): string {
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms >= 1000) return `${Number((ms / 1000).toFixed(1))}s`;
  return `${ms}ms`;
}
