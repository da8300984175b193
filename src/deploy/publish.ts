/**
 * Publishing a release, as numbered steps. The record is written last: a publish that fails or is interrupted
 * before step 5 leaves the channel where it was (the cache may hold more paths; they harm nothing).
 *
 *  1. check    flags, the signing key (a key file others can read is reported), the locations
 *  2. build    with --flake: `nix build` of the configuration's toplevel (skipped for --store-path)
 *  3. inspect  a NixOS toplevel in the local store (bin/switch-to-configuration), its system, the revision
 *  4. cache    sign the closure with the key and copy it into the binary cache (`nix copy`; S3 through a staging
 *              cache); read the cache back: every path present with its NAR and signed by the key
 *  5. record   the next serial: the signed record into the history (exclusive create), then the channel
 */
import { ReleaseError } from "./errors.js";
import { describeCache, parseCache, pushClosure, type PushResult } from "./cache.js";
import {
  checkChannel,
  loadKey,
  runOperation,
  withStore,
  type ReleaseOutcome,
  type ReleaseRunOptions,
} from "./operation.js";
import { RECORD_FORMAT, signRecord, type SignedRecord } from "./record.js";
import { appendRecord } from "./releases/history.js";
import { parseLocation } from "./releases/index.js";
import {
  buildFlake,
  ciRevision,
  flakeRevision,
  inspectToplevel,
  parseFlakeTarget,
  type FlakeTarget,
} from "./system.js";

export interface PublishOptions extends ReleaseRunOptions {
  /** Exactly one of storePath and flake. */
  storePath?: string;
  flake?: string;
  channel: string;
  /** Where records go: a directory, file:///dir or s3://bucket/prefix. */
  releases: string;
  /** Where the closure goes: a directory, file:///dir or s3://bucket/prefix. */
  cache: string;
  /** The Nix secret key file. */
  signingKey: string;
  /** The URL hosts fetch the closure from (http(s)://...), written into the record as `substituter`. */
  cacheUrl?: string;
  /** When the toplevel has no `system` file. */
  system?: string;
  /** The source revision, when the flake's metadata has none. */
  revision?: string;
  /** NAR compression in the cache (default zstd). */
  compression?: "zstd" | "xz";
  /** Environment for the CI revision (default process.env). */
  env?: NodeJS.ProcessEnv;
}

export interface PublishResult extends ReleaseOutcome {
  record: SignedRecord;
  /** The releases location and the cache, as given. */
  releases: string;
  cache: string;
  closure: PushResult;
  /** Serials that concurrent publishes took while this one wrote its record. */
  lostSerials: number[];
}

/** The URL hosts fetch the closure from: http(s) or file. */
export function checkSubstituterUrl(url: string, flag = "--cache-url"): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ReleaseError(
      "invalid_argument",
      `${flag} ${url} is not a URL (e.g. https://cache.example.org)`,
    );
  }
  if (!["http:", "https:", "file:"].includes(u.protocol) || u.username || u.password)
    throw new ReleaseError(
      "invalid_argument",
      `${flag} ${url}: hosts fetch with Nix over http(s):// (or file://), without credentials in the URL`,
    );
  return url.replace(/\/+$/, "");
}

const REVISION = /^[0-9a-f]{7,64}$/i;

/** Publish one release; see the module comment for the steps. */
export async function publishRelease(opts: PublishOptions): Promise<PublishResult> {
  return runOperation("publish", opts, opts.channel, async (steps, signal) => {
    // 1. check
    const checked = await steps.run(
      "check",
      async () => {
        const channel = checkChannel(opts.channel);
        if ((opts.storePath === undefined) === (opts.flake === undefined))
          throw new ReleaseError(
            "invalid_argument",
            "give exactly one of --store-path PATH and --flake REF#NAME",
          );
        const target: FlakeTarget | undefined =
          opts.flake !== undefined ? parseFlakeTarget(opts.flake) : undefined;
        if (opts.revision !== undefined && !REVISION.test(opts.revision))
          throw new ReleaseError(
            "invalid_argument",
            `--revision ${opts.revision} is not a git revision (hex)`,
          );
        parseLocation(opts.releases, "--releases");
        const cache = parseCache(opts.cache);
        const substituter = opts.cacheUrl !== undefined ? checkSubstituterUrl(opts.cacheUrl) : undefined;
        const key = await loadKey(opts.signingKey, steps);
        return { channel, target, cache, substituter, key };
      },
      (c) => `key ${c.key.key.name}`,
    );

    // 2. build
    let path = opts.storePath;
    const target = checked.target;
    if (target) {
      path = await steps.run(
        "build",
        () => buildFlake(target, signal),
        (p) => p,
      );
    } else steps.skip("build", "--store-path given");

    // 3. inspect
    const inspected = await steps.run(
      "inspect",
      async () => {
        const top = await inspectToplevel(path as string, opts.system);
        let revision: string | undefined;
        if (target) revision = await flakeRevision(target.flake, signal).catch(() => undefined);
        revision ??= opts.revision?.toLowerCase() ?? ciRevision(opts.env ?? process.env);
        return { ...top, revision };
      },
      (t) => `${t.system}${t.revision ? `, revision ${t.revision.slice(0, 12)}` : ""}`,
    );

    // 4. cache
    const closure = await steps.run(
      "cache",
      () =>
        pushClosure({
          cache: checked.cache,
          storePath: inspected.storePath,
          key: checked.key,
          ...(opts.compression ? { compression: opts.compression } : {}),
          ...(signal ? { signal } : {}),
          onNote: (m) => steps.note(m),
          onUpload: (sent, total) => steps.data("upload", sent, sent, total),
        }),
      (r) =>
        `${r.paths} paths in ${describeCache(checked.cache)}: ${r.copied} added, ${r.present} there before${r.signed ? `, ${r.signed} signatures added` : ""}`,
    );

    // 5. record
    const { record, lostSerials } = await steps.run(
      "record",
      () =>
        withStore(opts.releases, (store) =>
          appendRecord(
            store,
            checked.channel,
            (serial, current) =>
              signRecord(
                {
                  format: RECORD_FORMAT,
                  channel: checked.channel,
                  serial,
                  kind: "release",
                  storePath: inspected.storePath,
                  system: inspected.system,
                  created: new Date().toISOString(),
                  ...(checked.substituter ? { substituter: checked.substituter } : {}),
                  ...(target ? { flake: target.display } : {}),
                  ...(inspected.revision ? { revision: inspected.revision } : {}),
                  previous: current ? { serial: current.serial, storePath: current.storePath } : null,
                  keyName: checked.key.key.name,
                },
                checked.key.key,
              ),
            signal,
          ),
        ),
      (r) => `${checked.channel} serial ${r.record.serial}`,
    );
    return { record, releases: opts.releases, cache: opts.cache, closure, lostSerials };
  });
}
