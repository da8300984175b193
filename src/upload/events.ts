/**
 * Progress events of the upload and write-to-disk sequences. The library stays silent; it reports through the
 * `onEvent` callback, and src/ui renders (TTY bars, plain lines, JSON).
 */

export type StepName =
  | "inspect"
  | "convert"
  | "hash"
  | "catalogue"
  | "lookup"
  | "plan"
  | "ssh-key"
  | "server"
  | "rescue"
  | "poweron"
  | "connect"
  | "discard"
  | "write"
  | "verify"
  | "shutdown"
  | "snapshot"
  | "cleanup";

export type StepStatus = "start" | "done" | "failed" | "skipped";

export interface StepEvent {
  kind: "step";
  /** Which image (for parallel uploads): the path or URL as given. */
  image: string;
  step: StepName;
  status: StepStatus;
  /** Set on done/failed/skipped. */
  durationMs?: number;
  /** A short human detail, e.g. "cx23 in fsn1" or the error message. */
  detail?: string;
}

export interface DataEvent {
  kind: "data";
  image: string;
  /** hash: reading the source locally before anything is created; write: streaming to the server. */
  phase: "hash" | "write";
  /** Bytes read from the local source so far; for a URL, bytes the rescue system has downloaded so far. */
  bytesRead: number;
  /** Bytes sent over SSH so far (after compression). */
  bytesSent: number;
  /** Bytes the phase will read in total, when known. */
  total?: number;
}

export interface NoteEvent {
  kind: "note";
  image: string;
  message: string;
}

export type UploadEvent = StepEvent | DataEvent | NoteEvent;

export type EventSink = (event: UploadEvent) => void;

export interface StepTiming {
  step: StepName;
  status: Exclude<StepStatus, "start">;
  durationMs: number;
  /** Milliseconds from the start of the run to the start of the step (shows overlap of parallel steps). */
  startMs: number;
  detail?: string;
}

/** Runs named steps, emitting start/done/failed events and recording their timings. */
export class StepRunner {
  readonly timings: StepTiming[] = [];
  private readonly t0 = Date.now();

  constructor(
    private readonly image: string,
    private readonly sink: EventSink | undefined,
  ) {}

  emit(event: UploadEvent): void {
    try {
      this.sink?.(event);
    } catch {
      // A failing renderer must never break the upload.
    }
  }

  note(message: string): void {
    this.emit({ kind: "note", image: this.image, message });
  }

  data(phase: DataEvent["phase"], bytesRead: number, bytesSent: number, total?: number): void {
    this.emit({
      kind: "data",
      image: this.image,
      phase,
      bytesRead,
      bytesSent,
      ...(total !== undefined ? { total } : {}),
    });
  }

  skip(step: StepName, detail?: string): void {
    this.timings.push({
      step,
      status: "skipped",
      durationMs: 0,
      startMs: Date.now() - this.t0,
      ...(detail ? { detail } : {}),
    });
    this.emit({
      kind: "step",
      image: this.image,
      step,
      status: "skipped",
      durationMs: 0,
      ...(detail ? { detail } : {}),
    });
  }

  /** Run `fn` as step `step`; `detail` may be a function of the result. */
  async run<T>(
    step: StepName,
    fn: () => Promise<T>,
    detail?: string | ((r: T) => string | undefined),
  ): Promise<T> {
    const start = Date.now();
    this.emit({ kind: "step", image: this.image, step, status: "start" });
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
        image: this.image,
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
      this.emit({ kind: "step", image: this.image, step, status: "failed", durationMs, detail: firstLine });
      throw err;
    }
  }
}
