import { Option, type Command } from "commander";
import {
  APPLY_EXIT,
  ApplyDetachedError,
  ApplyUsageError,
  applyRelease,
  confirmApply,
  runWorker,
  type ApplyResult,
  type WorkerEvent,
} from "../../deploy/apply/index.js";
import { DurationSyntaxError, parseDuration } from "../../util/time.js";
import { APPLY_TITLES } from "../../ui/titles.js";
import { collect, writeErr, writeOut } from "../shared.js";
import { createProgressRenderer, chooseMode } from "../../ui/progress.js";

interface ApplyFlags {
  channel?: string;
  trustedKey: string[];
  substituter?: string;
  action: string;
  healthCheck: string[];
  healthTimeout: string;
  confirmTimeout?: string;
  nonce?: string;
  output: string;
  confirm?: string;
  worker?: string;
}

function usage(message: string): void {
  writeErr(`hetznix apply: ${message}\n`);
  process.exitCode = 2;
}

function duration(flag: string, text: string): number {
  try {
    return parseDuration(text);
  } catch (err) {
    if (err instanceof DurationSyntaxError) throw new ApplyUsageError(`${flag}: ${err.message}`);
    throw err;
  }
}

function render(result: ApplyResult, output: string): void {
  if (output === "json") writeOut(`${JSON.stringify(result, null, 2)}\n`);
  else if (output === "text") {
    const stream =
      result.status === "applied" || result.status === "noop" || result.status === "dry_run"
        ? process.stdout
        : process.stderr;
    stream.write(`hetznix apply: ${result.status.replace("_", " ")}: ${result.message}\n`);
  }
  process.exitCode = APPLY_EXIT[result.status];
}

async function run(flags: ApplyFlags): Promise<void> {
  if (flags.worker !== undefined) {
    const result = await runWorker(flags.worker);
    process.exitCode = APPLY_EXIT[result.status];
    return;
  }
  if (flags.confirm !== undefined) {
    await confirmApply(flags.confirm);
    writeOut(`confirmed apply ${flags.confirm}\n`);
    return;
  }
  if (!["text", "json", "events"].includes(flags.output))
    return usage("--output must be text, json or events");
  if (!flags.channel)
    return usage(
      "--channel URL is required (the channel's record, e.g. https://releases.example.com/channels/production.json)",
    );
  const progress =
    flags.output === "text"
      ? createProgressRenderer({
          mode: chooseMode("text", process.stderr),
          out: process.stderr,
          titles: APPLY_TITLES,
        })
      : undefined;
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once("SIGINT", onSignal);
  try {
    const result = await applyRelease({
      channel: flags.channel,
      trustedKeys: flags.trustedKey,
      ...(flags.substituter ? { substituter: flags.substituter } : {}),
      action: flags.action as never,
      healthChecks: flags.healthCheck,
      healthTimeoutMs: duration("--health-timeout", flags.healthTimeout),
      ...(flags.confirmTimeout !== undefined
        ? { confirmTimeoutMs: duration("--confirm-timeout", flags.confirmTimeout) }
        : {}),
      ...(flags.nonce ? { nonce: flags.nonce } : {}),
      signal: abort.signal,
      onEvent: (e: WorkerEvent) => {
        if (flags.output === "events") writeOut(`${JSON.stringify(e)}\n`);
        else if (progress && e.kind !== "result") {
          if (e.kind === "awaiting-confirmation")
            writeErr(
              `waiting ${Math.round(e.timeoutMs / 1000)} s for confirmation: run \`hetznix apply --confirm ${e.nonce}\` over a new SSH connection\n`,
            );
          else progress.onEvent(e);
        }
      },
    });
    progress?.finish();
    render(result, flags.output);
  } catch (err) {
    progress?.finish();
    if (err instanceof ApplyDetachedError) {
      writeErr(`hetznix apply: ${err.message}\n`);
      process.exitCode = 130;
      return;
    }
    throw err;
  } finally {
    process.off("SIGINT", onSignal);
  }
}

export function register(program: Command): void {
  program
    .command("apply")
    .description(
      "apply a channel's signed release on this server: fetch, activate detached, health-check, roll back on failure",
    )
    .option("--channel <url>", "the channel's record (https://, file:// or a path)")
    .option(
      "--trusted-key <key>",
      "public key releases must be signed with, NAME:BASE64 (repeatable)",
      collect,
      [],
    )
    .option("--substituter <url>", "binary cache with the closure (default: the one the release names)")
    .option("--action <action>", "switch, boot, test or dry-activate", "switch")
    .option("--health-check <cmd>", "command that must succeed after activation (repeatable)", collect, [])
    .option("--health-timeout <duration>", "time limit of each health check", "60s")
    .option(
      "--confirm-timeout <duration>",
      "wait for `hetznix apply --confirm NONCE` over a new connection, else roll back",
    )
    .option("--nonce <hex>", "this apply's nonce (default: random; a deployer passes its own)")
    .option(
      "--output <format>",
      "text, json (one object at the end) or events (JSON lines as they happen)",
      "text",
    )
    .option("--confirm <nonce>", "confirm the apply waiting with this nonce (run over a new connection)")
    .addOption(new Option("--worker <dir>", "run the apply of DIR (started by apply itself)").hideHelp())
    .addHelpText(
      "after",
      `
Exit status: 0 applied (or already active), 1 failed before changing anything, 2 usage, 3 refused (signature,
untrusted key, another system, an older serial), 4 failed and rolled back, 5 the rollback itself failed,
6 another apply is running on this host.

Examples:
  $ hetznix apply --channel https://releases.example.com/channels/production.json \\
      --trusted-key releases-1:BASE64= --health-check 'curl -fsS http://localhost/health'
  $ hetznix apply --channel file:///srv/releases/channels/staging.json --trusted-key "$(cat release.pub)" --action test
  $ hetznix apply --confirm 3f2a...            # from a second SSH connection`,
    )
    .action(async (flags: ApplyFlags) => {
      try {
        await run(flags);
      } catch (err) {
        if (err instanceof ApplyUsageError) return usage(err.message);
        writeErr(`hetznix apply: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exitCode = 1;
      }
    });
}
