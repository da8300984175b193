/**
 * Time helpers every layer shares: one abortable sleep and one duration grammar (flags like `--older-than 1h30m`,
 * `--timeout 30s`, `--confirm-timeout 2m`). Nothing of ours is imported here.
 */

/** Sleeps `ms`, rejecting with the signal's reason when it aborts. Injectable for tests. */
export type SleepFn = (ms: number, signal?: AbortSignal) => Promise<void>;

export const sleep: SleepFn = (ms, signal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(
      () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      },
      Math.max(0, ms),
    );
    signal?.addEventListener("abort", onAbort, { once: true });
  });

/** Like `sleep`, but an abort ends the wait early instead of rejecting (for loops that check the signal). */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return sleep(ms, signal).catch(() => undefined);
}

/** Resolves with `p`, or with undefined after `ms` (the timer never keeps the process alive past it). */
export async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<undefined>((r) => {
        timer = setTimeout(() => r(undefined), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A duration that does not follow the grammar; the message says what is accepted. */
export class DurationSyntaxError extends Error {
  override readonly name = "DurationSyntaxError";
}

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/**
 * Parses `500ms`, `90s`, `30m`, `1h30m`, `2d`, `1w`, or a bare number of seconds (`45`, `0.5`) into milliseconds.
 * Zero is refused unless `allowZero` (e.g. `--older-than 0` means "any age").
 */
export function parseDuration(text: string, opts: { allowZero?: boolean } = {}): number {
  const t = text.trim();
  let total = 0;
  if (/^\d+(?:\.\d+)?$/.test(t)) total = Number(t) * 1000;
  else {
    const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/y;
    let matched = 0;
    let m: RegExpExecArray | null;
    while ((m = re.exec(t)) !== null) {
      total += Number(m[1]) * (UNIT_MS[m[2] as string] as number);
      matched = re.lastIndex;
    }
    if (t === "" || matched !== t.length)
      throw new DurationSyntaxError(
        `invalid duration "${text}": use a number and a unit, e.g. 500ms, 30s, 2m, 1h30m, 2d (a bare number is seconds)`,
      );
  }
  if (!Number.isFinite(total)) throw new DurationSyntaxError(`invalid duration "${text}": too large`);
  if (total <= 0 && !opts.allowZero)
    throw new DurationSyntaxError(`invalid duration "${text}": must be greater than zero`);
  return Math.round(total);
}

/** 1500 -> "1.5s", 120000 -> "2m", 250 -> "250ms", 5400000 -> "1h30m". */
export function formatDuration(ms: number): string {
  if (ms >= 3_600_000 && ms % 60_000 === 0) {
    const h = Math.floor(ms / 3_600_000);
    const m = (ms % 3_600_000) / 60_000;
    return m === 0 ? `${h}h` : `${h}h${m}m`;
  }
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms >= 1000) return `${Number((ms / 1000).toFixed(1))}s`;
  return `${Math.round(ms)}ms`;
}
