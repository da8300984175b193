/**
 * Where the token and endpoint come from: explicit options, then the environment (HCLOUD_TOKEN, HCLOUD_ENDPOINT),
 * then the active context of the official CLI's config file (~/.config/hcloud/cli.toml; HCLOUD_CONTEXT picks a
 * context, HCLOUD_CONFIG overrides the path). The token is never part of an error message.
 */

import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { parse as parseToml } from "smol-toml";
import { HCloudConfigError } from "./errors.js";

export const DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1";

export interface ResolveConfigOptions {
  /** Explicit token (wins over everything). */
  token?: string;
  /** Explicit endpoint (wins over HCLOUD_ENDPOINT). */
  endpoint?: string;
  /** Context name (wins over HCLOUD_CONTEXT and active_context). */
  context?: string;
  /** Config file path (wins over HCLOUD_CONFIG). */
  configPath?: string;
  /** Environment to read (default process.env). */
  env?: Record<string, string | undefined>;
}

export interface ResolvedConfig {
  /** Not enumerable: JSON.stringify and console.log of this object do not show it. */
  readonly token: string;
  readonly endpoint: string;
  /** Where the token came from, e.g. `option`, `HCLOUD_TOKEN`, `context "prod" in /root/.config/hcloud/cli.toml`. */
  readonly tokenSource: string;
}

export interface CliContext {
  name: string;
  /** Not enumerable. */
  readonly token: string | undefined;
}

export interface CliConfig {
  activeContext: string | undefined;
  contexts: CliContext[];
}

const FIX = "set HCLOUD_TOKEN, or create a context with `hcloud context create <name>`";

export function defaultConfigPath(env: Record<string, string | undefined> = process.env): string {
  if (env.HCLOUD_CONFIG) return env.HCLOUD_CONFIG;
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), ".config");
  return join(base, "hcloud", "cli.toml");
}

function withHiddenToken<T extends object>(
  obj: T,
  token: string | undefined,
): T & { readonly token: string } {
  Object.defineProperty(obj, "token", { value: token, enumerable: false });
  return obj as T & { readonly token: string };
}

/** Reads the CLI config file; undefined when it does not exist. Parse errors name the line, never its text. */
export function readCliConfig(path: string): CliConfig | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as { code?: unknown }).code === "ENOENT") return undefined;
    throw new HCloudConfigError(`Cannot read ${path}: ${(err as { code?: string }).code ?? "read error"}`);
  }
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (err) {
    // The parser's message quotes the offending line, which may hold a token: report only its position.
    const line = (err as { line?: unknown }).line;
    throw new HCloudConfigError(
      `Cannot parse ${path}${typeof line === "number" ? ` (line ${line})` : ""}: not valid TOML`,
    );
  }
  const contexts: CliContext[] = [];
  const raw = Array.isArray(doc.contexts) ? (doc.contexts as unknown[]) : [];
  for (const c of raw) {
    if (typeof c !== "object" || c === null) continue;
    const rec = c as Record<string, unknown>;
    if (typeof rec.name !== "string") continue;
    contexts.push(withHiddenToken({ name: rec.name }, typeof rec.token === "string" ? rec.token : undefined));
  }
  return {
    activeContext: typeof doc.active_context === "string" ? doc.active_context : undefined,
    contexts,
  };
}

/** Resolves token and endpoint; throws HCloudConfigError naming the fix when there is no token. */
export function resolveConfig(opts: ResolveConfigOptions = {}): ResolvedConfig {
  const env = opts.env ?? process.env;
  const endpoint = (opts.endpoint || env.HCLOUD_ENDPOINT || DEFAULT_ENDPOINT).replace(/\/+$/, "");
  if (opts.token) return withHiddenToken({ endpoint, tokenSource: "option" }, opts.token);
  if (env.HCLOUD_TOKEN) return withHiddenToken({ endpoint, tokenSource: "HCLOUD_TOKEN" }, env.HCLOUD_TOKEN);

  const path = opts.configPath ?? defaultConfigPath(env);
  const config = readCliConfig(path);
  const wanted = opts.context || env.HCLOUD_CONTEXT || config?.activeContext;
  if (!config || !wanted) {
    throw new HCloudConfigError(`No Hetzner Cloud API token: ${FIX}.`);
  }
  const ctx = config.contexts.find((c) => c.name === wanted);
  if (!ctx) {
    const names = config.contexts.map((c) => c.name);
    throw new HCloudConfigError(
      `No context "${wanted}" in ${path} (contexts: ${names.length > 0 ? names.join(", ") : "none"}): ${FIX}.`,
    );
  }
  if (!ctx.token) throw new HCloudConfigError(`Context "${wanted}" in ${path} has no token: ${FIX}.`);
  return withHiddenToken({ endpoint, tokenSource: `context "${wanted}" in ${path}` }, ctx.token);
}
