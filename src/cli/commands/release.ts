import { readFileSync } from "node:fs";
import type { Command, CommanderError } from "commander";
import {
  ReleaseError,
  listChannels,
  listReleases,
  promoteRelease,
  publishRelease,
  rollbackChannel,
  showRelease,
  writeSigningKeyFiles,
  type ChannelChange,
  type ListedRecord,
  type PublishResult,
  type SignedRecord,
} from "../../deploy/index.js";
import { formatBytes, formatDuration } from "../../ui/format.js";
import { chooseMode, createProgressRenderer, type ProgressRenderer } from "../../ui/progress.js";
import { UsageError, checkChoice, collect, installSignals, reportFailure, runJson } from "../shared.js";

interface OutputFlags {
  output: string;
}

interface PublishFlags extends OutputFlags {
  storePath?: string;
  flake?: string;
  channel?: string;
  releases?: string;
  cache?: string;
  signingKey?: string;
  cacheUrl?: string;
  system?: string;
  revision?: string;
  compression: string;
}

interface ReadFlags extends OutputFlags {
  releases?: string;
  channel?: string;
  serial?: string;
  limit?: string;
  trustedKey?: string[];
}

interface ChangeFlags extends OutputFlags {
  releases?: string;
  channel?: string;
  signingKey?: string;
  cache?: string;
  trustedKey?: string[];
  to?: string;
  from?: string;
  serial?: string;
}

/** Titles of the release steps in progress output. */
const TITLES: Record<string, string> = {
  check: "check inputs",
  build: "build",
  inspect: "inspect",
  cache: "binary cache",
  record: "signed record",
};

const KEY_TEXT = /^[A-Za-z0-9._+-]+:[A-Za-z0-9+/]+={0,2}$/;

function need(value: string | undefined, flag: string, example: string): string {
  if (value === undefined || value === "") throw new UsageError(`give ${flag} (e.g. ${flag} ${example})`);
  return value;
}

/** --serial, --to and --limit: a whole number from 1. */
function serialFlag(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[1-9][0-9]{0,14}$/.test(value)) throw new UsageError(`${flag} must be 1, 2, 3, ... (got ${value})`);
  return Number(value);
}

/** --trusted-key: a public key (`name:base64`), or a file holding one. */
function trustedKeys(values: string[] | undefined): string[] {
  return (values ?? []).map((v) => {
    if (KEY_TEXT.test(v)) return v;
    try {
      return readFileSync(v, "utf8").trim();
    } catch {
      throw new UsageError(`--trusted-key ${v} is neither a public key (NAME:BASE64) nor a readable file`);
    }
  });
}

function outputJson(flags: OutputFlags): boolean {
  return checkChoice("--output", flags.output, ["text", "json"]) === "json";
}

/** Errors: JSON or a line, and the exit status (2 for usage errors, also those the library finds). */
function fail(command: string, json: boolean, err: unknown): void {
  reportFailure(command, json, err);
  if (err instanceof ReleaseError && err.code === "invalid_argument") process.exitCode = 2;
}

function print(json: boolean, body: unknown, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(body, null, 2)}\n` : text());
}

function describeRecord(r: SignedRecord): string {
  const origin =
    r.kind === "rollback"
      ? ` (rollback to ${r.rollbackOf})`
      : r.kind === "promote" && r.promotedFrom
        ? ` (from ${r.promotedFrom.channel} ${r.promotedFrom.serial})`
        : "";
  return `${r.serial}\t${r.kind}${origin}\t${r.created}\t${r.storePath}${r.revision ? `\t${r.revision.slice(0, 12)}` : ""}`;
}

function listedJson(l: ListedRecord): Record<string, unknown> {
  return {
    current: l.current,
    ...(l.verified !== undefined ? { verified: l.verified } : {}),
    record: l.record,
  };
}

/** Runs a writing operation with progress on stderr and Ctrl-C handling. */
async function withProgress<T>(
  command: string,
  flags: OutputFlags,
  body: (signal: AbortSignal, renderer: ProgressRenderer) => Promise<T>,
  done: (result: T, json: boolean) => void,
): Promise<void> {
  let json = flags.output === "json";
  let renderer: ProgressRenderer | undefined;
  const signals = installSignals(command);
  try {
    json = outputJson(flags);
    renderer = createProgressRenderer({
      mode: chooseMode(json ? "json" : "text", process.stderr),
      out: process.stderr,
      titles: TITLES,
    });
    const result = await body(signals.signal, {
      onEvent(e) {
        // JSON mode renders no progress; warnings still go to stderr (and into the JSON result).
        if (json && e.kind === "note" && e.message.startsWith("warning: "))
          process.stderr.write(`${e.message}\n`);
        renderer?.onEvent(e);
      },
      finish: () => renderer?.finish(),
    });
    renderer.finish();
    done(result, json);
  } catch (err) {
    renderer?.finish();
    fail(command, json, err);
  } finally {
    signals.dispose();
  }
}

function publishJson(r: PublishResult): Record<string, unknown> {
  return {
    record: r.record,
    releases: r.releases,
    cache: r.cache,
    closure: {
      paths: r.closure.paths,
      present: r.closure.present,
      copied: r.closure.copied,
      signatures_added: r.closure.signed,
      uploaded_bytes: r.closure.uploadedBytes,
    },
    lost_serials: r.lostSerials,
    warnings: r.warnings,
    ...runJson({ ...r, leftovers: [] }),
  };
}

function changeJson(r: ChannelChange): Record<string, unknown> {
  return {
    record: r.record,
    source: { channel: r.source.channel, serial: r.source.serial, storePath: r.source.storePath },
    replaced: r.replaced ? { serial: r.replaced.serial, storePath: r.replaced.storePath } : null,
    closure_checked: r.check ? { paths: r.check.paths } : null,
    warnings: r.warnings,
    ...runJson({ ...r, leftovers: [] }),
  };
}

function changeDone(verb: string) {
  return (r: ChannelChange, json: boolean) => {
    if (!json)
      process.stderr.write(
        `${verb} ${r.record.channel} serial ${r.record.serial}: ${r.record.storePath} (${r.source.channel} serial ${r.source.serial}${r.replaced ? `; was serial ${r.replaced.serial}` : ""}) in ${formatDuration(r.durationMs)}\n`,
      );
    print(json, changeJson(r), () => `${r.record.serial}\n`);
  };
}

const withOutput = (cmd: Command) => cmd.option("--output <format>", "text or json", "text");

export function register(program: Command): void {
  const release = program
    .command("release")
    .description("signed releases: publish NixOS systems from CI, list, show, roll back and promote channels")
    // Usage errors (unknown flags, missing values) exit 2, as the commands' own checks do.
    .exitOverride((err: CommanderError) => {
      process.exit(err.exitCode === 0 ? 0 : 2);
    });
  release.addHelpText(
    "after",
    `
Layout at --releases (a directory served over HTTP(S), or s3://bucket/prefix):
  channels/CHANNEL.json          the current signed record (what hosts fetch)
  releases/CHANNEL/SERIAL.json   every record ever written

Examples:
  $ hetznix release keygen --name releases.example.org-1 --out release.key
  $ hetznix release publish --flake .#web --channel staging --releases s3://rel/web --cache s3://rel/cache \\
      --cache-url https://rel.fsn1.your-objectstorage.com/cache --signing-key release.key
  $ hetznix release promote --from staging --to production --releases s3://rel/web --signing-key release.key
  $ hetznix release rollback --channel production --releases s3://rel/web --signing-key release.key`,
  );

  withOutput(release.command("keygen"))
    .description("make a Nix signing key pair: FILE (secret, mode 0600, never printed) and FILE.pub")
    .option("--name <name>", "key name, e.g. releases.example.org-1")
    .option("--out <file>", "where the secret key goes (must not exist)")
    .action(async (flags: OutputFlags & { name?: string; out?: string }) => {
      const json = flags.output === "json";
      try {
        outputJson(flags);
        const r = await writeSigningKeyFiles(
          need(flags.name, "--name", "releases.example.org-1"),
          need(flags.out, "--out", "release.key"),
        );
        if (!json)
          process.stderr.write(
            `Wrote the secret key to ${r.secretKeyFile} (mode 0600) and the public key to ${r.publicKeyFile}\n`,
          );
        print(
          json,
          {
            name: r.name,
            secret_key_file: r.secretKeyFile,
            public_key_file: r.publicKeyFile,
            public_key: r.publicKey,
          },
          () => `${r.publicKey}\n`,
        );
      } catch (err) {
        fail("release keygen", json, err);
      }
    });

  withOutput(release.command("publish"))
    .description(
      "sign a NixOS system's closure into a binary cache, then point a channel at a new signed record",
    )
    .option("--store-path <path>", "a NixOS system toplevel in the local store (or a link to one: ./result)")
    .option("--flake <ref>", "build REF#NAME (nixosConfigurations.NAME.config.system.build.toplevel) first")
    .option("--channel <name>", "the channel, e.g. staging")
    .option("--releases <location>", "where records go: a directory, file:///dir or s3://bucket/prefix")
    .option("--cache <store>", "where the closure goes: a directory, file:///dir or s3://bucket/prefix")
    .option("--signing-key <file>", "the Nix secret key (hetznix release keygen)")
    .option("--cache-url <url>", "the URL hosts fetch the closure from (written into the record)")
    .option("--system <system>", "the Nix system, when the toplevel has no system file")
    .option("--revision <rev>", "the source revision (default: the flake's, else GITHUB_SHA / CI_COMMIT_SHA)")
    .option("--compression <kind>", "NAR compression in the cache: zstd or xz", "zstd")
    .addHelpText(
      "after",
      `
Prints the new serial on stdout. The record is written only after the cache holds the whole closure, signed: a
publish that fails or is interrupted earlier leaves the channel where it was.`,
    )
    .action(async (flags: PublishFlags) =>
      withProgress(
        "release publish",
        flags,
        async (signal, renderer) => {
          const channel = need(flags.channel, "--channel", "staging");
          return publishRelease({
            ...(flags.storePath !== undefined ? { storePath: flags.storePath } : {}),
            ...(flags.flake !== undefined ? { flake: flags.flake } : {}),
            channel,
            releases: need(flags.releases, "--releases", "s3://bucket/releases"),
            cache: need(flags.cache, "--cache", "s3://bucket/cache"),
            signingKey: need(flags.signingKey, "--signing-key", "release.key"),
            ...(flags.cacheUrl !== undefined ? { cacheUrl: flags.cacheUrl } : {}),
            ...(flags.system !== undefined ? { system: flags.system } : {}),
            ...(flags.revision !== undefined ? { revision: flags.revision } : {}),
            compression: checkChoice("--compression", flags.compression, ["zstd", "xz"] as const),
            signal,
            onEvent: (e) => renderer.onEvent(e),
          });
        },
        (r, json) => {
          if (!json)
            process.stderr.write(
              `Published ${r.record.channel} serial ${r.record.serial}: ${r.record.storePath} (${r.closure.paths} paths, ${r.closure.copied} added${r.closure.uploadedBytes ? `, ${formatBytes(r.closure.uploadedBytes)} uploaded` : ""}) in ${formatDuration(r.durationMs)}\n`,
            );
          print(json, publishJson(r), () => `${r.record.serial}\n`);
        },
      ),
    );

  withOutput(release.command("list"))
    .description("the channels and their current releases; with --channel, that channel's history")
    .option("--releases <location>", "a directory, file:///dir or s3://bucket/prefix")
    .option("--channel <name>", "list this channel's history, newest first")
    .option("--limit <n>", "at most this many records", "50")
    .option("--trusted-key <key>", "check signatures with this public key (or a file); repeatable", collect)
    .action(async (flags: ReadFlags) => {
      const json = flags.output === "json";
      try {
        outputJson(flags);
        const releases = need(flags.releases, "--releases", "s3://bucket/releases");
        const keys = trustedKeys(flags.trustedKey);
        if (flags.channel === undefined) {
          const r = await listChannels({ releases, trustedKeys: keys });
          print(
            json,
            {
              releases: r.releases,
              channels: r.channels.map((c) => ({ channel: c.channel, ...listedJson(c.current) })),
            },
            () =>
              r.channels.length === 0
                ? `no channels at ${releases}\n`
                : r.channels.map((c) => `${c.channel}\t${describeRecord(c.current.record)}\n`).join(""),
          );
          return;
        }
        const limit = serialFlag(flags.limit, "--limit");
        const r = await listReleases({
          releases,
          channel: flags.channel,
          trustedKeys: keys,
          ...(limit !== undefined ? { limit } : {}),
        });
        print(
          json,
          {
            releases: r.releases,
            channel: r.channel,
            current: r.current,
            total: r.total,
            records: r.records.map(listedJson),
          },
          () =>
            r.records
              .map(
                (l) =>
                  `${l.current ? "*" : " "} ${describeRecord(l.record)}${l.verified === false ? "\tSIGNATURE DOES NOT VERIFY" : ""}\n`,
              )
              .join(""),
        );
      } catch (err) {
        fail("release list", json, err);
      }
    });

  withOutput(release.command("show"))
    .description("one release: the channel's current record, or --serial N")
    .option("--releases <location>", "a directory, file:///dir or s3://bucket/prefix")
    .option("--channel <name>", "the channel")
    .option("--serial <n>", "a release of the history (default: the current one)")
    .option(
      "--trusted-key <key>",
      "check the signature with this public key (or a file); repeatable",
      collect,
    )
    .action(async (flags: ReadFlags) => {
      const json = flags.output === "json";
      try {
        outputJson(flags);
        const serial = serialFlag(flags.serial, "--serial");
        const r = await showRelease({
          releases: need(flags.releases, "--releases", "s3://bucket/releases"),
          channel: need(flags.channel, "--channel", "production"),
          trustedKeys: trustedKeys(flags.trustedKey),
          ...(serial !== undefined ? { serial } : {}),
        });
        const rec = r.record;
        print(json, { releases: r.releases, ...listedJson(r) }, () =>
          [
            ["channel", rec.channel],
            ["serial", `${rec.serial}${r.current ? " (current)" : ""}`],
            ["kind", rec.kind],
            ["store path", rec.storePath],
            ["system", rec.system],
            ["created", rec.created],
            ["substituter", rec.substituter],
            ["flake", rec.flake],
            ["revision", rec.revision],
            ["previous", rec.previous ? `${rec.previous.serial} ${rec.previous.storePath}` : "none"],
            ["rollback of", rec.rollbackOf?.toString()],
            [
              "promoted from",
              rec.promotedFrom ? `${rec.promotedFrom.channel} ${rec.promotedFrom.serial}` : undefined,
            ],
            ["key", rec.keyName],
            [
              "signature",
              r.verified === undefined
                ? "not checked (give --trusted-key)"
                : r.verified
                  ? "verifies"
                  : "DOES NOT VERIFY",
            ],
          ]
            .filter(([, v]) => v !== undefined)
            .map(([k, v]) => `${`${k}:`.padEnd(15)}${v}\n`)
            .join(""),
        );
        if (r.verified === false) process.exitCode = 1;
      } catch (err) {
        fail("release show", json, err);
      }
    });

  withOutput(release.command("rollback"))
    .description("point a channel at an earlier release again (a new signed record of kind rollback)")
    .option("--releases <location>", "a directory, file:///dir or s3://bucket/prefix")
    .option("--channel <name>", "the channel")
    .option(
      "--to <serial>",
      "the release to bring back (default: the newest earlier one with another system)",
    )
    .option("--signing-key <file>", "the Nix secret key")
    .option("--cache <store>", "check that the release's closure is still in this cache, signed")
    .option("--trusted-key <key>", "an older release key whose records may be re-signed; repeatable", collect)
    .action(async (flags: ChangeFlags) =>
      withProgress(
        "release rollback",
        flags,
        async (signal, renderer) => {
          const to = serialFlag(flags.to, "--to");
          return rollbackChannel({
            releases: need(flags.releases, "--releases", "s3://bucket/releases"),
            channel: need(flags.channel, "--channel", "production"),
            signingKey: need(flags.signingKey, "--signing-key", "release.key"),
            trustedKeys: trustedKeys(flags.trustedKey),
            ...(to !== undefined ? { to } : {}),
            ...(flags.cache !== undefined ? { cache: flags.cache } : {}),
            signal,
            onEvent: (e) => renderer.onEvent(e),
          });
        },
        changeDone("Rolled back"),
      ),
    );

  withOutput(release.command("promote"))
    .description("make a release of one channel the next release of another, without rebuilding")
    .option("--releases <location>", "a directory, file:///dir or s3://bucket/prefix")
    .option("--from <channel>", "the channel to take the release from, e.g. staging")
    .option("--to <channel>", "the channel to promote it to, e.g. production")
    .option("--serial <n>", "a release of --from (default: its current one)")
    .option("--signing-key <file>", "the Nix secret key")
    .option("--cache <store>", "check that the release's closure is in this cache, signed")
    .option("--trusted-key <key>", "an older release key whose records may be re-signed; repeatable", collect)
    .action(async (flags: ChangeFlags) =>
      withProgress(
        "release promote",
        flags,
        async (signal, renderer) => {
          const serial = serialFlag(flags.serial, "--serial");
          return promoteRelease({
            releases: need(flags.releases, "--releases", "s3://bucket/releases"),
            from: need(flags.from, "--from", "staging"),
            to: need(flags.to, "--to", "production"),
            signingKey: need(flags.signingKey, "--signing-key", "release.key"),
            trustedKeys: trustedKeys(flags.trustedKey),
            ...(serial !== undefined ? { serial } : {}),
            ...(flags.cache !== undefined ? { cache: flags.cache } : {}),
            signal,
            onEvent: (e) => renderer.onEvent(e),
          });
        },
        changeDone("Promoted to"),
      ),
    );
}
