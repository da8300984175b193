/**
 * Contract test: every answer of the emulator (status + body) must match the Hetzner Cloud OpenAPI document (with
 * the documented 2026 deltas, see test/support/contract.ts), and every request our client sends must match the
 * document's request schemas. Drives a realistic sequence twice: with raw HTTP (including error answers) and with
 * hetznix's own client (src/hcloud), whose onRequest hook feeds the request checker.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { HCloudClient } from "../src/hcloud/index.js";
import { ContractChecker } from "./support/contract.js";
import { randomPublicKey, startTestEmulator, type TestEmulator } from "./support/emulator.js";

describe("OpenAPI contract", () => {
  const checker = new ContractChecker();
  let t: TestEmulator;

  before(async () => {
    t = await startTestEmulator({ ipPrefix: "127.77.11.", speed: 200, onExchange: checker.exchange });
  });
  after(async () => {
    await t?.close();
  });

  it("the checker itself rejects what the document forbids", () => {
    const probe = new ContractChecker();
    probe.response("GET", "/servers/1", 200, { server: { id: "not a number" } });
    probe.response("GET", "/locations", 200, {
      locations: [],
      meta: { pagination: { page: 1 } },
    });
    probe.response("GET", "/servers/1", 202, { error: { code: "x", message: "y" } });
    probe.request("POST", "/ssh_keys", [["bogus", "1"]], { name: 1 });
    probe.response("DELETE", "/images/1", 204, undefined);
    const where = probe.violations.map((v) => v.where);
    assert.ok(where.includes("GET /servers/1 -> 200"));
    assert.ok(where.includes("GET /locations -> 200"));
    assert.ok(where.includes("GET /servers/1 -> 202"));
    assert.equal(probe.violations.filter((v) => v.where === "POST /ssh_keys").length, 2);
    assert.ok(!where.includes("DELETE /images/1 -> 204"));
    // The 2026 deltas: a server with `datacenter` is now a violation (closed objects).
    const dc = new ContractChecker();
    dc.response("GET", "/datacenters", 410, {
      error: { code: "deprecated_api_endpoint", message: "gone", details: null },
    });
    assert.deepEqual(dc.violations, []);
  });

  it("raw HTTP: catalogue, keys, servers, actions, images and error answers all match the document", async () => {
    const { api } = t;
    await api("GET", "/locations");
    await api("GET", "/locations/1");
    await api("GET", "/server_types?per_page=50");
    await api("GET", "/server_types/114");
    await api("GET", "/images?type=system&architecture=x86&include_deprecated=true&sort=name:asc");
    await api("GET", "/datacenters");
    await api("GET", "/actions");
    await api("GET", "/servers/12345");
    await api("GET", "/servers?label_selector=a%20in%20(");
    await api("GET", "/servers", undefined, { token: "wrong" });

    const key = await api<{ ssh_key: { id: number } }>("POST", "/ssh_keys", {
      name: "contract",
      public_key: randomPublicKey(),
      labels: { purpose: "contract" },
    });
    await api("POST", "/ssh_keys", { name: "contract", public_key: randomPublicKey() });
    await api("GET", `/ssh_keys?name=contract`);
    await api("PUT", `/ssh_keys/${key.body.ssh_key.id}`, { labels: { purpose: "contract2" } });

    const c = await api<{ server: { id: number }; action: { id: number }; next_actions: { id: number }[] }>(
      "POST",
      "/servers",
      {
        name: "contract-1",
        server_type: "cx23",
        image: "ubuntu-24.04",
        location: "fsn1",
        ssh_keys: [String(key.body.ssh_key.id)],
        labels: { role: "contract" },
        public_net: { enable_ipv4: true, enable_ipv6: true },
      },
    );
    assert.equal(c.status, 201);
    const id = c.body.server.id;
    await api("POST", `/servers/${id}/actions/poweroff`); // 423 while creating
    await api("POST", "/servers", { name: "contract-1", server_type: "cx23", image: "ubuntu-24.04" }); // 409
    await api("POST", "/servers", {
      name: "x",
      server_type: "cax11",
      image: "ubuntu-24.04",
      location: "ash",
    }); // 422
    await t.waitActions([c.body.action.id, ...c.body.next_actions.map((a) => a.id)]);
    await api("GET", `/servers?label_selector=role%3Dcontract&status=running&sort=created:desc&per_page=10`);
    await api("PUT", `/servers/${id}`, { labels: { role: "contract", more: "yes" } });
    const rescue = await api<{ action: { id: number } }>("POST", `/servers/${id}/actions/enable_rescue`, {
      type: "linux64",
      ssh_keys: [key.body.ssh_key.id],
    });
    await t.waitActions([rescue.body.action.id]);
    const reboot = await api<{ action: { id: number } }>("POST", `/servers/${id}/actions/reboot`);
    await t.waitActions([reboot.body.action.id]);
    const shutdown = await api<{ action: { id: number } }>("POST", `/servers/${id}/actions/shutdown`);
    await t.waitActions([shutdown.body.action.id]);
    await t.waitFor("off", async () => {
      const s = await api<{ server: { status: string } }>("GET", `/servers/${id}`);
      return s.body.server.status === "off" ? true : undefined;
    });
    const ci = await api<{ action: { id: number }; image: { id: number } }>(
      "POST",
      `/servers/${id}/actions/create_image`,
      { type: "snapshot", description: "contract image", labels: { "hetznix/release": "c1" } },
    );
    await api("GET", `/servers/${id}/actions/${ci.body.action.id}`);
    await api("GET", `/images/${ci.body.image.id}`); // status creating, image_size null
    await t.waitActions([ci.body.action.id]);
    await api("GET", `/images?type=snapshot&label_selector=hetznix%2Frelease%3Dc1&status=available`);
    await api("PUT", `/images/${ci.body.image.id}`, { description: "renamed", labels: { k: "v" } });
    const prot = await api<{ action: { id: number } }>(
      "POST",
      `/images/${ci.body.image.id}/actions/change_protection`,
      { delete: true },
    );
    await api("DELETE", `/images/${ci.body.image.id}`); // 423 protected
    await api("GET", `/images/${ci.body.image.id}/actions`);
    await t.waitActions([prot.body.action.id]);
    const unprot = await api<{ action: { id: number } }>(
      "POST",
      `/images/${ci.body.image.id}/actions/change_protection`,
      { delete: false },
    );
    await t.waitActions([unprot.body.action.id]);
    await api("DELETE", `/images/${ci.body.image.id}`);
    await api("GET", `/servers/${id}/actions?status=success&sort=id:desc&page=1&per_page=5`);
    const del = await api<{ action: { id: number } }>("DELETE", `/servers/${id}`);
    await api("GET", `/actions/${del.body.action.id}`);
    await t.waitActions([del.body.action.id]);
    await api("DELETE", `/ssh_keys/${key.body.ssh_key.id}`);

    assert.deepEqual(checker.violations, [], checker.report());
    for (const op of [
      "GET /servers",
      "POST /servers",
      "GET /servers/{id}",
      "PUT /servers/{id}",
      "DELETE /servers/{id}",
      "POST /servers/{id}/actions/create_image",
      "POST /servers/{id}/actions/enable_rescue",
      "GET /images",
      "DELETE /images/{id}",
      "GET /actions",
      "GET /server_types",
      "GET /datacenters",
    ])
      assert.ok(checker.seen.has(op), `${op} was exercised`);
  });

  it("hetznix's client: its requests and the emulator's answers match the document", async () => {
    const requests = new ContractChecker();
    const client = new HCloudClient({
      token: t.token,
      endpoint: t.emulator.endpoint,
      onRequest: (e) => requests.request(e.method, e.path, e.query, e.body),
      waitDefaults: { pollDelay: () => 20 },
    });
    const before = checker.violations.length;
    const key = await client.sshKeys.create({ name: "client-key", publicKey: randomPublicKey() });
    const created = await client.servers.create({
      name: "client-1",
      server_type: "cx23",
      image: "ubuntu-24.04",
      location: "hel1",
      ssh_keys: [String(key.id)], // the document types ssh_keys as strings (ids or names)
      start_after_create: false,
      labels: { via: "client" },
    });
    await client.waitForActions([...(created.action ? [created.action] : []), ...created.nextActions]);
    const rescue = await client.servers.enableRescue(created.server.id, { ssh_keys: [key.id] });
    await client.waitForActions([rescue.action]);
    await client.waitForActions([await client.servers.poweron(created.server.id)]);
    await client.waitForActions([await client.servers.shutdown(created.server.id)]);
    await client.servers.waitForStatus(created.server.id, "off", { intervalMs: 20, timeoutMs: 10_000 });
    const img = await client.servers.createImage(created.server.id, {
      description: "c",
      labels: { via: "client" },
    });
    await client.waitForActions([img.action]);
    const found = await client.images.list({
      type: "snapshot",
      labelSelector: "via=client",
      sort: "created:desc",
    });
    assert.deepEqual(
      found.items.map((i) => i.id),
      [img.image.id],
    );
    await client.images.delete(img.image.id);
    await client.waitForActions([await client.servers.delete(created.server.id)]);
    await client.sshKeys.delete(key.id);
    await client.serverTypes.all();
    await client.locations.all();

    assert.deepEqual(requests.violations, [], requests.report());
    assert.deepEqual(checker.violations.slice(before), [], checker.report());
  });
});
