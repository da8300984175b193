/**
 * The agent's pure part: Hetzner metadata documents (written here by hand, in Hetzner's format) -> planned files,
 * checked line by line; plus the emulator's rendering of the same documents.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parse } from "yaml";
import {
  MetadataError,
  decideLinkStep,
  parseDuration,
  parseIpAddr,
  parseMetadata,
  parsePrivateNetworks,
  planFiles,
  randomLinkLocal,
  UNIT_HEADER,
  type Plan,
} from "../src/metadata/index.js";
import { renderMetadata, serverIpv6Address, type MetadataInfo } from "../src/emulator/metadata.js";

const DUAL_STACK = `availability-zone: fsn1-dc14
hostname: web-1
instance-id: 4711
local-ipv4: ''
network-config:
  config:
  - mac_address: 96:00:00:aa:bb:cc
    name: eth0
    subnets:
    - ipv4: true
      type: dhcp
    - address: 2a01:4f8:c012:1234::1/64
      dns_nameservers:
      - 2a01:4ff:ff00::add:1
      - 2a01:4ff:ff00::add:2
      gateway: fe80::1
      ipv6: true
      type: static
    type: physical
  version: 1
public-ipv4: 203.0.113.7
public-keys:
- ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFirstKeyxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx alice@laptop
- ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQSecondKey bob@desk
region: eu-central
vendor_data: "#cloud-config\\n"
`;

const IPV6_ONLY = `availability-zone: hel1-dc2
hostname: v6only
instance-id: 12
local-ipv4: ''
network-config:
  config:
  - mac_address: 96:00:00:00:00:01
    name: eth0
    subnets:
    - address: 2001:db8:0:5::1/64
      dns_nameservers:
      - 2a01:4ff:ff00::add:1
      - 2a01:4ff:ff00::add:2
      gateway: fe80::1
      ipv6: true
      type: static
    type: physical
  version: 1
public-ipv4: ''
public-keys:
- ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnlyKey root@ci
region: eu-central
`;

const IPV4_ONLY_NO_KEYS = `availability-zone: nbg1-dc3
hostname: v4only.example.com
instance-id: 13
local-ipv4: ''
network-config:
  config:
  - mac_address: 96:00:00:00:00:02
    name: eth0
    subnets:
    - ipv4: true
      type: dhcp
    type: physical
  version: 1
public-ipv4: 198.51.100.20
public-keys: []
region: eu-central
`;

const TWO_PRIVATE_NETWORKS = `- ip: 10.0.0.2
  alias_ips: []
  interface_num: 1
  mac_address: 86:00:00:2a:7d:e0
  network_id: 1234
  network_name: backend
  network: 10.0.0.0/16
  subnet: 10.0.0.0/24
  gateway: 10.0.0.1
- ip: 192.168.7.5
  alias_ips:
  - 192.168.7.6
  interface_num: 2
  mac_address: 86:00:00:2a:7d:e1
  network_id: 99
  network_name: storage
  network: 192.168.0.0/16
  subnet: 192.168.7.0/24
  gateway: 192.168.0.1
`;

function text(plan: Plan, path: string): string[] {
  const file = plan.files.find((f) => f.path === path);
  assert.ok(file, `plan has ${path}; it has ${plan.files.map((f) => f.path).join(", ")}`);
  return file.content.toString().split("\n");
}

/** The unit's lines after the header comments. */
function body(plan: Plan, path: string): string[] {
  const lines = text(plan, path);
  assert.equal(lines[0], UNIT_HEADER);
  return lines.filter((l) => !l.startsWith("#"));
}

function expectError(fn: () => unknown, code: string, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof MetadataError, `a MetadataError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(err.message, pattern);
    return true;
  });
}

describe("parse + plan: documents of every shape", () => {
  it("dual stack: DHCP for IPv4, the static IPv6 with gateway fe80::1 and the DNS servers, matched by MAC", () => {
    const plan = planFiles({ metadata: parseMetadata(DUAL_STACK), privateNetworks: [] });
    assert.deepEqual(
      plan.files.map((f) => [f.kind, f.path, f.mode.toString(8)]),
      [
        ["network-public", "run/systemd/network/50-hetznix-public-960000aabbcc.network", "644"],
        ["hostname", "etc/hostname", "644"],
        ["ssh-keys", "var/lib/hetznix/authorized_keys.d/root", "644"],
      ],
    );
    assert.deepEqual(body(plan, "run/systemd/network/50-hetznix-public-960000aabbcc.network"), [
      "[Match]",
      "MACAddress=96:00:00:aa:bb:cc",
      "",
      "[Network]",
      "DHCP=ipv4",
      "Address=2a01:4f8:c012:1234::1/64",
      "Gateway=fe80::1",
      "DNS=2a01:4ff:ff00::add:1",
      "DNS=2a01:4ff:ff00::add:2",
      "",
    ]);
    assert.deepEqual(text(plan, "etc/hostname"), ["web-1", ""]);
    const keys = text(plan, "var/lib/hetznix/authorized_keys.d/root");
    assert.deepEqual(
      keys.filter((l) => !l.startsWith("#")),
      [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFirstKeyxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx alice@laptop",
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQSecondKey bob@desk",
        "",
      ],
    );
  });

  it("IPv6-only: no DHCP, public-ipv4 '' is read as none", () => {
    const metadata = parseMetadata(IPV6_ONLY);
    assert.equal(metadata.publicIpv4, null);
    const plan = planFiles({ metadata, privateNetworks: [] });
    assert.deepEqual(body(plan, "run/systemd/network/50-hetznix-public-960000000001.network"), [
      "[Match]",
      "MACAddress=96:00:00:00:00:01",
      "",
      "[Network]",
      "DHCP=no",
      "Address=2001:db8:0:5::1/64",
      "Gateway=fe80::1",
      "DNS=2a01:4ff:ff00::add:1",
      "DNS=2a01:4ff:ff00::add:2",
      "",
    ]);
  });

  it("IPv4-only with no keys: DHCP only; the key file holds only comments", () => {
    const plan = planFiles({ metadata: parseMetadata(IPV4_ONLY_NO_KEYS), privateNetworks: [] });
    assert.deepEqual(body(plan, "run/systemd/network/50-hetznix-public-960000000002.network"), [
      "[Match]",
      "MACAddress=96:00:00:00:00:02",
      "",
      "[Network]",
      "DHCP=ipv4",
      "",
    ]);
    assert.deepEqual(text(plan, "etc/hostname"), ["v4only.example.com", ""]);
    const keys = text(plan, "var/lib/hetznix/authorized_keys.d/root");
    assert.ok(keys.length > 1);
    assert.ok(keys.every((l) => l === "" || l.startsWith("#")));
  });

  it("several private networks: one DHCP unit each, matched by its MAC, in interface order", () => {
    const privateNetworks = parsePrivateNetworks(TWO_PRIVATE_NETWORKS);
    assert.deepEqual(
      privateNetworks.map((n) => [n.macAddress, n.networkId, n.aliasIps]),
      [
        ["86:00:00:2a:7d:e0", 1234, []],
        ["86:00:00:2a:7d:e1", 99, ["192.168.7.6"]],
      ],
    );
    const plan = planFiles({
      metadata: parseMetadata(DUAL_STACK),
      privateNetworks: [...privateNetworks].reverse(),
    });
    const units = plan.files.filter((f) => f.kind === "network-private").map((f) => f.path);
    assert.deepEqual(units, [
      "run/systemd/network/50-hetznix-private-8600002a7de0.network",
      "run/systemd/network/50-hetznix-private-8600002a7de1.network",
    ]);
    for (const [path, macAddress] of [
      [units[0], "86:00:00:2a:7d:e0"],
      [units[1], "86:00:00:2a:7d:e1"],
    ] as const) {
      assert.deepEqual(body(plan, path ?? ""), [
        "[Match]",
        `MACAddress=${macAddress}`,
        "",
        "[Network]",
        "DHCP=ipv4",
        "",
      ]);
    }
  });

  it("a static IPv4 subnet gets an on-link route to its gateway; netmask form is understood", () => {
    const doc = DUAL_STACK.replace(
      "    - ipv4: true\n      type: dhcp\n",
      "    - address: 203.0.113.7\n      netmask: 255.255.255.255\n      gateway: 172.31.1.1\n      type: static\n",
    );
    const plan = planFiles({ metadata: parseMetadata(doc), privateNetworks: [] });
    assert.deepEqual(body(plan, "run/systemd/network/50-hetznix-public-960000aabbcc.network"), [
      "[Match]",
      "MACAddress=96:00:00:aa:bb:cc",
      "",
      "[Network]",
      "DHCP=no",
      "Address=203.0.113.7/32",
      "Address=2a01:4f8:c012:1234::1/64",
      "Gateway=fe80::1",
      "DNS=2a01:4ff:ff00::add:1",
      "DNS=2a01:4ff:ff00::add:2",
      "",
      "[Route]",
      "Gateway=172.31.1.1",
      "GatewayOnLink=yes",
      "",
    ]);
  });

  it("user data is planned only when a path is given, mode 0600, under the root", () => {
    const metadata = parseMetadata(DUAL_STACK);
    const without = planFiles({ metadata, privateNetworks: [], userData: Buffer.from("x") });
    assert.equal(
      without.files.some((f) => f.kind === "userdata"),
      false,
    );
    const data = Buffer.from("#cloud-config\nruncmd: [true]\n");
    const withData = planFiles({
      metadata,
      privateNetworks: [],
      userData: data,
      userDataPath: "/run/hetznix/userdata",
    });
    const file = withData.files.find((f) => f.kind === "userdata");
    assert.equal(file?.path, "run/hetznix/userdata");
    assert.equal(file?.mode, 0o600);
    assert.ok(Buffer.isBuffer(file?.content) && file.content.equals(data));
    expectError(
      () => planFiles({ metadata, privateNetworks: [], userDataPath: "../etc/x" }),
      "usage",
      /user data/,
    );
  });

  it("an interface name that is not a plain name never reaches the unit", () => {
    const metadata = parseMetadata(
      DUAL_STACK.replace("name: eth0", 'name: "eth0\\n[Network]\\nDNS=192.0.2.66"'),
    );
    assert.equal(metadata.interfaces[0]?.name, "eth0");
    assert.match(metadata.warnings[0] ?? "", /replaced the interface name/);
    const unit = planFiles({ metadata, privateNetworks: [] }).files[0]?.content.toString() ?? "";
    assert.ok(!unit.includes("192.0.2.66"));
  });

  it("without the host name when the configuration sets it", () => {
    const plan = planFiles({ metadata: parseMetadata(DUAL_STACK), privateNetworks: [], hostname: false });
    assert.ok(!plan.files.some((f) => f.kind === "hostname"));
  });

  it("skips network-config entries it does not handle, with a warning", () => {
    const doc = DUAL_STACK.replace(
      "  version: 1\n",
      "  - type: nameserver\n    address: [1.1.1.1]\n  version: 1\n",
    );
    const metadata = parseMetadata(doc);
    assert.equal(metadata.interfaces.length, 1);
    assert.equal(metadata.warnings.length, 1);
    assert.match(metadata.warnings[0] ?? "", /nameserver/);
  });
});

describe("parse: failure modes are clear errors", () => {
  it("malformed YAML", () => {
    expectError(
      () => parseMetadata("hostname: [unclosed\n  - : :"),
      "malformed",
      /malformed metadata: not valid YAML/,
    );
    expectError(
      () => parsePrivateNetworks("- ip: 10.0.0.2\n  bad: [\n"),
      "malformed",
      /private-networks.*YAML/,
    );
  });
  it("valid YAML of the wrong shape", () => {
    expectError(() => parseMetadata("- just\n- a list\n"), "malformed", /expected a mapping/);
    expectError(
      () => parseMetadata(DUAL_STACK.replace("hostname: web-1", "hostname: 'bad host\\n'")),
      "malformed",
      /hostname/,
    );
    expectError(
      () => parseMetadata(DUAL_STACK.replace("instance-id: 4711", "instance-id: x")),
      "malformed",
      /instance-id/,
    );
    expectError(
      () => parseMetadata(DUAL_STACK.replace("96:00:00:aa:bb:cc", "not-a-mac")),
      "malformed",
      /mac_address/,
    );
    expectError(
      () => parseMetadata(DUAL_STACK.replace("2a01:4f8:c012:1234::1/64", "2a01:4f8:c012:1234::1")),
      "malformed",
      /CIDR/,
    );
    expectError(
      () => parseMetadata(DUAL_STACK.replace("  version: 1", "  version: 2")),
      "malformed",
      /version 1/,
    );
    expectError(() => parsePrivateNetworks("ip: 1\n"), "malformed", /expected a list/);
  });
  it("a key spanning lines is refused (it could smuggle options into authorized_keys)", () => {
    const doc = DUAL_STACK.replace(
      "- ssh-rsa AAAAB3",
      '- "ssh-rsa x\\ncommand=\\"sh\\" AAAAB3"\n- ssh-rsa AAAAB3',
    );
    expectError(() => parseMetadata(doc), "malformed", /public-keys/);
  });
  it("the same MAC for a public and a private interface", () => {
    const metadata = parseMetadata(DUAL_STACK);
    const privateNetworks = parsePrivateNetworks(
      TWO_PRIVATE_NETWORKS.replace("86:00:00:2a:7d:e0", "96:00:00:aa:bb:cc"),
    );
    expectError(() => planFiles({ metadata, privateNetworks }), "malformed", /listed twice/);
  });
  it("empty private-networks text means none", () => {
    assert.deepEqual(parsePrivateNetworks(""), []);
    assert.deepEqual(parsePrivateNetworks("[]\n"), []);
  });
});

describe("durations and the link decision", () => {
  it("parses durations", () => {
    assert.equal(parseDuration("500ms"), 500);
    assert.equal(parseDuration("30s"), 30_000);
    assert.equal(parseDuration("2m"), 120_000);
    assert.equal(parseDuration("45"), 45_000);
    expectError(() => parseDuration("soon"), "usage", /invalid duration/);
    expectError(() => parseDuration("0s"), "usage", /greater than zero/);
  });

  const ipJson = (links: { name: string; flags: string[]; type: string; inet?: string }[]): string =>
    JSON.stringify(
      links.map((l, i) => ({
        ifindex: i + 1,
        ifname: l.name,
        flags: l.flags,
        link_type: l.type,
        addr_info: l.inet
          ? [{ family: "inet", local: l.inet.split("/")[0], prefixlen: Number(l.inet.split("/")[1]) }]
          : [],
      })),
    );

  it("leaves links alone when one is up with an IPv4 address", () => {
    const links = parseIpAddr(
      ipJson([
        { name: "lo", flags: ["LOOPBACK", "UP"], type: "loopback", inet: "127.0.0.1/8" },
        { name: "enp1s0", flags: ["BROADCAST", "UP"], type: "ether", inet: "203.0.113.7/32" },
      ]),
    );
    assert.deepEqual(decideLinkStep(links), { kind: "ready", link: "enp1s0" });
  });

  it("brings up the first Ethernet link when none is usable (loopback does not count)", () => {
    const links = parseIpAddr(
      ipJson([
        { name: "lo", flags: ["LOOPBACK", "UP"], type: "loopback", inet: "127.0.0.1/8" },
        { name: "enp1s0", flags: ["BROADCAST"], type: "ether" },
        { name: "enp7s0", flags: ["BROADCAST", "UP"], type: "ether" },
      ]),
    );
    assert.deepEqual(decideLinkStep(links, "169.254.3.4/16"), {
      kind: "bring-up",
      link: "enp1s0",
      wasUp: false,
      address: "169.254.3.4/16",
    });
    assert.deepEqual(
      decideLinkStep(
        links.filter((l) => l.name !== "enp1s0"),
        "169.254.3.4/16",
      ),
      {
        kind: "bring-up",
        link: "enp7s0",
        wasUp: true,
        address: "169.254.3.4/16",
      },
    );
    assert.deepEqual(decideLinkStep(links.filter((l) => l.loopback)), { kind: "none" });
  });

  it("never picks the metadata service's own block for the link-local address", () => {
    assert.equal(
      randomLinkLocal(() => 169),
      "169.254.170.169/16",
    );
    for (let i = 0; i < 200; i++)
      assert.match(randomLinkLocal(), /^169\.254\.(?!169\.)\d{1,3}\.\d{1,3}\/16$/);
  });
});

describe("emulator: renderMetadata", () => {
  const info: MetadataInfo = {
    id: 77,
    hostname: "app-3",
    publicIpv4: "203.0.113.9",
    ipv6Network: "2001:db8:0:5::/64",
    macAddress: "96:00:00:12:34:56",
    publicKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEmu test@emu"],
    userData: "#cloud-config\n",
    availabilityZone: "fsn1-dc14",
    region: "eu-central",
    privateNetworks: [
      {
        ip: "10.1.0.5",
        aliasIps: [],
        interfaceNum: 1,
        macAddress: "86:00:00:12:34:57",
        networkId: 5,
        networkName: "net",
        network: "10.1.0.0/16",
        subnet: "10.1.0.0/24",
        gateway: "10.1.0.1",
      },
    ],
  };

  it("serves the metadata document the agent reads back", () => {
    const response = renderMetadata(info, "metadata");
    assert.equal(response.status, 200);
    const metadata = parseMetadata(response.body);
    assert.equal(metadata.hostname, "app-3");
    assert.equal(metadata.instanceId, 77);
    assert.equal(metadata.publicIpv4, "203.0.113.9");
    assert.deepEqual(metadata.publicKeys, info.publicKeys);
    assert.deepEqual(metadata.interfaces, [
      {
        name: "eth0",
        macAddress: "96:00:00:12:34:56",
        subnets: [
          { method: "dhcp", family: 4, address: null, gateway: null, dnsNameservers: [] },
          {
            method: "static",
            family: 6,
            address: "2001:db8:0:5::1/64",
            gateway: "fe80::1",
            dnsNameservers: ["2a01:4ff:ff00::add:1", "2a01:4ff:ff00::add:2"],
          },
        ],
      },
    ]);
  });

  it("serves the plain-text, JSON and YAML sub-paths, and 404 for unknown ones", () => {
    assert.equal(renderMetadata(info, "metadata/hostname").body, "app-3");
    assert.equal(renderMetadata(info, "/metadata/instance-id/").body, "77");
    assert.equal(renderMetadata(info, "metadata/public-ipv4").body, "203.0.113.9");
    assert.equal(renderMetadata(info, "metadata/availability-zone").body, "fsn1-dc14");
    assert.equal(renderMetadata(info, "metadata/region").body, "eu-central");
    const keys = renderMetadata(info, "metadata/public-keys");
    assert.equal(keys.contentType, "application/json");
    assert.deepEqual(JSON.parse(keys.body), info.publicKeys);
    const networks = parsePrivateNetworks(renderMetadata(info, "metadata/private-networks").body);
    assert.deepEqual(networks, info.privateNetworks);
    assert.deepEqual(
      parse(renderMetadata(info, "metadata/network-config").body),
      parse(renderMetadata(info, "metadata").body)["network-config"],
    );
    assert.equal(renderMetadata(info, "userdata").body, "#cloud-config\n");
    assert.equal(renderMetadata(info, "metadata/nope").status, 404);
  });

  it("IPv4-only and IPv6-only servers get only their subnet", () => {
    const v4 = parseMetadata(renderMetadata({ ...info, ipv6Network: null }, "metadata").body);
    assert.deepEqual(
      v4.interfaces[0]?.subnets.map((s) => `${s.method}${s.family}`),
      ["dhcp4"],
    );
    const v6 = parseMetadata(renderMetadata({ ...info, publicIpv4: null }, "metadata").body);
    assert.equal(v6.publicIpv4, null);
    assert.deepEqual(
      v6.interfaces[0]?.subnets.map((s) => `${s.method}${s.family}`),
      ["static6"],
    );
    assert.equal(renderMetadata({ ...info, publicIpv4: null }, "metadata/public-ipv4").body, "");
  });

  it("the server's IPv6 address is its /64's ::1", () => {
    assert.equal(serverIpv6Address("2001:db8::/64"), "2001:db8::1/64");
    assert.equal(serverIpv6Address("2a01:4f8:c012:1234::/64"), "2a01:4f8:c012:1234::1/64");
    assert.equal(serverIpv6Address("2001:db8:1:2:3:4::/96"), "2001:db8:1:2:3:4:0:1/96");
  });
});
