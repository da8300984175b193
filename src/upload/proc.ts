/** Running a local program as a stream stage, with its stderr kept (last lines) for error messages. */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";

/** Keeps the last `maxLines` lines (and at most `maxBytes`) of a text stream. */
export class TailBuffer {
  private text = "";
  constructor(
    private readonly maxLines = 20,
    private readonly maxBytes = 8192,
  ) {}
  push(chunk: Buffer | string): void {
    this.text += chunk.toString();
    if (this.text.length > this.maxBytes * 2) this.text = this.text.slice(-this.maxBytes);
  }
  lines(): string[] {
    const lines = this.text.split("\n").filter((l) => l.trim() !== "");
    return lines.slice(-this.maxLines);
  }
  toString(): string {
    return this.lines().join("\n");
  }
}

export interface SpawnedStage {
  child: ChildProcessWithoutNullStreams;
  stderr: TailBuffer;
  /** Resolves on exit code 0; rejects with an Error naming the program, its exit status and stderr's last lines. */
  done: Promise<void>;
  /** Kill the program (idempotent). */
  kill(): void;
}

/**
 * Spawn `file args`, keeping stderr's tail. The caller wires stdin/stdout. `extraFds` become the child's descriptors
 * 3, 4, ... (e.g. a file it writes to).
 */
export function spawnStage(
  file: string,
  args: string[],
  label = file,
  extraFds: number[] = [],
): SpawnedStage {
  // With extra descriptors the child's stdin/stdout/stderr are still pipes.
  const child = spawn(file, args, {
    stdio: ["pipe", "pipe", "pipe", ...extraFds],
  }) as ChildProcessWithoutNullStreams;
  const stderr = new TailBuffer();
  child.stderr.on("data", (c: Buffer) => stderr.push(c));
  // Writes after the program exited early (it failed, or we killed it) are reported through `done`.
  child.stdin.on("error", () => {});
  const done = new Promise<void>((resolve, reject) => {
    child.on("error", (err) => reject(new Error(`${label} could not be started: ${err.message}`)));
    child.on("close", (code, signal) => {
      if (code === 0) return resolve();
      const status = signal ? `killed by ${signal}` : `exit status ${code}`;
      const tail = stderr.toString();
      reject(new Error(`${label} failed (${status})${tail ? `:\n${tail}` : ""}`));
    });
  });
  done.catch(() => {});
  return {
    child,
    stderr,
    done,
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    },
  };
}

/** Run a program to completion and return stdout (utf8). Rejects like spawnStage. */
export async function runCapture(file: string, args: string[], label = file): Promise<string> {
  const stage = spawnStage(file, args, label);
  stage.child.stdin.end();
  const out: Buffer[] = [];
  stage.child.stdout.on("data", (c: Buffer) => out.push(c));
  await stage.done;
  return Buffer.concat(out).toString("utf8");
}
