/**
 * Step events of long operations (upload, write-to-disk, deploy). The library stays silent: it reports through an
 * `onEvent` callback, and src/ui renders (terminal bars, plain lines, JSON lines).
 */

export type StepStatus = "start" | "done" | "failed" | "skipped";

export interface StepEvent<S extends string = string> {
  kind: "step";
  /** What the run works on (an image path or URL, a server name); several run at once in one display. */
  subject: string;
  step: S;
  status: StepStatus;
  /** Set on done/failed/skipped. */
  durationMs?: number;
  /** A short human detail, e.g. "cx23 in fsn1" or the error message. */
  detail?: string;
}

export interface DataEvent {
  kind: "data";
  subject: string;
  /** Which transfer, e.g. "hash" (reading the source locally), "write" (streaming to the server), "fetch". */
  phase: string;
  /** Bytes read from the source so far (for a URL: bytes the remote side has downloaded). */
  bytesRead: number;
  /** Bytes sent over the wire so far (after compression). */
  bytesSent: number;
  /** Bytes the phase will read in total, when known. */
  total?: number;
}

export interface NoteEvent {
  kind: "note";
  subject: string;
  message: string;
}

export type RunEvent<S extends string = string> = StepEvent<S> | DataEvent | NoteEvent;

export type EventSink<S extends string = string> = (event: RunEvent<S>) => void;

export interface StepTiming<S extends string = string> {
  step: S;
  status: Exclude<StepStatus, "start">;
  durationMs: number;
  /** Milliseconds from the start of the run to the start of the step (shows overlap of parallel steps). */
  startMs: number;
  detail?: string;
}

/** Runs named steps for one subject, emitting start/done/failed events and recording their timings. */
export class StepRunner<S extends string = string> {
  readonly timings: StepTiming<S>[] = [];
  private readonly t0 = Date.now();

  constructor(
    readonly subject: string,
    private readonly sink: EventSink<S> | undefined,
  ) {}

  emit(event: RunEvent<S>): void {
    try {
      this.sink?.(event);
    } catch {
      // A failing renderer (a closed pipe, a throwing callback) must never break the operation or its cleanup.
    }
  }

  note(message: string): void {
    this.emit({ kind: "note", subject: this.subject, message });
  }

  data(phase: string, bytesRead: number, bytesSent: number, total?: number): void {
    this.emit({
      kind: "data",
      subject: this.subject,
      phase,
      bytesRead,
      bytesSent,
      ...(total !== undefined ? { total } : {}),
    });
  }

  skip(step: S, detail?: string): void {
    this.timings.push({
      step,
      status: "skipped",
      durationMs: 0,
      startMs: Date.now() - this.t0,
      ...(detail ? { detail } : {}),
    });
    this.emit({
      kind: "step",
      subject: this.subject,
      step,
      status: "skipped",
      durationMs: 0,
      ...(detail ? { detail } : {}),
    });
  }

  /** Run `fn` as step `step`; `detail` may be a function of the result. */
  async run<T>(step: S, fn: () => Promise<T>, detail?: string | ((r: T) => string | undefined)): Promise<T> {
    const start = Date.now();
    this.emit({ kind: "step", subject: this.subject, step, status: "start" });
    try {
      const result = await fn();
      const d = typeof detail === "function" ? detail(result) : detail;
      const durationMs = Date.now() - start;
      this.timings.push({
        step,
        status: "done",
        durationMs,
        startMs: start - this.t0,
        ...(d ? { detail: d } : {}),
      });
      this.emit({
        kind: "step",
        subject: this.subject,
        step,
        status: "done",
        durationMs,
        ...(d ? { detail: d } : {}),
      });
      return result;
    } catch (err) {
      const durationMs = Date.now() - start;
      const message = err instanceof Error ? err.message : String(err);
      const firstLine = message.split("\n")[0] ?? message;
      this.timings.push({ step, status: "failed", durationMs, startMs: start - this.t0, detail: firstLine });
      this.emit({
        kind: "step",
        subject: this.subject,
        step,
        status: "failed",
        durationMs,
        detail: firstLine,
      });
      throw err;
    }
  }
}
