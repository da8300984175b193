/**
 * Labels and names of a run's temporary resources (servers, SSH keys): which run made them, when it started, and a
 * heartbeat the run refreshes so `hetznix cleanup --older-than` never removes a run that is still going.
 */
import { randomBytes } from "node:crypto";
import type { Labels } from "../hcloud/schema.js";

export const LABEL_PREFIX = "hetznix";
export const TEMPORARY_LABEL = "hetznix/temporary";
export const RUN_LABEL = "hetznix/run";
export const STARTED_LABEL = "hetznix/started";
/** Unix seconds of the run's last sign of life (refreshed while it runs); cleanup ages count from it. */
export const HEARTBEAT_LABEL = "hetznix/heartbeat";

/** A new run id: 10 lowercase base32-ish characters, valid in names and label values. */
export function newRunId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  return [...randomBytes(10)].map((b) => alphabet[b % 32]).join("");
}

/** Labels of the temporary server and SSH key of a run. */
export function temporaryLabels(runId: string, startedMs: number, heartbeatMs = startedMs): Labels {
  return {
    [TEMPORARY_LABEL]: "true",
    [RUN_LABEL]: runId,
    [STARTED_LABEL]: String(Math.floor(startedMs / 1000)),
    [HEARTBEAT_LABEL]: String(Math.floor(heartbeatMs / 1000)),
  };
}

/**
 * Unix seconds of the last sign of life of the run that made a temporary resource: the newer of its started and
 * heartbeat labels, or undefined when neither is a valid number.
 */
export function lastSignOfLife(labels: Labels): number | undefined {
  const seconds = [labels[STARTED_LABEL], labels[HEARTBEAT_LABEL]]
    .filter((v): v is string => v !== undefined && /^\d+$/.test(v))
    .map(Number);
  return seconds.length > 0 ? Math.max(...seconds) : undefined;
}

/** Name of a temporary resource of a run (a valid host name), e.g. `hetznix-upload-abcdefghij`. */
export function temporaryName(runId: string, kind: string): string {
  return `hetznix-${kind}-${runId}`;
}
