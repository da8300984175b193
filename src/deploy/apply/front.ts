/**
 * `hetznix apply` as the caller sees it: it starts the apply detached from its own session (a transient systemd unit
 * where systemd runs, else a new session whose output goes to a log file), follows its events, and returns its
 * result. If the caller goes away (the SSH connection drops), the apply goes on: it completes, or rolls back.
 * `confirmApply` is the other half of a confirmation: run over a fresh connection, it proves the new system still
 * lets the deployer in.
 */
import { spawn } from "node:child_process";
import { existsSync, openSync, closeSync } from "node:fs";
import { access, readFile, stat, writeFile, open } from "node:fs/promises";
import { join } from "node:path";
import { shellQuote } from "../../run/remote.js";
import { selfCommand } from "../../util/self.js";
import { pause } from "../../util/time.js";
import { DEFAULT_PATHS, type ApplyPaths } from "./host.js";
import { APPLY_ACTIONS, type ApplyAction } from "./plan.js";
import { makeApplyDir, newNonce, type ApplyRequest, type ApplyResult, type WorkerEvent } from "./worker.js";

export interface ApplyOptions {
  channel: string;
  trustedKeys: string[];
  substituter?: string;
  action?: ApplyAction;
  healthChecks?: string[];
  /** Per health check (default 60 s). */
  healthTimeoutMs?: number;
  confirmTimeoutMs?: number;
  /** Default: random. A deployer passes its own so it can confirm. */
  nonce?: string;
  paths?: Partial<ApplyPaths>;
  /** Every event of the apply, as it happens. */
  onEvent?: (event: WorkerEvent) => void;
  /** Stops following (the apply itself goes on; the result says so). */
  signal?: AbortSignal;
  /** How the worker is started: "auto" (systemd-run where systemd runs), "systemd" or "process". */
  detach?: "auto" | "systemd" | "process";
}

/** Usage errors of apply (exit status 2). */
export class ApplyUsageError extends Error {
  override readonly name = "ApplyUsageError";
}

/** The apply was started but the caller stopped following it (it goes on). */
export class ApplyDetachedError extends Error {
  override readonly name = "ApplyDetachedError";
  constructor(
    readonly nonce: string,
    readonly dir: string,
  ) {
    super(
      `stopped following apply ${nonce}; it goes on in the background (its log: ${dir}/worker.log, its result: ${dir}/result.json)`,
    );
  }
}

function paths(opts: ApplyOptions): ApplyPaths {
  return { ...DEFAULT_PATHS, ...opts.paths };
}

function workerArgv(dir: string): string[] {
  const self = selfCommand();
  if (!self) throw new Error("cannot find hetznix's own command to start the apply worker");
  return [...self.argv, "apply", "--worker", dir];
}

/** The first `name` on PATH (NixOS has no /usr/bin: systemd-run is in /run/current-system/sw/bin). */
function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/** Starts the worker for `dir`, detached from this process's session. */
function startWorker(dir: string, nonce: string, detach: ApplyOptions["detach"]): void {
  const argv = workerArgv(dir);
  const systemdRun = onPath("systemd-run");
  const useSystemd =
    detach === "systemd" ||
    (detach !== "process" && existsSync("/run/systemd/system") && systemdRun !== undefined);
  const log = openSync(join(dir, "worker.log"), "a", 0o600);
  try {
    const child = useSystemd
      ? spawn(
          systemdRun ?? "systemd-run",
          [
            `--unit=hetznix-apply-${nonce.slice(0, 16)}`,
            "--collect",
            "--no-ask-password",
            "--service-type=exec",
            "--quiet",
            // Keep the caller's PATH: a transient unit's default one lacks /run/current-system/sw/bin (nix).
            "--setenv=PATH",
            `--property=StandardOutput=append:${join(dir, "worker.log")}`,
            `--property=StandardError=append:${join(dir, "worker.log")}`,
            "--",
            ...argv,
          ],
          { stdio: ["ignore", log, log] },
        )
      : spawn(argv[0] as string, argv.slice(1), { detached: true, stdio: ["ignore", log, log] });
    child.unref();
  } finally {
    closeSync(log);
  }
}

/** Follows events.jsonl of `dir` until the result arrives (or the caller stops). */
async function follow(dir: string, nonce: string, opts: ApplyOptions): Promise<ApplyResult> {
  const eventsPath = join(dir, "events.jsonl");
  let offset = 0;
  let partial = "";
  const started = Date.now();
  for (let i = 0; i < 100_000_000; i++) {
    if (opts.signal?.aborted) throw new ApplyDetachedError(nonce, dir);
    let size = 0;
    try {
      size = (await stat(eventsPath)).size;
    } catch {
      // not yet written
    }
    if (size > offset) {
      const fh = await open(eventsPath, "r");
      try {
        const buf = Buffer.alloc(size - offset);
        await fh.read(buf, 0, buf.length, offset);
        offset = size;
        const text = partial + buf.toString();
        const lines = text.split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) {
          if (!line.trim()) continue;
          const event = JSON.parse(line) as WorkerEvent;
          opts.onEvent?.(event);
          if (event.kind === "result") return event.result;
        }
      } finally {
        await fh.close();
      }
    } else if (Date.now() - started > 15_000 && size === 0) {
      // The worker never wrote anything: it did not start.
      const log = await readFile(join(dir, "worker.log"), "utf8").catch(() => "");
      throw new Error(
        `the apply worker did not start${log ? `:\n${log.split("\n").slice(-10).join("\n")}` : ""}`,
      );
    }
    await pause(50, opts.signal);
  }
  throw new Error("following the apply did not end");
}

/** Applies a channel's release on this host (see worker.ts for the steps). */
export async function applyRelease(opts: ApplyOptions): Promise<ApplyResult> {
  const action = opts.action ?? "switch";
  if (!APPLY_ACTIONS.includes(action))
    throw new ApplyUsageError(`--action must be one of ${APPLY_ACTIONS.join(", ")}`);
  if (opts.trustedKeys.length === 0)
    throw new ApplyUsageError("--trusted-key is required: the public key the releases are signed with");
  if (opts.confirmTimeoutMs !== undefined && action !== "switch" && action !== "test")
    throw new ApplyUsageError("--confirm-timeout goes with --action switch or test");
  const p = paths(opts);
  const nonce = opts.nonce ?? newNonce();
  let dir: string;
  try {
    dir = await makeApplyDir(p.runDir, nonce);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST")
      throw new ApplyUsageError(`nonce ${nonce} was used already on this host; every apply needs a new one`);
    if (err instanceof Error && /nonce/.test(err.message)) throw new ApplyUsageError(err.message);
    throw err;
  }
  const request: ApplyRequest = {
    channel: opts.channel,
    trustedKeys: opts.trustedKeys,
    ...(opts.substituter ? { substituter: opts.substituter } : {}),
    action,
    healthChecks: opts.healthChecks ?? [],
    healthTimeoutMs: opts.healthTimeoutMs ?? 60_000,
    ...(opts.confirmTimeoutMs !== undefined ? { confirmTimeoutMs: opts.confirmTimeoutMs } : {}),
    nonce,
    paths: p,
  };
  await writeFile(join(dir, "request.json"), JSON.stringify(request, null, 2) + "\n", { mode: 0o600 });
  startWorker(dir, nonce, opts.detach ?? "auto");
  return follow(dir, nonce, opts);
}

/** Confirms the apply with this nonce (run over a fresh connection). Throws when no apply awaits it. */
export async function confirmApply(nonce: string, opts: { paths?: Partial<ApplyPaths> } = {}): Promise<void> {
  if (!/^[0-9a-f]{16,64}$/.test(nonce))
    throw new ApplyUsageError("the nonce must be 16 to 64 lowercase hex digits");
  const dir = join({ ...DEFAULT_PATHS, ...opts.paths }.runDir, nonce);
  try {
    await access(join(dir, "awaiting"));
  } catch {
    const done = await readFile(join(dir, "result.json"), "utf8").catch(() => undefined);
    throw new Error(
      done
        ? `apply ${nonce} is not waiting for a confirmation any more (it ended: ${(JSON.parse(done) as ApplyResult).status})`
        : `no apply with nonce ${nonce} waits for a confirmation on this host`,
    );
  }
  await writeFile(join(dir, "confirmed"), new Date().toISOString() + "\n");
}

/**
 * The same as `confirmApply`, as one shell command: what a deployer runs over its fresh connection (no Node.js to
 * start on the server, so the confirmation costs milliseconds).
 */
export function confirmScript(nonce: string, opts: { paths?: Partial<ApplyPaths> } = {}): string {
  if (!/^[0-9a-f]{16,64}$/.test(nonce))
    throw new ApplyUsageError("the nonce must be 16 to 64 lowercase hex digits");
  const dir = join({ ...DEFAULT_PATHS, ...opts.paths }.runDir, nonce);
  return `d=${shellQuote(dir)}; if [ -e "$d/awaiting" ]; then date -u +%Y-%m-%dT%H:%M:%SZ > "$d/confirmed"; else echo "no apply with nonce ${nonce} waits for a confirmation on this host" >&2; exit 1; fi`;
}
