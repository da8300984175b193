/**
 * Runs the `hetznix` CLI as a child process (tsx from this checkout) with a clean environment: only PATH, HOME, an
 * hcloud config path that does not exist, and the endpoint and token given. Output is collected; the run is bounded
 * (SIGKILL after `timeoutMs`).
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { join } from "node:path";

export const CLI_MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;

export interface CliOptions {
  /** HOME of the child (also where the non-existent hcloud config would be). */
  home: string;
  endpoint?: string;
  token?: string;
  /** More environment variables (PATH may be overridden here). */
  env?: Record<string, string>;
  /** SIGKILL after this long (default 120 s); the result then says so. */
  timeoutMs?: number;
}

export interface CliRun {
  child: ChildProcessWithoutNullStreams;
  /** Output so far (stderr is no longer collected once the test closed its end of the pipe). */
  stdout(): string;
  stderr(): string;
  /** Settles when the child has exited. */
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

export function startCli(args: string[], opts: CliOptions): CliRun {
  const env: Record<string, string> = {
    PATH: process.env["PATH"] ?? "",
    HOME: opts.home,
    HCLOUD_CONFIG: join(opts.home, "no-such-cli.toml"),
    ...(opts.endpoint ? { HCLOUD_ENDPOINT: opts.endpoint } : {}),
    ...(opts.token ? { HCLOUD_TOKEN: opts.token } : {}),
    ...opts.env,
  };
  const child = spawn(process.execPath, ["--import", "tsx", CLI_MAIN, ...args], {
    env,
    stdio: ["pipe", "pipe", "pipe"],
  });
  child.stdin.end();
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const done = new Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
    stdout: string;
    stderr: string;
  }>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`hetznix ${args.join(" ")} did not finish in ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
  return { child, stdout: () => stdout, stderr: () => stderr, done };
}

/** Runs the CLI to completion. */
export function runCli(args: string[], opts: CliOptions) {
  return startCli(args, opts).done;
}
