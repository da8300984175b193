import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { DeployError, deployFleet, type DeployResult } from "../../deploy/rollout/index.js";
import { DurationSyntaxError, parseDuration } from "../../util/time.js";
import { createProgressRenderer, chooseMode } from "../../ui/progress.js";
import {
  collect,
  describeError,
  makeClient,
  withClientFlags,
  writeErr,
  writeOut,
  type ClientFlags,
} from "../shared.js";
import { DEPLOY_TITLES } from "../../ui/titles.js";

interface DeployFlags extends ClientFlags {
  selector?: string;
  server: string[];
  channel?: string;
  trustedKey: string[];
  substituter?: string;
  parallel: string;
  canary: string;
  maxFailures: string;
  confirmTimeout: string;
  healthCheck: string[];
  healthTimeout: string;
  magicRollback: boolean;
  onlyFailed?: boolean;
  sshKey?: string;
  acceptHostKey: string[];
  output: string;
}

function usage(message: string): void {
  writeErr(`hetznix deploy: ${message}\n`);
  process.exitCode = 2;
}

function int(flag: string, text: string, min: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min)
    throw new DeployError("usage", `${flag} must be an integer of at least ${min}`);
  return n;
}

function duration(flag: string, text: string): number {
  try {
    return parseDuration(text);
  } catch (err) {
    if (err instanceof DurationSyntaxError) throw new DeployError("usage", `${flag}: ${err.message}`);
    throw err;
  }
}

function summary(r: DeployResult): string {
  const lines: string[] = [];
  const width = Math.max(4, ...r.servers.map((s) => s.name.length), ...r.notTouched.map((n) => n.length));
  for (const s of r.servers) {
    const release = s.serial !== undefined ? `#${s.serial}` : "";
    const timing = s.steps
      .filter((t) => t.status !== "skipped")
      .map((t) => `${t.step} ${(t.durationMs / 1000).toFixed(1)}s`)
      .join(", ");
    lines.push(
      `  ${s.name.padEnd(width)}  ${s.outcome.replace(/_/g, " ").padEnd(16)} ${release.padEnd(5)} ${timing}`,
    );
    if (s.outcome !== "deployed" && s.outcome !== "unchanged")
      lines.push(`  ${"".padEnd(width)}  ${s.message.split("\n")[0]}`);
  }
  for (const n of r.notTouched) lines.push(`  ${n.padEnd(width)}  not touched`);
  for (const s of r.skipped) lines.push(`  ${s.name.padEnd(width)}  skipped: ${s.reason}`);
  const counts = new Map<string, number>();
  for (const s of r.servers) counts.set(s.outcome, (counts.get(s.outcome) ?? 0) + 1);
  if (r.notTouched.length) counts.set("not_touched", r.notTouched.length);
  const head = [...counts].map(([k, v]) => `${v} ${k.replace(/_/g, " ")}`).join(", ");
  return `Deploy of ${r.channel} in ${(r.durationMs / 1000).toFixed(1)}s: ${head}${r.stopped ? `\nstopped: ${r.stopped}` : ""}\n${lines.join("\n")}\n`;
}

async function run(flags: DeployFlags): Promise<void> {
  if (!["text", "json"].includes(flags.output)) return usage("--output must be text or json");
  if (!flags.channel)
    return usage("--channel URL is required (the channel's record, as the servers fetch it)");
  let privateKey: string | undefined;
  if (flags.sshKey) {
    try {
      privateKey = readFileSync(flags.sshKey, "utf8");
    } catch (err) {
      return usage(`cannot read --ssh-key ${flags.sshKey}: ${(err as Error).message}`);
    }
  }
  const agent = privateKey ? undefined : process.env.SSH_AUTH_SOCK;
  const abort = new AbortController();
  let signals = 0;
  const onSignal = () => {
    signals++;
    if (signals === 1) {
      writeErr(
        "\nhetznix deploy: stopping: no further server is started; servers waiting for a confirmation roll back\n",
      );
      abort.abort(new Error("interrupted"));
    } else process.exit(130);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const progress =
    flags.output === "text"
      ? createProgressRenderer({
          mode: chooseMode("text", process.stderr),
          out: process.stderr,
          multi: true,
          titles: DEPLOY_TITLES,
        })
      : undefined;
  try {
    const result = await deployFleet({
      client: makeClient(flags),
      ...(flags.selector ? { selector: flags.selector } : {}),
      ...(flags.server.length ? { servers: flags.server } : {}),
      channel: flags.channel,
      trustedKeys: flags.trustedKey,
      ...(flags.substituter ? { substituter: flags.substituter } : {}),
      parallel: int("--parallel", flags.parallel, 1),
      canary: int("--canary", flags.canary, 0),
      maxFailures: int("--max-failures", flags.maxFailures, 0),
      confirmTimeoutMs: duration("--confirm-timeout", flags.confirmTimeout),
      magicRollback: flags.magicRollback,
      healthChecks: flags.healthCheck,
      healthTimeoutMs: duration("--health-timeout", flags.healthTimeout),
      onlyFailed: flags.onlyFailed === true,
      ssh: { ...(privateKey ? { privateKey } : {}), ...(agent ? { agent } : {}) },
      acceptHostKeys: flags.acceptHostKey,
      signal: abort.signal,
      ...(progress ? { onEvent: (e) => progress.onEvent(e) } : {}),
    });
    progress?.finish();
    if (flags.output === "json") writeOut(`${JSON.stringify(result, null, 2)}\n`);
    else writeOut(summary(result));
    process.exitCode = result.exitCode;
  } catch (err) {
    progress?.finish();
    if (err instanceof DeployError && err.code === "usage") return usage(err.message);
    if (flags.output === "json")
      writeOut(
        `${JSON.stringify({ error: { code: err instanceof DeployError ? err.code : "error", message: describeError(err) } }, null, 2)}\n`,
      );
    else writeErr(`hetznix deploy: ${describeError(err)}\n`);
    process.exitCode = 1;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

export function register(program: Command): void {
  withClientFlags(
    program
      .command("deploy")
      .description(
        "roll a channel's release out to servers found by label selector or name: canaries, batches, a failure budget, magic rollback",
      ),
  )
    .option("--selector <labels>", "Hetzner label selector, e.g. role=web,env=prod (full syntax)")
    .option("--server <name>", "a server by name (repeatable; instead of --selector)", collect, [])
    .option("--channel <url>", "the channel's record, as the servers fetch it (https://...)")
    .option(
      "--trusted-key <key>",
      "public key the releases are signed with, NAME:BASE64 (repeatable)",
      collect,
      [],
    )
    .option("--substituter <url>", "binary cache the servers fetch from (default: the one the release names)")
    .option("--parallel <n>", "servers deployed at once", "5")
    .option("--canary <n>", "servers deployed first; if one fails, no other is touched", "0")
    .option("--max-failures <n>", "failures tolerated before the rollout stops starting servers", "0")
    .option("--confirm-timeout <duration>", "each server rolls back unless confirmed within this time", "30s")
    .option("--no-magic-rollback", "do not wait for a confirmation (for intended SSH or network changes)")
    .option(
      "--health-check <cmd>",
      "command run on each server after activation; failure rolls back (repeatable)",
      collect,
      [],
    )
    .option("--health-timeout <duration>", "time limit of each health check", "60s")
    .option(
      "--only-failed",
      "only servers whose last deploy of this channel failed, rolled back or was not reached",
    )
    .option("--ssh-key <file>", "private key for root (default: the SSH agent, SSH_AUTH_SOCK)")
    .option(
      "--accept-host-key <name>",
      "accept a changed SSH host key of this server on purpose (repeatable)",
      collect,
      [],
    )
    .option("--output <format>", "text or json", "text")
    .addHelpText(
      "after",
      `
Host keys: the first contact with a server records its SSH host key in hetznix's known hosts
($XDG_STATE_HOME/hetznix/known_hosts.json); a changed key is refused until accepted with --accept-host-key.

Exit status: 0 every server deployed (or already on the release), 1 nothing was started (no server, API error),
2 usage, 4 some servers failed, rolled back or were not touched, 5 a rollback itself failed.

Examples:
  $ hetznix deploy --selector role=web --channel https://releases.example.com/channels/production.json \\
      --trusted-key "$(cat release.pub)" --canary 1 --parallel 5 --max-failures 1 \\
      --health-check 'curl -fsS http://localhost/health'
  $ hetznix deploy --selector role=web --channel ... --trusted-key ... --only-failed
  $ hetznix deploy --server web-1 --channel ... --trusted-key ... --no-magic-rollback   # changing the SSH port`,
    )
    .action(async (flags: DeployFlags) => {
      try {
        await run(flags);
      } catch (err) {
        if (err instanceof DeployError && err.code === "usage") return usage(err.message);
        writeErr(`hetznix deploy: ${describeError(err)}\n`);
        process.exitCode = 1;
      }
    });
}
