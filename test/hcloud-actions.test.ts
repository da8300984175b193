/** The action waiter against a real HTTP server whose actions advance on every poll. */

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import {
  HCloudActionError,
  HCloudClient,
  HCloudError,
  HCloudWaitTimeoutError,
  waitForActions,
  type Action,
} from "../src/hcloud/index.js";
import { errorReply, startScripted, type ScriptedServer } from "./support/hcloud-scripted-server.js";

const servers: ScriptedServer[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

interface Plan {
  /** Polls until the action finishes. */
  polls: number;
  fail?: { code: string; message: string };
  /** Never finishes. */
  forever?: boolean;
}

function action(
  id: number,
  status: Action["status"],
  progress: number,
  error: Action["error"] = null,
): Action {
  return {
    id,
    command: `command_${id}`,
    status,
    progress,
    started: "2026-11-25T08:00:00Z",
    finished: status === "running" ? null : "2026-11-25T08:01:00Z",
    resources: [{ id: 100 + id, type: "server" }],
    error,
  };
}

/** A server whose actions advance one step per time they are polled. */
async function actionServer(plans: Map<number, Plan>): Promise<ScriptedServer> {
  const seen = new Map<number, number>();
  const render = (id: number): Action | undefined => {
    const plan = plans.get(id);
    if (!plan) return undefined;
    const n = (seen.get(id) ?? 0) + 1;
    seen.set(id, n);
    if (plan.forever || n < plan.polls)
      return action(id, "running", Math.min(99, Math.round((100 * n) / plan.polls)));
    return plan.fail ? action(id, "error", 100, plan.fail) : action(id, "success", 100);
  };
  const s = await startScripted((req) => {
    if (req.path === "/actions") {
      const ids = req.query.getAll("id").map(Number);
      const actions = ids.map(render).filter((a): a is Action => a !== undefined);
      return { status: 200, body: { actions, meta: { pagination: { page: 1, next_page: null } } } };
    }
    const m = /^\/actions\/(\d+)$/.exec(req.path);
    const a = m ? render(Number(m[1])) : undefined;
    return a ? { status: 200, body: { action: a } } : errorReply(404, "not_found", "action not found");
  });
  servers.push(s);
  return s;
}

function client(s: ScriptedServer): HCloudClient {
  return new HCloudClient({
    token: "t",
    endpoint: s.endpoint,
    retry: { baseDelayMs: 1 },
    waitDefaults: { pollDelay: () => 1 },
  });
}

describe("waitForActions", () => {
  it("polls all running actions with one request per poll, dropping finished ones", async () => {
    const s = await actionServer(
      new Map([
        [1, { polls: 1 }],
        [2, { polls: 3 }],
        [3, { polls: 2 }],
      ]),
    );
    const delays: number[] = [];
    const updates: [number, string, number][] = [];
    const done = await waitForActions(client(s), [1, 2, 3], {
      pollDelay: (poll) => poll * 10,
      sleep: async (ms) => void delays.push(ms),
      onProgress: (a) => updates.push([a.id, a.status, a.progress]),
    });
    assert.deepEqual(
      done.map((a) => [a.id, a.status]),
      [
        [1, "success"],
        [2, "success"],
        [3, "success"],
      ],
    );
    assert.deepEqual(
      s.requests.map((r) => r.query.getAll("id").join(",")),
      ["1,2,3", "2,3", "2"],
    );
    assert.ok(s.requests.every((r) => r.path === "/actions"));
    assert.deepEqual(delays, [20, 30], "ids are polled at once, then with the injected backoff");
    assert.deepEqual(updates, [
      [1, "success", 100],
      [2, "running", 33],
      [3, "running", 50],
      [2, "running", 67],
      [3, "success", 100],
      [2, "success", 100],
    ]);
  });

  it("waits before the first poll when given action objects, and skips finished ones", async () => {
    const s = await actionServer(new Map([[5, { polls: 1 }]]));
    const delays: number[] = [];
    const done = await client(s).waitForActions([action(4, "success", 100), action(5, "running", 0)], {
      sleep: async (ms) => void delays.push(ms),
    });
    assert.deepEqual(
      done.map((a) => [a.id, a.status]),
      [
        [4, "success"],
        [5, "success"],
      ],
    );
    assert.equal(delays.length, 1);
    assert.deepEqual(
      s.requests.map((r) => r.query.getAll("id")),
      [["5"]],
    );
  });

  it("throws HCloudActionError with the action's error code, message, id and command", async () => {
    const s = await actionServer(
      new Map([
        [7, { polls: 5 }],
        [8, { polls: 2, fail: { code: "image_too_large", message: "the image does not fit the disk" } }],
      ]),
    );
    const err = await client(s)
      .waitForActions([7, 8])
      .then(
        () => assert.fail("expected an error"),
        (e: unknown) => e,
      );
    assert.ok(err instanceof HCloudActionError);
    assert.equal(err.actionId, 8);
    assert.equal(err.command, "command_8");
    assert.equal(err.code, "image_too_large");
    assert.equal(err.actionMessage, "the image does not fit the disk");
    assert.deepEqual(err.resources, [{ id: 108, type: "server" }]);
    assert.match(err.message, /Action 8 \(command_8\) failed: the image does not fit the disk/);
  });

  it("an action already failed when passed in throws at once", async () => {
    const s = await actionServer(new Map());
    await assert.rejects(
      client(s).waitForActions([action(3, "error", 100, { code: "action_failed", message: "boom" })]),
      (e: unknown) => e instanceof HCloudActionError && e.code === "action_failed",
    );
    assert.equal(s.requests.length, 0);
  });

  it("chunks many ids: at most 50 per request", async () => {
    const plans = new Map<number, Plan>();
    for (let id = 1; id <= 120; id++) plans.set(id, { polls: 2 });
    const s = await actionServer(plans);
    const done = await client(s).waitForActions([...plans.keys()]);
    assert.equal(done.length, 120);
    assert.ok(done.every((a) => a.status === "success"));
    assert.deepEqual(
      s.requests.map((r) => r.query.getAll("id").length),
      [50, 50, 20, 50, 50, 20],
    );
  });

  it("asks for an id the list did not return alone, surfacing not_found", async () => {
    const s = await actionServer(new Map([[1, { polls: 1 }]]));
    await assert.rejects(
      client(s).waitForActions([1, 999]),
      (e: unknown) => e instanceof HCloudError && e.code === "not_found",
    );
    assert.deepEqual(
      s.requests.map((r) => r.path),
      ["/actions", "/actions/999"],
    );
  });

  it("gives up after timeoutMs with the ids still running", async () => {
    const s = await actionServer(
      new Map([
        [1, { polls: 1 }],
        [2, { polls: 1, forever: true }],
      ]),
    );
    const err = await client(s)
      .waitForActions([1, 2], { timeoutMs: 300, pollDelay: () => 20 })
      .then(
        () => assert.fail("expected a timeout"),
        (e: unknown) => e,
      );
    assert.ok(err instanceof HCloudWaitTimeoutError);
    assert.deepEqual(err.pendingActionIds, [2], "action 1 was seen finished, action 2 never");
    assert.ok(s.requests.length >= 1);
  });

  it("stops when the signal aborts", async () => {
    const s = await actionServer(new Map([[1, { polls: 1, forever: true }]]));
    const ac = new AbortController();
    const reason = new Error("stop");
    const p = client(s).waitForActions([1], { signal: ac.signal, pollDelay: () => 10_000 });
    for (let i = 0; i < 200 && s.requests.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    ac.abort(reason);
    await assert.rejects(p, (e: unknown) => e === reason);
    assert.equal(s.requests.length, 1);
  });

  it("actions.getById and getMany read single and repeated ids", async () => {
    const s = await actionServer(
      new Map([
        [1, { polls: 1 }],
        [2, { polls: 9 }],
      ]),
    );
    const c = client(s);
    assert.equal((await c.actions.getById(1)).status, "success");
    const many = await c.actions.getMany([2, 1, 2, 404]);
    assert.deepEqual(
      many.map((a) => a.id),
      [2, 1],
    );
    assert.deepEqual(s.requests[1]?.query.getAll("id"), ["2", "1", "404"]);
  });
});
