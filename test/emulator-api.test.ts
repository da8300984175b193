/**
 * HTTP-level behaviour of the Hetzner Cloud API emulator: status codes, error bodies, pagination, selectors,
 * uniqueness, locking, protection, rate limit, status transitions over time, faults, metadata and persistence.
 * Rescue hosts are off here (modelled rescue boots only); real rescue hosts are covered by the rescue tests.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { diskBytes } from "../src/emulator/state/catalog.js";
import { randomPublicKey, startTestEmulator, type TestEmulator } from "./support/emulator.js";

interface ErrorBody {
  error: {
    code: string;
    message: string;
    details: { fields?: { name: string; messages?: string[] }[] } | null;
  };
}
interface ServerBody {
  id: number;
  name: string;
  status: string;
  locked: boolean;
  rescue_enabled: boolean;
  labels: Record<string, string>;
  primary_disk_size: number;
  public_net: { ipv4: { ip: string } | null; ipv6: { ip: string } | null };
  image: { id: number } | null;
  protection: { delete: boolean };
}
interface ActionBody {
  id: number;
  command: string;
  status: string;
  progress: number;
}
interface CreateServerAnswer {
  server: ServerBody;
  action: ActionBody;
  next_actions: ActionBody[];
  root_password: string | null;
}

function fieldNames(body: unknown): string[] {
  return ((body as ErrorBody).error.details?.fields ?? []).map((f) => f.name);
}

describe("emulator API", () => {
  let t: TestEmulator;
  const exchanges: { status: number; headers: Record<string, string> }[] = [];

  before(async () => {
    t = await startTestEmulator({
      ipPrefix: "127.77.10.",
      speed: 200,
      onExchange: (e) => exchanges.push({ status: e.status, headers: e.responseHeaders }),
    });
  });
  after(async () => {
    await t?.close();
  });

  async function createServer(body: Record<string, unknown>): Promise<CreateServerAnswer> {
    const r = await t.api<CreateServerAnswer>("POST", "/servers", body);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body;
  }

  async function serverStatus(id: number): Promise<ServerBody> {
    const r = await t.api<{ server: ServerBody }>("GET", `/servers/${id}`);
    assert.equal(r.status, 200);
    return r.body.server;
  }

  it("answers 401 without the right token, with a correlation id and rate limit headers", async () => {
    for (const token of [null, "wrong"]) {
      const r = await t.api<ErrorBody>("GET", "/servers", undefined, { token });
      assert.equal(r.status, 401);
      assert.equal(r.body.error.code, "unauthorized");
      assert.match(r.headers.get("x-correlation-id") ?? "", /^[0-9a-f]{16}$/);
      assert.ok(r.headers.get("ratelimit-limit"));
    }
    const ok = await t.api("GET", "/servers");
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("ratelimit-limit"), "3600");
    assert.ok(Number(ok.headers.get("ratelimit-remaining")) < 3600);
    assert.ok(Number(ok.headers.get("ratelimit-reset")) >= Math.floor(Date.now() / 1000));
  });

  it("answers unknown paths 404, wrong methods 405 and bad JSON json_error", async () => {
    const r404 = await t.api<ErrorBody>("GET", "/nothing_here");
    assert.equal(r404.status, 404);
    assert.equal(r404.body.error.code, "not_found");
    const r405 = await t.api<ErrorBody>("PATCH", "/servers");
    assert.equal(r405.status, 405);
    assert.equal(r405.body.error.code, "method_not_allowed");
    const res = await fetch(`${t.emulator.endpoint}/ssh_keys`, {
      method: "POST",
      headers: { Authorization: `Bearer ${t.token}`, "Content-Type": "application/json" },
      body: "{not json",
    });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as ErrorBody).error.code, "json_error");
  });

  it("serves the catalogue: locations, server types with per-location availability, 410 for datacenters", async () => {
    const locs = await t.api<{ locations: { name: string; network_zone: string }[] }>("GET", "/locations");
    assert.deepEqual(
      locs.body.locations.map((l) => l.name),
      ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"],
    );
    const types = await t.api<{
      server_types: {
        name: string;
        architecture: string;
        locations: { name: string; available: boolean; deprecation: unknown }[];
      }[];
      meta: { pagination: { total_entries: number } };
    }>("GET", "/server_types?per_page=50");
    const byName = new Map(types.body.server_types.map((x) => [x.name, x]));
    for (const n of [
      "cx23",
      "cx33",
      "cx43",
      "cx53",
      "cax11",
      "cax41",
      "cpx12",
      "cpx62",
      "ccx13",
      "ccx63",
      "cpx11",
    ])
      assert.ok(byName.has(n), n);
    assert.equal(byName.get("cax11")?.architecture, "arm");
    assert.deepEqual(
      byName
        .get("cx23")
        ?.locations.map((l) => l.name)
        .sort(),
      ["fsn1", "hel1", "nbg1"],
    );
    const cpx11 = byName.get("cpx11");
    assert.equal(cpx11?.locations.find((l) => l.name === "fsn1")?.available, false);
    assert.ok(cpx11?.locations.every((l) => l.deprecation !== null));
    assert.equal(types.body.meta.pagination.total_entries, types.body.server_types.length);
    const dc = await t.api<ErrorBody>("GET", "/datacenters");
    assert.equal(dc.status, 410);
    assert.equal(dc.body.error.code, "deprecated_api_endpoint");
    const acts = await t.api<ErrorBody>("GET", "/actions");
    assert.equal(acts.status, 422);
    assert.deepEqual(fieldNames(acts.body), ["id"]);
  });

  it("lists system images by name, architecture and deprecation", async () => {
    const r = await t.api<{ images: { name: string; architecture: string; type: string }[] }>(
      "GET",
      "/images?name=ubuntu-24.04",
    );
    assert.deepEqual(r.body.images.map((i) => i.architecture).sort(), ["arm", "x86"]);
    const arm = await t.api<{ images: { architecture: string }[] }>(
      "GET",
      "/images?type=system&architecture=arm",
    );
    assert.ok(arm.body.images.length > 0 && arm.body.images.every((i) => i.architecture === "arm"));
    const old = await t.api<{ images: unknown[] }>("GET", "/images?name=ubuntu-20.04");
    assert.equal(old.body.images.length, 0);
    const withOld = await t.api<{ images: unknown[] }>(
      "GET",
      "/images?name=ubuntu-20.04&include_deprecated=true",
    );
    assert.equal(withOld.body.images.length, 2);
    const bad = await t.api<ErrorBody>("GET", "/images?type=nonsense");
    assert.equal(bad.status, 422);
    assert.deepEqual(fieldNames(bad.body), ["type"]);
  });

  it("manages SSH keys: MD5 fingerprint, uniqueness by name and key, validation, update, delete", async () => {
    const pub = randomPublicKey("alice@example");
    const created = await t.api<{ ssh_key: { id: number; fingerprint: string; public_key: string } }>(
      "POST",
      "/ssh_keys",
      { name: "alice", public_key: pub, labels: { team: "a" } },
    );
    assert.equal(created.status, 201);
    const blob = Buffer.from(pub.split(" ")[1] ?? "", "base64");
    const md5 = createHash("md5").update(blob).digest("hex");
    assert.equal(created.body.ssh_key.fingerprint.replaceAll(":", ""), md5);
    assert.match(created.body.ssh_key.fingerprint, /^([0-9a-f]{2}:){15}[0-9a-f]{2}$/);

    const sameName = await t.api<ErrorBody>("POST", "/ssh_keys", {
      name: "alice",
      public_key: randomPublicKey(),
    });
    assert.equal(sameName.status, 409);
    assert.equal(sameName.body.error.code, "uniqueness_error");
    assert.deepEqual(fieldNames(sameName.body), ["name"]);
    const sameKey = await t.api<ErrorBody>("POST", "/ssh_keys", { name: "alice2", public_key: pub });
    assert.equal(sameKey.status, 409);
    assert.deepEqual(fieldNames(sameKey.body), ["public_key"]);
    const bad = await t.api<ErrorBody>("POST", "/ssh_keys", { name: "bad", public_key: "ssh-ed25519 nope" });
    assert.equal(bad.status, 422);
    assert.equal(bad.body.error.code, "invalid_input");
    assert.deepEqual(fieldNames(bad.body), ["public_key"]);
    const missing = await t.api<ErrorBody>("POST", "/ssh_keys", {});
    assert.deepEqual(fieldNames(missing.body).sort(), ["name", "public_key"]);

    const id = created.body.ssh_key.id;
    const upd = await t.api<{ ssh_key: { name: string; labels: Record<string, string> } }>(
      "PUT",
      `/ssh_keys/${id}`,
      { name: "alice-renamed", labels: { team: "b" } },
    );
    assert.equal(upd.body.ssh_key.name, "alice-renamed");
    assert.deepEqual(upd.body.ssh_key.labels, { team: "b" });
    const sel = await t.api<{ ssh_keys: { id: number }[] }>(
      "GET",
      "/ssh_keys?label_selector=team%20in%20(b,c)",
    );
    assert.deepEqual(
      sel.body.ssh_keys.map((k) => k.id),
      [id],
    );
    const byFp = await t.api<{ ssh_keys: { id: number }[] }>(
      "GET",
      `/ssh_keys?fingerprint=${created.body.ssh_key.fingerprint}`,
    );
    assert.deepEqual(
      byFp.body.ssh_keys.map((k) => k.id),
      [id],
    );
    const del = await t.api("DELETE", `/ssh_keys/${id}`);
    assert.equal(del.status, 204);
    const gone = await t.api<ErrorBody>("GET", `/ssh_keys/${id}`);
    assert.equal(gone.status, 404);
    assert.equal(gone.body.error.code, "not_found");
  });

  it("validates server creation input", async () => {
    const cases: [Record<string, unknown>, number, string, string][] = [
      [{ name: "bad_name!", server_type: "cx23", image: "ubuntu-24.04" }, 422, "invalid_input", "name"],
      [{ name: "ok1", server_type: "cx999", image: "ubuntu-24.04" }, 422, "invalid_input", "server_type"],
      [{ name: "ok2", server_type: "cx23", image: "no-such-image" }, 422, "invalid_input", "image"],
      [
        { name: "ok3", server_type: "cx23", image: "ubuntu-24.04", location: "mars1" },
        422,
        "invalid_input",
        "location",
      ],
      [
        { name: "ok4", server_type: "cx23", image: "ubuntu-24.04", user_data: "x".repeat(32 * 1024 + 1) },
        422,
        "invalid_input",
        "user_data",
      ],
      [
        { name: "ok5", server_type: "cx23", image: "ubuntu-24.04", labels: { "-x": "y" } },
        422,
        "invalid_input",
        "labels",
      ],
      [
        { name: "ok6", server_type: "cx23", image: "ubuntu-24.04", datacenter: "fsn1-dc14" },
        422,
        "invalid_input",
        "datacenter",
      ],
      [
        { name: "ok7", server_type: "cx23", image: "ubuntu-24.04", location: "ash" },
        422,
        "invalid_input",
        "location",
      ],
      [
        { name: "ok8", server_type: "cx23", image: "ubuntu-24.04", ssh_keys: ["nobody"] },
        422,
        "invalid_input",
        "ssh_keys",
      ],
      [{ name: 5, server_type: "cx23", image: "ubuntu-24.04" }, 422, "invalid_input", "name"],
    ];
    for (const [body, status, code, field] of cases) {
      const r = await t.api<ErrorBody>("POST", "/servers", body);
      assert.equal(r.status, status, `${JSON.stringify(body).slice(0, 80)}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error.code, code);
      assert.ok(fieldNames(r.body).includes(field), `${field} in ${JSON.stringify(r.body)}`);
    }
    // An x86 image on an Arm server type.
    const x86 = await t.api<{ images: { id: number }[] }>("GET", "/images?name=debian-12&architecture=x86");
    const x86Id = x86.body.images[0]?.id;
    const arch = await t.api<ErrorBody>("POST", "/servers", {
      name: "arm1",
      server_type: "cax11",
      image: x86Id,
    });
    assert.equal(arch.status, 422);
    assert.match(arch.body.error.message + JSON.stringify(arch.body.error.details), /architecture/);
    // Deprecated type no longer orderable in the EU.
    const dep = await t.api<ErrorBody>("POST", "/servers", {
      name: "old1",
      server_type: "cpx11",
      image: "ubuntu-24.04",
      location: "fsn1",
    });
    assert.equal(dep.status, 412);
    assert.equal(dep.body.error.code, "resource_unavailable");
    const none = await t.api<{ servers: unknown[] }>("GET", "/servers");
    assert.equal(none.body.servers.length, 0, "failed creations leave no server");
  });

  it("runs a server through its lifecycle: initializing, locked, running, shutdown, off, rescue", async () => {
    const pub = randomPublicKey();
    const key = await t.api<{ ssh_key: { id: number } }>("POST", "/ssh_keys", {
      name: "life",
      public_key: pub,
    });
    const c = await createServer({
      name: "life-1",
      server_type: "cx23",
      image: "ubuntu-24.04",
      location: "nbg1",
      ssh_keys: [key.body.ssh_key.id],
      labels: { app: "life" },
      user_data: "#cloud-config\n",
    });
    assert.equal(c.server.status, "initializing");
    assert.equal(c.server.locked, true);
    assert.equal(c.root_password, null);
    assert.equal(c.action.command, "create_server");
    assert.deepEqual(
      c.next_actions.map((a) => a.command),
      ["start_server"],
    );
    assert.match(c.server.public_net.ipv4?.ip ?? "", /^127\.77\.10\.\d+$/);
    assert.match(c.server.public_net.ipv6?.ip ?? "", /^2001:db8:[0-9a-f:]+\/64$/);
    assert.equal(c.server.primary_disk_size, 40);
    assert.ok(!("datacenter" in c.server));

    const locked = await t.api<ErrorBody>("POST", `/servers/${c.server.id}/actions/poweroff`);
    assert.equal(locked.status, 423);
    assert.equal(locked.body.error.code, "locked");

    const done = await t.waitActions([c.action.id, ...c.next_actions.map((a) => a.id)]);
    assert.ok(done.every((a) => a.status === "success"));
    let s = await serverStatus(c.server.id);
    assert.equal(s.status, "running");
    assert.equal(s.locked, false);

    // The disk is a sparse file of the type's size.
    const disk = join(t.stateDir, "disks", `server-${c.server.id}.img`);
    assert.equal(statSync(disk).size, diskBytes(40));

    const dup = await t.api<ErrorBody>("POST", "/servers", {
      name: "life-1",
      server_type: "cx23",
      image: "debian-12",
    });
    assert.equal(dup.status, 409);
    assert.deepEqual(fieldNames(dup.body), ["name"]);

    // Metadata of the server (unauthenticated).
    const hostname = await fetch(`${t.emulator.metadataUrl(c.server.id)}metadata/hostname`);
    assert.equal(await hostname.text(), "life-1");
    const keys = await fetch(`${t.emulator.metadataUrl(c.server.id)}metadata/public-keys`);
    assert.deepEqual(await keys.json(), [pub]);
    const ud = await fetch(`${t.emulator.metadataUrl(c.server.id)}userdata`);
    assert.equal(await ud.text(), "#cloud-config\n");

    // shutdown: the action succeeds quickly; the server is off only later.
    const sd = await t.api<{ action: ActionBody }>("POST", `/servers/${c.server.id}/actions/shutdown`);
    assert.equal(sd.status, 201);
    assert.equal(sd.body.action.command, "shutdown_server");
    await t.waitActions([sd.body.action.id]);
    s = await t.waitFor("server off", async () => {
      const x = await serverStatus(c.server.id);
      return x.status === "off" ? x : undefined;
    });
    assert.equal(s.status, "off");

    // Rescue: enable (no keys -> root password), power on, then power off ends rescue mode.
    const er = await t.api<{ action: ActionBody; root_password: string | null }>(
      "POST",
      `/servers/${c.server.id}/actions/enable_rescue`,
      { type: "linux64" },
    );
    assert.equal(er.status, 201);
    assert.equal(typeof er.body.root_password, "string");
    await t.waitActions([er.body.action.id]);
    assert.equal((await serverStatus(c.server.id)).rescue_enabled, true);
    const on = await t.api<{ action: ActionBody }>("POST", `/servers/${c.server.id}/actions/poweron`);
    assert.equal(on.body.action.command, "start_server");
    await t.waitActions([on.body.action.id]);
    s = await serverStatus(c.server.id);
    assert.equal(s.status, "running");
    assert.equal(s.rescue_enabled, true);
    const off = await t.api<{ action: ActionBody }>("POST", `/servers/${c.server.id}/actions/poweroff`);
    await t.waitActions([off.body.action.id]);
    s = await serverStatus(c.server.id);
    assert.equal(s.status, "off");
    assert.equal(s.rescue_enabled, false);

    const list = await t.api<{ actions: ActionBody[] }>(
      "GET",
      `/servers/${c.server.id}/actions?sort=id:desc`,
    );
    assert.equal(list.body.actions[0]?.command, "stop_server");
    assert.ok(list.body.actions.some((a) => a.command === "enable_rescue"));

    const del = await t.api<{ action: ActionBody }>("DELETE", `/servers/${c.server.id}`);
    assert.equal(del.status, 200);
    assert.equal(del.body.action.command, "delete_server");
    await t.waitActions([del.body.action.id]);
    assert.equal((await t.api("GET", `/servers/${c.server.id}`)).status, 404);
    assert.equal(existsSync(disk), false);
  });

  it("filters, sorts and paginates servers", async () => {
    const ids: number[] = [];
    for (let i = 0; i < 5; i++) {
      const c = await createServer({
        name: `page-${i}`,
        server_type: "cpx12",
        image: "debian-13",
        start_after_create: false,
        labels: { group: "paging", parity: i % 2 === 0 ? "even" : "odd" },
      });
      assert.deepEqual(c.next_actions, []);
      assert.equal(typeof c.root_password, "string");
      ids.push(c.server.id);
    }
    const p1 = await t.api<{ servers: ServerBody[]; meta: { pagination: Record<string, number | null> } }>(
      "GET",
      "/servers?label_selector=group=paging&per_page=2&sort=name:desc",
    );
    assert.deepEqual(
      p1.body.servers.map((s) => s.name),
      ["page-4", "page-3"],
    );
    assert.deepEqual(p1.body.meta.pagination, {
      page: 1,
      per_page: 2,
      previous_page: null,
      next_page: 2,
      last_page: 3,
      total_entries: 5,
    });
    const p3 = await t.api<{ servers: ServerBody[]; meta: { pagination: Record<string, number | null> } }>(
      "GET",
      "/servers?label_selector=group=paging&per_page=2&page=3&sort=name:desc",
    );
    assert.deepEqual(
      p3.body.servers.map((s) => s.name),
      ["page-0"],
    );
    assert.equal(p3.body.meta.pagination.next_page, null);
    assert.equal(p3.body.meta.pagination.previous_page, 2);
    const big = await t.api<{ meta: { pagination: { per_page: number } } }>("GET", "/servers?per_page=500");
    assert.equal(big.body.meta.pagination.per_page, 50);
    const badPage = await t.api<ErrorBody>("GET", "/servers?page=zero");
    assert.equal(badPage.status, 422);
    assert.deepEqual(fieldNames(badPage.body), ["page"]);

    const odd = await t.api<{ servers: ServerBody[] }>(
      "GET",
      "/servers?label_selector=group=paging,parity!=even",
    );
    assert.deepEqual(odd.body.servers.map((s) => s.name).sort(), ["page-1", "page-3"]);
    const notin = await t.api<{ servers: ServerBody[] }>(
      "GET",
      `/servers?label_selector=${encodeURIComponent("group,parity notin (odd),!missing")}`,
    );
    assert.deepEqual(notin.body.servers.map((s) => s.name).sort(), ["page-0", "page-2", "page-4"]);
    const badSel = await t.api<ErrorBody>("GET", `/servers?label_selector=${encodeURIComponent("a in (b")}`);
    assert.equal(badSel.status, 422);
    assert.deepEqual(fieldNames(badSel.body), ["label_selector"]);
    const byName = await t.api<{ servers: ServerBody[] }>("GET", "/servers?name=page-2");
    assert.deepEqual(
      byName.body.servers.map((s) => s.id),
      [ids[2]],
    );

    await t.waitFor("servers off", async () => {
      const r = await t.api<{ servers: ServerBody[] }>(
        "GET",
        "/servers?label_selector=group=paging&status=off",
      );
      return r.body.servers.length === 5 ? true : undefined;
    });
    const upd = await t.api<{ server: ServerBody }>("PUT", `/servers/${ids[0]}`, {
      name: "page-renamed",
      labels: { group: "paging2" },
    });
    assert.equal(upd.body.server.name, "page-renamed");
    const clash = await t.api<ErrorBody>("PUT", `/servers/${ids[0]}`, { name: "page-1" });
    assert.equal(clash.status, 409);

    // Deletion protection.
    const prot = await t.api<{ action: ActionBody }>("POST", `/servers/${ids[1]}/actions/change_protection`, {
      delete: true,
      rebuild: true,
    });
    assert.equal(prot.status, 201);
    await t.waitActions([prot.body.action.id]);
    const refused = await t.api<ErrorBody>("DELETE", `/servers/${ids[1]}`);
    assert.equal(refused.status, 423);
    assert.equal(refused.body.error.code, "protected");
    const unprot = await t.api<{ action: ActionBody }>(
      "POST",
      `/servers/${ids[1]}/actions/change_protection`,
      {
        delete: false,
        rebuild: false,
      },
    );
    await t.waitActions([unprot.body.action.id]);
    const actions: number[] = [];
    for (const id of ids) {
      const d = await t.api<{ action: ActionBody }>("DELETE", `/servers/${id}`);
      assert.equal(d.status, 200);
      actions.push(d.body.action.id);
    }
    await t.waitActions(actions);
  });

  it("snapshots a server disk, finds it by label, boots a server from it and guards its deletion", async () => {
    const c = await createServer({ name: "snap-src", server_type: "cx33", image: "ubuntu-24.04" });
    await t.waitActions([c.action.id, ...c.next_actions.map((a) => a.id)]);
    const ci = await t.api<{ action: ActionBody; image: { id: number; status: string; disk_size: number } }>(
      "POST",
      `/servers/${c.server.id}/actions/create_image`,
      { type: "snapshot", description: "nixos test", labels: { "hetznix.dev/release": "r1" } },
    );
    assert.equal(ci.status, 201);
    assert.equal(ci.body.image.status, "creating");
    assert.equal(ci.body.image.disk_size, 80);
    await t.waitActions([ci.body.action.id]);
    const found = await t.api<{
      images: { id: number; status: string; image_size: number; description: string }[];
    }>(
      "GET",
      `/images?type=snapshot&label_selector=${encodeURIComponent("hetznix.dev/release=r1")}&status=available`,
    );
    assert.deepEqual(
      found.body.images.map((i) => i.id),
      [ci.body.image.id],
    );
    assert.equal(typeof found.body.images[0]?.image_size, "number");
    assert.ok(existsSync(join(t.stateDir, "disks", `image-${ci.body.image.id}.img`)));

    // A snapshot of an 80 GB disk does not fit a 40 GB server type.
    const small = await t.api<ErrorBody>("POST", "/servers", {
      name: "snap-small",
      server_type: "cx23",
      image: ci.body.image.id,
    });
    assert.equal(small.status, 422);
    assert.deepEqual(fieldNames(small.body), ["server_type"]);
    const big = await createServer({ name: "snap-big", server_type: "cx43", image: ci.body.image.id });
    assert.equal(big.server.image?.id, ci.body.image.id);
    await t.waitActions([big.action.id, ...big.next_actions.map((a) => a.id)]);
    assert.equal(statSync(join(t.stateDir, "disks", `server-${big.server.id}.img`)).size, diskBytes(160));

    const put = await t.api<{ image: { description: string; labels: Record<string, string> } }>(
      "PUT",
      `/images/${ci.body.image.id}`,
      { description: "renamed", labels: { k: "v" } },
    );
    assert.equal(put.body.image.description, "renamed");
    assert.deepEqual(put.body.image.labels, { k: "v" });
    const protect = await t.api<{ action: ActionBody }>(
      "POST",
      `/images/${ci.body.image.id}/actions/change_protection`,
      { delete: true },
    );
    assert.equal(protect.status, 201);
    const refused = await t.api<ErrorBody>("DELETE", `/images/${ci.body.image.id}`);
    assert.equal(refused.status, 423);
    assert.equal(refused.body.error.code, "protected");
    await t.waitActions([protect.body.action.id]);
    const unprotect = await t.api<{ action: ActionBody }>(
      "POST",
      `/images/${ci.body.image.id}/actions/change_protection`,
      { delete: false },
    );
    await t.waitActions([unprotect.body.action.id]);
    const sys = await t.api<{ images: { id: number }[] }>("GET", "/images?name=debian-12");
    const sysDel = await t.api<ErrorBody>("DELETE", `/images/${sys.body.images[0]?.id}`);
    assert.equal(sysDel.status, 403);
    const del = await t.api("DELETE", `/images/${ci.body.image.id}`);
    assert.equal(del.status, 204);
    assert.equal(existsSync(join(t.stateDir, "disks", `image-${ci.body.image.id}.img`)), false);
    const dels = await Promise.all(
      [c.server.id, big.server.id].map((id) => t.api<{ action: ActionBody }>("DELETE", `/servers/${id}`)),
    );
    await t.waitActions(dels.map((d) => d.body.action.id));
  });

  it("injects faults through the admin endpoint, authenticated with the same token", async () => {
    const noAuth = await fetch(`${t.emulator.adminUrl}/faults`, { method: "POST", body: "{}" });
    assert.equal(noAuth.status, 401);
    const add = await fetch(`${t.emulator.adminUrl}/faults`, {
      method: "POST",
      headers: { Authorization: `Bearer ${t.token}` },
      body: JSON.stringify({
        kind: "http",
        method: "GET",
        path: "/locations",
        code: "unavailable",
        count: 2,
      }),
    });
    assert.equal(add.status, 201);
    for (let i = 0; i < 2; i++) {
      const r = await t.api<ErrorBody>("GET", "/locations");
      assert.equal(r.status, 503);
      assert.equal(r.body.error.code, "unavailable");
    }
    assert.equal((await t.api("GET", "/locations")).status, 200);

    const cap = await fetch(`${t.emulator.adminUrl}/faults`, {
      method: "POST",
      headers: { Authorization: `Bearer ${t.token}` },
      body: JSON.stringify({ kind: "capacity", location: "hel1", server_type: "cax11" }),
    });
    const capId = ((await cap.json()) as { fault: { id: number } }).fault.id;
    const full = await t.api<ErrorBody>("POST", "/servers", {
      name: "cap-1",
      server_type: "cax11",
      image: "ubuntu-24.04",
      location: "hel1",
    });
    assert.equal(full.status, 412);
    assert.equal(full.body.error.code, "resource_unavailable");
    const rm = await fetch(`${t.emulator.adminUrl}/faults/${capId}`, {
      method: "DELETE",
      headers: { Authorization: `Bearer ${t.token}` },
    });
    assert.equal(rm.status, 204);
    const bad = await fetch(`${t.emulator.adminUrl}/faults`, {
      method: "POST",
      headers: { Authorization: `Bearer ${t.token}` },
      body: JSON.stringify({ kind: "http", method: "GET", path: "/x", code: "no_such_code" }),
    });
    assert.equal(bad.status, 422);

    const state = await fetch(`${t.emulator.adminUrl}/state`, {
      headers: { Authorization: `Bearer ${t.token}` },
    });
    const text = await state.text();
    assert.equal(state.status, 200);
    assert.ok(!text.includes(t.token), "the debug state never contains the token");
    assert.ok(Array.isArray((JSON.parse(text) as { state: { servers: unknown[] } }).state.servers));
  });

  it("put a correlation id and rate limit headers on every API answer", () => {
    assert.ok(exchanges.length > 50);
    for (const e of exchanges) {
      assert.match(e.headers["x-correlation-id"] ?? "", /^[0-9a-f]{16}$/);
      assert.ok(
        e.headers["ratelimit-limit"] && e.headers["ratelimit-remaining"] && e.headers["ratelimit-reset"],
      );
    }
  });
});

describe("emulator rate limit", () => {
  it("answers 429 rate_limit_exceeded once the budget is spent", async () => {
    const t = await startTestEmulator({
      ipPrefix: "127.77.13.",
      rateLimit: { limit: 3, refillPerSecond: 0.001 },
    });
    try {
      const statuses: number[] = [];
      let last: Awaited<ReturnType<typeof t.api<ErrorBody>>> | undefined;
      for (let i = 0; i < 5; i++) {
        last = await t.api<ErrorBody>("GET", "/locations");
        statuses.push(last.status);
      }
      assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
      assert.equal(last?.body.error.code, "rate_limit_exceeded");
      assert.equal(last?.headers.get("ratelimit-remaining"), "0");
      assert.equal(last?.headers.get("ratelimit-limit"), "3");
    } finally {
      await t.close();
    }
  });
});

describe("emulator persistence", () => {
  it("keeps servers, keys, snapshots and running actions across a restart", async () => {
    const first = await startTestEmulator({ ipPrefix: "127.77.14.", speed: 50 });
    const stateDir = first.stateDir;
    let second: TestEmulator | undefined;
    try {
      const key = await first.api<{ ssh_key: { id: number } }>("POST", "/ssh_keys", {
        name: "persist",
        public_key: randomPublicKey(),
      });
      const c = await first.api<CreateServerAnswer>("POST", "/servers", {
        name: "persist-1",
        server_type: "cx23",
        image: "ubuntu-24.04",
        ssh_keys: ["persist"],
        labels: { keep: "yes" },
      });
      assert.equal(c.status, 201);
      // Stop while create_server still runs (speed 50: about 240 ms), start again on the same directory.
      await first.emulator.stop();
      second = await startTestEmulator({ ipPrefix: "127.77.14.", speed: 50, stateDir });
      const k = await second.api<{ ssh_key: { name: string } }>("GET", `/ssh_keys/${key.body.ssh_key.id}`);
      assert.equal(k.body.ssh_key.name, "persist");
      const done = await second.waitActions([c.body.action.id, ...c.body.next_actions.map((a) => a.id)]);
      assert.ok(done.every((a) => a.status === "success"));
      const s = await second.api<{ server: ServerBody }>("GET", `/servers/${c.body.server.id}`);
      assert.equal(s.body.server.status, "running");
      assert.deepEqual(s.body.server.labels, { keep: "yes" });
      const next = await second.api<CreateServerAnswer>("POST", "/servers", {
        name: "persist-2",
        server_type: "cx23",
        image: "ubuntu-24.04",
        start_after_create: false,
      });
      assert.ok(next.body.server.id > c.body.server.id, "ids continue after a restart");
      assert.notEqual(next.body.server.public_net.ipv4?.ip, s.body.server.public_net.ipv4?.ip);
      const dup = await second.api<ErrorBody>("POST", "/ssh_keys", {
        name: "persist",
        public_key: randomPublicKey(),
      });
      assert.equal(dup.status, 409);
      await second.waitActions([next.body.action.id]);
    } finally {
      await second?.close();
      await first.close();
    }
  });
});
