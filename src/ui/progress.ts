/**
 * Renders the step events of a long operation: on a terminal, each finished step with its duration plus a live line
 * per subject (an image, a server)
 * (a bar with bytes, rate and ETA during the data phase); plain lines otherwise; nothing in JSON mode (the command
 * prints one JSON object at the end).
 */
import type { DataEvent, RunEvent, StepEvent } from "../run/events.js";
import { bar, formatBytes, formatDuration, formatRate } from "./format.js";

export type ProgressMode = "tty" | "plain" | "json";

export interface ProgressRenderer {
  onEvent(event: RunEvent): void;
  /** Clear the live region (call before printing the final result). */
  finish(): void;
}

export interface RendererOptions {
  mode: ProgressMode;
  out: NodeJS.WritableStream & { columns?: number };
  /** Show the subject (image, server) on every line (several at once). */
  multi?: boolean;
  /** Titles of the operation's steps (default: upload's). */
  titles?: Record<string, string>;
  now?: () => number;
}

/** tty when `out` is a terminal, else plain; json when asked. */
export function chooseMode(
  output: "text" | "json",
  out: NodeJS.WritableStream & { isTTY?: boolean },
): ProgressMode {
  if (output === "json") return "json";
  return out.isTTY ? "tty" : "plain";
}

interface Live {
  step?: string;
  stepStart: number;
  data?: DataEvent;
  dataStart?: number;
  rateSamples: { t: number; bytes: number }[];
}

/** Titles of upload and write-to-disk steps. */
export const STEP_TITLES: Record<string, string> = {
  inspect: "inspect image",
  convert: "convert qcow2",
  hash: "hash image",
  catalogue: "read catalogue",
  lookup: "look for existing snapshot",
  plan: "choose server",
  "ssh-key": "create temporary SSH key",
  server: "create temporary server",
  rescue: "enable rescue",
  poweron: "power on",
  connect: "connect over SSH",
  discard: "discard disk",
  write: "write image",
  base: "choose base snapshot",
  "base-hash": "hash base blocks on the server",
  delta: "plan blocks",
  copy: "copy blocks on the server",
  send: "send new blocks",
  verify: "verify disk",
  shutdown: "shut down",
  snapshot: "create snapshot",
  cleanup: "clean up",
};

/** The live text for one data event (also used by plain mode). */
export function dataLine(e: DataEvent, rate: number | undefined): string {
  const parts: string[] = [];
  const verb = e.phase === "hash" ? "hashed" : "read";
  if (e.total !== undefined && e.total > 0) {
    const f = e.bytesRead / e.total;
    parts.push(`[${bar(f)}] ${Math.floor(f * 100)}%`);
    parts.push(`${formatBytes(e.bytesRead)} / ${formatBytes(e.total)} ${verb}`);
  } else {
    parts.push(`${formatBytes(e.bytesRead)} ${verb}`);
  }
  if (e.phase === "write" || e.phase === "send") parts.push(`${formatBytes(e.bytesSent)} sent`);
  if (rate !== undefined && rate > 0) {
    parts.push(formatRate(rate));
    if (e.total !== undefined && e.total > e.bytesRead)
      parts.push(`ETA ${formatDuration(((e.total - e.bytesRead) / rate) * 1000)}`);
  }
  return parts.join(", ");
}

/**
 * Writes to `stream` that can never break the operation: once the reader is gone (EPIPE on `2>&1 | tee log` after
 * Ctrl-C, a closed terminal) or a write throws, further output is dropped. Progress is a courtesy; the run and its
 * cleanup must go on without it.
 */
export function guardedWriter(stream: NodeJS.WritableStream): {
  write(text: string): void;
  broken(): boolean;
} {
  let broken = false;
  stream.on("error", () => {
    broken = true;
  });
  return {
    write(text: string) {
      if (broken) return;
      const s = stream as NodeJS.WritableStream & { destroyed?: boolean; writable?: boolean };
      if (s.destroyed === true || s.writable === false) {
        broken = true;
        return;
      }
      try {
        stream.write(text);
      } catch {
        broken = true;
      }
    },
    broken: () => broken,
  };
}

export function createProgressRenderer(opts: RendererOptions): ProgressRenderer {
  const now = opts.now ?? (() => Date.now());
  const titles = opts.titles ?? STEP_TITLES;
  const title = (step: string): string => titles[step] ?? step;
  if (opts.mode === "json") return { onEvent: () => undefined, finish: () => undefined };
  const out = guardedWriter(opts.out);
  const prefix = (image: string) => (opts.multi ? `[${image}] ` : "");

  if (opts.mode === "plain") {
    const lastDecile = new Map<string, number>();
    return {
      onEvent(e) {
        if (e.kind === "step") {
          if (e.status === "start") return;
          const mark = e.status === "done" ? "ok" : e.status === "failed" ? "FAILED" : "skipped";
          out.write(
            `${prefix(e.subject)}${title(e.step)}: ${mark}${e.status !== "skipped" ? ` (${formatDuration(e.durationMs ?? 0)})` : ""}${e.detail ? ` - ${e.detail}` : ""}\n`,
          );
        } else if (e.kind === "note") {
          out.write(`${prefix(e.subject)}note: ${e.message}\n`);
        } else if (e.total !== undefined && e.total > 0) {
          const key = `${e.subject}:${e.phase}`;
          const decile = Math.floor((e.bytesRead / e.total) * 10);
          if (decile > (lastDecile.get(key) ?? -1) && decile < 10) {
            lastDecile.set(key, decile);
            out.write(`${prefix(e.subject)}${e.phase}: ${dataLine(e, undefined)}\n`);
          }
        }
      },
      finish: () => undefined,
    };
  }

  // tty: permanent lines above a live region with one line per image.
  const live = new Map<string, Live>();
  let drawnLines = 0;
  let timer: NodeJS.Timeout | undefined;
  const width = () => Math.max(40, (opts.out.columns || 100) - 1);

  const clear = () => {
    if (drawnLines > 0) out.write(`\x1b[${drawnLines}A\x1b[0J`);
    drawnLines = 0;
  };
  const render = () => {
    clear();
    const lines: string[] = [];
    for (const [image, l] of live) {
      if (!l.step) continue;
      const elapsed = formatDuration(now() - l.stepStart);
      let text = `${prefix(image)}... ${title(l.step)} ${elapsed}`;
      if (l.data && ["write", "hash", "send", "base-hash"].includes(l.step)) {
        text = `${prefix(image)}${title(l.step)}: ${dataLine(l.data, rateOf(l))}`;
      }
      lines.push(text.length > width() ? text.slice(0, width() - 1) + "~" : text);
    }
    if (lines.length > 0) out.write(lines.join("\n") + "\n");
    drawnLines = lines.length;
  };
  const rateOf = (l: Live): number | undefined => {
    const s = l.rateSamples;
    if (s.length < 2) return undefined;
    const first = s[0] as { t: number; bytes: number };
    const last = s[s.length - 1] as { t: number; bytes: number };
    const dt = (last.t - first.t) / 1000;
    return dt > 0 ? (last.bytes - first.bytes) / dt : undefined;
  };
  const permanent = (text: string) => {
    clear();
    out.write(text + "\n");
    render();
  };
  const ensureTimer = () => {
    if (!timer) {
      timer = setInterval(render, 250);
      timer.unref();
    }
  };
  const get = (image: string): Live => {
    let l = live.get(image);
    if (!l) {
      l = { stepStart: now(), rateSamples: [] };
      live.set(image, l);
    }
    return l;
  };

  return {
    onEvent(e: RunEvent) {
      ensureTimer();
      const l = get(e.subject);
      if (e.kind === "step") {
        stepEvent(e, l);
      } else if (e.kind === "note") {
        permanent(`${prefix(e.subject)}  note: ${e.message}`);
      } else {
        l.data = e;
        l.rateSamples.push({ t: now(), bytes: e.bytesRead });
        // A sliding window of about 5 seconds.
        while (l.rateSamples.length > 2 && now() - (l.rateSamples[0] as { t: number }).t > 5000)
          l.rateSamples.shift();
      }
    },
    finish() {
      if (timer) clearInterval(timer);
      timer = undefined;
      clear();
    },
  };

  function stepEvent(e: StepEvent, l: Live): void {
    if (e.status === "start") {
      l.step = e.step;
      l.stepStart = now();
      l.data = undefined;
      l.rateSamples = [];
      render();
      return;
    }
    const mark = e.status === "done" ? "\u2713" : e.status === "failed" ? "\u2717" : "-";
    const dur = e.status === "skipped" ? "" : ` ${formatDuration(e.durationMs ?? 0)}`;
    let extra = e.detail ? `  ${e.detail}` : "";
    if (e.step === "write" && l.data)
      extra += ` (${formatBytes(l.data.bytesRead)} read, ${formatBytes(l.data.bytesSent)} sent)`;
    if (l.step === e.step) {
      l.step = undefined;
      l.data = undefined;
    }
    permanent(`${prefix(e.subject)}${mark} ${title(e.step)}${dur}${extra}`);
  }
}
