import { readFileSync } from "node:fs";
import type { Command } from "commander";
import {
  FaultSyntaxError,
  StateDirInUseError,
  parseFault,
  startEmulator,
  type Fault,
} from "../../emulator/index.js";

interface EmulatorFlags {
  listen: string;
  token?: string;
  tokenFile?: string;
  stateDir: string;
  speed: string;
  ipPrefix: string;
  fault: string[];
  hosts?: string;
  rescue: boolean;
  rateLimit: string;
  rateRefill: string;
  json?: boolean;
  verbose?: boolean;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function fail(message: string, code = 1): void {
  process.stderr.write(`hetznix emulator: ${message}\n`);
  process.exitCode = code;
}

const TOKEN_ENV = "HETZNIX_EMULATOR_TOKEN";

/** The token from --token-file or the environment; --token still works but is visible to every local user. */
function readToken(flags: EmulatorFlags): { token: string; how: string } | { error: string } {
  if (flags.tokenFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(flags.tokenFile, "utf8");
    } catch (err) {
      return { error: `cannot read --token-file ${flags.tokenFile}: ${(err as Error).message}` };
    }
    const token = text.trim();
    if (token === "" || /\s/.test(token))
      return { error: `--token-file ${flags.tokenFile} must hold one token on one line` };
    return { token, how: `$(cat ${flags.tokenFile})` };
  }
  if (flags.token !== undefined) {
    process.stderr.write(
      `hetznix emulator: warning: --token is visible to every user of this machine (ps); use ${TOKEN_ENV} or --token-file\n`,
    );
    return { token: flags.token, how: "<the --token you gave>" };
  }
  const env = process.env[TOKEN_ENV];
  if (env) return { token: env, how: `"$${TOKEN_ENV}"` };
  return {
    error: `no API token: set ${TOKEN_ENV} (e.g. export ${TOKEN_ENV}=$(openssl rand -hex 16)) or pass --token-file FILE`,
  };
}

async function run(flags: EmulatorFlags): Promise<void> {
  const t = readToken(flags);
  if ("error" in t) return fail(t.error, 2);
  const token = t.token;
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
  let hosts: "real" | "modelled" = flags.rescue === false ? "modelled" : "real";
  if (flags.hosts !== undefined) {
    if (flags.hosts !== "real" && flags.hosts !== "modelled")
      return fail("--hosts must be real or modelled", 2);
    hosts = flags.hosts;
  }
  if (hosts === "real" && process.getuid?.() !== 0) {
    // Real hosts need root (loop devices, namespaces); without it, model boots instead of failing them.
    process.stderr.write(
      "hetznix emulator: not root, so servers' boots are modelled only (no sshd); see --hosts modelled\n",
    );
    hosts = "modelled";
  }
  const log = (line: string) => process.stderr.write(`${line}\n`);
  let emulator;
  try {
    emulator = await startEmulator({
      token,
      stateDir: flags.stateDir,
      listen: flags.listen,
      speed,
      ipPrefix: flags.ipPrefix,
      faults,
      hosts,
      rateLimit: { limit, refillPerSecond },
      log: flags.verbose
        ? log
        : (line) =>
            /nothing to boot|left by a previous run|agent failed/.test(line) ? log(line) : undefined,
    });
  } catch (err) {
    if (err instanceof StateDirInUseError) return fail(err.message, 1);
    throw err;
  }

  if (flags.json) {
    // No token in the output: the caller gave it and knows it.
    process.stdout.write(
      `${JSON.stringify({ endpoint: emulator.endpoint, admin_url: emulator.adminUrl, metadata_url: emulator.metadataUrl(0).replace("/0/", "/{server_id}/"), hosts })}\n`,
    );
  } else {
    process.stdout.write(
      [
        `Hetzner Cloud API emulator listening on ${emulator.endpoint}`,
        `  state:     ${flags.stateDir}`,
        `  servers:   ${hosts === "real" ? "real hosts (sshd on each running server's address)" : "modelled (nothing listens)"}`,
        `  metadata:  ${emulator.metadataUrl(0).replace("/0/", "/{server_id}/")}metadata`,
        `  admin:     ${emulator.adminUrl}/state, ${emulator.adminUrl}/faults`,
        "",
        "Point the hcloud CLI or hetznix at it:",
        `  export HCLOUD_ENDPOINT=${emulator.endpoint}`,
        `  export HCLOUD_TOKEN=${t.how}`,
        "",
        "Ctrl-C stops it (hosts are stopped; state stays in the state directory).",
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
      "run a local Hetzner Cloud API emulator (running servers are real hosts on loopback addresses)",
    )
    .option("--listen <host:port>", "address to listen on", "127.0.0.1:4000")
    .option("--token-file <file>", `file holding the API token clients must send (default: $${TOKEN_ENV})`)
    .option("--token <token>", "the API token on the command line (visible in ps: prefer the two above)")
    .option(
      "--state-dir <dir>",
      "where state.json and disk files live (one emulator per directory)",
      ".work/emulator",
    )
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
    .option("--hosts <kind>", "real (sshd per running server; needs root) or modelled (nothing listens)")
    .option("--no-rescue", "the same as --hosts modelled")
    .option("--verbose", "print what hosts print (boot decisions, the metadata agent, sshd)")
    .option("--json", "print the endpoint as one JSON line")
    .addHelpText(
      "after",
      `
Examples:
  $ export ${TOKEN_ENV}=$(openssl rand -hex 16)
  $ hetznix emulator --listen 127.0.0.1:4000 --state-dir .work/emulator
  $ export HCLOUD_ENDPOINT=http://127.0.0.1:4000/v1 HCLOUD_TOKEN="$${TOKEN_ENV}"
  $ hetznix emulator --speed 50 --fault capacity:fsn1:cx23 --fault http:POST:/servers:unavailable:2
  $ hetznix emulator --token-file ~/.config/emu-token --hosts modelled --json   # no root needed`,
    )
    .action(async (flags: EmulatorFlags) => {
      try {
        await run(flags);
      } catch (err) {
        fail(err instanceof Error ? err.message : String(err));
      }
    });
}
