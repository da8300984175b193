/**
 * The fleet side's decisions, as pure functions: which servers take part (and which are skipped, and why), in what
 * order (canaries first), when the failure budget stops the rollout, what each server's outcome counts as, and the
 * exit status of the whole deploy.
 */
import type { ApplyStatus } from "../apply/plan.js";

export interface FleetServer {
  id: number;
  name: string;
  status: string;
  ip: string | undefined;
}

/** How one server's deploy ended. */
export type ServerOutcome =
  | "deployed"
  | "unchanged"
  | "rolled_back"
  | "rollback_failed"
  | "refused"
  | "failed"
  | "busy"
  | "unreachable"
  | "host_key_changed"
  | "not_touched";

/** Outcomes that count against the failure budget (and that --only-failed retries). */
export const FAILED_OUTCOMES: readonly ServerOutcome[] = [
  "rolled_back",
  "rollback_failed",
  "refused",
  "failed",
  "busy",
  "unreachable",
  "host_key_changed",
];

export function isFailure(outcome: ServerOutcome): boolean {
  return FAILED_OUTCOMES.includes(outcome);
}

export function outcomeOf(status: ApplyStatus): ServerOutcome {
  switch (status) {
    case "applied":
    case "dry_run":
      return "deployed";
    case "noop":
      return "unchanged";
    default:
      return status;
  }
}

export interface Selection {
  /** In deploy order (by name, so runs are repeatable). */
  targets: FleetServer[];
  skipped: { name: string; reason: string }[];
}

/**
 * The servers that take part: running ones with an IPv4 address; with `onlyFailed`, only those whose last deploy of
 * this channel failed, rolled back or was not reached (`last` maps server id to its last outcome).
 */
export function selectServers(
  servers: FleetServer[],
  opts: { onlyFailed?: boolean; last?: ReadonlyMap<number, ServerOutcome> } = {},
): Selection {
  const skipped: Selection["skipped"] = [];
  const targets: FleetServer[] = [];
  for (const s of [...servers].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.id - b.id))) {
    if (s.status !== "running") skipped.push({ name: s.name, reason: `not running (${s.status})` });
    else if (!s.ip) skipped.push({ name: s.name, reason: "no public IPv4 address" });
    else if (opts.onlyFailed) {
      const last = opts.last?.get(s.id);
      if (last === undefined)
        skipped.push({ name: s.name, reason: "never deployed from this channel (--only-failed)" });
      else if (!isFailure(last) && last !== "not_touched")
        skipped.push({ name: s.name, reason: `last deploy ${last.replace("_", " ")} (--only-failed)` });
      else targets.push(s);
    } else targets.push(s);
  }
  return { targets, skipped };
}

/** Canaries first (the first `canary` servers), then the rest. */
export function splitCanaries<T>(targets: T[], canary: number): { canaries: T[]; rest: T[] } {
  const n = Math.max(0, Math.min(canary, targets.length));
  return { canaries: targets.slice(0, n), rest: targets.slice(n) };
}

/** The rollout stops (starts no further server) once failures exceed the budget. */
export function budgetExceeded(failures: number, maxFailures: number): boolean {
  return failures > maxFailures;
}

/** 0: every server deployed or already on the release; 4: some failed, rolled back or were not touched; 5: a rollback itself failed. */
export function fleetExitCode(outcomes: ServerOutcome[]): number {
  if (outcomes.includes("rollback_failed")) return 5;
  if (outcomes.some((o) => isFailure(o) || o === "not_touched")) return 4;
  return 0;
}
