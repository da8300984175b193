/**
 * Run a benchmark in a network namespace of its own (`unshare -n`, loopback up): its tc qdisc on `lo`, its emulator's
 * addresses and its rescue hosts then touch nobody else's traffic (other work on the machine, tests running at the
 * same time). The outer process only waits, passing SIGINT and SIGTERM on: the inner one runs in a process group of
 * its own, so a Ctrl-C reaches it once, through here, and it cleans up as it does on any signal.
 */
import { spawn } from "node:child_process";

const INSIDE_ENV = "HETZNIX_BENCH_NETNS";

/**
 * Unless this process already runs in the namespace: start `script` with `argv` again inside one, wait for it and
 * exit with its code (never returns). Inside: returns at once.
 */
export async function runInOwnNetns(script: string, argv: string[]): Promise<void> {
  if (process.env[INSIDE_ENV] === "1") return;
  const child = spawn(
    "unshare",
    [
      "--net",
      "--",
      "sh",
      "-c",
      'ip link set lo up && exec "$@"',
      "sh",
      process.execPath,
      ...process.execArgv,
      script,
      ...argv,
    ],
    { stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, [INSIDE_ENV]: "1" }, detached: true },
  );
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      child.kill(signal);
    });
  }
  const code = await new Promise<number>((resolve) => {
    child.on("error", () => resolve(1));
    child.on("close", (c, signal) => resolve(c ?? (signal === "SIGINT" ? 130 : 143)));
  });
  process.exit(code);
}
