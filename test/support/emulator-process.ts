/**
 * The emulator as its own process (`hetznix emulator --json`, real hosts), for tests that stop it by signal: a
 * scratch directory with its state and its hosts' work directory (TMPDIR), a random token in the environment.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const MAIN = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));

export interface EmulatorProcess {
  child: ChildProcess;
  /** Scratch directory holding state/ and tmp/ (the caller removes it). */
  dir: string;
  stateDir: string;
  /** Where its hosts' directories are made. */
  hostsTmp: string;
  token: string;
  /** Resolves with the API root once the emulator printed it (rejects after 30 s or when it exits first). */
  endpoint: Promise<string>;
  /** Resolves with the exit code (null after a signal) when the process ended. */
  exited: Promise<number | null>;
  /** What it printed on stderr so far. */
  stderr(): string;
}

export async function spawnEmulator(prefix: string, ipPrefix: string): Promise<EmulatorProcess> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const hostsTmp = join(dir, "tmp");
  const stateDir = join(dir, "state");
  await mkdir(hostsTmp);
  const token = randomBytes(12).toString("hex");
  const args = ["--import", "tsx", MAIN, "emulator", "--listen", "127.0.0.1:0", "--state-dir", stateDir];
  args.push("--speed", "200", "--ip-prefix", ipPrefix, "--json");
  const child = spawn(process.execPath, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, HETZNIX_EMULATOR_TOKEN: token, TMPDIR: hostsTmp },
  });
  let out = "";
  let err = "";
  child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  const endpoint = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no endpoint after 30 s: ${err}`)), 30_000);
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      const line = out.split("\n")[0];
      if (out.includes("\n") && line) {
        clearTimeout(timer);
        resolve((JSON.parse(line) as { endpoint: string }).endpoint);
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`the emulator exited before printing its endpoint: ${err}`));
    });
  });
  endpoint.catch(() => undefined);
  return { child, dir, stateDir, hostsTmp, token, endpoint, exited, stderr: () => err };
}
