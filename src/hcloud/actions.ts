/**
 * Actions: get one, get many, and the waiter. The waiter polls every still-running action with one request
 * (`GET /actions?id=..&id=..`, in chunks of 50 ids), backs off between polls, reports every change through a
 * callback, and stops at the first action that fails (HCloudActionError) or when time runs out.
 */

import { HCloudActionError, HCloudWaitTimeoutError } from "./errors.js";
import { callFor, type RequestOptions } from "./resource.js";
import type { Action } from "./schema.js";
import { sleep as realSleep, type Handler, type SleepFn } from "./transport/types.js";

/** Ids per `GET /actions` request (the API's page size limit). */
export const ACTIONS_CHUNK = 50;

export class ActionsClient {
  constructor(private readonly api: Handler) {}

  /** One action; throws HCloudError not_found when there is none. */
  async getById(id: number, opts: RequestOptions = {}): Promise<Action> {
    const { value } = await callFor<Action>(
      this.api,
      { method: "GET", path: `/actions/${id}`, signal: opts.signal },
      "action",
      "item",
    );
    return value;
  }

  /** Many actions by id, one request per 50 ids. Unknown ids are simply absent from the result. */
  async getMany(ids: readonly number[], opts: RequestOptions = {}): Promise<Action[]> {
    const out: Action[] = [];
    const unique = [...new Set(ids)];
    for (let i = 0; i < unique.length; i += ACTIONS_CHUNK) {
      // GET /actions takes only `id` (repeatable); the API answers every listed id in one page.
      const chunk = unique.slice(i, i + ACTIONS_CHUNK);
      const { value } = await callFor<Action[]>(
        this.api,
        { method: "GET", path: "/actions", query: { id: chunk }, signal: opts.signal },
        "actions",
        "list",
      );
      out.push(...value);
    }
    return out;
  }

  /** Waits for the actions; see waitForActions. */
  wait(actions: readonly (Action | number)[], opts: WaitForActionsOptions = {}): Promise<Action[]> {
    return waitForActions(this, actions, opts);
  }
}

export interface WaitForActionsOptions {
  signal?: AbortSignal;
  /** Give up after this long with HCloudWaitTimeoutError (default: no limit besides the signal). */
  timeoutMs?: number;
  /** Called with an action whenever its status or progress changed since the last report (and once at start). */
  onProgress?: (action: Action) => void;
  /** Delay before poll number `poll` (1-based); default 500 ms growing by 1.5x per poll up to 5 s. */
  pollDelay?: (poll: number) => number;
  /** Injectable for tests. */
  sleep?: SleepFn;
}

export function defaultPollDelay(poll: number): number {
  return Math.min(5000, Math.round(500 * 1.5 ** Math.max(0, poll - 1)));
}

/**
 * Waits until every action has finished. Returns the final actions in the order given. Throws HCloudActionError
 * for the first action found in status `error`, HCloudWaitTimeoutError after `timeoutMs`, or the signal's reason.
 */
export async function waitForActions(
  source: ActionsClient | { actions: ActionsClient },
  actions: readonly (Action | number)[],
  opts: WaitForActionsOptions = {},
): Promise<Action[]> {
  const client = source instanceof ActionsClient ? source : source.actions;
  const order = actions.map((a) => (typeof a === "number" ? a : a.id));
  const latest = new Map<number, Action>();
  const reported = new Map<number, string>();
  const report = (a: Action): void => {
    const key = `${a.status}:${a.progress}`;
    if (reported.get(a.id) === key) return;
    reported.set(a.id, key);
    opts.onProgress?.(a);
  };
  const accept = (a: Action): void => {
    latest.set(a.id, a);
    report(a);
    if (a.status === "error") throw new HCloudActionError(a);
  };
  for (const a of actions) if (typeof a !== "number") accept(a);
  const pending = (): number[] => order.filter((id) => latest.get(id)?.status !== "success");

  const controller = new AbortController();
  const outer = opts.signal;
  if (outer?.aborted) throw outer.reason;
  const onAbort = (): void => controller.abort(outer?.reason);
  outer?.addEventListener("abort", onAbort, { once: true });
  const timer =
    opts.timeoutMs !== undefined
      ? setTimeout(
          () => controller.abort(new HCloudWaitTimeoutError(opts.timeoutMs ?? 0, pending())),
          opts.timeoutMs,
        )
      : undefined;
  const signal = controller.signal;
  const sleep = opts.sleep ?? realSleep;
  const pollDelay = opts.pollDelay ?? defaultPollDelay;
  // Polls are bounded by the timeout/signal; this count only guards against a broken pollDelay/sleep.
  const maxPolls = 1_000_000;
  try {
    // Actions passed as objects and still running were just seen: wait before the first poll. Ids: poll at once.
    let waitFirst = actions.every((a) => typeof a !== "number");
    for (let poll = 1; poll <= maxPolls; poll++) {
      const ids = pending();
      if (ids.length === 0) return order.map((id) => latest.get(id) as Action);
      if (waitFirst) await sleep(pollDelay(poll), signal);
      waitFirst = true;
      const fetched = await client.getMany(ids, { signal });
      const seen = new Set(fetched.map((a) => a.id));
      for (const a of fetched) accept(a);
      // An id the list did not return: ask for it alone (answers 404 not_found when it does not exist).
      for (const id of ids) if (!seen.has(id)) accept(await client.getById(id, { signal }));
    }
    throw new HCloudWaitTimeoutError(opts.timeoutMs ?? 0, pending());
  } finally {
    clearTimeout(timer);
    outer?.removeEventListener("abort", onAbort);
  }
}
