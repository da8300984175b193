import type { Command } from "commander";
import { FaultSyntaxError, parseFault, startEmulator, type Fault } from "../../emulator/index.js";
import { createRescueHostManager, sweep } from "../../emulator/rescue/index.js";

interface EmulatorFlags {
  listen: string;
  token?: string;
  stateDir: string;
  speed: string;
  ipPrefix: string;
  fault: string[];
  rescue: boolean;
  rateLimit: string;
  rateRefill: string;
  json?: boolean;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function fail(message: string, code = 1): void {
  process.stderr.write(`hetznix emulator: ${message}\n`);
  process.exitCode = code;
}

async function run(flags: EmulatorFlags): Promise<void> {
  const token = flags.token ?? process.env.HETZNIX_EMULATOR_TOKEN;
  if (!token) return fail("--token is required (or HETZNIX_EMULATOR_TOKEN)", 2);
  const speed = Number(flags.speed);
  if (!(speed > 0)) return fail("--speed must be a positive number", 2);
  const limit = Number(flags.rateLimit);
  const refillPerSecond = Number(flags.rateRefill);
  if (!Number.isInteger(limit) || limit < 1 || !(refillPerSecond > 0))
    return fail("--rate-limit must be a positive integer and --rate-refill a positive number", 2);
  let faults: Fault[];
  try {
    faults = flags.fault.map(parseFault);
  } catch (err) {
    if (err instanceof FaultSyntaxError) return fail(err.message, 2);
    throw err;
  }
  if (flags.rescue && process.getuid?.() !== 0) {
    // Rescue hosts need root (loop devices, namespaces); without it, model rescue boots instead of failing them.
    process.stderr.write(
      "hetznix emulator: not root, so rescue boots are modelled only (no sshd); see --no-rescue\n",
    );
    flags.rescue = false;
  }
  if (flags.rescue) {
    // Leftovers of an emulator that crashed (host directories, loop devices) would block addresses and disks.
    const swept = await sweep();
    if (swept.removedDirs.length + swept.detachedLoops.length > 0)
      process.stderr.write(
        `cleaned up ${swept.removedDirs.length} rescue host(s) and ${swept.detachedLoops.length} loop device(s) left by a previous run\n`,
      );
  }
  const rescue = flags.rescue ? createRescueHostManager() : undefined;
  const emulator = await startEmulator({
    token,
    stateDir: flags.stateDir,
    listen: flags.listen,
    speed,
    ipPrefix: flags.ipPrefix,
    faults,
    rescue,
    rateLimit: { limit, refillPerSecond },
  });

  if (flags.json) {
    // The token is the user's own choice, given on this command line: echoing it is expected.
    process.stdout.write(
      `${JSON.stringify({ endpoint: emulator.endpoint, token, admin_url: emulator.adminUrl, metadata_url: emulator.metadataUrl(0).replace("/0/", "/{server_id}/") })}\n`,
    );
  } else {
    process.stdout.write(
      [
        `Hetzner Cloud API emulator listening on ${emulator.endpoint}`,
        `  state:     ${flags.stateDir}${flags.rescue ? "" : " (rescue hosts disabled)"}`,
        `  metadata:  ${emulator.metadataUrl(0).replace("/0/", "/{server_id}/")}metadata`,
        `  admin:     ${emulator.adminUrl}/state, ${emulator.adminUrl}/faults`,
        "",
        "Point the hcloud CLI or hetznix at it:",
        `  export HCLOUD_ENDPOINT=${emulator.endpoint}`,
        `  export HCLOUD_TOKEN=${token}`,
        "",
        "Ctrl-C stops it (rescue hosts are stopped; state stays in the state directory).",
        "",
      ].join("\n"),
    );
  }

  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      if (!flags.json) process.stderr.write(`${signal}: stopping\n`);
      emulator
        .stop()
        .catch((err: unknown) => fail(`stopping: ${err instanceof Error ? err.message : String(err)}`))
        .finally(resolve);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}

export function register(program: Command): void {
  program
    .command("emulator")
    .description(
      "run a local Hetzner Cloud API emulator (servers boot real rescue hosts on loopback addresses)",
    )
    .option("--listen <host:port>", "address to listen on", "127.0.0.1:4000")
    .option("--token <token>", "API token clients must send (default: $HETZNIX_EMULATOR_TOKEN)")
    .option("--state-dir <dir>", "where state.json and disk files live", ".work/emulator")
    .option("--speed <n>", "divide every modelled latency by n", "1")
    .option("--ip-prefix <prefix>", "servers get public IPv4 PREFIX.N on loopback (N from 2)", "127.0.0.")
    .option(
      "--fault <spec>",
      "inject a fault (repeatable): http:METHOD:PATH:CODE[:COUNT], capacity:LOCATION:TYPE, ssh_drop:BYTES[:SERVER_ID]",
      collect,
      [],
    )
    .option("--rate-limit <n>", "request budget (RateLimit-Limit)", "3600")
    .option("--rate-refill <per-second>", "requests added back to the budget per second", "1")
    .option("--no-rescue", "model rescue boots without starting real rescue hosts (no sshd, no loop devices)")
    .option("--json", "print the endpoint as one JSON line")
    .addHelpText(
      "after",
      `
Examples:
  $ hetznix emulator --listen 127.0.0.1:4000 --token dev-token --state-dir .work/emulator
  $ export HCLOUD_ENDPOINT=http://127.0.0.1:4000/v1 HCLOUD_TOKEN=dev-token
  $ hetznix emulator --token t --speed 50 --fault capacity:fsn1:cx23 --fault http:POST:/servers:unavailable:2
  $ hetznix emulator --token t --no-rescue --json     # no root needed; rescue boots are modelled only`,
    )
    .action(async (flags: EmulatorFlags) => {
      try {
        await run(flags);
      } catch (err) {
        fail(err instanceof Error ? err.message : String(err));
      }
    });
}
