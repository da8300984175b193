/**
 * Channels and their history: list, show, rollback (re-point a channel at an earlier release with a new signed
 * record that says so) and promote (a release of one channel becomes the next record of another, without
 * rebuilding). Rollback and promote re-sign a record from the history, so that record's own signature is checked
 * first (with the signing key's public half, and any older keys given as trusted), and with `cache` the closure is
 * checked to be in the cache, signed by the key, before anything is written.
 */
import { describeCache, checkClosure, parseCache, type ClosureCheck } from "./cache.js";
import { ReleaseError } from "./errors.js";
import type { PublicKey } from "./keys.js";
import {
  checkChannel,
  loadKey,
  parseTrustedKeys,
  runOperation,
  withStore,
  type ReleaseOutcome,
  type ReleaseRunOptions,
} from "./operation.js";
import { RECORD_FORMAT, RecordError, signRecord, verifyRecord, type SignedRecord } from "./record.js";
import { appendRecord, historySerials, readCurrent, readRelease } from "./releases/history.js";
import type { ReleaseStore } from "./releases/store.js";

interface ReadOptions {
  /** Where records are: a directory, file:///dir or s3://bucket/prefix. */
  releases: string;
  /** Public keys (`name:base64`) to check signatures with; without any, nothing is checked. */
  trustedKeys?: string[];
  signal?: AbortSignal;
}

export interface ListedRecord {
  record: SignedRecord;
  /** The channel points at this record now. */
  current: boolean;
  /** With trusted keys: does the signature verify. */
  verified?: boolean;
}

function verified(record: SignedRecord, keys: PublicKey[]): boolean | undefined {
  if (keys.length === 0) return undefined;
  try {
    verifyRecord(record, keys, "record");
    return true;
  } catch {
    return false;
  }
}

async function channelNames(store: ReleaseStore, signal?: AbortSignal): Promise<string[]> {
  return (await store.listChannels(signal)).sort();
}

async function requireCurrent(
  store: ReleaseStore,
  channel: string,
  signal?: AbortSignal,
): Promise<SignedRecord> {
  const current = await readCurrent(store, channel, signal);
  if (current) return current.record;
  const known = await channelNames(store, signal);
  throw new ReleaseError(
    "not_found",
    `no channel "${channel}" at ${store.description} (channels: ${known.join(", ") || "none yet; publish one first"})`,
  );
}

export interface ChannelSummary {
  channel: string;
  current: ListedRecord;
}

/** Every channel at the location with its current record. */
export async function listChannels(
  opts: ReadOptions,
): Promise<{ releases: string; channels: ChannelSummary[] }> {
  const keys = parseTrustedKeys(opts.trustedKeys);
  return withStore(opts.releases, async (store) => {
    const channels: ChannelSummary[] = [];
    for (const channel of await channelNames(store, opts.signal)) {
      const current = await readCurrent(store, channel, opts.signal);
      if (!current) continue;
      const v = verified(current.record, keys);
      channels.push({
        channel,
        current: { record: current.record, current: true, ...(v !== undefined ? { verified: v } : {}) },
      });
    }
    return { releases: opts.releases, channels };
  });
}

export interface ListReleasesOptions extends ReadOptions {
  channel: string;
  /** At most this many records, newest first (default 50). */
  limit?: number;
}

/** A channel's history, newest first. */
export async function listReleases(
  opts: ListReleasesOptions,
): Promise<{ releases: string; channel: string; current: number; total: number; records: ListedRecord[] }> {
  const channel = checkChannel(opts.channel);
  const keys = parseTrustedKeys(opts.trustedKeys);
  const limit = opts.limit ?? 50;
  if (!Number.isSafeInteger(limit) || limit < 1)
    throw new ReleaseError("invalid_argument", `--limit must be a positive number (got ${limit})`);
  return withStore(opts.releases, async (store) => {
    const current = await requireCurrent(store, channel, opts.signal);
    const serials = await historySerials(store, channel, opts.signal);
    const records: ListedRecord[] = [];
    for (const serial of serials.slice(0, limit)) {
      const record = await readRelease(store, channel, serial, opts.signal);
      if (!record) continue;
      const v = verified(record, keys);
      records.push({
        record,
        current: serial === current.serial,
        ...(v !== undefined ? { verified: v } : {}),
      });
    }
    return { releases: opts.releases, channel, current: current.serial, total: serials.length, records };
  });
}

export interface ShowOptions extends ReadOptions {
  channel: string;
  /** Default: the channel's current record. */
  serial?: number;
}

export async function showRelease(opts: ShowOptions): Promise<ListedRecord & { releases: string }> {
  const channel = checkChannel(opts.channel);
  const keys = parseTrustedKeys(opts.trustedKeys);
  return withStore(opts.releases, async (store) => {
    const current = await requireCurrent(store, channel, opts.signal);
    let record = current;
    if (opts.serial !== undefined && opts.serial !== current.serial) {
      const found = await readRelease(store, channel, opts.serial, opts.signal);
      if (!found)
        throw new ReleaseError(
          "not_found",
          `channel ${channel} has no release ${opts.serial} at ${store.description} (the newest is ${current.serial})`,
        );
      record = found;
    }
    const v = verified(record, keys);
    return {
      releases: opts.releases,
      record,
      current: record.serial === current.serial,
      ...(v !== undefined ? { verified: v } : {}),
    };
  });
}

interface Writing extends ReleaseRunOptions {
  releases: string;
  signingKey: string;
  /** Older release keys whose records may be re-signed (the signing key's own public half is always trusted). */
  trustedKeys?: string[];
  /** When given: the closure must be in this cache, signed by the key, or nothing is written. */
  cache?: string;
}

export interface RollbackOptions extends Writing {
  channel: string;
  /** The serial whose system to bring back (default: the newest earlier release with another system). */
  to?: number;
}

export interface ChannelChange extends ReleaseOutcome {
  /** The new record. */
  record: SignedRecord;
  /** The record whose system it carries (rollback: the earlier one; promote: the source). */
  source: SignedRecord;
  /** The record it replaced in the channel, if any. */
  replaced: SignedRecord | null;
  check?: ClosureCheck;
}

function checkSource(record: SignedRecord, keys: PublicKey[], source: string): void {
  try {
    verifyRecord(record, keys, source);
  } catch (err) {
    const hint =
      err instanceof RecordError && err.code === "untrusted_key"
        ? "; if it was signed by an older release key, pass that key's public half with --trusted-key"
        : "";
    throw new ReleaseError("record", `${(err as Error).message}${hint}`);
  }
}

/** The default rollback target: follow `previous` back to the first record with another system. */
async function previousSystem(
  store: ReleaseStore,
  current: SignedRecord,
  signal?: AbortSignal,
): Promise<SignedRecord | undefined> {
  let at = current.previous;
  for (let hops = 0; at && hops < 100_000; hops++) {
    const record = await readRelease(store, current.channel, at.serial, signal);
    if (!record) return undefined;
    if (record.storePath !== current.storePath) return record;
    at = record.previous;
  }
  return undefined;
}

async function writeChange(
  operation: "rollback" | "promote",
  opts: Writing,
  channel: string,
  pick: (store: ReleaseStore, signal?: AbortSignal) => Promise<SignedRecord>,
  extra: (source: SignedRecord) => Pick<SignedRecord, "kind" | "rollbackOf" | "promotedFrom">,
): Promise<ChannelChange> {
  return runOperation(operation, opts, channel, async (steps, signal) => {
    const { key, trusted, cache } = await steps.run("check", async () => {
      const key = await loadKey(opts.signingKey, steps);
      const trusted = [...parseTrustedKeys([key.key.publicKey]), ...parseTrustedKeys(opts.trustedKeys)];
      const cache = opts.cache !== undefined ? parseCache(opts.cache) : undefined;
      return { key, trusted, cache };
    });
    return withStore(opts.releases, async (store) => {
      const source = await steps.run(
        "inspect",
        async () => {
          const record = await pick(store, signal);
          checkSource(record, trusted, `${store.description}: ${record.channel} serial ${record.serial}`);
          return record;
        },
        (r) => `${r.channel} serial ${r.serial}: ${r.storePath}`,
      );
      let check: ClosureCheck | undefined;
      if (cache)
        check = await steps.run(
          "cache",
          () => checkClosure(cache, source.storePath, key.key.publicKey, signal),
          (c) => `${c.paths} paths in ${describeCache(cache)}, signed by ${key.key.name}`,
        );
      else steps.skip("cache", "no --cache given: the closure is not checked");
      let replaced: SignedRecord | null = null;
      const { record } = await steps.run(
        "record",
        () =>
          appendRecord(
            store,
            channel,
            (serial, current) => {
              replaced = current ?? null;
              return signRecord(
                {
                  format: RECORD_FORMAT,
                  channel,
                  serial,
                  storePath: source.storePath,
                  system: source.system,
                  created: new Date().toISOString(),
                  ...(source.substituter ? { substituter: source.substituter } : {}),
                  ...(source.flake ? { flake: source.flake } : {}),
                  ...(source.revision ? { revision: source.revision } : {}),
                  previous: current ? { serial: current.serial, storePath: current.storePath } : null,
                  keyName: key.key.name,
                  ...extra(source),
                },
                key.key,
              );
            },
            signal,
          ),
        (r) => `${channel} serial ${r.record.serial}`,
      );
      return { record, source, replaced, ...(check ? { check } : {}) };
    });
  });
}

/** Re-points a channel at an earlier release: a new record (kind rollback) with the next serial. */
export async function rollbackChannel(opts: RollbackOptions): Promise<ChannelChange> {
  const channel = checkChannel(opts.channel);
  if (opts.to !== undefined && (!Number.isSafeInteger(opts.to) || opts.to < 1))
    throw new ReleaseError("invalid_argument", `--to must be a serial (1, 2, ...), not ${opts.to}`);
  return writeChange(
    "rollback",
    opts,
    channel,
    async (store, signal) => {
      const current = await requireCurrent(store, channel, signal);
      if (opts.to === undefined) {
        const target = await previousSystem(store, current, signal);
        if (!target)
          throw new ReleaseError(
            "not_found",
            `channel ${channel} has no earlier release with another system than serial ${current.serial}; give --to SERIAL`,
          );
        return target;
      }
      if (opts.to >= current.serial)
        throw new ReleaseError(
          "invalid_argument",
          `--to ${opts.to}: a rollback goes to an earlier release than the current serial ${current.serial}`,
        );
      const target = await readRelease(store, channel, opts.to, signal);
      if (!target)
        throw new ReleaseError(
          "not_found",
          `channel ${channel} has no release ${opts.to} at ${store.description}`,
        );
      if (target.storePath === current.storePath)
        throw new ReleaseError(
          "invalid_argument",
          `release ${opts.to} has the same system as the current serial ${current.serial} (${current.storePath}): nothing to roll back`,
        );
      return target;
    },
    (source) => ({ kind: "rollback", rollbackOf: source.serial }),
  );
}

export interface PromoteOptions extends Writing {
  from: string;
  to: string;
  /** A release of `from` (default: its current one). */
  serial?: number;
}

/** Makes a release of one channel the next record of another (kind promote), without rebuilding. */
export async function promoteRelease(opts: PromoteOptions): Promise<ChannelChange> {
  const from = checkChannel(opts.from, "--from");
  const to = checkChannel(opts.to, "--to");
  if (from === to) throw new ReleaseError("invalid_argument", "--from and --to name the same channel");
  if (opts.serial !== undefined && (!Number.isSafeInteger(opts.serial) || opts.serial < 1))
    throw new ReleaseError("invalid_argument", `--serial must be 1, 2, ..., not ${opts.serial}`);
  return writeChange(
    "promote",
    opts,
    to,
    async (store, signal) => {
      const current = await requireCurrent(store, from, signal);
      if (opts.serial === undefined || opts.serial === current.serial) return current;
      const found = await readRelease(store, from, opts.serial, signal);
      if (!found)
        throw new ReleaseError(
          "not_found",
          `channel ${from} has no release ${opts.serial} at ${store.description}`,
        );
      return found;
    },
    (source) => ({ kind: "promote", promotedFrom: { channel: source.channel, serial: source.serial } }),
  );
}
