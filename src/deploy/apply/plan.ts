/**
 * The decisions of an apply, as pure functions: whether a record may be applied here, what the switch's exit status
 * means, and the exit status of `hetznix apply` for an outcome. No effects here: ./worker.ts carries them out.
 */
import type { SignedRecord } from "../record.js";

export type ApplyAction = "switch" | "boot" | "test" | "dry-activate";
export const APPLY_ACTIONS: readonly ApplyAction[] = ["switch", "boot", "test", "dry-activate"];

/** What this host knows before applying. */
export interface HostFacts {
  /** This host's Nix system, e.g. "x86_64-linux". */
  system: string;
  /** What runs now (/run/current-system), if known. */
  activePath: string | undefined;
  /** What the system profile points at (the boot default), if known. */
  profilePath: string | undefined;
  /** The last record applied here from this channel, if any. */
  last: { channel: string; serial: number; storePath: string } | undefined;
}

export type Admission =
  | { verdict: "apply" }
  | { verdict: "noop"; reason: string }
  | { verdict: "refuse"; code: "wrong_system" | "older_serial" | "other_channel"; reason: string };

/**
 * May `record` be applied on a host with `facts`? Refuses another system and a serial older than the last applied
 * here (a replayed record: rollbacks are new signed records with a higher serial, so they pass); the release that
 * is already active (running and boot default) is a no-op.
 */
export function admit(record: SignedRecord, facts: HostFacts, action: ApplyAction): Admission {
  if (record.system !== facts.system)
    return {
      verdict: "refuse",
      code: "wrong_system",
      reason: `release ${record.channel}#${record.serial} is for ${record.system}; this host is ${facts.system}`,
    };
  const last = facts.last;
  if (last && last.channel === record.channel && record.serial < last.serial)
    return {
      verdict: "refuse",
      code: "older_serial",
      reason: `release ${record.channel}#${record.serial} is older than #${last.serial}, applied here before (a replayed record?); to go back, publish a rollback (hetznix release rollback), which gets a new serial`,
    };
  const active = facts.activePath === record.storePath;
  const isDefault = facts.profilePath === record.storePath;
  const done =
    action === "switch"
      ? active && isDefault
      : action === "boot"
        ? isDefault
        : action === "test"
          ? active
          : false;
  if (done)
    return {
      verdict: "noop",
      reason: `${record.storePath} is already ${action === "boot" ? "the boot default" : "active"} (release ${record.channel}#${record.serial}); nothing to do`,
    };
  return { verdict: "apply" };
}

/** What a `switch-to-configuration` exit status means (NixOS: 2 activation failed, 4 units failed, 100 reboot). */
export type SwitchOutcome = { ok: true; rebootNeeded: boolean } | { ok: false; reason: string };

export function switchOutcome(
  action: string,
  exitCode: number | null,
  signal?: string | null,
): SwitchOutcome {
  if (exitCode === 0) return { ok: true, rebootNeeded: false };
  if (exitCode === 100) return { ok: true, rebootNeeded: true };
  if (exitCode === 2)
    return { ok: false, reason: `switch-to-configuration ${action}: the activation script failed (exit 2)` };
  if (exitCode === 4)
    return {
      ok: false,
      reason: `switch-to-configuration ${action}: switched, but some units failed (exit 4)`,
    };
  if (exitCode === null)
    return { ok: false, reason: `switch-to-configuration ${action} was killed by ${signal ?? "a signal"}` };
  return { ok: false, reason: `switch-to-configuration ${action} failed with exit status ${exitCode}` };
}

/** How an apply ended. */
export type ApplyStatus =
  "applied" | "noop" | "refused" | "failed" | "rolled_back" | "rollback_failed" | "busy" | "dry_run";

/** `hetznix apply`'s exit status for each outcome (README lists them). */
export const APPLY_EXIT: Record<ApplyStatus, number> = {
  applied: 0,
  noop: 0,
  dry_run: 0,
  failed: 1,
  refused: 3,
  rolled_back: 4,
  rollback_failed: 5,
  busy: 6,
};

/** The steps an action takes after the closure is fetched, in order. */
export function stepsFor(
  action: ApplyAction,
  confirm: boolean,
): ("activate" | "health" | "confirm" | "commit" | "dry-activate")[] {
  switch (action) {
    case "switch":
      return ["activate", "health", ...(confirm ? (["confirm"] as const) : []), "commit"];
    case "test":
      return ["activate", "health", ...(confirm ? (["confirm"] as const) : [])];
    case "boot":
      return ["commit"];
    case "dry-activate":
      return ["dry-activate"];
  }
}
