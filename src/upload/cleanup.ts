/**
 * `hetznix cleanup`: delete temporary servers and SSH keys that hetznix created (label hetznix/temporary=true), only
 * those whose run showed no sign of life for a given age: the age counts from the newer of the hetznix/started label
 * and the hetznix/heartbeat label, which a running run refreshes every few minutes (DEFAULT_HEARTBEAT_MS). So an age
 * above the heartbeat interval never touches a run in progress, however long it runs.
 */
import type { HCloudClient } from "../hcloud/client.js";
import { isNotFound } from "../hcloud/errors.js";
import type { Labels } from "../hcloud/schema.js";
import { DurationSyntaxError, parseDuration as parse } from "../util/time.js";
import { UploadError } from "./errors.js";
import { lastSignOfLife } from "../run/labels.js";
import { HEARTBEAT_LABEL, RUN_LABEL, STARTED_LABEL, TEMPORARY_LABEL } from "./identity.js";

export interface CleanupOptions {
  client: HCloudClient;
  /** Only resources whose run showed no sign of life (start or heartbeat) for this long (default 1 h). */
  olderThanMs?: number;
  /** List what would be deleted, delete nothing. */
  dryRun?: boolean;
  /** Only this run's resources (any age). */
  runId?: string;
  /** Current time in ms (default Date.now()). */
  now?: number;
  signal?: AbortSignal;
  /** Wait for server deletions to finish (default true). */
  waitForDeletion?: boolean;
}

export interface CleanupItem {
  kind: "server" | "ssh_key";
  id: number;
  name: string;
  runId?: string;
  /** Unix seconds from the hetznix/started label. */
  started?: number;
  /** Unix seconds of the run's last sign of life: the newer of hetznix/started and hetznix/heartbeat. */
  lastSeen?: number;
  /** Seconds since the last sign of life. */
  ageSeconds?: number;
  /** Why it was kept or why deleting failed. */
  reason?: string;
}

export interface CleanupOutcome {
  dryRun: boolean;
  olderThanMs: number;
  /** Deleted (or, in a dry run, what would be deleted). */
  deleted: CleanupItem[];
  /** Found but kept (too young, or no readable start time). */
  kept: CleanupItem[];
  failed: CleanupItem[];
}

export const DEFAULT_OLDER_THAN_MS = 3_600_000;

/** Parse `90s`, `30m`, `1h30m`, `2d`, `0` (the grammar of src/util/time.ts); a bare number is seconds. */
export function parseDuration(text: string): number {
  try {
    return parse(text, { allowZero: true });
  } catch (err) {
    if (err instanceof DurationSyntaxError) throw new UploadError("invalid_argument", err.message);
    throw err;
  }
}

function describe(
  kind: CleanupItem["kind"],
  id: number,
  name: string,
  labels: Labels,
  nowS: number,
): CleanupItem {
  const startedText = labels[STARTED_LABEL];
  const started = startedText !== undefined && /^\d+$/.test(startedText) ? Number(startedText) : undefined;
  const lastSeen = lastSignOfLife(labels);
  return {
    kind,
    id,
    name,
    ...(labels[RUN_LABEL] ? { runId: labels[RUN_LABEL] } : {}),
    ...(started !== undefined ? { started } : {}),
    ...(lastSeen !== undefined ? { lastSeen, ageSeconds: nowS - lastSeen } : {}),
  };
}

export async function cleanupTemporary(opts: CleanupOptions): Promise<CleanupOutcome> {
  const olderThanMs = opts.olderThanMs ?? DEFAULT_OLDER_THAN_MS;
  if (!Number.isFinite(olderThanMs) || olderThanMs < 0) {
    throw new UploadError("invalid_argument", "--older-than must be a non-negative duration");
  }
  const nowS = Math.floor((opts.now ?? Date.now()) / 1000);
  const labelSelector = `${TEMPORARY_LABEL}=true${opts.runId ? `,${RUN_LABEL}=${opts.runId}` : ""}`;
  const signal = opts.signal;
  const [servers, keys] = await Promise.all([
    opts.client.servers.all({ labelSelector, ...(signal ? { signal } : {}) }),
    opts.client.sshKeys.all({ labelSelector, ...(signal ? { signal } : {}) }),
  ]);
  const outcome: CleanupOutcome = {
    dryRun: opts.dryRun === true,
    olderThanMs,
    deleted: [],
    kept: [],
    failed: [],
  };
  const candidates: CleanupItem[] = [
    ...servers.map((s) => describe("server", s.id, s.name, s.labels, nowS)),
    ...keys.map((k) => describe("ssh_key", k.id, k.name, k.labels, nowS)),
  ];
  const due: CleanupItem[] = [];
  for (const item of candidates) {
    if (opts.runId === undefined) {
      if (item.ageSeconds === undefined) {
        outcome.kept.push({ ...item, reason: `no valid ${STARTED_LABEL} or ${HEARTBEAT_LABEL} label` });
        continue;
      }
      if (item.ageSeconds * 1000 < olderThanMs) {
        const seen = item.lastSeen !== item.started ? "last heartbeat" : "started";
        outcome.kept.push({
          ...item,
          reason: `${seen} ${item.ageSeconds}s ago, less than ${Math.round(olderThanMs / 1000)}s: its run may still be going`,
        });
        continue;
      }
    }
    due.push(item);
  }
  if (outcome.dryRun) {
    outcome.deleted.push(...due);
    return outcome;
  }
  // Servers first (a key in use by a server can still be deleted, but this order mirrors creation).
  const serverDeletes = due
    .filter((i) => i.kind === "server")
    .map(async (item) => {
      try {
        const action = await opts.client.servers.delete(item.id, signal ? { signal } : {});
        if (opts.waitForDeletion !== false) {
          await opts.client.waitForActions([action], { ...(signal ? { signal } : {}), timeoutMs: 300_000 });
        }
        outcome.deleted.push(item);
      } catch (err) {
        if (isNotFound(err)) outcome.deleted.push(item);
        else outcome.failed.push({ ...item, reason: err instanceof Error ? err.message : String(err) });
      }
    });
  await Promise.all(serverDeletes);
  for (const item of due.filter((i) => i.kind === "ssh_key")) {
    try {
      await opts.client.sshKeys.delete(item.id, signal ? { signal } : {});
      outcome.deleted.push(item);
    } catch (err) {
      if (isNotFound(err)) outcome.deleted.push(item);
      else outcome.failed.push({ ...item, reason: err instanceof Error ? err.message : String(err) });
    }
  }
  return outcome;
}
