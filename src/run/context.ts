/**
 * The run context every long operation shares: its client, its step runner, the registry of temporary resources,
 * the signals (one for the work, one for cleanup), the heartbeat, and `runWithCleanup`, which always cleans up with
 * its own signal and names the operation in its messages ("the write-to-disk was aborted").
 */
import type { HCloudClient } from "../hcloud/client.js";
import type { Labels } from "../hcloud/schema.js";
import { CleanupIncompleteError, abortError, type Leftover } from "./errors.js";
import { StepRunner, type EventSink, type StepTiming } from "./events.js";
import { pause } from "../util/time.js";
import { newRunId, temporaryLabels } from "./labels.js";
import {
  ResourceRegistry,
  imageResource,
  registerStragglers,
  type CleanupReport,
  type ImageWait,
  type KnownResources,
  type Registered,
} from "./resources.js";

export interface WaitSettings {
  /** Per action (create, rescue, power on, delete) (default 10 min). */
  actionTimeoutMs?: number;
  /** For the snapshot action (default 60 min). */
  snapshotTimeoutMs?: number;
  /** Waiting for the server to be off after the ACPI shutdown, before cutting power (default 30 s). */
  shutdownTimeoutMs?: number;
  /** Delay between status polls (default 1000 ms). */
  pollIntervalMs?: number;
}

export const DEFAULT_WAITS: Required<WaitSettings> = {
  actionTimeoutMs: 600_000,
  snapshotTimeoutMs: 3_600_000,
  shutdownTimeoutMs: 30_000,
  pollIntervalMs: 1000,
};

/** What every operation takes, whatever it does. */
export interface RunOptions<S extends string = string> {
  client: HCloudClient;
  /** Aborts the operation (cleanup still runs). */
  signal?: AbortSignal;
  /** Aborts cleanup (e.g. a second Ctrl-C); what is left is reported. */
  cleanupSignal?: AbortSignal;
  onEvent?: EventSink<S>;
  waits?: WaitSettings;
  /** A name for events (default: what the operation works on, e.g. the image path). */
  name?: string;
  /** Run id (default: random). */
  runId?: string;
  /**
   * How often the run refreshes the heartbeat label of its temporary server and key (default DEFAULT_HEARTBEAT_MS),
   * so `hetznix cleanup --older-than AGE` (AGE above this interval) never removes a run that is still going.
   */
  heartbeatMs?: number;
}

/** Three minutes: `cleanup --older-than` of more than that never touches a live run. */
export const DEFAULT_HEARTBEAT_MS = 180_000;

/** What every operation's result reports about the run itself. */
export interface RunOutcome<S extends string = string> {
  runId: string;
  steps: StepTiming<S>[];
  durationMs: number;
  /** Temporary resources cleanup could not remove (empty normally). */
  leftovers: Leftover[];
}

/** State of one run: the client, steps, registry, signals. */
export class RunContext<O extends RunOptions<S>, S extends string = string> {
  readonly runId: string;
  readonly startedMs = Date.now();
  readonly registry = new ResourceRegistry();
  readonly steps: StepRunner<S>;
  readonly waits: Required<WaitSettings>;
  /** Aborted when the caller aborts or the run ends, to stop work still running in parallel. */
  readonly inner = new AbortController();
  /** Temporary resources this run knows it made, and snapshots it keeps (the straggler search skips them). */
  readonly known: KnownResources = { servers: new Set(), sshKeys: new Set(), images: new Set() };
  /** When the run last refreshed its heartbeat label. */
  private heartbeatAtMs = this.startedMs;
  /** Set before the first create request: a lost answer may still have created something. */
  createdSomething = false;

  constructor(
    /** Names the operation in messages, e.g. "upload", "write-to-disk", "deploy". */
    readonly operation: string,
    readonly opts: O,
    subject: string,
  ) {
    this.runId = opts.runId ?? newRunId();
    this.steps = new StepRunner<S>(opts.name ?? subject, opts.onEvent);
    this.waits = { ...DEFAULT_WAITS, ...opts.waits };
    const outer = opts.signal;
    if (outer) {
      if (outer.aborted) this.inner.abort(outer.reason);
      else outer.addEventListener("abort", () => this.inner.abort(outer.reason), { once: true });
    }
  }

  get client(): HCloudClient {
    return this.opts.client;
  }

  get signal(): AbortSignal {
    return this.inner.signal;
  }

  /** Labels of this run's temporary resources (with the latest heartbeat). */
  get labels(): Labels {
    return temporaryLabels(this.runId, this.startedMs, this.heartbeatAtMs);
  }

  /** How cleanup waits for a snapshot still being created (bounded, reported as a note). */
  get imageWait(): ImageWait {
    return {
      pollIntervalMs: this.waits.pollIntervalMs,
      timeoutMs: this.waits.snapshotTimeoutMs,
      onWait: (message) => this.steps.note(message),
    };
  }

  /** Registration of a snapshot this run made (removed by cleanup unless it is kept). */
  imageResource(id: number): Registered {
    return imageResource(this.client, id, `snapshot ${id}`, this.imageWait);
  }

  /**
   * Refreshes the heartbeat label on this run's temporary servers and keys every `heartbeatMs` until the run's
   * signal aborts (the run ended). Best effort: a failed refresh is tried again next time. Resolves when stopped.
   */
  async heartbeat(): Promise<void> {
    const interval = Math.max(10, this.opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS);
    const signal = this.signal;
    // Bounded in count too: a week of beats at the shortest interval the option allows.
    const maxBeats = Math.ceil((7 * 86_400_000) / interval);
    for (let beat = 0; beat < maxBeats && !signal.aborted; beat++) {
      await pause(interval, signal);
      if (signal.aborted) break;
      this.heartbeatAtMs = Date.now();
      const labels = this.labels;
      const updates = [
        ...[...this.known.servers].map((id) => this.client.servers.update(id, { labels }, { signal })),
        ...[...this.known.sshKeys].map((id) => this.client.sshKeys.update(id, { labels }, { signal })),
      ];
      await Promise.allSettled(updates);
    }
  }

  /** The operation's abort error (keeps the reason the caller gave). */
  aborted(): Error {
    return abortError(this.opts.signal?.aborted ? this.opts.signal : this.signal, this.operation);
  }

  /** Wait for actions with the run's signal and timeout. */
  async wait(actions: Parameters<HCloudClient["waitForActions"]>[0], timeoutMs = this.waits.actionTimeoutMs) {
    return this.client.waitForActions(actions, { signal: this.signal, timeoutMs });
  }

  /** The run's part of a result, as of now (runWithCleanup completes leftovers, duration and steps at the end). */
  outcome(): RunOutcome<S> {
    return {
      runId: this.runId,
      steps: this.steps.timings,
      durationMs: Date.now() - this.startedMs,
      leftovers: [],
    };
  }

  /** Run cleanup with its own signal; returns the report (never throws). */
  async cleanup(): Promise<CleanupReport> {
    const signal = this.opts.cleanupSignal ?? new AbortController().signal;
    const run = async () => {
      if (this.createdSomething && !signal.aborted) {
        try {
          await registerStragglers(
            this.client,
            this.registry,
            this.runId,
            this.known,
            signal,
            this.imageWait,
          );
        } catch {
          // The registry still holds what we know of.
        }
      }
      return this.registry.cleanup(signal);
    };
    if (this.registry.size === 0 && !this.createdSomething) return { removed: [], leftovers: [] };
    return this.steps.run("cleanup" as S, run, (r) =>
      r.removed.length === 0 && r.leftovers.length === 0
        ? undefined
        : `removed ${r.removed.map((x) => `${x.kind} ${x.name}`).join(", ") || "nothing"}${r.leftovers.length ? `; left ${r.leftovers.length}` : ""}`,
    );
  }
}

/**
 * Runs an operation's steps, then always cleans up with its own signal (success, error or abort). A result gets the
 * leftovers, the total duration and the final step timings; a failure that leaves something behind becomes a
 * CleanupIncompleteError naming it.
 */
export async function runWithCleanup<T extends RunOutcome<S>, O extends RunOptions<S>, S extends string>(
  ctx: RunContext<O, S>,
  body: () => Promise<T>,
  /** Called first when the body has settled, before cleanup (e.g. to stop a local stream). */
  settled?: () => void | Promise<void>,
): Promise<T> {
  let outcome: T | undefined;
  let failure: unknown;
  const heartbeat = ctx.heartbeat();
  try {
    outcome = await body();
    return outcome;
  } catch (err) {
    failure = ctx.opts.signal?.aborted ? abortError(ctx.opts.signal, ctx.operation) : err;
    throw failure;
  } finally {
    try {
      await settled?.();
    } catch {
      // Stopping local work must never keep cleanup from running.
    }
    if (!ctx.inner.signal.aborted) ctx.inner.abort(new Error("run finished"));
    await heartbeat;
    const report = await ctx.cleanup();
    if (outcome) {
      outcome.leftovers = report.leftovers;
      outcome.durationMs = Date.now() - ctx.startedMs;
      outcome.steps = ctx.steps.timings;
    } else if (report.leftovers.length > 0) {
      // eslint-disable-next-line no-unsafe-finally
      throw new CleanupIncompleteError(failure, report.leftovers);
    }
  }
}
