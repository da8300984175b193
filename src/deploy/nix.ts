/**
 * Running Nix: `nix` (with the experimental features it needs enabled for this call only), `nix-store` and `nix-env`,
 * with bounded output kept for error messages, cancellable. Works with Debian's Nix 2.8 and current Nix.
 */
import { spawn } from "node:child_process";

/** A Nix command failed; the message names the command and carries its last lines of output. */
export class NixError extends Error {
  override readonly name = "NixError";
  constructor(
    message: string,
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(message);
  }
}

export interface NixRunOptions {
  signal?: AbortSignal;
  /** Extra environment (merged over this process's). */
  env?: NodeJS.ProcessEnv;
  /** Called with each line Nix prints on stderr (progress). */
  onStderrLine?: (line: string) => void;
  /** Data for stdin. */
  input?: string;
}

/** `nix` with what its newer commands need; `--option` pairs go after. */
export const NIX_FEATURES = ["--extra-experimental-features", "nix-command flakes"];

const TAIL = 30;

export function runNixTool(
  tool: "nix" | "nix-store" | "nix-env" | "nix-build" | "nix-instantiate",
  args: string[],
  opts: NixRunOptions = {},
): Promise<{ stdout: string; stderr: string }> {
  const fullArgs = tool === "nix" ? [...NIX_FEATURES, ...args] : args;
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) return reject(opts.signal.reason);
    const child = spawn(tool, fullArgs, {
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      env: { ...process.env, ...opts.env },
    });
    let stdout = "";
    const errLines: string[] = [];
    let partial = "";
    child.stdout?.on("data", (d: Buffer) => {
      if (stdout.length < 16 * 1024 * 1024) stdout += d.toString();
    });
    child.stderr?.on("data", (d: Buffer) => {
      const text = partial + d.toString();
      const lines = text.split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        opts.onStderrLine?.(line);
        errLines.push(line);
        if (errLines.length > TAIL) errLines.shift();
      }
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    const onAbort = () => child.kill("SIGTERM");
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    child.once("error", (err) => {
      opts.signal?.removeEventListener("abort", onAbort);
      const missing = (err as NodeJS.ErrnoException).code === "ENOENT";
      reject(
        new NixError(
          missing
            ? `${tool} is not installed (install Nix; on Debian: apt-get install nix-bin)`
            : `${tool}: ${err.message}`,
          null,
          "",
        ),
      );
    });
    child.once("close", (code, signal) => {
      opts.signal?.removeEventListener("abort", onAbort);
      if (partial) errLines.push(partial);
      const stderr = errLines.join("\n");
      if (opts.signal?.aborted) return reject(opts.signal.reason);
      if (code === 0) return resolve({ stdout, stderr });
      const shown = `${tool} ${fullArgs.filter((a) => !NIX_FEATURES.includes(a)).join(" ")}`;
      reject(
        new NixError(
          `${shown} ${signal ? `was killed by ${signal}` : `failed with exit status ${code}`}${stderr.trim() ? `:\n${stderr.trim().replace(/^/gm, "  | ")}` : ""}`,
          code,
          stderr,
        ),
      );
    });
  });
}
