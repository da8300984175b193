/**
 * The run machinery every operation shares (src/run, src/util/time.ts): step events, the abort error that names the
 * operation, cleanup order and its own signal, the one duration grammar and the one sleep.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { HCloudClient } from "../src/hcloud/index.js";
import {
  CleanupIncompleteError,
  RunContext,
  StepRunner,
  isRunError,
  runWithCleanup,
  type RunEvent,
  type RunOptions,
  type RunOutcome,
} from "../src/run/index.js";
import { DurationSyntaxError, formatDuration, parseDuration, sleep } from "../src/util/time.js";

/** A client that is never called (these runs create nothing remote). */
const client = new HCloudClient({ token: "t", endpoint: "http://127.0.0.1:9/v1" });

describe("run: steps and events", () => {
  it("emits start and done with the subject, and records timings", async () => {
    const events: RunEvent[] = [];
    const steps = new StepRunner("web-1", (e) => events.push(e));
    const r = await steps.run(
      "activate",
      async () => 42,
      (n) => `got ${n}`,
    );
    assert.equal(r, 42);
    assert.deepEqual(
      events.map((e) =>
        e.kind === "step" ? `${e.subject}:${e.step}:${e.status}:${e.detail ?? ""}` : e.kind,
      ),
      ["web-1:activate:start:", "web-1:activate:done:got 42"],
    );
    assert.equal(steps.timings[0]?.status, "done");
  });

  it("a throwing event sink never breaks the step (a closed pipe, a broken renderer)", async () => {
    const steps = new StepRunner("a", () => {
      throw new Error("EPIPE");
    });
    assert.equal(await steps.run("x", async () => "ok"), "ok");
    await assert.rejects(
      steps.run("y", async () => {
        throw new Error("real failure");
      }),
      /real failure/,
    );
    assert.deepEqual(
      steps.timings.map((t) => `${t.step}:${t.status}`),
      ["x:done", "y:failed"],
    );
  });
});

describe("run: context and cleanup", () => {
  it("an aborted write-to-disk says so by name, and cleanup still runs newest first", async () => {
    const abort = new AbortController();
    const ctx = new RunContext<RunOptions>("write-to-disk", { client, signal: abort.signal }, "disk.img");
    const removed: string[] = [];
    for (const name of ["first", "second"]) {
      ctx.registry.add({
        kind: "file",
        name,
        removeHint: `rm ${name}`,
        remove: async () => {
          removed.push(name);
        },
      });
    }
    const err = await runWithCleanup(ctx, async (): Promise<RunOutcome> => {
      abort.abort(new Error("interrupted by SIGINT"));
      throw new Error("the step saw the abort");
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(isRunError(err, "aborted"), String(err));
    assert.equal((err as Error).message, "The write-to-disk was aborted: interrupted by SIGINT");
    assert.deepEqual(removed, ["second", "first"]);
  });

  it("a failed removal is reported as a leftover with its hint; a second signal stops cleanup", async () => {
    const cleanupAbort = new AbortController();
    const ctx = new RunContext<RunOptions>("deploy", { client, cleanupSignal: cleanupAbort.signal }, "x");
    ctx.registry.add({
      kind: "process",
      name: "stuck",
      removeHint: "kill 1234",
      remove: async () => {
        cleanupAbort.abort();
        throw new Error("still there");
      },
    });
    const err = await runWithCleanup(ctx, async (): Promise<RunOutcome> => {
      throw new Error("boom");
    }).catch((e: unknown) => e);
    assert.ok(err instanceof CleanupIncompleteError, String(err));
    assert.equal(err.leftovers[0]?.name, "stuck");
    assert.match(err.message, /boom[\s\S]*remove with: kill 1234/);
  });

  it("a successful run gets its duration, steps and no leftovers", async () => {
    const ctx = new RunContext<RunOptions>("upload", { client }, "a.img");
    const out = await runWithCleanup(ctx, async () => {
      await ctx.steps.run("inspect", async () => undefined);
      return ctx.outcome();
    });
    assert.deepEqual(out.leftovers, []);
    assert.equal(out.steps.length, 1);
    assert.ok(out.durationMs >= 0);
  });
});

describe("util: durations and sleep", () => {
  it("parses one grammar everywhere", () => {
    assert.equal(parseDuration("500ms"), 500);
    assert.equal(parseDuration("30s"), 30_000);
    assert.equal(parseDuration("1h30m"), 5_400_000);
    assert.equal(parseDuration("2d"), 172_800_000);
    assert.equal(parseDuration("45"), 45_000);
    assert.equal(parseDuration("0", { allowZero: true }), 0);
    assert.throws(() => parseDuration("0"), /greater than zero/);
    assert.throws(() => parseDuration("soon"), DurationSyntaxError);
    assert.throws(() => parseDuration("1h 30m"), /invalid duration/);
    assert.equal(formatDuration(5_400_000), "1h30m");
    assert.equal(formatDuration(120_000), "2m");
    assert.equal(formatDuration(1500), "1.5s");
  });

  it("sleep rejects with the signal's reason", async () => {
    const c = new AbortController();
    const p = sleep(10_000, c.signal);
    c.abort(new Error("stop"));
    await assert.rejects(p, /stop/);
  });
});
