/**
 * The apply itself, run detached from the SSH session that asked for it (./front.ts starts it), so a dropped
 * connection never leaves a half-done switch: it completes, or it rolls back.
 *
 *  1. lock        one apply at a time on this host
 *  2. resolve     fetch the channel's record; refuse a bad signature or an untrusted key
 *  3. admit       refuse another system or a replayed older serial; the active release is a no-op
 *  4. fetch       `nix copy --from` the substituter, with Nix checking every path's signature (never building)
 *  5. check       the store path is a NixOS system for this host
 *  6. activate    `switch-to-configuration test` of the new system (switch, test); the boot default is untouched
 *  7. health      each health check; any failure rolls back
 *  8. confirm     with a confirmation timeout: wait for the caller to confirm over a fresh connection
 *  9. commit      set the system profile and `switch-to-configuration boot` (switch, boot): now the boot default
 * 10. record      what was applied, for the serial check of the next apply
 * On failure after 6: the previous system is activated again (and the profile restored if 9 changed it).
 */
import { access, readFile, rm, symlink, writeFile, appendFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { StepRunner, type RunEvent } from "../../run/events.js";
import { pause } from "../../util/time.js";
import { parsePublicKey, type PublicKey } from "../keys.js";
import { runNixTool } from "../nix.js";
import { FetchError, exists, fetchClosure, readChannel } from "./fetch.js";
import { newNonce, makeApplyDir } from "./dirs.js";
export { newNonce, makeApplyDir };
import { RecordError, parseRecord, verifyRecord, type SignedRecord } from "../record.js";
import {
  appendHistory,
  hostSystem,
  profileGeneration,
  readState,
  runCommand,
  storePathOf,
  takeLock,
  writeState,
  type ApplyPaths,
} from "./host.js";
import { admit, stepsFor, switchOutcome, type ApplyAction, type ApplyStatus } from "./plan.js";

/** What the front hands the worker (request.json in the apply's directory). */
export interface ApplyRequest {
  /** The channel: an http(s) or file URL, or a path, of the channel's record. */
  channel: string;
  /** Trusted release keys (`name:base64`), also the only keys Nix accepts for the closure. */
  trustedKeys: string[];
  /** Binary cache URL; default: the record's `substituter`. */
  substituter?: string;
  action: ApplyAction;
  healthChecks: string[];
  healthTimeoutMs: number;
  /** Wait this long for a confirmation over a fresh connection, else roll back. */
  confirmTimeoutMs?: number;
  nonce: string;
  paths: ApplyPaths;
}

export type ApplyStep =
  | "lock"
  | "resolve"
  | "admit"
  | "fetch"
  | "check"
  | "activate"
  | "health"
  | "confirm"
  | "commit"
  | "dry-activate"
  | "record"
  | "rollback";

export interface ApplyResult {
  status: ApplyStatus;
  /** One line: what happened (and why, on failure). */
  message: string;
  host: string;
  nonce: string;
  channel?: string;
  serial?: number;
  storePath?: string;
  /** What ran before (and runs again after a rollback). */
  previousPath?: string;
  rebootNeeded?: boolean;
  /** Why it failed, when it did (the step and its message). */
  failure?: { step: string; message: string };
  /** Bytes of NARs fetched (from the cache's narinfo sizes), paths fetched. */
  fetched?: { paths: number; bytes: number };
  steps: { step: string; status: string; durationMs: number; detail?: string }[];
  durationMs: number;
}

/** An event line of events.jsonl: a step event, or the apply's own. */
export type WorkerEvent =
  | RunEvent<ApplyStep>
  | { kind: "awaiting-confirmation"; subject: string; nonce: string; timeoutMs: number }
  | { kind: "result"; result: ApplyResult };

class StepFailed extends Error {
  constructor(
    readonly status: ApplyStatus,
    readonly step: string,
    message: string,
    /** The last lines of the failing command's output, shown after the message. */
    readonly output?: string,
  ) {
    super(message);
  }

  /** The message, then the output (if any). */
  full(): string {
    return this.output ? `${this.message}; its output:\n${this.output.replace(/^/gm, "  | ")}` : this.message;
  }
}

/** Runs the apply of `dir` (request.json there); writes events.jsonl and result.json. Never throws. */
export async function runWorker(dir: string): Promise<ApplyResult> {
  const request = JSON.parse(await readFile(join(dir, "request.json"), "utf8")) as ApplyRequest;
  const eventsPath = join(dir, "events.jsonl");
  const host = hostname();
  let chain = Promise.resolve();
  const write = (e: WorkerEvent) => {
    const line = JSON.stringify(e) + "\n";
    chain = chain.then(() => appendFile(eventsPath, line)).catch(() => undefined);
  };
  const steps = new StepRunner<ApplyStep>(host, (e) => write(e));
  const t0 = Date.now();
  const p = request.paths;
  const result: ApplyResult = {
    status: "failed",
    message: "",
    host,
    nonce: request.nonce,
    steps: [],
    durationMs: 0,
  };
  let lock: { release(): void } | undefined;
  let gcroot: string | undefined;
  /** What ran before, to go back to; and whether we changed the running system or the profile. */
  let previousPath: string | undefined;
  let previousGeneration: number | undefined;
  let activated = false;
  let profileChanged = false;

  const rollback = async (why: StepFailed): Promise<void> => {
    if (!activated && !profileChanged) throw why;
    try {
      await steps.run(
        "rollback",
        async () => {
          if (!previousPath) throw new Error("nothing to go back to: the previous system is unknown");
          if (profileChanged) {
            if (previousGeneration !== undefined)
              await runNixTool("nix-env", [
                "-p",
                p.profile,
                "--switch-generation",
                String(previousGeneration),
              ]);
            else await runNixTool("nix-env", ["-p", p.profile, "--set", previousPath]);
            const boot = await runCommand(join(previousPath, "bin/switch-to-configuration"), ["boot"], {
              timeoutMs: 600_000,
            });
            if (boot.exitCode !== 0)
              throw new Error(`reinstalling the previous boot entry failed:\n${boot.tail}`);
          }
          if (activated) {
            const r = await runCommand(join(previousPath, "bin/switch-to-configuration"), ["test"], {
              timeoutMs: 600_000,
              env: { NIXOS_INSTALL_BOOTLOADER: "" },
            });
            const o = switchOutcome("test", r.exitCode, r.signal);
            if (!o.ok) throw new Error(`${o.reason}; output:\n${r.tail}`);
          }
        },
        `back to ${previousPath ?? "?"}`,
      );
    } catch (err) {
      throw new StepFailed(
        "rollback_failed",
        why.step,
        `${why.message}; rolling back FAILED: ${(err as Error).message}`,
        why.output,
      );
    }
    throw new StepFailed(
      "rolled_back",
      why.step,
      `${why.message}; rolled back to ${previousPath}`,
      why.output,
    );
  };

  try {
    // 1. lock
    await steps.run("lock", async () => {
      const taken = takeLock(p.runDir, request.nonce);
      if ("holder" in taken)
        throw new StepFailed(
          "busy",
          "lock",
          `another apply runs on this host (pid ${taken.holder.pid}, nonce ${taken.holder.nonce}, since ${taken.holder.started}); try again when it is done`,
        );
      lock = taken;
    });

    // 2. resolve
    const trusted: PublicKey[] = request.trustedKeys.map((k) => parsePublicKey(k));
    const record: SignedRecord = await steps.run(
      "resolve",
      async () => {
        let text: string;
        try {
          text = await readChannel(request.channel);
        } catch (err) {
          throw new StepFailed(
            "failed",
            "resolve",
            `cannot read the channel ${request.channel}: ${(err as Error).message}`,
          );
        }
        try {
          const r = parseRecord(text, request.channel);
          verifyRecord(r, trusted, request.channel);
          return r;
        } catch (err) {
          if (err instanceof RecordError) throw new StepFailed("refused", "resolve", err.message);
          throw err;
        }
      },
      (r) => `${r.channel}#${r.serial} (${r.kind}) ${r.storePath}`,
    );
    Object.assign(result, { channel: record.channel, serial: record.serial, storePath: record.storePath });

    // 3. admit
    const facts = {
      system: await hostSystem(p),
      activePath: await storePathOf(p.currentSystem),
      profilePath: await storePathOf(p.profile),
      last: await readState(p.stateDir),
    };
    previousPath = facts.activePath ?? facts.profilePath;
    previousGeneration = await profileGeneration(p.profile);
    result.previousPath = previousPath;
    const admission = admit(record, facts, request.action);
    await steps.run(
      "admit",
      async () => {
        if (admission.verdict === "refuse") throw new StepFailed("refused", "admit", admission.reason);
      },
      admission.verdict === "noop" ? "already active" : `replaces ${previousPath ?? "nothing known"}`,
    );
    if (admission.verdict === "noop") {
      result.status = "noop";
      result.message = admission.reason;
      return result;
    }

    // 4. fetch
    const substituter = request.substituter ?? record.substituter;
    if (!substituter)
      throw new StepFailed(
        "failed",
        "fetch",
        "no substituter: pass --substituter URL (the release names none)",
      );
    result.fetched = await steps.run(
      "fetch",
      async () => {
        let fetched: { paths: number; bytes: number };
        try {
          fetched = await fetchClosure(substituter, record.storePath, trusted, (copied, paths) =>
            steps.data("fetch", copied, 0, paths),
          );
        } catch (err) {
          if (!(err instanceof FetchError)) throw err;
          throw new StepFailed(err.kind === "unsigned" ? "refused" : "failed", "fetch", err.message);
        }
        gcroot = join(p.gcroots, `hetznix-apply-${request.nonce}`);
        await rm(gcroot, { force: true });
        await symlink(record.storePath, gcroot);
        return fetched;
      },
      (f) => (f.paths === 0 ? "already here" : `${f.paths} path(s), ${f.bytes} bytes`),
    );

    // 5. check
    await steps.run("check", async () => {
      const system = (await readFile(join(record.storePath, "system"), "utf8").catch(() => "")).trim();
      if (system !== facts.system)
        throw new StepFailed(
          "refused",
          "check",
          `${record.storePath} is built for "${system || "?"}", not ${facts.system}`,
        );
      try {
        await access(join(record.storePath, "bin/switch-to-configuration"));
      } catch {
        throw new StepFailed(
          "refused",
          "check",
          `${record.storePath} is not a NixOS system (no bin/switch-to-configuration)`,
        );
      }
    });

    // 6-9
    const switchScript = join(record.storePath, "bin/switch-to-configuration");
    for (const step of stepsFor(request.action, request.confirmTimeoutMs !== undefined)) {
      if (step === "dry-activate") {
        await steps.run("dry-activate", async () => {
          const r = await runCommand(switchScript, ["dry-activate"], { timeoutMs: 600_000 });
          if (r.exitCode !== 0)
            throw new StepFailed("failed", "dry-activate", `dry-activate failed:\n${r.tail}`);
          return r.tail;
        });
        result.status = "dry_run";
        result.message = `dry-activate of ${record.storePath}: nothing was changed`;
        return result;
      }
      if (step === "activate") {
        await steps
          .run(
            "activate",
            async () => {
              activated = true; // from here on, the running system may have changed
              const r = await runCommand(switchScript, ["test"], { timeoutMs: 1_800_000 });
              const o = switchOutcome("test", r.exitCode, r.signal);
              if (!o.ok) throw new StepFailed("failed", "activate", o.reason, r.tail);
              if (o.rebootNeeded) result.rebootNeeded = true;
            },
            () => (result.rebootNeeded ? "reboot needed to finish (exit 100)" : "test-activated"),
          )
          .catch((err: unknown) => rollback(asFailure(err, "activate")));
      } else if (step === "health") {
        await steps
          .run(
            "health",
            async () => {
              for (const check of request.healthChecks) {
                const r = await runCommand("/bin/sh", ["-c", check], {
                  timeoutMs: request.healthTimeoutMs,
                  env: { HETZNIX_STORE_PATH: record.storePath, HETZNIX_SERIAL: String(record.serial) },
                });
                if (r.exitCode !== 0)
                  throw new StepFailed(
                    "failed",
                    "health",
                    `health check failed (${r.signal ?? `exit ${r.exitCode}`}): ${check}`,
                    r.tail || undefined,
                  );
              }
            },
            request.healthChecks.length === 0 ? "no health checks" : `${request.healthChecks.length} passed`,
          )
          .catch((err: unknown) => rollback(asFailure(err, "health")));
      } else if (step === "confirm") {
        await steps
          .run(
            "confirm",
            async () => {
              const timeoutMs = request.confirmTimeoutMs as number;
              // The marker first: a deployer that sees the event may confirm at once.
              await writeFile(join(dir, "awaiting"), "");
              write({ kind: "awaiting-confirmation", subject: host, nonce: request.nonce, timeoutMs });
              const deadline = Date.now() + timeoutMs;
              try {
                for (let i = 0; i < 1_000_000; i++) {
                  if (await exists(join(dir, "confirmed"))) return;
                  if (Date.now() > deadline) break;
                  await pause(Math.min(100, Math.max(1, deadline - Date.now())));
                }
              } finally {
                await rm(join(dir, "awaiting"), { force: true });
              }
              throw new StepFailed(
                "failed",
                "confirm",
                `no confirmation within ${Math.round(timeoutMs / 1000)} s (the deployer could not reach the new system, or gave up)`,
              );
            },
            "confirmed over a fresh connection",
          )
          .catch((err: unknown) => rollback(asFailure(err, "confirm")));
      } else if (step === "commit") {
        await steps
          .run(
            "commit",
            async () => {
              profileChanged = true;
              await runNixTool("nix-env", ["-p", p.profile, "--set", record.storePath]);
              const r = await runCommand(switchScript, ["boot"], { timeoutMs: 600_000 });
              const o = switchOutcome("boot", r.exitCode, r.signal);
              if (!o.ok) throw new StepFailed("failed", "commit", o.reason, r.tail);
            },
            "boot default",
          )
          .catch((err: unknown) => rollback(asFailure(err, "commit")));
      }
    }

    // 10. record
    await steps.run("record", () =>
      writeState(p.stateDir, {
        channel: record.channel,
        channelUrl: request.channel,
        serial: record.serial,
        storePath: record.storePath,
        action: request.action,
        appliedAt: new Date().toISOString(),
      }),
    );
    result.status = "applied";
    result.message = `${request.action === "boot" ? "set as boot default" : "activated"}: ${record.channel}#${record.serial} ${record.storePath}${result.rebootNeeded ? " (reboot needed to finish)" : ""}`;
    return result;
  } catch (err) {
    const failure = asFailure(err, "apply");
    result.status = failure.status;
    result.failure = { step: failure.step, message: failure.full() };
    result.message = failure.full();
    return result;
  } finally {
    if (gcroot) await rm(gcroot, { force: true }).catch(() => undefined);
    result.steps = steps.timings.map((t) => ({
      step: t.step,
      status: t.status,
      durationMs: t.durationMs,
      ...(t.detail ? { detail: t.detail } : {}),
    }));
    result.durationMs = Date.now() - t0;
    await appendHistory(p.stateDir, {
      at: new Date().toISOString(),
      nonce: request.nonce,
      status: result.status,
      channel: result.channel,
      serial: result.serial,
      storePath: result.storePath,
      message: result.message,
    }).catch(() => undefined);
    write({ kind: "result", result });
    await chain;
    await writeFile(join(dir, "result.json"), JSON.stringify(result, null, 2) + "\n").catch(() => undefined);
    lock?.release();
  }
}

function asFailure(err: unknown, step: string): StepFailed {
  if (err instanceof StepFailed) return err;
  return new StepFailed("failed", step, err instanceof Error ? err.message : String(err));
}
