/**
 * Getting a release onto the host: the channel's record (https, http, file or a path; bounded in size and time) and
 * the closure, with `nix copy --from` the substituter, Nix checking every path's signature against the trusted keys
 * only (and never building).
 */
import { access, readFile, stat } from "node:fs/promises";
import type { PublicKey } from "../keys.js";
import { runNixTool } from "../nix.js";

/** The closure could not be fetched; `kind` says whether Nix refused a signature. */
export class FetchError extends Error {
  override readonly name = "FetchError";
  constructor(
    readonly kind: "missing" | "unsigned" | "failed",
    message: string,
  ) {
    super(message);
  }
}

const RECORD_MAX_BYTES = 1024 * 1024;

const FETCH_OPTIONS = [
  "--option",
  "narinfo-cache-negative-ttl",
  "0",
  "--option",
  "connect-timeout",
  "15",
  "--option",
  "stalled-download-timeout",
  "60",
  "--option",
  "require-sigs",
  "true",
];

/** The text of the channel's record. */
export async function readChannel(channel: string): Promise<string> {
  if (/^https?:\/\//.test(channel)) {
    const res = await fetch(channel, {
      signal: AbortSignal.timeout(30_000),
      headers: { "Cache-Control": "no-cache" },
    });
    if (!res.ok) throw new Error(`${channel} answered ${res.status} ${res.statusText}`);
    const length = Number(res.headers.get("content-length") ?? "0");
    if (length > RECORD_MAX_BYTES)
      throw new Error(`${channel} is too large for a release record (${length} bytes)`);
    const text = await res.text();
    if (text.length > RECORD_MAX_BYTES) throw new Error(`${channel} is too large for a release record`);
    return text;
  }
  const path = channel.startsWith("file://") ? new URL(channel).pathname : channel;
  const st = await stat(path);
  if (st.size > RECORD_MAX_BYTES) throw new Error(`${path} is too large for a release record`);
  return readFile(path, "utf8");
}

interface PathInfo {
  path: string;
  downloadSize?: number;
  narSize?: number;
}

/**
 * The entries of `nix path-info --json`: a list of objects with `path` (Nix up to 2.18, Debian's 2.8), or an object
 * keyed by path (Nix 2.19 and later, where a missing path maps to null).
 */
export function pathInfoEntries(json: string): PathInfo[] {
  const data = JSON.parse(json) as unknown;
  if (Array.isArray(data)) return data as PathInfo[];
  if (data && typeof data === "object")
    return Object.entries(data as Record<string, Omit<PathInfo, "path"> | null>)
      .filter((e): e is [string, Omit<PathInfo, "path">] => e[1] !== null)
      .map(([path, info]) => ({ ...info, path }));
  throw new Error("nix path-info printed no list");
}

/**
 * Copies `storePath`'s closure from `substituter` into the local store, accepting only paths signed by `trusted`.
 * Returns how many paths and bytes (download size from the cache's narinfo) were missing here.
 */
export async function fetchClosure(
  substituter: string,
  storePath: string,
  trusted: PublicKey[],
  onCopied?: (copied: number, of: number) => void,
): Promise<{ paths: number; bytes: number }> {
  let bytes = 0;
  let paths = 0;
  try {
    const info = await runNixTool("nix", [
      "path-info",
      "--json",
      "--recursive",
      "--store",
      substituter,
      ...FETCH_OPTIONS,
      storePath,
    ]);
    for (const entry of pathInfoEntries(info.stdout)) {
      if (await exists(entry.path)) continue;
      paths++;
      bytes += entry.downloadSize ?? entry.narSize ?? 0;
    }
  } catch (err) {
    throw new FetchError(
      "missing",
      `${substituter} does not serve ${storePath}: ${firstLines((err as Error).message)}`,
    );
  }
  let copied = 0;
  try {
    await runNixTool(
      "nix",
      [
        "copy",
        "--from",
        substituter,
        "--option",
        "trusted-public-keys",
        trusted.map((k) => k.text).join(" "),
        ...FETCH_OPTIONS,
        storePath,
      ],
      { onStderrLine: (line) => (/^copying path /.test(line) ? onCopied?.(++copied, paths) : undefined) },
    );
  } catch (err) {
    const msg = (err as Error).message;
    if (/lacks a valid signature|no signature|is not signed/.test(msg))
      throw new FetchError(
        "unsigned",
        `the closure of ${storePath} is not signed by a trusted key (Nix refused it): ${firstLines(msg)}`,
      );
    throw new FetchError("failed", `fetching ${storePath} from ${substituter} failed: ${firstLines(msg)}`);
  }
  return { paths, bytes };
}

export function firstLines(text: string, n = 6): string {
  return text.split("\n").slice(0, n).join("\n");
}

export async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
