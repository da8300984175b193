import type { Command } from "commander";
import { formatDuration } from "../../ui/format.js";
import {
  DEFAULT_HEARTBEAT_MS,
  cleanupTemporary,
  parseDuration,
  type CleanupItem,
} from "../../upload/index.js";
import {
  checkChoice,
  makeClient,
  reportFailure,
  withClientFlags,
  writeErr,
  writeOut,
  type ClientFlags,
} from "../shared.js";

interface CleanupFlags extends ClientFlags {
  olderThan: string;
  dryRun?: boolean;
  run?: string;
  output: string;
}

function line(verb: string, i: CleanupItem): string {
  const age = i.ageSeconds !== undefined ? `, last sign of life ${i.ageSeconds}s ago` : "";
  const why = i.reason ? ` (${i.reason})` : "";
  return `${verb} ${i.kind === "server" ? "server " : "SSH key"} ${i.name} (id ${i.id}${i.runId ? `, run ${i.runId}` : ""}${age})${why}\n`;
}

async function run(flags: CleanupFlags): Promise<void> {
  const json = flags.output === "json";
  try {
    checkChoice("--output", flags.output, ["text", "json"]);
    const olderThanMs = parseDuration(flags.olderThan);
    if (!flags.run && olderThanMs < 2 * DEFAULT_HEARTBEAT_MS) {
      writeErr(
        `hetznix cleanup: note: running uploads refresh their heartbeat every ${formatDuration(DEFAULT_HEARTBEAT_MS)}; --older-than ${flags.olderThan} may remove a run that is still going\n`,
      );
    }
    const client = makeClient(flags);
    const r = await cleanupTemporary({
      client,
      olderThanMs,
      dryRun: flags.dryRun === true,
      ...(flags.run ? { runId: flags.run } : {}),
    });
    if (json) {
      writeOut(
        `${JSON.stringify({ dry_run: r.dryRun, older_than_ms: r.olderThanMs, deleted: r.deleted, kept: r.kept, failed: r.failed }, null, 2)}\n`,
      );
    } else {
      for (const i of r.deleted) writeOut(line(r.dryRun ? "would delete" : "deleted", i));
      for (const i of r.kept) writeOut(line("kept", i));
      for (const i of r.failed) writeOut(line("FAILED to delete", i));
      if (r.deleted.length + r.kept.length + r.failed.length === 0)
        writeOut("no temporary resources of hetznix found\n");
    }
    process.exitCode = r.failed.length ? 1 : 0;
  } catch (err) {
    reportFailure("cleanup", json, err);
  }
}

export function register(program: Command): void {
  withClientFlags(program.command("cleanup"))
    .description("delete temporary servers and SSH keys hetznix created, older than a given age")
    .option(
      "--older-than <duration>",
      "only resources whose run showed no sign of life (start or heartbeat) for this long (e.g. 30m, 2h)",
      "1h",
    )
    .option("--dry-run", "list what would be deleted; delete nothing")
    .option("--run <id>", "only this run's resources (any age)")
    .option("--output <format>", "text or json", "text")
    .addHelpText(
      "after",
      `
Examples:
  $ hetznix cleanup --dry-run
  $ hetznix cleanup --older-than 30m
  $ hetznix cleanup --run 3k9x2m7q1a      # one interrupted run, whatever its age`,
    )
    .action(async (flags: CleanupFlags) => run(flags));
}
