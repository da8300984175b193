import type { Command } from "commander";
import {
  applyMetadata,
  DEFAULT_METADATA_URL,
  MetadataError,
  parseDuration,
  planFromService,
  type AgentOptions,
  type LinkDecision,
  type PlannedFile,
} from "../../metadata/index.js";

interface AgentFlags {
  metadataUrl: string;
  root: string;
  timeout: string;
  userdata?: string;
  linkSetup: boolean;
  hostname: boolean;
  json?: boolean;
}

function agentOptions(flags: AgentFlags): AgentOptions {
  return {
    metadataUrl: flags.metadataUrl,
    root: flags.root,
    timeoutMs: parseDuration(flags.timeout),
    userDataPath: flags.userdata ?? null,
    linkSetup: flags.linkSetup ? "auto" : "never",
    hostname: flags.hostname,
    onWaitForLink: () => process.stderr.write("no network link yet; waiting for one\n"),
    onRetry: ({ url, attempt, error }) => {
      if (attempt === 1 || attempt % 10 === 0) process.stderr.write(`waiting for ${url} (${error})\n`);
    },
  };
}

function describeLink(link: LinkDecision | null): string | null {
  if (link === null || link.kind === "ready") return null;
  if (link.kind === "none") return "no Ethernet link found; fetched without one";
  return `brought ${link.link} up with ${link.address} for the fetch, then restored it`;
}

function fail(err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`hetznix metadata: ${message}\n`);
  process.exitCode = err instanceof MetadataError && err.code === "usage" ? 2 : 1;
}

/** The file's text for `show`; user data is not printed (it may carry secrets), only its size. */
function shownContent(file: PlannedFile): string {
  if (file.kind === "userdata") return `(${file.content.length} bytes of user data, not shown)\n`;
  return file.content.toString();
}

function withAgentFlags(command: Command): Command {
  return command
    .option("--metadata-url <url>", "metadata service base URL", DEFAULT_METADATA_URL)
    .option("--root <dir>", "write under this directory instead of /", "/")
    .option("--timeout <duration>", "give up fetching after this long (e.g. 30s, 2m)", "60s")
    .option("--userdata <file>", "also fetch user data and write it to this file (under --root)")
    .option("--no-link-setup", "never bring a link up for the fetch")
    .option("--no-hostname", "leave /etc/hostname and the host name alone")
    .option("--json", "print the result as JSON");
}

export function register(program: Command): void {
  const metadata = program
    .command("metadata")
    .description(
      "the boot-time agent: write networkd units, host name and root's SSH keys from Hetzner metadata",
    );

  metadata.addHelpText(
    "after",
    `
Examples:
  $ hetznix metadata show
  $ hetznix metadata apply --timeout 2m
  $ hetznix metadata apply --metadata-url http://127.0.0.1:4000/metadata/42/hetzner/v1/ --root /tmp/root --json`,
  );
  withAgentFlags(metadata.command("apply"))
    .description("read the metadata service and write the files (re-running gives the same files)")
    .action(async (flags: AgentFlags) => {
      try {
        const result = await applyMetadata(agentOptions(flags));
        if (flags.json) {
          const { written, unchanged, removed, skipped, liveHostname, link, plan } = result;
          const out = { written, unchanged, removed, skipped, liveHostname, link, warnings: plan.warnings };
          process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
          return;
        }
        const linkNote = describeLink(result.link);
        if (linkNote) process.stdout.write(`${linkNote}\n`);
        for (const warning of result.plan.warnings) process.stderr.write(`warning: ${warning}\n`);
        for (const path of result.written) process.stdout.write(`wrote     ${path}\n`);
        for (const path of result.unchanged) process.stdout.write(`unchanged ${path}\n`);
        for (const path of result.removed) process.stdout.write(`removed   ${path}\n`);
        for (const path of result.skipped)
          process.stdout.write(`skipped   ${path} (a symlink stands there)\n`);
        if (result.liveHostname) process.stdout.write(`host name set to ${result.liveHostname}\n`);
      } catch (err) {
        fail(err);
      }
    });

  withAgentFlags(metadata.command("show"))
    .description("print what `apply` would write and remove, without writing")
    .action(async (flags: AgentFlags) => {
      try {
        const { plan, stale, root } = await planFromService(agentOptions(flags));
        if (flags.json) {
          const files = plan.files.map((f) => ({
            kind: f.kind,
            path: f.path,
            mode: `0${f.mode.toString(8)}`,
            content: shownContent(f),
          }));
          process.stdout.write(
            `${JSON.stringify({ root, files, remove: stale, warnings: plan.warnings }, null, 2)}\n`,
          );
          return;
        }
        for (const warning of plan.warnings) process.stderr.write(`warning: ${warning}\n`);
        for (const file of plan.files) {
          process.stdout.write(`==> ${file.path} (mode 0${file.mode.toString(8)})\n${shownContent(file)}\n`);
        }
        for (const path of stale) process.stdout.write(`==> ${path} would be removed (stale)\n`);
      } catch (err) {
        fail(err);
      }
    });
}
