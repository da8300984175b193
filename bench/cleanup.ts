/**
 * Everything the benchmark starts registers how to undo it here; `runCleanups` undoes it in reverse order, once,
 * from `finally` and from SIGINT/SIGTERM (each step bounded in time, so a stuck step cannot hang the exit).
 */
import { killActiveChildren } from "./measure.js";

type Cleanup = { name: string; fn: () => Promise<void> };

const stack: Cleanup[] = [];
let stopping = false;

/** True once a signal asked the benchmark to stop: loops check it and end early. */
export function isStopping(): boolean {
  return stopping;
}
const STEP_TIMEOUT_MS = 30_000;

/** Register an undo step; returns a function that runs it early (and unregisters it). */
export function onCleanup(name: string, fn: () => Promise<void>): () => Promise<void> {
  const entry = { name, fn };
  stack.push(entry);
  return async () => {
    const i = stack.indexOf(entry);
    if (i >= 0) stack.splice(i, 1);
    await fn();
  };
}

export async function runCleanups(log: (line: string) => void): Promise<void> {
  killActiveChildren();
  while (stack.length > 0) {
    const { name, fn } = stack.pop()!;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        fn(),
        new Promise<void>((_, reject) => {
          timer = setTimeout(() => reject(new Error("timed out")), STEP_TIMEOUT_MS);
        }),
      ]);
    } catch (err) {
      log(`cleanup ${name}: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** On SIGINT/SIGTERM: undo everything, then exit with 130/143. A second signal exits at once. */
export function installSignalHandlers(log: (line: string) => void): void {
  for (const [signal, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const) {
    process.on(signal, () => {
      if (stopping) process.exit(code);
      stopping = true;
      log(`${signal}: cleaning up (again to exit at once)`);
      void runCleanups(log).finally(() => process.exit(code));
    });
  }
}
