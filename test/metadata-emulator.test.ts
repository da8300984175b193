/**
 * The agent against the emulator's metadata service: a server created through the emulator's API (with an SSH key
 * and user data), then `applyMetadata` pointed at that server's metadata URL, files checked line by line.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startEmulator, type RunningEmulator } from "../src/emulator/index.js";
import { applyMetadata, UNIT_HEADER } from "../src/metadata/index.js";

const TOKEN = "metadata-test-token-0123456789abcdef0123456789abcdef0123456789abcdef012345";
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb2m7n1Wq0f0o3Q8k5bqk3x1m2s9r8t7y6u5i4o3p2a emulator@test";

let emulator: RunningEmulator;
const dirs: string[] = [];

async function api(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const response = await fetch(`${emulator.endpoint}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const json = (await response.json()) as Record<string, unknown>;
  assert.ok(response.ok, `${method} ${path} -> ${response.status} ${JSON.stringify(json)}`);
  return json;
}

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

before(async () => {
  emulator = await startEmulator({
    token: TOKEN,
    stateDir: await tempDir("hetznix-emu-md-"),
    speed: 200,
    ipPrefix: "127.91.4.",
  });
});

after(async () => {
  await emulator?.stop();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe("metadata apply against the emulator", () => {
  it("writes the server's network unit, host name, keys and user data", async () => {
    await api("POST", "/ssh_keys", { name: "md-key", public_key: KEY });
    const created = await api("POST", "/servers", {
      name: "md-server-1",
      server_type: "cx23",
      image: "ubuntu-24.04",
      location: "fsn1",
      ssh_keys: ["md-key"],
      user_data: "#cloud-config\nruncmd: [echo hi]\n",
    });
    const server = created["server"] as {
      id: number;
      public_net: { ipv4: { ip: string } | null; ipv6: { ip: string } | null };
    };
    const root = await tempDir("hetznix-emu-root-");
    const result = await applyMetadata({
      metadataUrl: emulator.metadataUrl(server.id),
      root,
      timeoutMs: 10_000,
      userDataPath: "/run/hetznix/userdata",
    });
    assert.equal(result.removed.length, 0);
    const units = await readdir(join(root, "run/systemd/network"));
    assert.equal(units.length, 1);
    const unit = (await readFile(join(root, "run/systemd/network", units[0] ?? ""), "utf8")).split("\n");
    assert.equal(unit[0], UNIT_HEADER);
    const body = unit.filter((l) => !l.startsWith("#"));
    assert.equal(body[0], "[Match]");
    assert.match(body[1] ?? "", /^MACAddress=([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
    assert.equal(
      units[0],
      `50-hetznix-public-${(body[1] ?? "").slice("MACAddress=".length).replaceAll(":", "")}.network`,
    );
    assert.equal(body[3], "[Network]");
    assert.equal(body[4], server.public_net.ipv4 ? "DHCP=ipv4" : "DHCP=no");
    if (server.public_net.ipv6) {
      const prefix = server.public_net.ipv6.ip.split("/")[0] ?? "";
      assert.match(body[5] ?? "", new RegExp(`^Address=${prefix.replace(/::$/, "")}::1/64$`));
      assert.equal(body[6], "Gateway=fe80::1");
    }
    assert.deepEqual(await readFile(join(root, "etc/hostname"), "utf8"), "md-server-1\n");
    const keys = (await readFile(join(root, "var/lib/hetznix/authorized_keys.d/root"), "utf8")).split("\n");
    assert.deepEqual(
      keys.filter((l) => l !== "" && !l.startsWith("#")),
      [KEY],
    );
    assert.equal(
      await readFile(join(root, "run/hetznix/userdata"), "utf8"),
      "#cloud-config\nruncmd: [echo hi]\n",
    );

    const again = await applyMetadata({
      metadataUrl: emulator.metadataUrl(server.id),
      root,
      timeoutMs: 10_000,
    });
    assert.deepEqual(again.written, []);
  });

  it("an unknown server's metadata is a clear HTTP error", async () => {
    await assert.rejects(
      applyMetadata({
        metadataUrl: emulator.metadataUrl(999_999),
        root: await tempDir("hetznix-emu-root-"),
        timeoutMs: 5000,
      }),
      /HTTP 404/,
    );
  });
});
