/**
 * The client against the emulator (a real HTTP server with the API's rules): paging, lookup, actions waited for
 * together, error codes, and retries through injected faults.
 */

import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { inspect } from "node:util";
import { startEmulator } from "../src/emulator/index.js";
import {
  HCloudClient,
  HCloudError,
  publicKeyFingerprint,
  type Action,
  type RequestEvent,
} from "../src/hcloud/index.js";

const TOKEN = "emulatorTokenForHcloudClientTests0123456789abcdefghijklmnopqrstu";
const stateDir = mkdtempSync(join(tmpdir(), "hetznix-hcloud-emu-"));
let emu: Awaited<ReturnType<typeof startEmulator>>;
let c: HCloudClient;
const events: RequestEvent[] = [];

/** An OpenSSH ed25519 public key line for a fresh key pair. */
function publicKeyLine(comment: string): string {
  const der = generateKeyPairSync("ed25519").publicKey.export({ format: "der", type: "spki" });
  const raw = der.subarray(der.length - 32);
  const str = (b: Buffer): Buffer => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  const blob = Buffer.concat([str(Buffer.from("ssh-ed25519")), str(raw)]);
  return `ssh-ed25519 ${blob.toString("base64")} ${comment}`;
}

async function addFault(fault: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${emu.adminUrl}/faults`, {
    method: "POST",
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ kind: "http", count: 1, ...fault }),
  });
  assert.ok(res.status < 300, `adding a fault failed: ${res.status} ${await res.text()}`);
}

function sentSince(mark: number): string[] {
  return events.slice(mark).map((e) => `${e.method} ${e.path}`);
}

before(async () => {
  emu = await startEmulator({ token: TOKEN, stateDir, speed: 200, ipPrefix: "127.77.201." });
  c = new HCloudClient({
    token: emu.token,
    endpoint: emu.endpoint,
    retry: { baseDelayMs: 5, maxDelayMs: 50 },
    waitDefaults: { pollDelay: () => 20 },
    onRequest: (e) => events.push(e),
  });
});

after(async () => {
  await emu?.stop();
  rmSync(stateDir, { recursive: true, force: true });
});

describe("ssh keys and paging", () => {
  const created: number[] = [];
  after(async () => {
    for (const id of created) await c.sshKeys.delete(id).catch(() => undefined);
  });

  it("pages through more than 50 keys", async () => {
    for (let i = 0; i < 60; i++) {
      const k = await c.sshKeys.create({
        name: `page-${String(i).padStart(2, "0")}`,
        publicKey: publicKeyLine(`k${i}`),
        labels: { suite: "paging", half: i < 30 ? "first" : "second" },
      });
      created.push(k.id);
    }
    const first = await c.sshKeys.list({ perPage: 50, labelSelector: "suite=paging" });
    assert.equal(first.items.length, 50);
    assert.equal(first.pagination.next_page, 2);
    assert.equal(first.pagination.total_entries, 60);
    const mark = events.length;
    const all = await c.sshKeys.all({ labelSelector: "suite=paging", sort: "name:asc" });
    assert.deepEqual(
      all.map((k) => k.name),
      Array.from({ length: 60 }, (_, i) => `page-${String(i).padStart(2, "0")}`),
    );
    assert.equal(sentSince(mark).length, 2, "two pages of 50");
    assert.equal((await c.sshKeys.all({ labelSelector: "suite=paging,half in (second)" })).length, 30);
    assert.equal((await c.sshKeys.all({ labelSelector: "suite,half!=second" })).length, 30);
  });

  it("looks keys up by id, name and fingerprint (computed locally like the server does)", async () => {
    const line = publicKeyLine("lookup");
    const k = await c.sshKeys.create({ name: "lookup", publicKey: line });
    created.push(k.id);
    assert.equal(k.fingerprint, publicKeyFingerprint(line));
    assert.equal((await c.sshKeys.get("lookup"))?.id, k.id);
    assert.equal((await c.sshKeys.get(k.id))?.name, "lookup");
    assert.equal((await c.sshKeys.getByFingerprint(k.fingerprint))?.id, k.id);
  });

  it("surfaces 409 uniqueness_error with its details", async () => {
    const line = publicKeyLine("dup");
    const k = await c.sshKeys.create({ name: "dup-1", publicKey: line });
    created.push(k.id);
    const err = await c.sshKeys.create({ name: "dup-2", publicKey: line }).then(
      () => assert.fail("expected uniqueness_error"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof HCloudError);
    assert.equal(err.status, 409);
    assert.equal(err.code, "uniqueness_error");
    assert.ok(Array.isArray(err.details?.fields));
    assert.ok(err.correlationId, "the emulator sends X-Correlation-Id");
  });

  it("recovers an ssh key create whose answer was lost (502): nothing created, retried once", async () => {
    await addFault({ method: "POST", path: "/ssh_keys", code: "bad_gateway" });
    const mark = events.length;
    const k = await c.sshKeys.create({ name: "after-502", publicKey: publicKeyLine("r") });
    created.push(k.id);
    assert.deepEqual(sentSince(mark), ["POST /ssh_keys", "GET /ssh_keys", "GET /ssh_keys", "POST /ssh_keys"]);
  });
});

describe("errors", () => {
  it("404 not_found for a missing server; get() gives undefined", async () => {
    await assert.rejects(
      c.servers.getById(987654),
      (e: unknown) => e instanceof HCloudError && e.status === 404 && e.code === "not_found",
    );
    assert.equal(await c.servers.get(987654), undefined);
    assert.equal(await c.servers.get("no-such-server"), undefined);
  });

  it("401 unauthorized for a wrong token, which never appears in the error", async () => {
    const wrong = "wrongTokenWrongTokenWrongTokenWrongTokenWrongTokenWrongToken1234";
    const bad = new HCloudClient({ token: wrong, endpoint: emu.endpoint, retry: false });
    const err = await bad.locations.list().then(
      () => assert.fail("expected unauthorized"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof HCloudError);
    assert.equal(err.status, 401);
    assert.equal(err.code, "unauthorized");
    for (const text of [err.message, err.stack ?? "", JSON.stringify(err), inspect(err)])
      assert.ok(!text.includes(wrong) && !text.includes(TOKEN));
  });

  it("an invalid label selector is rejected by the server as invalid_input", async () => {
    await assert.rejects(
      c.images.list({ labelSelector: "a in (" }),
      (e: unknown) => e instanceof HCloudError && e.code === "invalid_input",
    );
  });
});

describe("servers and actions", () => {
  const serverIds: number[] = [];
  after(async () => {
    for (const id of serverIds) await c.servers.delete(id).catch(() => undefined);
  });

  it("waits for the actions of several servers together, one request per poll", async () => {
    const types = await c.serverTypes.all();
    const type = types.find(
      (t) => t.architecture === "x86" && t.locations.some((l) => l.available !== false),
    );
    assert.ok(type, "the emulator offers an x86 server type");
    const location = type.locations.find((l) => l.available !== false)?.name;
    assert.ok((await c.locations.all()).some((l) => l.name === location));
    const image = await c.images.getByName("ubuntu-24.04");
    assert.ok(image, "the emulator offers ubuntu-24.04");

    const actions: Action[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await c.servers.create({
        name: `wait-${i}`,
        server_type: type.name,
        image: image.id,
        location,
        labels: { suite: "wait" },
      });
      assert.equal(r.recovered, false);
      serverIds.push(r.server.id);
      if (r.action) actions.push(r.action);
      actions.push(...r.nextActions);
    }
    assert.ok(actions.length >= 3);
    const mark = events.length;
    const updates: Action[] = [];
    const done = await c.waitForActions(actions, { onProgress: (a) => updates.push(a), timeoutMs: 60_000 });
    assert.ok(done.every((a) => a.status === "success"));
    assert.ok(updates.some((a) => a.status === "success"));
    const polls = events.slice(mark).filter((e) => e.path === "/actions");
    assert.ok(polls.length > 0);
    assert.equal(events.slice(mark).length, polls.length, "only GET /actions while waiting");
    assert.ok(
      polls.some((e) => e.query.filter(([k]) => k === "id").length > 1),
      "several ids in one request",
    );
    for (const id of serverIds) {
      const s = await c.servers.waitForStatus(id, "running", { intervalMs: 20, timeoutMs: 10_000 });
      assert.equal(s.status, "running");
    }
    assert.equal((await c.servers.all({ labelSelector: "suite=wait" })).length, 3);
    const history = await c.servers.listActions(serverIds[0] ?? 0, { sort: "id:asc" });
    assert.equal(history.items[0]?.command, "create_server");
    assert.equal(history.items[0]?.status, "success");
    assert.ok(c.rateLimit.limit !== undefined && c.rateLimit.remaining !== undefined);
  });

  it("retries through injected faults (503 on GET, locked on a POST)", async () => {
    const id = serverIds[0];
    assert.ok(id !== undefined);
    await addFault({ method: "GET", path: "/servers/*", code: "unavailable", count: 2 });
    const mark = events.length;
    assert.equal((await c.servers.getById(id)).id, id);
    assert.deepEqual(sentSince(mark), Array(3).fill(`GET /servers/${id}`));

    await addFault({ method: "POST", path: "/servers/*/actions/shutdown", code: "locked" });
    const mark2 = events.length;
    const action = await c.servers.shutdown(id);
    assert.equal(action.command, "shutdown_server");
    assert.deepEqual(sentSince(mark2), Array(2).fill(`POST /servers/${id}/actions/shutdown`));
    await c.waitForActions([action]);
    const off = await c.servers.waitForStatus(id, "off", { intervalMs: 20, timeoutMs: 10_000 });
    assert.equal(off.status, "off");
  });

  it("a create whose answer is lost (504) and that created nothing is retried after a lookup", async () => {
    await addFault({ method: "POST", path: "/servers", code: "timeout" });
    const mark = events.length;
    const type = (await c.serverTypes.all()).find((t) => t.architecture === "x86");
    assert.ok(type);
    const r = await c.servers.create({ name: "after-504", server_type: type.name, image: "ubuntu-24.04" });
    serverIds.push(r.server.id);
    assert.equal(r.recovered, false);
    assert.deepEqual(sentSince(mark).slice(1), ["POST /servers", "GET /servers", "POST /servers"]);
    if (r.action) await c.waitForActions([r.action, ...r.nextActions]);
  });

  it("creates an image from a server, finds it by label, updates and deletes it", async () => {
    const id = serverIds[0];
    assert.ok(id !== undefined);
    const { image, action } = await c.servers.createImage(id, {
      type: "snapshot",
      description: "hetznix test",
      labels: { suite: "image" },
    });
    await c.waitForActions([action]);
    const found = await c.images.all({
      type: "snapshot",
      labelSelector: "suite=image",
      sort: "created:desc",
    });
    assert.deepEqual(
      found.map((i) => i.id),
      [image.id],
    );
    const updated = await c.images.update(image.id, {
      description: "renamed",
      labels: { suite: "image", v: "2" },
    });
    assert.equal(updated.description, "renamed");
    assert.deepEqual(updated.labels, { suite: "image", v: "2" });
    await c.images.delete(image.id);
    assert.equal(await c.images.get(image.id), undefined);
  });
});
