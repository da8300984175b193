/** Resource modules against a real HTTP server: paths, queries, bodies, paging, lookup by id or name. */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { HCloudClient, publicKeyFingerprint, type RequestEvent, type SshKey } from "../src/hcloud/index.js";
import { errorReply, pageOf, startScripted, type ScriptedServer } from "./support/hcloud-scripted-server.js";

const keys: SshKey[] = Array.from({ length: 120 }, (_, i) => ({
  id: i + 1,
  name: `key-${i + 1}`,
  fingerprint: `fp-${i + 1}`,
  public_key: `ssh-ed25519 AAAA${i} key-${i + 1}`,
  labels: {},
  created: "2026-11-25T08:00:00Z",
}));

const action = {
  id: 50,
  command: "x",
  status: "running",
  progress: 0,
  started: "",
  finished: null,
  resources: [],
  error: null,
};

let s: ScriptedServer;
let c: HCloudClient;
const events: RequestEvent[] = [];

before(async () => {
  s = await startScripted((req) => {
    const { method, path, query } = req;
    if (method === "GET" && path === "/ssh_keys") {
      const name = query.get("name");
      const list = name !== null ? keys.filter((k) => k.name === name) : keys;
      return { status: 200, body: pageOf("ssh_keys", list, query) };
    }
    const key = /^\/ssh_keys\/(\d+)$/.exec(path);
    if (method === "GET" && key) {
      const k = keys.find((x) => x.id === Number(key[1]));
      return k ? { status: 200, body: { ssh_key: k } } : errorReply(404, "not_found");
    }
    if (method === "GET" && path === "/images") return { status: 200, body: pageOf("images", [], query) };
    if (method === "GET" && path === "/servers") return { status: 200, body: pageOf("servers", [], query) };
    if (method === "POST" && path === "/servers")
      return {
        status: 201,
        body: { server: { id: 1, name: "s" }, action, next_actions: [action], root_password: null },
      };
    if (method === "POST" && path.endsWith("/actions/enable_rescue"))
      return { status: 201, body: { action, root_password: "pw" } };
    if (method === "POST" && path.endsWith("/actions/create_image"))
      return { status: 201, body: { image: { id: 9 }, action } };
    if (method === "POST" && /^\/servers\/\d+\/actions\/\w+$/.test(path))
      return { status: 201, body: { action } };
    if (method === "DELETE" && path.startsWith("/servers/")) return { status: 200, body: { action } };
    if (method === "PUT" && path.startsWith("/images/"))
      return { status: 200, body: { image: { id: 9, ...(req.body as object) } } };
    if (method === "DELETE") return { status: 204 };
    return errorReply(404, "not_found");
  });
  c = new HCloudClient({ token: "t", endpoint: s.endpoint, onRequest: (e) => events.push(e) });
});
after(() => s.close());

function lastRequests(n: number): RequestEvent[] {
  return events.slice(-n);
}

describe("paging", () => {
  it("list reads one page and returns its pagination", async () => {
    const page = await c.sshKeys.list({ page: 2, perPage: 50 });
    assert.deepEqual(
      page.items.map((k) => k.id),
      keys.slice(50, 100).map((k) => k.id),
    );
    assert.equal(page.pagination.next_page, 3);
    assert.equal(page.pagination.total_entries, 120);
  });

  it("all reads every page with per_page=50", async () => {
    const before = events.length;
    const all = await c.sshKeys.all();
    assert.deepEqual(
      all.map((k) => k.id),
      keys.map((k) => k.id),
    );
    const sent = events.slice(before);
    assert.deepEqual(
      sent.map((e) => Object.fromEntries(e.query)),
      [
        { page: "1", per_page: "50" },
        { page: "2", per_page: "50" },
        { page: "3", per_page: "50" },
      ],
    );
  });
});

describe("lookup", () => {
  it("get by id, by digit string, by name; undefined when absent", async () => {
    assert.equal((await c.sshKeys.get(7))?.name, "key-7");
    assert.equal((await c.sshKeys.get("8"))?.name, "key-8");
    assert.equal((await c.sshKeys.get("key-9"))?.id, 9);
    assert.deepEqual(lastRequests(1)[0]?.query, [["name", "key-9"]]);
    assert.equal(await c.sshKeys.get("nope"), undefined);
    assert.equal(await c.sshKeys.get(999), undefined);
    await assert.rejects(c.sshKeys.getById(999), /not_found/);
  });
});

describe("request shapes", () => {
  it("images.list sends every filter", async () => {
    await c.images.list({
      type: ["snapshot", "backup"],
      architecture: "arm",
      status: "available",
      labelSelector: "app=web,!old",
      sort: "created:desc",
      includeDeprecated: true,
    });
    assert.deepEqual(lastRequests(1)[0]?.query, [
      ["type", "snapshot"],
      ["type", "backup"],
      ["architecture", "arm"],
      ["status", "available"],
      ["label_selector", "app=web,!old"],
      ["sort", "created:desc"],
      ["include_deprecated", "true"],
    ]);
    await c.images.getByName("ubuntu-24.04", { architecture: "arm" });
    assert.deepEqual(lastRequests(1)[0]?.query, [
      ["architecture", "arm"],
      ["name", "ubuntu-24.04"],
    ]);
  });

  it("servers: create, power and rescue actions, create_image, delete", async () => {
    const before = events.length;
    const created = await c.servers.create({
      name: "s",
      server_type: "cx23",
      image: "ubuntu-24.04",
      location: "fsn1",
      start_after_create: false,
      ssh_keys: [1],
      labels: { a: "b" },
    });
    assert.equal(created.recovered, false);
    assert.equal(created.action?.id, 50);
    assert.equal(created.nextActions.length, 1);
    for (const verb of ["poweron", "poweroff", "shutdown", "reboot", "reset", "disableRescue"] as const)
      assert.equal((await c.servers[verb](3)).id, 50);
    const rescue = await c.servers.enableRescue(3, { ssh_keys: [1] });
    assert.equal(rescue.rootPassword, "pw");
    const img = await c.servers.createImage(3, { description: "nixos", labels: { k: "v" } });
    assert.equal(img.image.id, 9);
    assert.equal((await c.servers.delete(3)).id, 50);
    await c.servers.list({
      status: ["running", "off"],
      labelSelector: "k",
      name: "s",
      sort: ["name", "id:desc"],
    });
    const sent = events.slice(before).map((e) => [e.method, e.path, e.body]);
    assert.deepEqual(sent, [
      [
        "POST",
        "/servers",
        {
          name: "s",
          server_type: "cx23",
          image: "ubuntu-24.04",
          location: "fsn1",
          start_after_create: false,
          ssh_keys: [1],
          labels: { a: "b" },
        },
      ],
      ["POST", "/servers/3/actions/poweron", undefined],
      ["POST", "/servers/3/actions/poweroff", undefined],
      ["POST", "/servers/3/actions/shutdown", undefined],
      ["POST", "/servers/3/actions/reboot", undefined],
      ["POST", "/servers/3/actions/reset", undefined],
      ["POST", "/servers/3/actions/disable_rescue", undefined],
      ["POST", "/servers/3/actions/enable_rescue", { type: "linux64", ssh_keys: [1] }],
      ["POST", "/servers/3/actions/create_image", { description: "nixos", labels: { k: "v" } }],
      ["DELETE", "/servers/3", undefined],
      ["GET", "/servers", undefined],
    ]);
    assert.deepEqual(lastRequests(1)[0]?.query, [
      ["name", "s"],
      ["label_selector", "k"],
      ["status", "running"],
      ["status", "off"],
      ["sort", "name"],
      ["sort", "id:desc"],
    ]);
  });

  it("images.update and delete, sshKeys.delete", async () => {
    const img = await c.images.update(9, { description: "d", labels: { x: "y" } });
    assert.equal(img.description, "d");
    await c.images.delete(9);
    await c.sshKeys.delete(4);
    assert.deepEqual(
      lastRequests(3).map((e) => [e.method, e.path, e.body]),
      [
        ["PUT", "/images/9", { description: "d", labels: { x: "y" } }],
        ["DELETE", "/images/9", undefined],
        ["DELETE", "/ssh_keys/4", undefined],
      ],
    );
  });
});

describe("publicKeyFingerprint", () => {
  it("is the colon-separated MD5 of the key blob", () => {
    // blob "AAAA" decodes to three zero bytes: md5(00 00 00) = 693e9af84d3dfcc71e640e005bdc5e2e
    assert.equal(
      publicKeyFingerprint("ssh-ed25519 AAAA comment"),
      "69:3e:9a:f8:4d:3d:fc:c7:1e:64:0e:00:5b:dc:5e:2e",
    );
    assert.equal(publicKeyFingerprint("garbage"), undefined);
  });
});
