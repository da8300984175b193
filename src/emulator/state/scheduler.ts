/**
 * Actions over time: each action has a modelled duration (timing.ts divided by `speed`); a timer completes it by
 * running the effect its command registered (disk copies, boots). Running actions lock their resources. Timers and
 * waits are tracked so close() cuts them short and never waits for modelled time.
 */
import { ApiError } from "./errors.js";
import type { ActionRecord } from "./records.js";
import { isoNow, type Store } from "./store.js";
import { LATENCY_MS, type LatencyName } from "./timing.js";

/** Resources of an action, e.g. [{id: 42, type: "server"}]. */
export type Resources = { id: number; type: string }[];

/** What happens when an action's modelled time is over; a thrown error fails the action with its message. */
export type Effect = (action: ActionRecord) => Promise<void>;

export class Scheduler {
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly wakeups = new Set<() => void>();
  /** Effects in flight (not persisted: a restart re-runs them). */
  private readonly inFlight = new Map<number, Promise<void>>();
  /** Other work in flight that close() must wait for (e.g. disk copies). */
  private readonly tasks = new Set<Promise<unknown>>();
  /** Ids of running actions (locks are looked up here, not in the whole history). */
  private readonly running = new Set<number>();
  private readonly effects = new Map<string, Effect>();

  constructor(
    private readonly store: Store,
    private readonly speed: number,
  ) {}

  /** A modelled latency at this emulator's speed (at least 1 ms). */
  ms(name: LatencyName, extra = 0): number {
    return Math.max(1, Math.round((LATENCY_MS[name] + extra) / this.speed));
  }

  /** Milliseconds of modelled time at this speed. */
  scaled(ms: number): number {
    return Math.round(ms / this.speed);
  }

  /** Registers the effect of a command (one per command). */
  on(command: string, effect: Effect): void {
    this.effects.set(command, effect);
  }

  newAction(
    command: string,
    resources: Resources,
    durationMs: number,
    params: ActionRecord["params"] = {},
    startMs = Date.now(),
  ): ActionRecord {
    const a: ActionRecord = {
      id: this.store.nextId("action"),
      command,
      status: "running",
      started: isoNow(startMs),
      startedMs: startMs,
      endsAtMs: startMs + durationMs,
      finished: null,
      resources,
      error: null,
      params,
    };
    this.store.actions.set(a.id, a);
    this.resume(a);
    return a;
  }

  /** Schedules the completion of a running action (new, or restored after a restart). */
  resume(a: ActionRecord): void {
    if (a.status !== "running") return;
    this.running.add(a.id);
    this.after(Math.max(0, a.endsAtMs - Date.now()), () => {
      const p = this.complete(a).finally(() => this.inFlight.delete(a.id));
      this.inFlight.set(a.id, p);
    });
  }

  /** Runs `fn` after `ms` unless close() came first. */
  after(ms: number, fn: () => void): void {
    if (this.store.closed) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  /** Keeps `p` in the set close() waits for. */
  track<T>(p: Promise<T>): Promise<T> {
    this.tasks.add(p);
    const done = () => this.tasks.delete(p);
    p.then(done, done);
    return p;
  }

  /** A wait that close() cuts short. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.store.closed) return resolve();
      const t = setTimeout(() => {
        this.timers.delete(t);
        this.wakeups.delete(resolve);
        resolve();
      }, ms);
      this.timers.add(t);
      this.wakeups.add(resolve);
    });
  }

  /** Resolves when an action is no longer running (success or error). */
  async settled(actionId: number): Promise<ActionRecord | undefined> {
    for (let i = 0; i < 1_000_000; i++) {
      const a = this.store.actions.get(actionId);
      if (!a || a.status !== "running" || this.store.closed) return a;
      const effect = this.inFlight.get(actionId);
      if (effect) await effect;
      else await this.sleep(Math.max(5, Math.min(200, a.endsAtMs - Date.now())));
    }
    return this.store.actions.get(actionId);
  }

  private async complete(a: ActionRecord): Promise<void> {
    if (a.status !== "running") return;
    // An action may have been stretched after its timer was set (create_image): wait for the new end.
    for (let i = 0; i < 100 && !this.store.closed && Date.now() < a.endsAtMs; i++)
      await this.sleep(Math.min(10_000, a.endsAtMs - Date.now()));
    if (this.store.closed) return;
    try {
      await this.effects.get(a.command)?.(a);
      if (this.store.closed) return;
      a.status = "success";
    } catch (err) {
      if (this.store.closed) return;
      a.status = "error";
      a.error = {
        code: err instanceof ApiError ? err.code : "action_failed",
        message: err instanceof Error ? err.message : String(err),
      };
    }
    a.finished = isoNow();
    this.running.delete(a.id);
    this.store.save();
  }

  /** A resource is locked while an action on it runs. */
  isLocked(type: string, id: number): boolean {
    for (const actionId of this.running) {
      const a = this.store.actions.get(actionId);
      if (a?.status === "running" && a.resources.some((r) => r.type === type && r.id === id)) return true;
    }
    return false;
  }

  runningActions(): ActionRecord[] {
    return [...this.running].map((id) => this.store.actions.get(id)).filter((a) => a !== undefined);
  }

  actionsOf(type: string, id: number): ActionRecord[] {
    return [...this.store.actions.values()].filter((a) =>
      a.resources.some((r) => r.type === type && r.id === id),
    );
  }

  /** Progress of a running action, 0-99, from the modelled time elapsed. */
  progressOf(a: ActionRecord, now = Date.now()): number {
    if (a.status !== "running") return 100;
    const total = a.endsAtMs - a.startedMs;
    if (total <= 0) return 99;
    return Math.max(0, Math.min(99, Math.floor(((now - a.startedMs) / total) * 100)));
  }

  /** Stops every timer and wakes every wait (store.closed must be set first). */
  stopTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const wake of this.wakeups) wake();
    this.wakeups.clear();
  }

  /** Waits for effects and tracked work still in flight (they see `closed` and stop early). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.inFlight.values(), ...this.tasks]);
  }
}
