/**
 * The emulator's firewalls, primary IPs, networks, volumes, placement groups, rebuild, reverse DNS and backups over
 * raw HTTP (modelled hosts), and the defects of issue #14 each with its check: unmodelled endpoints answer
 * unsupported_error (never not_found), unhonoured fields are refused, messages carry the reason, private networks
 * reach the metadata service, /server_types sorts, HEAD/OPTIONS, prices without float artefacts, labels: null
 * refused. Persistence of the new resources, and of state written before them. Every answer is validated against
 * the OpenAPI document.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parsePrivateNetworks } from "../src/metadata/document.js";
import { ContractChecker } from "./support/contract.js";
import { readAt } from "./support/disk.js";
import { randomPublicKey, startTestEmulator, type TestEmulator } from "./support/emulator.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- wire JSON in tests

describe("emulator resources and issue #14 defects", () => {
  // `sort` on /server_types: the document does not list it, the issue asks for it (see the emulator README).
  const checker = new ContractChecker({ "GET /server_types": ["sort"] });
  let t: TestEmulator;
  const api = (method: string, path: string, body?: unknown) => t.api<Json>(method, path, body);
  const done = async (...answers: { body: Json }[]) => {
    const ids = answers.flatMap((a) => [
      ...(a.body.action ? [a.body.action.id as number] : []),
      ...((a.body.actions ?? []) as Json[]).map((x) => x.id as number),
      ...((a.body.next_actions ?? []) as Json[]).map((x) => x.id as number),
    ]);
    const settled = await t.waitActions(ids);
    assert.ok(
      settled.every((a) => a.status === "success"),
      JSON.stringify(settled),
    );
  };
  const server = async (name: string, extra: Json = {}) => {
    const c = await api("POST", "/servers", {
      name,
      server_type: "cx23",
      image: "ubuntu-24.04",
      location: "fsn1",
      ...extra,
    });
    assert.equal(c.status, 201, JSON.stringify(c.body));
    await done(c);
    return (await api("GET", `/servers/${c.body.server.id}`)).body.server as Json;
  };
  const remove = async (path: string) => {
    const r = await api("DELETE", path);
    if (r.body?.action) await done(r);
    else assert.equal(r.status, 204, JSON.stringify(r.body));
  };
  const errorOf = (r: { status: number; body: Json }, status: number, code: string) => {
    assert.equal(r.status, status, JSON.stringify(r.body));
    assert.equal(r.body.error.code, code);
    return r.body.error.message as string;
  };

  before(async () => {
    t = await startTestEmulator({ ipPrefix: "127.77.42.", speed: 200, onExchange: checker.exchange });
  });
  after(async () => {
    await t?.close();
  });

  it("unmodelled endpoints answer unsupported_error, never not_found; unknown paths stay 404", async () => {
    for (const [method, path] of [
      ["GET", "/floating_ips"],
      ["GET", "/floating_ips/7"],
      ["GET", "/load_balancers/7"],
      ["GET", "/isos"],
      ["GET", "/certificates/3"],
      ["POST", "/servers/1/actions/attach_iso"],
      ["POST", "/servers/1/actions/change_type"],
    ] as const) {
      const message = errorOf(
        await api(method, path, method === "POST" ? {} : undefined),
        422,
        "unsupported_error",
      );
      assert.match(message, /^the hetznix emulator does not support .+; the request was not carried out/);
      assert.doesNotMatch(message, /not found/);
    }
    errorOf(await api("GET", "/no_such_collection"), 404, "not_found");
  });

  it("fields the emulator does not honour are refused, never dropped; create errors name the reason", async () => {
    const base = { name: "x", server_type: "cx23", image: "ubuntu-24.04" };
    assert.match(
      errorOf(await api("POST", "/servers", { ...base, iso: 1 }), 422, "unsupported_error"),
      /'iso'/,
    );
    assert.match(
      errorOf(
        await api("POST", "/servers", { ...base, public_net: { routed: true } }),
        422,
        "unsupported_error",
      ),
      /public_net\.routed/,
    );
    assert.equal(
      errorOf(await api("POST", "/servers", { ...base, location: "ash" }), 422, "invalid_input"),
      "unsupported location for server type",
    );
    assert.equal(
      errorOf(
        await api("POST", "/servers", { ...base, server_type: "cax11", image: 161547269 }),
        422,
        "invalid_input",
      ),
      "server type cax11 and image ubuntu-24.04 have different architectures",
    );
    assert.match(
      errorOf(await api("POST", "/servers", { ...base, name: "not a host name" }), 422, "invalid_input"),
      /invalid input in field 'name' \(name: .+\)/,
    );
    // A pinned primary IP that does not exist is refused, not replaced by a fresh address.
    assert.match(
      errorOf(await api("POST", "/servers", { ...base, public_net: { ipv4: 42 } }), 422, "invalid_input"),
      /primary IP with ID '42' not found/,
    );
    assert.deepEqual((await api("GET", "/servers")).body.servers, []);
  });

  it("/server_types sorts; HEAD and OPTIONS answer; prices have no float artefacts; labels: null is refused", async () => {
    const sorted = await api("GET", "/server_types?sort=name:desc&per_page=50");
    const names = (sorted.body.server_types as Json[]).map((x) => x.name as string);
    assert.deepEqual(names, [...names].sort().reverse());
    errorOf(await api("GET", "/server_types?sort=cores"), 422, "invalid_input");
    for (const type of sorted.body.server_types as Json[])
      for (const p of type.prices as Json[])
        for (const kind of ["price_hourly", "price_monthly", "price_per_tb_traffic"]) {
          const { net, gross } = p[kind] as { net: string; gross: string };
          assert.match(gross, /^\d+\.\d{10}$/, `${type.name} ${kind} gross ${gross}`);
          assert.equal(gross, (Number(net) * 1.19).toFixed(10));
        }

    const head = await fetch(`${t.emulator.endpoint}/servers`, {
      method: "HEAD",
      headers: { Authorization: `Bearer ${t.token}` },
    });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), "");
    assert.ok(Number(head.headers.get("content-length")) > 0, "HEAD announces the GET body's length");
    const options = await fetch(`${t.emulator.endpoint}/servers/1`, { method: "OPTIONS" });
    assert.equal(options.status, 204);
    assert.equal(options.headers.get("allow"), "GET, PUT, DELETE, HEAD, OPTIONS");
    const wrong = await api("PATCH", "/servers/1");
    errorOf(wrong, 405, "method_not_allowed");
    assert.equal(wrong.headers.get("allow"), "GET, PUT, DELETE, HEAD, OPTIONS");

    const key = await api("POST", "/ssh_keys", {
      name: "k",
      public_key: randomPublicKey(),
      labels: { a: "b" },
    });
    assert.match(
      errorOf(await api("PUT", `/ssh_keys/${key.body.ssh_key.id}`, { labels: null }), 422, "invalid_input"),
      /labels/,
    );
    assert.deepEqual((await api("GET", `/ssh_keys/${key.body.ssh_key.id}`)).body.ssh_key.labels, { a: "b" });
    await remove(`/ssh_keys/${key.body.ssh_key.id}`);
  });

  it("rebuild keeps id, name and addresses and replaces the image; change_dns_ptr; backups", async () => {
    const s = await server("rebuild-me");
    const ip = s.public_net.ipv4.ip as string;
    await done(
      await api("POST", `/servers/${s.id}/actions/change_protection`, { delete: true, rebuild: true }),
    );
    errorOf(await api("POST", `/servers/${s.id}/actions/rebuild`, { image: "debian-12" }), 423, "protected");
    await done(
      await api("POST", `/servers/${s.id}/actions/change_protection`, { delete: false, rebuild: false }),
    );
    const rebuild = await api("POST", `/servers/${s.id}/actions/rebuild`, { image: "debian-12" });
    assert.equal(rebuild.status, 201);
    assert.equal(
      typeof rebuild.body.root_password,
      "string",
      "a system image without keys: a new root password",
    );
    assert.equal((await api("GET", `/servers/${s.id}`)).body.server.status, "rebuilding");
    await done(rebuild);
    const after = (await api("GET", `/servers/${s.id}`)).body.server;
    assert.equal(after.status, "running", "it ran before, so it boots again");
    assert.equal(after.image.name, "debian-12");
    assert.equal(after.public_net.ipv4.ip, ip);
    assert.equal(after.name, "rebuild-me");

    errorOf(
      await api("POST", `/servers/${s.id}/actions/change_dns_ptr`, { ip: "127.1.1.1", dns_ptr: "a.example" }),
      422,
      "invalid_input",
    );
    await done(
      await api("POST", `/servers/${s.id}/actions/change_dns_ptr`, { ip, dns_ptr: "web.example.com" }),
    );
    assert.equal(
      (await api("GET", `/servers/${s.id}`)).body.server.public_net.ipv4.dns_ptr,
      "web.example.com",
    );
    const v6 = (s.public_net.ipv6.ip as string).replace("::/64", "::1");
    await done(
      await api("POST", `/servers/${s.id}/actions/change_dns_ptr`, { ip: v6, dns_ptr: "v6.example.com" }),
    );
    assert.deepEqual((await api("GET", `/servers/${s.id}`)).body.server.public_net.ipv6.dns_ptr, [
      { ip: v6, dns_ptr: "v6.example.com" },
    ]);
    await done(await api("POST", `/servers/${s.id}/actions/change_dns_ptr`, { ip, dns_ptr: null }));
    assert.match(
      (await api("GET", `/servers/${s.id}`)).body.server.public_net.ipv4.dns_ptr,
      /clients\.your-server\.de$/,
    );

    await done(await api("POST", `/servers/${s.id}/actions/enable_backup`));
    assert.equal((await api("GET", `/servers/${s.id}`)).body.server.backup_window, "22-02");
    const backup = await api("POST", `/servers/${s.id}/actions/create_image`, { type: "backup" });
    await done(backup);
    await done(await api("POST", `/servers/${s.id}/actions/disable_backup`));
    assert.equal((await api("GET", `/servers/${s.id}`)).body.server.backup_window, null);
    errorOf(await api("GET", `/images/${backup.body.image.id}`), 404, "not_found");
    await remove(`/servers/${s.id}`);
  });

  it("firewalls: rules checked, applied to servers and label selectors, in use until removed", async () => {
    const bad = await api("POST", "/firewalls", {
      name: "fw",
      rules: [{ direction: "in", protocol: "tcp", source_ips: ["0.0.0.0/0"] }],
    });
    assert.match(errorOf(bad, 422, "invalid_input"), /port is required/);
    const s = await server("fw-target", { labels: { role: "web" } });
    const fw = await api("POST", "/firewalls", {
      name: "fw",
      labels: { env: "test" },
      rules: [{ direction: "in", protocol: "tcp", port: "22", source_ips: ["0.0.0.0/0", "::/0"] }],
      apply_to: [{ type: "label_selector", label_selector: { selector: "role=web" } }],
    });
    assert.equal(fw.status, 201, JSON.stringify(fw.body));
    await done(fw);
    const id = fw.body.firewall.id as number;
    assert.deepEqual(fw.body.firewall.applied_to[0].applied_to_resources, [
      { type: "server", server: { id: s.id } },
    ]);
    assert.deepEqual((await api("GET", `/servers/${s.id}`)).body.server.public_net.firewalls, [
      { id, status: "applied" },
    ]);
    errorOf(
      await api("POST", `/firewalls/${id}/actions/apply_to_resources`, {
        apply_to: [{ type: "label_selector", label_selector: { selector: "role=web" } }],
      }),
      422,
      "firewall_already_applied",
    );
    const rules = await api("POST", `/firewalls/${id}/actions/set_rules`, {
      rules: [{ direction: "out", protocol: "icmp", destination_ips: ["10.0.0.0/8"] }],
    });
    await done(rules);
    assert.equal(
      (await api("GET", `/firewalls?label_selector=env%3Dtest`)).body.firewalls[0].rules[0].protocol,
      "icmp",
    );
    const actions = (rules.body.actions as Json[]).map((a) => a.id).join("&id=");
    assert.equal(
      (await api("GET", `/firewalls/actions?id=${actions}`)).body.actions.length,
      rules.body.actions.length,
    );
    errorOf(await api("DELETE", `/firewalls/${id}`), 422, "resource_in_use");
    errorOf(
      await api("POST", `/firewalls/${id}/actions/remove_from_resources`, {
        remove_from: [{ type: "server", server: { id: s.id } }],
      }),
      422,
      "firewall_managed_by_label_selector",
    );
    await done(
      await api("POST", `/firewalls/${id}/actions/remove_from_resources`, {
        remove_from: [{ type: "label_selector", label_selector: { selector: "role=web" } }],
      }),
    );
    assert.deepEqual((await api("GET", `/servers/${s.id}`)).body.server.public_net.firewalls, []);
    await remove(`/firewalls/${id}`);
    await remove(`/servers/${s.id}`);
  });

  it("primary IPs: from the loopback pool, assigned only to servers that are off, kept or deleted with the server", async () => {
    errorOf(
      await api("POST", "/primary_ips", {
        name: "dc",
        type: "ipv4",
        assignee_type: "server",
        datacenter: "fsn1-dc14",
      }),
      422,
      "invalid_input",
    );
    const ip = await api("POST", "/primary_ips", {
      name: "keep",
      type: "ipv4",
      assignee_type: "server",
      location: "fsn1",
    });
    assert.equal(ip.status, 201, JSON.stringify(ip.body));
    const p = ip.body.primary_ip as Json;
    assert.match(p.ip, /^127\.77\.42\.\d+$/);
    const s = await server("pinned", { public_net: { ipv4: p.id, enable_ipv6: false } });
    assert.equal(s.public_net.ipv4.ip, p.ip);
    assert.equal(s.public_net.ipv6, null);
    errorOf(await api("POST", `/primary_ips/${p.id}/actions/unassign`), 422, "server_not_stopped");
    errorOf(await api("DELETE", `/primary_ips/${p.id}`), 422, "must_be_unassigned");
    const other = await server("other");
    const auto = other.public_net.ipv4.id as number;
    assert.equal((await api("GET", `/primary_ips/${auto}`)).body.primary_ip.auto_delete, true);
    await done(await api("POST", `/servers/${s.id}/actions/poweroff`));
    await done(await api("POST", `/primary_ips/${p.id}/actions/unassign`));
    assert.equal((await api("GET", `/servers/${s.id}`)).body.server.public_net.ipv4, null);
    await done(
      await api("POST", `/primary_ips/${p.id}/actions/assign`, {
        assignee_id: s.id,
        assignee_type: "server",
      }),
    );
    await remove(`/servers/${s.id}`);
    await remove(`/servers/${other.id}`);
    errorOf(await api("GET", `/primary_ips/${auto}`), 404, "not_found");
    const kept = (await api("GET", `/primary_ips/${p.id}`)).body.primary_ip;
    assert.equal(kept.assignee_id, null, "kept (auto_delete off), unassigned");
    await remove(`/primary_ips/${p.id}`);
  });

  it("networks: subnets, attach at create and by action, the metadata service's private-networks", async () => {
    const net = await api("POST", "/networks", {
      name: "net",
      ip_range: "10.0.0.0/16",
      subnets: [{ type: "cloud", network_zone: "eu-central", ip_range: "10.0.1.0/24" }],
    });
    assert.equal(net.status, 201, JSON.stringify(net.body));
    const nid = net.body.network.id as number;
    errorOf(await api("POST", "/networks", { name: "pub", ip_range: "8.8.0.0/16" }), 422, "invalid_input");
    const a = await server("net-a", { networks: [nid] });
    assert.deepEqual(
      (a.private_net as Json[]).map((p) => [p.network, p.ip]),
      [[nid, "10.0.1.1"]],
    );
    const b = await server("net-b");
    errorOf(
      await api("POST", `/servers/${b.id}/actions/attach_to_network`, { network: nid, ip: "10.0.1.1" }),
      422,
      "ip_not_available",
    );
    await done(
      await api("POST", `/servers/${b.id}/actions/attach_to_network`, {
        network: nid,
        ip: "10.0.1.7",
        alias_ips: ["10.0.1.8"],
      }),
    );
    errorOf(
      await api("POST", `/servers/${b.id}/actions/attach_to_network`, { network: nid }),
      422,
      "server_already_attached",
    );
    assert.deepEqual((await api("GET", `/networks/${nid}`)).body.network.servers, [a.id, b.id]);

    const text = await (await fetch(`${t.emulator.metadataUrl(b.id)}metadata/private-networks`)).text();
    const parsed = parsePrivateNetworks(text);
    assert.deepEqual(parsed, [
      {
        ip: "10.0.1.7",
        aliasIps: ["10.0.1.8"],
        interfaceNum: 1,
        macAddress: (await api("GET", `/servers/${b.id}`)).body.server.private_net[0].mac_address,
        networkId: nid,
        networkName: "net",
        network: "10.0.0.0/16",
        subnet: "10.0.1.0/24",
        gateway: "10.0.0.1",
      },
    ]);
    await done(
      await api("POST", `/servers/${b.id}/actions/change_alias_ips`, {
        network: nid,
        alias_ips: ["10.0.1.9"],
      }),
    );
    assert.deepEqual((await api("GET", `/servers/${b.id}`)).body.server.private_net[0].alias_ips, [
      "10.0.1.9",
    ]);
    errorOf(
      await api("POST", `/networks/${nid}/actions/delete_subnet`, { ip_range: "10.0.1.0/24" }),
      422,
      "resource_in_use",
    );
    await done(await api("POST", `/servers/${b.id}/actions/detach_from_network`, { network: nid }));
    assert.equal(
      await (await fetch(`${t.emulator.metadataUrl(b.id)}metadata/private-networks`)).text(),
      "[]\n",
    );
    await done(
      await api("POST", `/networks/${nid}/actions/add_route`, {
        destination: "10.100.1.0/24",
        gateway: "10.0.1.1",
      }),
    );
    await remove(`/networks/${nid}`);
    assert.deepEqual((await api("GET", `/servers/${a.id}`)).body.server.private_net, [], "deleting detaches");
    await remove(`/servers/${a.id}`);
    await remove(`/servers/${b.id}`);
  });

  it("volumes: a sparse file per volume, formatted, attached in the same location, grown, deleted", async () => {
    const s = await server("vol-host");
    errorOf(await api("POST", "/volumes", { name: "v", size: 5, location: "fsn1" }), 422, "invalid_input");
    const v = await api("POST", "/volumes", {
      name: "v",
      size: 10,
      server: s.id,
      format: "ext4",
      labels: { a: "b" },
    });
    assert.equal(v.status, 201, JSON.stringify(v.body));
    await done(v);
    const id = v.body.volume.id as number;
    const file = join(t.stateDir, "disks", `volume-${id}.img`);
    assert.equal(statSync(file).size, 10 * 2 ** 30);
    assert.ok(statSync(file).blocks * 512 < 64 * 2 ** 20, "sparse: a fresh ext4 allocates little");
    assert.equal((await readAt(file, 1080, 2)).readUInt16LE(), 0xef53, "ext4 superblock magic");
    assert.deepEqual((await api("GET", `/servers/${s.id}`)).body.server.volumes, [id]);
    errorOf(await api("DELETE", `/volumes/${id}`), 422, "resource_in_use");
    await done(await api("POST", `/volumes/${id}/actions/detach`));
    const far = await server("vol-far", { location: "hel1" });
    errorOf(await api("POST", `/volumes/${id}/actions/attach`, { server: far.id }), 422, "invalid_input");
    await done(await api("POST", `/volumes/${id}/actions/resize`, { size: 12 }));
    assert.equal(statSync(file).size, 12 * 2 ** 30);
    await remove(`/volumes/${id}`);
    assert.equal(existsSync(file), false, "the volume's file is gone");
    await remove(`/servers/${s.id}`);
    await remove(`/servers/${far.id}`);
  });

  it("placement groups: spread up to 10 servers, join only when off, in use while not empty", async () => {
    const g = await api("POST", "/placement_groups", { name: "spread", type: "spread" });
    assert.equal(g.status, 201, JSON.stringify(g.body));
    const gid = g.body.placement_group.id as number;
    const members: Json[] = [];
    for (let i = 0; i < 10; i++)
      members.push(await server(`pg-${i}`, { placement_group: gid, start_after_create: false }));
    assert.equal((await api("GET", `/servers/${members[0]?.id}`)).body.server.placement_group.id, gid);
    const eleventh = await api("POST", "/servers", {
      name: "pg-10",
      server_type: "cx23",
      image: "ubuntu-24.04",
      placement_group: gid,
    });
    errorOf(eleventh, 422, "placement_error");
    errorOf(await api("DELETE", `/placement_groups/${gid}`), 422, "resource_in_use");
    const outsider = await server("pg-out");
    errorOf(
      await api("POST", `/servers/${outsider.id}/actions/add_to_placement_group`, { placement_group: gid }),
      422,
      "server_not_stopped",
    );
    for (const m of members) await remove(`/servers/${m.id}`);
    await remove(`/servers/${outsider.id}`);
    await remove(`/placement_groups/${gid}`);
  });

  it("every answer matched the OpenAPI document", () => {
    assert.deepEqual(checker.violations, [], checker.report(100));
  });
});

describe("persistence of the new resources", () => {
  it("firewalls, networks, volumes, primary IPs and placement groups survive a restart; older state.json loads", async () => {
    const first = await startTestEmulator({ ipPrefix: "127.77.43.", speed: 200 });
    const stateDir = first.stateDir;
    let second: TestEmulator | undefined;
    try {
      await first.api("POST", "/firewalls", { name: "fw" });
      await first.api("POST", "/networks", { name: "n", ip_range: "10.0.0.0/16" });
      await first.api("POST", "/placement_groups", { name: "g", type: "spread" });
      const ip = await first.api<Json>("POST", "/primary_ips", {
        name: "ip",
        type: "ipv4",
        assignee_type: "server",
        location: "fsn1",
      });
      const v = await first.api<Json>("POST", "/volumes", { name: "v", size: 10, location: "fsn1" });
      await first.waitActions([v.body.action.id as number]);
      await first.emulator.stop();
      second = await startTestEmulator({ ipPrefix: "127.77.43.", speed: 200, stateDir });
      for (const c of ["firewalls", "networks", "placement_groups", "primary_ips", "volumes"])
        assert.equal((await second.api<Json>("GET", `/${c}`)).body[c].length, 1, c);
      assert.equal(
        (await second.api<Json>("GET", `/primary_ips/${ip.body.primary_ip.id}`)).body.primary_ip.ip,
        ip.body.primary_ip.ip,
      );
      await second.emulator.stop();

      // state.json of an emulator from before: no new maps, servers without primary IP ids or private_net.
      const old = JSON.parse(readFileSync(join(stateDir, "state.json"), "utf8")) as Json;
      old.servers = [
        {
          id: 60000009,
          name: "old",
          status: "off",
          created: "2026-01-01T00:00:00Z",
          serverType: "cx23",
          location: "fsn1",
          imageId: 161547269,
          labels: {},
          protection: { delete: false, rebuild: false },
          rescueEnabled: false,
          rescueKeys: [],
          rescueConsumed: false,
          inRescue: false,
          ipv4: "127.77.43.200",
          ipv6: "2001:db8:0:99::/64",
          macAddress: "96:00:03:93:87:09",
          publicKeys: [],
          userData: null,
          disk: "disks/server-60000009.img",
          primaryDiskSize: 40,
          offAt: null,
        },
      ];
      for (const k of ["firewalls", "networks", "placementGroups", "primaryIps", "volumes"]) delete old[k];
      writeFileSync(join(stateDir, "state.json"), JSON.stringify(old));
      second = await startTestEmulator({ ipPrefix: "127.77.43.", speed: 200, stateDir });
      const s = (await second.api<Json>("GET", "/servers/60000009")).body.server;
      assert.equal(s.public_net.ipv4.ip, "127.77.43.200");
      assert.deepEqual(s.private_net, []);
      const ips = (await second.api<Json>("GET", "/primary_ips")).body.primary_ips as Json[];
      assert.deepEqual(
        ips.map((p) => [p.ip, p.assignee_id, p.auto_delete]),
        [
          ["127.77.43.200", 60000009, true],
          ["2001:db8:0:99::/64", 60000009, true],
        ],
      );
      assert.equal((await second.api<Json>("GET", "/firewalls")).body.firewalls.length, 0);
    } finally {
      await second?.close();
      await first.close();
    }
  });
});
