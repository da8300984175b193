/**
 * Transport behaviours of the client against a real HTTP server on 127.0.0.1 with scripted Hetzner-shaped answers:
 * error parsing, rate-limit headers, retries per error class, bounds, POST recovery, timeouts, aborts, token secrecy.
 */

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { inspect } from "node:util";
import { decide } from "../src/hcloud/transport/retry.js";
import {
  HCloudClient,
  HCloudError,
  HCloudNetworkError,
  type HCloudClientOptions,
  type RequestEvent,
} from "../src/hcloud/index.js";
import {
  errorReply,
  startScripted,
  type Reply,
  type ScriptedServer,
  type SeenRequest,
} from "./support/hcloud-scripted-server.js";

const TOKEN = "tok3nSECRETabcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQR";
const servers: ScriptedServer[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

const location = { id: 1, name: "fsn1" };
const okLocation: Reply = { status: 200, body: { location } };

/** Fails the first `failures` requests with `fail`, then answers `ok`. */
async function failThen(failures: number, fail: Reply, ok: Reply = okLocation): Promise<ScriptedServer> {
  const s = await startScripted((_req, i) => (i < failures ? fail : ok));
  servers.push(s);
  return s;
}

function client(s: ScriptedServer, opts: Partial<HCloudClientOptions> = {}): HCloudClient {
  return new HCloudClient({
    token: TOKEN,
    endpoint: s.endpoint,
    timeoutMs: 2000,
    retry: { baseDelayMs: 1, maxDelayMs: 5, maxTries: 5, ...(opts.retry || {}) },
    ...opts,
    ...(opts.retry === false ? { retry: false } : {}),
  });
}

function assertNoToken(err: unknown): void {
  assert.ok(err instanceof Error);
  for (const text of [
    err.message,
    err.stack ?? "",
    JSON.stringify(err),
    inspect(err, { depth: 5 }),
    String(err),
  ])
    assert.ok(!text.includes(TOKEN), `token leaked into: ${text.slice(0, 200)}`);
}

describe("requests", () => {
  it("sends the bearer token, JSON body and repeated query parameters", async () => {
    const s = await startScripted(() => ({ status: 200, body: { actions: [] } }));
    servers.push(s);
    const c = client(s);
    await c.actions.getMany([1, 2, 3]);
    await c.sshKeys.create({ name: "k", publicKey: "ssh-ed25519 AAAA k" }).catch(() => undefined);
    const [get, post] = s.requests as [SeenRequest, SeenRequest];
    assert.equal(get.headers.authorization, `Bearer ${TOKEN}`);
    assert.deepEqual(get.query.getAll("id"), ["1", "2", "3"]);
    assert.equal(post.method, "POST");
    assert.equal(post.headers["content-type"], "application/json");
    assert.deepEqual(post.body, { name: "k", public_key: "ssh-ed25519 AAAA k" });
  });

  it("reports every attempt to onRequest without headers", async () => {
    const s = await failThen(2, errorReply(503, "unavailable"));
    const events: RequestEvent[] = [];
    const c = client(s, { onRequest: (e) => events.push(e) });
    await c.locations.getById(1);
    assert.deepEqual(
      events.map((e) => [e.method, e.path, e.attempt]),
      [
        ["GET", "/locations/1", 1],
        ["GET", "/locations/1", 2],
        ["GET", "/locations/1", 3],
      ],
    );
    assert.ok(!JSON.stringify(events).includes(TOKEN));
  });
});

describe("error parsing", () => {
  it("turns an error body into HCloudError with status, code, message, details, correlation id", async () => {
    const details = { fields: [{ name: "name", messages: ["is too long"] }] };
    const s = await failThen(99, errorReply(422, "invalid_input", "invalid input in field 'name'", details));
    const err = await client(s)
      .servers.getById(7)
      .then(
        () => assert.fail("expected an error"),
        (e: unknown) => e,
      );
    assert.ok(err instanceof HCloudError);
    assert.equal(err.status, 422);
    assert.equal(err.code, "invalid_input");
    assert.equal(err.serverMessage, "invalid input in field 'name'");
    assert.deepEqual(err.details, details);
    assert.equal(err.correlationId, "corr-invalid_input");
    assert.equal(err.method, "GET");
    assert.equal(err.path, "/servers/7");
    assert.equal(s.requests.length, 1, "invalid_input is not retried");
    assert.deepEqual(JSON.parse(JSON.stringify(err)).code, "invalid_input");
  });

  it("reports a non-JSON error answer with an http_<status> code", async () => {
    const s = await startScripted(() => ({ status: 418, body: "<html>teapot</html>" }));
    servers.push(s);
    await assert.rejects(client(s).locations.getById(1), (e: unknown) => {
      assert.ok(e instanceof HCloudError);
      assert.equal(e.code, "http_418");
      assert.match(e.message, /teapot/);
      return true;
    });
  });

  for (const [status, code] of [
    [401, "unauthorized"],
    [404, "not_found"],
    [409, "uniqueness_error"],
    [423, "protected"],
    [412, "resource_unavailable"],
    [403, "forbidden"],
  ] as const) {
    it(`does not retry ${status} ${code}`, async () => {
      const s = await failThen(99, errorReply(status, code));
      await assert.rejects(
        client(s).locations.getById(1),
        (e: unknown) => e instanceof HCloudError && e.code === code,
      );
      assert.equal(s.requests.length, 1);
    });
  }

  it("get() answers undefined for a 404 and the item otherwise", async () => {
    const s = await startScripted((req) =>
      req.path === "/locations/1" ? okLocation : errorReply(404, "not_found", "location not found"),
    );
    servers.push(s);
    const c = client(s);
    assert.deepEqual(await c.locations.get(1), location);
    assert.equal(await c.locations.get(2), undefined);
  });
});

describe("rate limit headers", () => {
  it("exposes the latest RateLimit-* values, also from error answers", async () => {
    let remaining = 10;
    const s = await startScripted((_req, i) => {
      const headers = {
        "RateLimit-Limit": "3600",
        "RateLimit-Remaining": String(--remaining),
        "RateLimit-Reset": "1900000000",
      };
      return i === 1 ? { ...errorReply(404, "not_found"), headers } : { ...okLocation, headers };
    });
    servers.push(s);
    const c = client(s);
    assert.equal(c.rateLimit.remaining, undefined);
    await c.locations.getById(1);
    assert.equal(c.rateLimit.limit, 3600);
    assert.equal(c.rateLimit.remaining, 9);
    assert.equal(c.rateLimit.reset?.getTime(), 1_900_000_000_000);
    await c.locations.getById(1).catch(() => undefined);
    assert.equal(c.rateLimit.remaining, 8);
    assert.equal(c.rateLimit.snapshot().remaining, 8);
  });
});

describe("retries of idempotent requests", () => {
  const cases: [string, Reply][] = [
    ["409 conflict", errorReply(409, "conflict")],
    ["423 locked", errorReply(423, "locked")],
    ["502 bad_gateway", errorReply(502, "bad_gateway")],
    ["503 unavailable", errorReply(503, "unavailable")],
    ["504 timeout", errorReply(504, "timeout")],
    ["502 without a body (proxy)", { status: 502 }],
    ["connection reset", { reset: true }],
    ["429 rate_limit_exceeded", errorReply(429, "rate_limit_exceeded")],
  ];
  for (const [name, reply] of cases) {
    it(`retries ${name} and succeeds`, async () => {
      const s = await failThen(2, reply);
      assert.deepEqual(await client(s).locations.getById(1), location);
      assert.equal(s.requests.length, 3);
    });
  }

  it("retries after a per-request timeout", async () => {
    const s = await failThen(1, { hang: true });
    assert.deepEqual(await client(s, { timeoutMs: 300 }).locations.getById(1), location);
    assert.equal(s.requests.length, 2);
  });

  it("surfaces a timeout as HCloudNetworkError kind timeout when tries run out", async () => {
    const s = await failThen(99, { hang: true });
    await assert.rejects(
      client(s, { timeoutMs: 100, retry: { maxTries: 2, baseDelayMs: 1 } }).locations.getById(1),
      (e: unknown) => e instanceof HCloudNetworkError && e.kind === "timeout",
    );
    assert.equal(s.requests.length, 2);
  });

  it("retries PUT and DELETE after a connection reset", async () => {
    const s = await startScripted((req, i) =>
      i % 2 === 0
        ? { reset: true }
        : req.method === "DELETE"
          ? { status: 204 }
          : { status: 200, body: { image: { id: 5 } } },
    );
    servers.push(s);
    const c = client(s);
    assert.deepEqual(await c.images.update(5, { description: "d" }), { id: 5 });
    await c.images.delete(5);
    assert.deepEqual(
      s.requests.map((r) => r.method),
      ["PUT", "PUT", "DELETE", "DELETE"],
    );
  });

  it("stops after maxTries", async () => {
    const s = await failThen(99, errorReply(503, "unavailable"));
    await assert.rejects(
      client(s, { retry: { maxTries: 3, baseDelayMs: 1 } }).locations.getById(1),
      (e: unknown) => e instanceof HCloudError && e.status === 503,
    );
    assert.equal(s.requests.length, 3);
  });

  it("grows the backoff exponentially with jitter, capped", async () => {
    const s = await failThen(5, errorReply(503, "unavailable"));
    const delays: number[] = [];
    const c = client(s, {
      retry: {
        maxTries: 6,
        baseDelayMs: 100,
        maxDelayMs: 400,
        random: () => 0.5,
        sleep: async (ms) => void delays.push(ms),
      },
    });
    await c.locations.getById(1);
    // backoff b = min(400, 100 * 2^(n-1)); delay = b/2 + random*b/2 with random 0.5 -> 0.75 b
    assert.deepEqual(delays, [75, 150, 300, 300, 300]);
  });

  it("does not start a retry that would end beyond maxTotalMs", async () => {
    const s = await failThen(99, {
      ...errorReply(429, "rate_limit_exceeded"),
      headers: { "Retry-After": "30" },
    });
    await assert.rejects(
      client(s, { retry: { maxTotalMs: 5000, baseDelayMs: 1 } }).locations.getById(1),
      (e: unknown) => e instanceof HCloudError && e.status === 429,
    );
    assert.equal(s.requests.length, 1);
  });

  it("honours Retry-After on 429", async () => {
    const s = await failThen(1, {
      ...errorReply(429, "rate_limit_exceeded"),
      headers: { "Retry-After": "2" },
    });
    const delays: number[] = [];
    await client(s, { retry: { sleep: async (ms) => void delays.push(ms) } }).locations.getById(1);
    assert.deepEqual(delays, [2000]);
  });

  it("honours RateLimit-Reset on 429 (time until one request is refilled)", async () => {
    const now = 1_800_000_000_000;
    const headers = {
      "RateLimit-Limit": "4",
      "RateLimit-Remaining": "0",
      "RateLimit-Reset": String(now / 1000 + 20),
    };
    const s = await failThen(1, { ...errorReply(429, "rate_limit_exceeded"), headers });
    const delays: number[] = [];
    const c = client(s, { retry: { now: () => now, sleep: async (ms) => void delays.push(ms) } });
    await c.locations.getById(1);
    assert.deepEqual(delays, [5000]); // 20 s to refill 4 requests: one is free after 5 s
    assert.equal(c.rateLimit.remaining, 0);
  });

  it("does not retry when retry is false", async () => {
    const s = await failThen(1, errorReply(503, "unavailable"));
    await assert.rejects(client(s, { retry: false }).locations.getById(1), HCloudError);
    assert.equal(s.requests.length, 1);
  });
});

describe("retries of non-idempotent POSTs", () => {
  const key = {
    id: 9,
    name: "k",
    fingerprint: "x",
    public_key: "ssh-ed25519 AAAAC3Nz k",
    labels: {},
    created: "",
  };

  for (const [name, reply] of [
    ["429", errorReply(429, "rate_limit_exceeded")],
    ["409 conflict", errorReply(409, "conflict")],
    ["423 locked", errorReply(423, "locked")],
    ["503 unavailable", errorReply(503, "unavailable")],
  ] as [string, Reply][]) {
    it(`retries a POST answered ${name} (nothing happened) without calling recover`, async () => {
      const s = await failThen(1, reply, { status: 201, body: { ssh_key: key } });
      const created = await client(s).sshKeys.create({ name: "k", publicKey: key.public_key });
      assert.deepEqual(created, key);
      assert.deepEqual(
        s.requests.map((r) => r.method),
        ["POST", "POST"],
      );
    });
  }

  for (const [name, reply] of [
    ["connection reset", { reset: true }],
    ["502", errorReply(502, "bad_gateway")],
    ["504", errorReply(504, "timeout")],
    ["503 without an API error body", { status: 503 }],
  ] as [string, Reply][]) {
    it(`surfaces ${name} of a POST without recover`, async () => {
      const s = await failThen(1, reply, { status: 200, body: { action: { id: 1 } } });
      await assert.rejects(client(s).servers.reboot(3));
      assert.equal(s.requests.length, 1);
    });
  }

  it("retries idempotent-marked POSTs (poweron) after a reset", async () => {
    const s = await failThen(
      1,
      { reset: true },
      { status: 201, body: { action: { id: 1, command: "start_server" } } },
    );
    const action = await client(s).servers.poweron(3);
    assert.equal(action.id, 1);
    assert.equal(s.requests.length, 2);
  });

  it("answers with what recover found after a 504 (servers.create finds the server and its actions)", async () => {
    const server = { id: 77, name: "web-1", status: "initializing" };
    const act = (id: number, command: string) => ({
      id,
      command,
      status: "running",
      progress: 0,
      error: null,
    });
    const s = await startScripted((req) => {
      if (req.method === "POST") return errorReply(504, "timeout");
      if (req.path === "/servers/77/actions") {
        assert.equal(req.query.get("sort"), "id:asc");
        const actions = [act(10, "create_server"), act(11, "start_server"), act(12, "enable_rescue")];
        return { status: 200, body: { actions, meta: { pagination: { page: 1, next_page: null } } } };
      }
      assert.equal(req.query.get("name"), "web-1");
      return { status: 200, body: { servers: [server], meta: { pagination: { page: 1, next_page: null } } } };
    });
    servers.push(s);
    const r = await client(s).servers.create({ name: "web-1", server_type: "cx23", image: "ubuntu-24.04" });
    assert.equal(r.recovered, true);
    assert.equal(r.server.id, 77);
    assert.equal(r.action?.id, 10);
    assert.deepEqual(
      r.nextActions.map((a) => a.command),
      ["start_server"],
    );
    assert.deepEqual(
      s.requests.map((q) => `${q.method} ${q.path}`),
      ["POST /servers", "GET /servers", "GET /servers/77/actions"],
    );
  });

  it("retries when recover finds nothing, and recovers a timed-out POST the server did act on", async () => {
    let posts = 0;
    const s = await startScripted((req) => {
      if (req.method === "POST") {
        posts++;
        // first: nothing created (502); second: the key is created but the answer never comes
        return posts === 1 ? errorReply(502, "bad_gateway") : { hang: true };
      }
      const keys = posts >= 2 ? [key] : [];
      return { status: 200, body: { ssh_keys: keys, meta: { pagination: { page: 1, next_page: null } } } };
    });
    servers.push(s);
    const got = await client(s, { timeoutMs: 200 }).sshKeys.create({ name: "k", publicKey: key.public_key });
    assert.deepEqual(got, key);
    const seen = s.requests.map(
      (q) => `${q.method} ${q.query.has("fingerprint") ? "fingerprint" : q.query.has("name") ? "name" : ""}`,
    );
    // recover looks up by fingerprint, then by name; found nothing -> retried; second time found by fingerprint
    assert.deepEqual(seen, ["POST ", "GET fingerprint", "GET name", "POST ", "GET fingerprint"]);
  });

  it("after an unclear failure, a uniqueness_error on the retry is resolved by recover", async () => {
    const server = { id: 5, name: "n" };
    let lookups = 0;
    const s = await startScripted((req) => {
      if (req.method === "POST")
        return s.requests.filter((r) => r.method === "POST").length === 1
          ? { reset: true }
          : errorReply(409, "uniqueness_error", "server name is already used");
      lookups++;
      // first lookup: not visible yet; second: there it is
      return {
        status: 200,
        body: { servers: lookups === 1 ? [] : [server], meta: { pagination: { next_page: null } } },
      };
    });
    servers.push(s);
    const r = await client(s).servers.create({ name: "n", server_type: "cx23", image: "ubuntu-24.04" });
    assert.equal(r.recovered, true);
    assert.equal(r.server.id, 5);
  });

  it("surfaces the original error when recover itself fails", async () => {
    const s = await startScripted((req) =>
      req.method === "POST" ? { reset: true } : errorReply(500, "server_error"),
    );
    servers.push(s);
    await assert.rejects(
      client(s).servers.create({ name: "n", server_type: "cx23", image: "x" }),
      (e: unknown) => e instanceof HCloudNetworkError && e.kind === "reset" && e.method === "POST",
    );
  });
});

describe("abort", () => {
  it("stops retrying when the signal aborts during backoff", async () => {
    const s = await failThen(99, errorReply(503, "unavailable"));
    const ac = new AbortController();
    const reason = new Error("caller gave up");
    const c = client(s, { retry: { baseDelayMs: 60_000, maxDelayMs: 60_000 } });
    const p = c.locations.getById(1, { signal: ac.signal });
    for (let i = 0; i < 200 && s.requests.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    ac.abort(reason);
    await assert.rejects(p, (e: unknown) => e === reason);
    assert.equal(s.requests.length, 1);
  });

  it("aborts a request in flight", async () => {
    const s = await failThen(99, { hang: true });
    const ac = new AbortController();
    const p = client(s, { timeoutMs: 0 }).locations.getById(1, { signal: ac.signal });
    for (let i = 0; i < 200 && s.requests.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    ac.abort();
    await assert.rejects(p, (e: unknown) => e instanceof Error && e.name === "AbortError");
    assert.equal(s.requests.length, 1);
  });
});

describe("token secrecy", () => {
  it("never shows the token in errors, even when the server echoes it", async () => {
    const s = await startScripted((req) =>
      errorReply(401, "unauthorized", `bad token ${req.headers.authorization}`),
    );
    servers.push(s);
    const c = client(s);
    const err = await c.locations.getById(1).then(
      () => assert.fail("expected an error"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof HCloudError && err.code === "unauthorized");
    assert.match(err.message, /REDACTED/);
    assertNoToken(err);
  });

  it("never shows the token in network errors or in the client object", async () => {
    const s = await failThen(99, { reset: true });
    const c = client(s, { retry: false });
    const err = await c.locations.getById(1).then(
      () => assert.fail("expected an error"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof HCloudNetworkError);
    assertNoToken(err);
    assert.ok(!inspect(c, { depth: 10, showHidden: true }).includes(TOKEN));
    assert.ok(!JSON.stringify(c).includes(TOKEN));
  });
});

describe("retry decisions", () => {
  const api = (status: number, code: string): HCloudError =>
    new HCloudError({ status, code, message: code, method: "X", path: "/" });
  const net = (kind: "refused" | "reset" | "timeout" | "network"): HCloudNetworkError =>
    new HCloudNetworkError(kind, "X", "/", kind);
  const table: [string, unknown, string, string, string][] = [
    // name, error, GET, POST, POST marked idempotent
    ["429", api(429, "rate_limit_exceeded"), "retry", "retry", "retry"],
    ["409 conflict", api(409, "conflict"), "retry", "retry", "retry"],
    ["409 uniqueness_error", api(409, "uniqueness_error"), "fail", "fail", "fail"],
    ["423 locked", api(423, "locked"), "retry", "retry", "retry"],
    ["423 protected", api(423, "protected"), "fail", "fail", "fail"],
    ["503 unavailable", api(503, "unavailable"), "retry", "retry", "retry"],
    ["503 without body", api(503, "http_503"), "retry", "recover", "retry"],
    ["502", api(502, "bad_gateway"), "retry", "recover", "retry"],
    ["504", api(504, "timeout"), "retry", "recover", "retry"],
    ["500", api(500, "server_error"), "fail", "fail", "fail"],
    ["404", api(404, "not_found"), "fail", "fail", "fail"],
    ["refused", net("refused"), "retry", "retry", "retry"],
    ["reset", net("reset"), "retry", "recover", "retry"],
    ["timeout", net("timeout"), "retry", "recover", "retry"],
    ["other network error", net("network"), "retry", "recover", "retry"],
    ["not an API error", new Error("bug"), "fail", "fail", "fail"],
  ];
  for (const [name, err, get, post, idem] of table) {
    it(`${name}: GET ${get}, POST ${post}, idempotent POST ${idem}`, () => {
      assert.equal(decide({ method: "GET", path: "/" }, err), get);
      assert.equal(decide({ method: "DELETE", path: "/" }, err), get);
      assert.equal(decide({ method: "POST", path: "/" }, err), post);
      assert.equal(decide({ method: "POST", path: "/", idempotent: true }, err), idem);
    });
  }
});
