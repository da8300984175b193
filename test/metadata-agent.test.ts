/**
 * The agent end to end against a real HTTP metadata service on 127.0.0.1 (serving documents in Hetzner's format,
 * some written here by hand, some rendered by the emulator's renderMetadata), writing into a temporary root.
 */
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { lstat, mkdtemp, mkdir, readFile, readdir, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { applyMetadata, MetadataError, planFromService, UNIT_HEADER } from "../src/metadata/index.js";
import { renderMetadata, type MetadataInfo } from "../src/emulator/metadata.js";

const exec = promisify(execFile);

const INFO: MetadataInfo = {
  id: 4711,
  hostname: "web-1",
  publicIpv4: "203.0.113.7",
  ipv6Network: "2a01:4f8:c012:1234::/64",
  macAddress: "96:00:00:aa:bb:cc",
  publicKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyOne alice@laptop"],
  userData: "#cloud-config\nhostname: ignored\n",
  availabilityZone: "fsn1-dc14",
  region: "eu-central",
  privateNetworks: [
    {
      ip: "10.0.0.2",
      aliasIps: [],
      interfaceNum: 1,
      macAddress: "86:00:00:2a:7d:e0",
      networkId: 1234,
      networkName: "backend",
      network: "10.0.0.0/16",
      subnet: "10.0.0.0/24",
      gateway: "10.0.0.1",
    },
    {
      ip: "10.9.0.2",
      aliasIps: [],
      interfaceNum: 2,
      macAddress: "86:00:00:2a:7d:e1",
      networkId: 99,
      networkName: "storage",
      network: "10.9.0.0/16",
      subnet: "10.9.0.0/24",
      gateway: "10.9.0.1",
    },
  ],
};

/** What the test service does: serve renderMetadata(info), or override paths, or fail the first N requests. */
interface ServiceBehaviour {
  info: MetadataInfo;
  overrides: Record<string, { status: number; body: string }>;
  failFirst: number;
}

let server: Server;
let baseUrl: string;
let behaviour: ServiceBehaviour;
let requests: string[] = [];
const roots: string[] = [];

async function newRoot(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "hetznix-metadata-"));
  roots.push(root);
  return root;
}

async function lines(root: string, path: string): Promise<string[]> {
  return (await readFile(join(root, path), "utf8")).split("\n");
}

async function mode(root: string, path: string): Promise<string> {
  return ((await stat(join(root, path))).mode & 0o777).toString(8);
}

async function expectFailure(promise: Promise<unknown>, code: string, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof MetadataError, `a MetadataError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(err.message, pattern);
    return true;
  });
}

const NET = "run/systemd/network";
const PUBLIC = `${NET}/50-hetznix-public-960000aabbcc.network`;
const PRIVATE_1 = `${NET}/50-hetznix-private-8600002a7de0.network`;
const PRIVATE_2 = `${NET}/50-hetznix-private-8600002a7de1.network`;
const KEYS = "var/lib/hetznix/authorized_keys.d/root";

before(async () => {
  server = createServer((req, res) => {
    const path = (req.url ?? "").replace(/^\/hetzner\/v1\//, "");
    requests.push(path);
    if (behaviour.failFirst > 0) {
      behaviour.failFirst--;
      res.writeHead(503, { "content-type": "text/plain" }).end("try later\n");
      return;
    }
    const override = behaviour.overrides[path];
    const response = override
      ? { status: override.status, contentType: "text/plain", body: override.body }
      : renderMetadata(behaviour.info, path);
    res.writeHead(response.status, { "content-type": response.contentType }).end(response.body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hetzner/v1/`;
});

after(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  for (const root of roots) await rm(root, { recursive: true, force: true });
});

beforeEach(() => {
  behaviour = { info: structuredClone(INFO), overrides: {}, failFirst: 0 };
  requests = [];
});

describe("metadata apply against a metadata service", () => {
  it("writes the networkd units, host name and root's keys, line by line", async () => {
    const root = await newRoot();
    const result = await applyMetadata({ metadataUrl: baseUrl, root, timeoutMs: 5000 });
    assert.deepEqual(result.written.sort(), [KEYS, "etc/hostname", PRIVATE_1, PRIVATE_2, PUBLIC].sort());
    assert.deepEqual(result.removed, []);
    assert.equal(result.link, null, "no link step for a loopback URL");
    assert.equal(result.liveHostname, null, "the live host name is only set with root /");
    assert.deepEqual(
      (await readdir(join(root, NET))).sort(),
      [PRIVATE_1, PRIVATE_2, PUBLIC].map((p) => p.slice(NET.length + 1)),
    );

    const pub = await lines(root, PUBLIC);
    assert.equal(pub[0], UNIT_HEADER);
    assert.deepEqual(
      pub.filter((l) => !l.startsWith("#")),
      [
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
      ],
    );
    for (const [path, mac] of [
      [PRIVATE_1, "86:00:00:2a:7d:e0"],
      [PRIVATE_2, "86:00:00:2a:7d:e1"],
    ] as const) {
      const unit = await lines(root, path);
      assert.equal(unit[0], UNIT_HEADER);
      assert.deepEqual(
        unit.filter((l) => !l.startsWith("#")),
        ["[Match]", `MACAddress=${mac}`, "", "[Network]", "DHCP=ipv4", ""],
      );
      assert.equal(await mode(root, path), "644");
    }
    assert.deepEqual(await lines(root, "etc/hostname"), ["web-1", ""]);
    assert.deepEqual(
      (await lines(root, KEYS)).filter((l) => !l.startsWith("#")),
      ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyOne alice@laptop", ""],
    );
    assert.ok(!requests.includes("userdata"), "user data is not fetched unless asked");
  });

  it("re-running gives the same files; keys a user added by hand survive", async () => {
    const root = await newRoot();
    const handKeys = join(root, "root/.ssh/authorized_keys");
    await mkdir(join(root, "root/.ssh"), { recursive: true });
    await writeFile(handKeys, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHand me@home\n");
    await applyMetadata({ metadataUrl: baseUrl, root, timeoutMs: 5000 });
    const first = await Promise.all(
      [PUBLIC, PRIVATE_1, PRIVATE_2, KEYS, "etc/hostname"].map((p) => readFile(join(root, p))),
    );
    const again = await applyMetadata({ metadataUrl: baseUrl, root, timeoutMs: 5000 });
    assert.deepEqual(again.written, []);
    assert.equal(again.unchanged.length, 5);
    const second = await Promise.all(
      [PUBLIC, PRIVATE_1, PRIVATE_2, KEYS, "etc/hostname"].map((p) => readFile(join(root, p))),
    );
    assert.deepEqual(second, first);
    assert.equal(await readFile(handKeys, "utf8"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHand me@home\n");
  });

  it("removes stale units it wrote, and only those", async () => {
    const root = await newRoot();
    await applyMetadata({ metadataUrl: baseUrl, root, timeoutMs: 5000 });
    // Someone else's files: same prefix without the header, and a different name.
    await writeFile(join(root, NET, "50-hetznix-mine.network"), "[Match]\nName=eth9\n");
    await writeFile(join(root, NET, "10-other.network"), `${UNIT_HEADER}\n[Match]\nName=eth8\n`);
    behaviour.info.privateNetworks = behaviour.info.privateNetworks.slice(0, 1);
    const shown = await planFromService({ metadataUrl: baseUrl, root, timeoutMs: 5000 });
    assert.deepEqual(shown.stale, [PRIVATE_2]);
    const result = await applyMetadata({ metadataUrl: baseUrl, root, timeoutMs: 5000 });
    assert.deepEqual(result.removed, [PRIVATE_2]);
    assert.deepEqual((await readdir(join(root, NET))).sort(), [
      "10-other.network",
      "50-hetznix-mine.network",
      "50-hetznix-private-8600002a7de0.network",
      "50-hetznix-public-960000aabbcc.network",
    ]);
  });

  it("IPv6-only, IPv4-only and key-less servers", async () => {
    const root = await newRoot();
    behaviour.info = { ...behaviour.info, publicIpv4: null, publicKeys: [], privateNetworks: [] };
    await applyMetadata({ metadataUrl: baseUrl, root, timeoutMs: 5000 });
    const v6 = (await lines(root, PUBLIC)).filter((l) => !l.startsWith("#"));
    assert.deepEqual(v6.slice(4, 6), ["DHCP=no", "Address=2a01:4f8:c012:1234::1/64"]);
    const keys = await lines(root, KEYS);
    assert.ok(
      keys.every((l) => l === "" || l.startsWith("#")),
      "no keys: only comments",
    );
    assert.deepEqual(await readdir(join(root, NET)), ["50-hetznix-public-960000aabbcc.network"]);

    behaviour.info = { ...INFO, ipv6Network: null };
    await applyMetadata({ metadataUrl: baseUrl, root, timeoutMs: 5000 });
    const v4 = (await lines(root, PUBLIC)).filter((l) => !l.startsWith("#"));
    assert.deepEqual(v4, ["[Match]", "MACAddress=96:00:00:aa:bb:cc", "", "[Network]", "DHCP=ipv4", ""]);
  });

  it("never replaces a symlink (a host name NixOS manages); --no-hostname leaves it out", async () => {
    const root = await newRoot();
    await mkdir(join(root, "etc/static"), { recursive: true });
    await writeFile(join(root, "etc/static/hostname"), "configured\n");
    await symlink("static/hostname", join(root, "etc/hostname"));
    const result = await applyMetadata({
      metadataUrl: baseUrl,
      root,
      timeoutMs: 5000,
      setLiveHostname: false,
    });
    assert.deepEqual(result.skipped, ["etc/hostname"]);
    assert.equal(await readFile(join(root, "etc/hostname"), "utf8"), "configured\n");
    assert.equal((await lstat(join(root, "etc/hostname"))).isSymbolicLink(), true);

    const other = await newRoot();
    const without = await applyMetadata({
      metadataUrl: baseUrl,
      root: other,
      timeoutMs: 5000,
      hostname: false,
    });
    assert.ok(!without.written.includes("etc/hostname"));
    await assert.rejects(stat(join(other, "etc/hostname")), /ENOENT/);
  });

  it("writes user data only when asked, mode 0600", async () => {
    const root = await newRoot();
    await applyMetadata({
      metadataUrl: baseUrl,
      root,
      timeoutMs: 5000,
      userDataPath: "/run/hetznix/userdata",
    });
    assert.ok(requests.includes("userdata"));
    assert.equal(await readFile(join(root, "run/hetznix/userdata"), "utf8"), INFO.userData);
    assert.equal(await mode(root, "run/hetznix/userdata"), "600");
  });

  it("retries a service that answers 503, within the timeout", async () => {
    const root = await newRoot();
    behaviour.failFirst = 3;
    const retries: number[] = [];
    await applyMetadata({
      metadataUrl: baseUrl,
      root,
      timeoutMs: 20_000,
      onRetry: (r) => retries.push(r.attempt),
    });
    assert.deepEqual(retries, [1, 2, 3]);
    assert.deepEqual(requests.slice(0, 4), ["metadata", "metadata", "metadata", "metadata"]);
    assert.deepEqual(await lines(root, "etc/hostname"), ["web-1", ""]);
  });

  it("fails with a clear message when nothing answers within the timeout", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const root = await newRoot();
    const url = `http://127.0.0.1:${port}/hetzner/v1/`;
    await expectFailure(
      applyMetadata({ metadataUrl: url, root, timeoutMs: 1000 }),
      "unreachable",
      new RegExp(`metadata service at ${url}metadata did not answer within 1s \\(last error: .*ECONNREFUSED`),
    );
    assert.deepEqual(await readdir(root), [], "nothing written");
  });

  it("fails when the service keeps answering 503", async () => {
    behaviour.failFirst = 1_000_000;
    await expectFailure(
      applyMetadata({ metadataUrl: baseUrl, root: await newRoot(), timeoutMs: 800 }),
      "unreachable",
      /did not answer within 800ms \(last error: HTTP 503\)/,
    );
    assert.ok(requests.length >= 2, "retried");
  });

  it("a 4xx is final, and malformed YAML is a clear error; nothing is written", async () => {
    const root = await newRoot();
    behaviour.overrides["metadata"] = { status: 403, body: "forbidden" };
    await expectFailure(
      applyMetadata({ metadataUrl: baseUrl, root, timeoutMs: 5000 }),
      "http_status",
      /HTTP 403/,
    );
    assert.equal(requests.length, 1, "not retried");
    behaviour.overrides["metadata"] = { status: 200, body: "hostname: web-1\nnetwork-config: {config: [\n" };
    await expectFailure(
      applyMetadata({ metadataUrl: baseUrl, root, timeoutMs: 5000 }),
      "malformed",
      /malformed metadata: not valid YAML/,
    );
    behaviour.overrides["metadata"] = renderMetadata(INFO, "metadata");
    behaviour.overrides["metadata/private-networks"] = { status: 200, body: "- ip: [\n" };
    await expectFailure(
      applyMetadata({ metadataUrl: baseUrl, root, timeoutMs: 5000 }),
      "malformed",
      /private-networks/,
    );
    assert.deepEqual(await readdir(root), []);
  });

  it("a service without the private-networks path means no private networks", async () => {
    const root = await newRoot();
    behaviour.overrides["metadata/private-networks"] = { status: 404, body: "not found" };
    const result = await applyMetadata({ metadataUrl: baseUrl, root, timeoutMs: 5000 });
    assert.ok(!result.written.some((p) => p.includes("private")));
  });
});

describe("the hetznix metadata command", () => {
  const cli = (args: string[]) =>
    exec(process.execPath, ["--import", "tsx", "src/cli/main.ts", "metadata", ...args], {
      cwd: join(import.meta.dirname, ".."),
      timeout: 60_000,
    });

  it("show prints the files without writing; apply writes them", async () => {
    const root = await newRoot();
    const shown = await cli(["show", "--metadata-url", baseUrl, "--root", root, "--timeout", "5s"]);
    assert.match(
      shown.stdout,
      /^==> run\/systemd\/network\/50-hetznix-public-960000aabbcc\.network \(mode 0644\)$/m,
    );
    assert.match(shown.stdout, /^Address=2a01:4f8:c012:1234::1\/64$/m);
    assert.match(shown.stdout, /^==> etc\/hostname \(mode 0644\)\nweb-1$/m);
    assert.deepEqual(await readdir(root), []);

    const applied = await cli([
      "apply",
      "--metadata-url",
      baseUrl,
      "--root",
      root,
      "--timeout",
      "5s",
      "--json",
    ]);
    const out = JSON.parse(applied.stdout) as { written: string[]; removed: string[] };
    assert.equal(out.written.length, 5);
    assert.deepEqual(await lines(root, "etc/hostname"), ["web-1", ""]);
  });

  it("fails with exit code 1 and the reason on stderr", async () => {
    behaviour.overrides["metadata"] = { status: 200, body: "- not\n- a mapping\n" };
    await assert.rejects(
      cli(["apply", "--metadata-url", baseUrl, "--root", await newRoot(), "--timeout", "5s"]),
      (err: { code?: number; stderr?: string }) => {
        assert.equal(err.code, 1);
        assert.match(err.stderr ?? "", /^hetznix metadata: malformed metadata: expected a mapping/m);
        return true;
      },
    );
  });
});
