/**
 * What the publishing operations share: their steps and events (the library stays silent and reports through
 * `onEvent`), the abort handling (an aborted operation fails with code `aborted`, naming the operation), and the
 * inputs every one of them checks the same way.
 */
import { abortError } from "../run/errors.js";
import type { RunOutcome } from "../run/context.js";
import { StepRunner, type EventSink } from "../run/events.js";
import { newRunId } from "../run/labels.js";
import { ReleaseError } from "./errors.js";
import { readSigningKeyFile, type SigningKeyFile } from "./keyfile.js";
import { parsePublicKey, type PublicKey } from "./keys.js";
import { checkChannelName } from "./record.js";
import { openReleaseStore, parseLocation } from "./releases/index.js";
import type { ReleaseStore } from "./releases/store.js";

export type ReleaseStep = "check" | "build" | "inspect" | "cache" | "record";

export interface ReleaseRunOptions {
  signal?: AbortSignal;
  onEvent?: EventSink<ReleaseStep>;
  /** A name for events (default: the channel). */
  name?: string;
}

/** The run's part of a result. */
export type ReleaseOutcome = Omit<RunOutcome<ReleaseStep>, "leftovers"> & {
  /** Warnings the run reported as notes (e.g. a signing key file others can read). */
  warnings: string[];
};

const WARNING = "warning: ";

export function checkChannel(name: string, flag = "--channel"): string {
  const problem = checkChannelName(name);
  if (problem) throw new ReleaseError("invalid_argument", `${flag}: ${problem}`);
  return name;
}

/** Public keys given as text (`name:base64`). */
export function parseTrustedKeys(keys: readonly string[] | undefined): PublicKey[] {
  return (keys ?? []).map((k) => {
    try {
      return parsePublicKey(k, `trusted key ${k.slice(0, 40)}`);
    } catch (err) {
      throw new ReleaseError("invalid_argument", (err as Error).message);
    }
  });
}

/** Runs an operation's body with a step runner; an abort becomes the operation's abort error. */
export async function runOperation<T extends object>(
  operation: string,
  opts: ReleaseRunOptions,
  subject: string,
  body: (steps: StepRunner<ReleaseStep>, signal: AbortSignal | undefined) => Promise<T>,
): Promise<T & ReleaseOutcome> {
  const started = Date.now();
  const warnings: string[] = [];
  const steps = new StepRunner<ReleaseStep>(opts.name ?? subject, (event) => {
    if (event.kind === "note" && event.message.startsWith(WARNING))
      warnings.push(event.message.slice(WARNING.length));
    opts.onEvent?.(event);
  });
  const signal = opts.signal;
  try {
    signal?.throwIfAborted();
    const result = await body(steps, signal);
    return {
      ...result,
      runId: newRunId(),
      steps: steps.timings,
      durationMs: Date.now() - started,
      warnings,
    };
  } catch (err) {
    if (signal?.aborted) throw abortError(signal, operation);
    throw err;
  }
}

/** Reads the signing key, reporting a key file others can read as a note. */
export async function loadKey(path: string, steps: StepRunner<ReleaseStep>): Promise<SigningKeyFile> {
  const key = await readSigningKeyFile(path);
  if (key.warning) steps.note(`${WARNING}${key.warning}`);
  return key;
}

/** Opens the store at LOCATION, runs `fn`, closes it. */
export async function withStore<T>(location: string, fn: (store: ReleaseStore) => Promise<T>): Promise<T> {
  const store = await openReleaseStore(parseLocation(location, "--releases"));
  try {
    return await fn(store);
  } finally {
    store.close();
  }
}
