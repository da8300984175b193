/**
 * What the release tests share: a Nix environment of their own (the sample settings, the narinfo cache in the
 * test's temporary directory), the CLI as a child process, and Nix as a host would use it to fetch a closure.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { nixEnv } from "../../scripts/sample/image.js";

export const ROOT = join(import.meta.dirname, "..", "..");
const CLI = join(ROOT, "src/cli/main.ts");

/** The environment for Nix and the CLI: no substituters, no sandbox, flakes on, caches under `tmp`. */
export function releaseEnv(tmp: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = nixEnv({ ...process.env, ...extra });
  env.NIX_CONFIG = `${env.NIX_CONFIG}\nextra-experimental-features = nix-command flakes\nnarinfo-cache-negative-ttl = 0`;
  env.XDG_CACHE_HOME = join(tmp, "xdg-cache");
  for (const v of ["GITHUB_SHA", "CI_COMMIT_SHA", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]) delete env[v];
  return env;
}

export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (bounded by `timeoutMs`, then SIGKILL). */
export function run(
  command: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {},
): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: opts.cwd ?? ROOT,
      env: opts.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 180_000);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** `hetznix ARGS...` from the sources. */
export function hetznix(args: string[], env: NodeJS.ProcessEnv, timeoutMs?: number): Promise<Ran> {
  return run(process.execPath, ["--import", "tsx", CLI, ...args], {
    env,
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
  });
}

/** The CLI's argv for spawning it yourself. */
export function hetznixArgv(args: string[]): string[] {
  return ["--import", "tsx", CLI, ...args];
}

/**
 * What a host does: `nix copy --from URL` into a store of its own (a chroot store at `root`), trusting only
 * `publicKey` and requiring signatures.
 */
export function fetchAsHost(
  url: string,
  storePath: string,
  publicKey: string,
  root: string,
  env: NodeJS.ProcessEnv,
): Promise<Ran> {
  return run(
    "nix",
    [
      "--extra-experimental-features",
      "nix-command",
      "copy",
      "--from",
      url,
      "--to",
      root,
      "--option",
      "trusted-public-keys",
      publicKey,
      "--option",
      "require-sigs",
      "true",
      storePath,
    ],
    { env },
  );
}

/** `release publish --store-path PATH` argv. */
export function publishArgv(
  o: { path: string; channel: string; releases: string; cache: string; key: string },
  extra: string[] = [],
): string[] {
  return [
    "release",
    "publish",
    "--store-path",
    o.path,
    "--channel",
    o.channel,
    "--releases",
    o.releases,
    "--cache",
    o.cache,
    "--signing-key",
    o.key,
    ...extra,
  ];
}
