/**
 * `hetznix deploy`: roll a channel's release out to the servers a label selector (or a list of names) finds.
 *
 *  1. find       the servers through the Hetzner API; skip those not running (and say so)
 *  2. canaries   the first --canary servers; if one fails, stop before any other server is touched
 *  3. the rest   --parallel at a time; once failures exceed --max-failures, start no further server
 *  per server:   connect (host key checked against hetznix's known hosts; first contact recorded)
 *                -> `hetznix apply --output events` on the server (detached there; steps streamed back)
 *                -> magic rollback: when the server waits for confirmation, confirm over a fresh connection
 *                   (proving the new system still lets us in); without it the server rolls itself back
 *  4. summary    which servers run which release, each step's time, what failed and why; remembered per server
 *                so --only-failed retries just those
 */
import { join } from "node:path";
import type { HCloudClient } from "../../hcloud/client.js";
import type { Server } from "../../hcloud/schema.js";
import { StepRunner, type EventSink, type RunEvent } from "../../run/events.js";
import { shellQuote } from "../../run/remote.js";
import { HostKeyMismatchError, connect, exec, type SshConnection } from "../../ssh/index.js";
import { pause } from "../../util/time.js";
import type { ApplyResult, WorkerEvent } from "../apply/worker.js";
import { newNonce } from "../apply/worker.js";
import { confirmScript } from "../apply/front.js";
import { DeployMemory, KnownHosts, stateDir } from "./memory.js";
import {
  budgetExceeded,
  fleetExitCode,
  isFailure,
  outcomeOf,
  selectServers,
  splitCanaries,
  type FleetServer,
  type ServerOutcome,
} from "./plan.js";

export interface DeployOptions {
  client: HCloudClient;
  /** A Hetzner label selector (full syntax), or names: one of the two. */
  selector?: string;
  servers?: string[];
  /** The channel's record URL, as the servers fetch it. */
  channel: string;
  trustedKeys: string[];
  substituter?: string;
  /** Servers deployed at once after the canaries (default 5). */
  parallel?: number;
  /** Servers deployed first; if one fails, the rollout stops (default 0). */
  canary?: number;
  /** Failures tolerated before the rollout stops (default 0). */
  maxFailures?: number;
  /** Magic rollback: each server waits this long for the deployer's confirmation (default 30 s). */
  confirmTimeoutMs?: number;
  /** Off for intended SSH or network changes (the server then does not wait for a confirmation). */
  magicRollback?: boolean;
  healthChecks?: string[];
  healthTimeoutMs?: number;
  /** Only servers whose last deploy of this channel failed, rolled back or was not reached. */
  onlyFailed?: boolean;
  /** SSH as root with this private key (in memory), or the agent at this socket. */
  ssh: { privateKey?: string; agent?: string; port?: number; connectTimeoutMs?: number };
  /** Server names whose changed host key is accepted on purpose (recorded anew). */
  acceptHostKeys?: string[];
  /** Default: $XDG_STATE_HOME/hetznix (known_hosts.json, deployments.json). */
  stateDir?: string;
  onEvent?: EventSink;
  signal?: AbortSignal;
}

export interface ServerReport {
  id: number;
  name: string;
  ip: string;
  outcome: ServerOutcome;
  message: string;
  serial?: number;
  storePath?: string;
  rebootNeeded?: boolean;
  steps: { step: string; status: string; durationMs: number; detail?: string }[];
  durationMs: number;
}

export interface DeployResult {
  channel: string;
  servers: ServerReport[];
  skipped: { name: string; reason: string }[];
  /** Servers the rollout did not reach because it stopped (failure budget, failed canary). */
  notTouched: string[];
  /** Why the rollout stopped early, if it did. */
  stopped?: string;
  durationMs: number;
  exitCode: number;
}

/** Errors before the rollout starts (no servers, bad options): nothing was touched. */
export class DeployError extends Error {
  override readonly name = "DeployError";
  constructor(
    readonly code: "usage" | "no_servers" | "api",
    message: string,
  ) {
    super(message);
  }
}

async function findServers(opts: DeployOptions): Promise<Server[]> {
  if (opts.servers?.length) {
    const found: Server[] = [];
    const missing: string[] = [];
    for (const name of opts.servers) {
      const [s] = await opts.client.servers.all({ name, signal: opts.signal });
      if (s) found.push(s);
      else missing.push(name);
    }
    if (missing.length > 0) throw new DeployError("no_servers", `no server named ${missing.join(", ")}`);
    return found;
  }
  return opts.client.servers.all({ labelSelector: opts.selector as string, signal: opts.signal });
}

function applyCommand(opts: DeployOptions, nonce: string, confirm: boolean): string {
  const args = ["hetznix", "apply", "--channel", opts.channel, "--output", "events", "--nonce", nonce];
  for (const k of opts.trustedKeys) args.push("--trusted-key", k);
  if (opts.substituter) args.push("--substituter", opts.substituter);
  for (const h of opts.healthChecks ?? []) args.push("--health-check", h);
  if (opts.healthTimeoutMs !== undefined)
    args.push("--health-timeout", `${Math.ceil(opts.healthTimeoutMs / 1000)}s`);
  if (confirm) args.push("--confirm-timeout", `${Math.ceil((opts.confirmTimeoutMs ?? 30_000) / 1000)}s`);
  return args.map(shellQuote).join(" ");
}

/** Deploys the channel's release to the fleet; see the module comment for the steps. */
export async function deployFleet(opts: DeployOptions): Promise<DeployResult> {
  const t0 = Date.now();
  if (!opts.selector === !opts.servers?.length)
    throw new DeployError("usage", "give either --selector LABELS or --server NAME (one of the two)");
  if (opts.trustedKeys.length === 0) throw new DeployError("usage", "--trusted-key is required");
  if (!opts.ssh.privateKey && !opts.ssh.agent)
    throw new DeployError("usage", "no SSH key: pass --ssh-key FILE or run an SSH agent (SSH_AUTH_SOCK)");
  const parallel = opts.parallel ?? 5;
  const maxFailures = opts.maxFailures ?? 0;
  if (!Number.isInteger(parallel) || parallel < 1)
    throw new DeployError("usage", "--parallel must be at least 1");
  if (!Number.isInteger(maxFailures) || maxFailures < 0)
    throw new DeployError("usage", "--max-failures must be 0 or more");
  const dir = opts.stateDir ?? stateDir();
  const known = await KnownHosts.load(join(dir, "known_hosts.json"));
  const memory = await DeployMemory.load(join(dir, "deployments.json"));

  // 1. find
  let servers: Server[];
  try {
    servers = await findServers(opts);
  } catch (err) {
    if (err instanceof DeployError) throw err;
    throw new DeployError("api", `finding the servers failed: ${(err as Error).message}`);
  }
  const fleet: FleetServer[] = servers.map((s) => ({
    id: s.id,
    name: s.name,
    status: s.status,
    ip: s.public_net.ipv4?.ip,
  }));
  const { targets, skipped } = selectServers(fleet, {
    onlyFailed: opts.onlyFailed === true,
    last: memory.lastOutcomes(opts.channel),
  });
  for (const s of skipped)
    opts.onEvent?.({ kind: "note", subject: s.name, message: `skipped: ${s.reason}` } satisfies RunEvent);
  if (targets.length === 0)
    throw new DeployError(
      "no_servers",
      `no server to deploy to (${opts.selector ? `selector ${opts.selector}` : "the names given"}${skipped.length ? `; skipped: ${skipped.map((s) => `${s.name} (${s.reason})`).join(", ")}` : ""})`,
    );

  const reports: ServerReport[] = [];
  let failures = 0;
  let stopped: string | undefined;
  const deployOne = async (s: FleetServer): Promise<void> => {
    const report = await deployServer(s, opts, known);
    reports.push(report);
    if (isFailure(report.outcome)) failures++;
    memory.remember(opts.channel, s.id, {
      name: s.name,
      outcome: report.outcome,
      ...(report.serial !== undefined ? { serial: report.serial } : {}),
      ...(report.storePath ? { storePath: report.storePath } : {}),
      at: new Date().toISOString(),
    });
  };
  const pool = async (
    list: FleetServer[],
    width: number,
    stopOn: () => string | undefined,
  ): Promise<FleetServer[]> => {
    const queue = [...list];
    const running = new Set<Promise<void>>();
    while (queue.length > 0 || running.size > 0) {
      while (queue.length > 0 && running.size < width && !stopOn() && !opts.signal?.aborted) {
        const s = queue.shift() as FleetServer;
        const p: Promise<void> = deployOne(s).finally(() => running.delete(p));
        running.add(p);
      }
      if (running.size === 0) break;
      await Promise.race(running);
    }
    return queue;
  };

  // 2. canaries
  const { canaries, rest } = splitCanaries(targets, opts.canary ?? 0);
  let untouched: FleetServer[] = [];
  const before = failures;
  untouched = await pool(canaries, Math.max(1, canaries.length), () => undefined);
  if (failures > before) {
    stopped = `${failures - before} of ${canaries.length} canary server(s) failed: no other server was touched`;
    untouched.push(...rest);
  } else if (opts.signal?.aborted) {
    stopped = "interrupted";
    untouched.push(...rest);
  } else {
    // 3. the rest
    untouched = await pool(rest, parallel, () => {
      if (opts.signal?.aborted) return (stopped ??= "interrupted");
      if (budgetExceeded(failures, maxFailures))
        return (stopped ??= `${failures} failure(s), more than --max-failures ${maxFailures}: stopped starting servers`);
      return undefined;
    });
  }
  for (const s of untouched)
    memory.remember(opts.channel, s.id, {
      name: s.name,
      outcome: "not_touched",
      at: new Date().toISOString(),
    });
  await Promise.all([known.save(), memory.save()]);

  reports.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const notTouched = untouched.map((s) => s.name);
  return {
    channel: opts.channel,
    servers: reports,
    skipped,
    notTouched,
    ...(stopped ? { stopped } : {}),
    durationMs: Date.now() - t0,
    exitCode: fleetExitCode([
      ...reports.map((r) => r.outcome),
      ...notTouched.map(() => "not_touched" as const),
    ]),
  };
}

/** One server: connect, apply, confirm; never throws (failures are outcomes). */
async function deployServer(s: FleetServer, opts: DeployOptions, known: KnownHosts): Promise<ServerReport> {
  const t0 = Date.now();
  const ip = s.ip as string;
  const steps = new StepRunner(s.name, opts.onEvent);
  const report: ServerReport = {
    id: s.id,
    name: s.name,
    ip,
    outcome: "failed",
    message: "",
    steps: [],
    durationMs: 0,
  };
  const finish = (): ServerReport => {
    report.durationMs = Date.now() - t0;
    report.steps = [
      ...steps.timings.map((t) => ({
        step: t.step,
        status: t.status,
        durationMs: t.durationMs,
        ...(t.detail ? { detail: t.detail } : {}),
      })),
      ...report.steps,
    ];
    return report;
  };
  const entry = known.get(s.id);
  const accept = opts.acceptHostKeys?.includes(s.name) === true;
  const expected = entry && !accept ? entry.fingerprint : undefined;
  const sshTo = (pin: string | undefined, maxTotalMs = opts.ssh.connectTimeoutMs ?? 60_000) =>
    connect({
      host: ip,
      ...(opts.ssh.port ? { port: opts.ssh.port } : {}),
      ...(opts.ssh.privateKey ? { privateKey: opts.ssh.privateKey } : {}),
      ...(opts.ssh.agent ? { agent: opts.ssh.agent } : {}),
      ...(pin ? { expectedHostKeyFingerprint: pin } : {}),
      maxAttempts: 20,
      maxTotalMs,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });

  // connect
  let conn: SshConnection;
  try {
    conn = await steps.run(
      "connect",
      () => sshTo(expected),
      (c) =>
        `${ip}, host key ${c.hostKeyFingerprint}${entry ? (accept && entry.fingerprint !== c.hostKeyFingerprint ? " (changed; accepted on purpose)" : "") : " (first contact: recorded)"}`,
    );
  } catch (err) {
    if (err instanceof HostKeyMismatchError) {
      report.outcome = "host_key_changed";
      report.message = `the SSH host key of ${s.name} (${ip}) changed: it was ${err.expected}, now ${err.presented}. If the server was rebuilt on purpose, accept the new key with --accept-host-key ${s.name}; otherwise someone may be in between.`;
    } else {
      report.outcome = "unreachable";
      report.message = `cannot reach ${s.name} over SSH: ${(err as Error).message}`;
    }
    return finish();
  }
  if (!entry || (accept && entry.fingerprint !== conn.hostKeyFingerprint))
    known.set(s.id, {
      name: s.name,
      ip,
      fingerprint: conn.hostKeyFingerprint,
      firstSeen: new Date().toISOString(),
    });

  const nonce = newNonce();
  const confirm = opts.magicRollback !== false;
  let result: ApplyResult | undefined;
  let confirming: Promise<void> | undefined;
  let partial = "";
  const onLine = (line: string) => {
    let e: WorkerEvent;
    try {
      e = JSON.parse(line) as WorkerEvent;
    } catch {
      return;
    }
    if (e.kind === "result") result = e.result;
    else if (e.kind === "awaiting-confirmation") {
      confirming ??= steps
        .run(
          "reconnect",
          async () => {
            // A fresh connection proves the new system still lets the deployer in.
            const fresh = await sshTo(conn.hostKeyFingerprint, Math.min(e.timeoutMs, 60_000));
            try {
              const r = await exec(fresh, confirmScript(nonce));
              if (r.exitCode !== 0) throw new Error(r.stderrTail || `exit ${r.exitCode}`);
            } finally {
              await fresh.close();
            }
          },
          "confirmed over a fresh SSH connection",
        )
        .catch(() => undefined);
    } else opts.onEvent?.({ ...e, subject: s.name } as RunEvent);
  };
  try {
    await exec(conn, applyCommand(opts, nonce, confirm), {
      onStdout: (chunk) => {
        const lines = (partial + chunk.toString()).split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) if (line.trim()) onLine(line);
      },
      ...(opts.signal ? { signal: opts.signal } : {}),
      tailLines: 20,
    }).catch(() => undefined);
    if (partial.trim()) onLine(partial);
    // The connection dropped (or the front died) before the result: the apply goes on over there; ask for its result.
    if (!result && !opts.signal?.aborted)
      result = await resultAfterDrop(sshTo, conn.hostKeyFingerprint, nonce);
    await confirming;
  } finally {
    await conn.close().catch(() => undefined);
  }
  if (!result) {
    report.outcome = "unreachable";
    report.message = `lost ${s.name} during the apply (nonce ${nonce}); without a confirmation it rolls itself back`;
    return finish();
  }
  report.outcome = outcomeOf(result.status);
  report.message = result.message;
  if (result.serial !== undefined) report.serial = result.serial;
  if (result.storePath) report.storePath = result.storePath;
  if (result.rebootNeeded) report.rebootNeeded = true;
  report.steps = result.steps;
  return finish();
}

async function resultAfterDrop(
  sshTo: (pin: string | undefined, maxTotalMs?: number) => Promise<SshConnection>,
  pin: string,
  nonce: string,
): Promise<ApplyResult | undefined> {
  const deadline = Date.now() + 180_000;
  for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
    try {
      const c = await sshTo(pin, 30_000);
      try {
        const r = await exec(c, `cat /run/hetznix/apply/${nonce}/result.json`, { tailLines: 500 });
        if (r.exitCode === 0 && r.stdoutTail.trim()) return JSON.parse(r.stdoutTail) as ApplyResult;
      } finally {
        await c.close();
      }
    } catch {
      // not back yet
    }
    await pause(1000);
  }
  return undefined;
}
