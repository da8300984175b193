/**
 * A user's flow, driven by unmodified clients: Debian's hcloud CLI (1.30) and a scripted curl scenario, against an
 * emulator with real hosts. A firewall and a network are created, a primary IP, then a server from a NixOS snapshot
 * with all of them; its metadata agent writes the private network's unit (read over SSH); a volume attached to the
 * running server shows up as /dev/sdb; a rebuild onto a newer snapshot keeps the server's IP and boots the new disk
 * (with the volume still there); everything is deleted and nothing is left. Every answer is validated against the
 * OpenAPI document (test/support/contract.ts, with its documented deltas).
 *
 * Where the client's age decides (CLI 1.30): `hcloud primary-ip create` only knows `--datacenter`, which the
 * current API refuses (removed 2026-07-01), so the curl scenario creates the primary IP with `location`, and the CLI
 * uses it by name from there on. Its `server list` shows an empty DATACENTER column (the field is gone).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { buildSampleImage } from "../scripts/sample/image.js";
import { sweep } from "../src/emulator/hosts/manager.js";
import { connect, execOrThrow, generateKeyPair } from "../src/ssh/index.js";
import { ContractChecker } from "./support/contract.js";
import { spawnEmulator } from "./support/emulator-process.js";
import { startUploadEnv, uploadX86, type UploadTestEnv } from "./support/upload.js";

const HCLOUD = "/usr/bin/hcloud";
const canRun = process.getuid?.() === 0 && existsSync(HCLOUD);
const CURL_SCENARIO = fileURLToPath(new URL("./support/curl-scenario.sh", import.meta.url));

interface CurlStep {
  step: string;
  status: number;
  allow: string;
  body: Record<string, unknown> | null;
}

function runFile(
  file: string,
  args: string[],
  env: Record<string, string>,
  timeoutMs = 120_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { env, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

describe(
  "a user's flow with the official CLI and curl",
  { skip: !canRun && "needs root and hcloud-cli" },
  () => {
    // Requests of hcloud-cli 1.30 (hcloud-go 1.x) the document does not list: it polls GET /actions?id=... with
    // page/per_page (the API ignores them there), and `server-type list --sort` sends sort (see the emulator README).
    const checker = new ContractChecker({
      "GET /actions": ["page", "per_page"],
      "GET /server_types": ["sort"],
    });
    let env: UploadTestEnv;
    let clientEnv: Record<string, string>;
    let snapshotA = 0;
    const keys = generateKeyPair("clients-test");

    /** Runs the CLI; fails the test with its stderr when it fails. */
    const hcloud = async (...args: string[]): Promise<string> => {
      const r = await runFile(HCLOUD, ["--poll-interval", "50ms", ...args], clientEnv);
      assert.equal(r.code, 0, `hcloud ${args.join(" ")} failed: ${r.stderr}`);
      return r.stdout;
    };
    const hcloudJson = async <T>(...args: string[]): Promise<T> =>
      JSON.parse(await hcloud(...args, "-o", "json")) as T;
    const curl = async (...args: string[]): Promise<Map<string, CurlStep>> => {
      const r = await runFile("/bin/bash", [CURL_SCENARIO, ...args], clientEnv);
      assert.equal(r.code, 0, `curl scenario ${args.join(" ")} failed: ${r.stderr}`);
      const steps = r.stdout
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as CurlStep);
      return new Map(steps.map((s) => [s.step, s]));
    };
    /** CLI 1.30's `server delete` does not wait for the delete action: wait until the servers are gone. */
    const serversGone = async (): Promise<void> => {
      for (let i = 0; i < 200; i++) {
        if (((await hcloudJson<unknown[] | null>("server", "list")) ?? []).length === 0) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.fail("servers still there after their delete");
    };
    const ssh = (ip: string) =>
      connect({ host: ip, privateKey: keys.privateKey, maxAttempts: 40, maxTotalMs: 40_000 });

    before(async () => {
      env = await startUploadEnv("127.77.40.", { onExchange: checker.exchange });
      const sample = await buildSampleImage({ out: join(env.dir, "nixos.img") });
      snapshotA = (await uploadX86(env, { path: sample.path }, { useStoreIdentity: false })).imageId;
      const home = join(env.dir, "home");
      await mkdir(home, { mode: 0o700 });
      const header = join(env.dir, "auth-header");
      await writeFile(header, `Authorization: Bearer ${env.te.token}\n`, { mode: 0o600 });
      clientEnv = {
        PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
        HOME: home,
        HCLOUD_ENDPOINT: env.te.emulator.endpoint,
        HCLOUD_TOKEN: env.te.token,
        AUTH_HEADER_FILE: header,
      };
    });

    after(async () => {
      await env?.close();
    });

    it("firewall, network, primary IP, server from a snapshot, volume, rebuild keeping the IP, cleanup", async () => {
      // The "newer snapshot": the sample system with a marker in /var, made with the CLI from a helper server.
      await hcloud("ssh-key", "create", "--name", "me", "--public-key", keys.publicKey);
      await hcloud(
        "server",
        "create",
        "--name",
        "builder",
        "--type",
        "cx23",
        "--image",
        String(snapshotA),
        "--location",
        "fsn1",
        "--ssh-key",
        "me",
      );
      const builder = await hcloudJson<{ public_net: { ipv4: { ip: string } } }>(
        "server",
        "describe",
        "builder",
      );
      const b = await ssh(builder.public_net.ipv4.ip);
      await execOrThrow(b, "mkdir -p /var/lib/release && echo v2 > /var/lib/release/version && sync");
      await b.close();
      await hcloud("server", "poweroff", "builder");
      const made = await hcloud(
        "server",
        "create-image",
        "--type",
        "snapshot",
        "--description",
        "web v2",
        "--label",
        "release=v2",
        "builder",
      );
      const snapshotB = Number(/Image (\d+) created/.exec(made)?.[1]);
      assert.ok(snapshotB > 0, `the CLI names the new image: ${made}`);
      await hcloud("server", "delete", "builder");
      await serversGone();

      // Firewall and network.
      await hcloud("firewall", "create", "--name", "web-fw", "--label", "app=web");
      await hcloud(
        "firewall",
        "add-rule",
        "web-fw",
        "--direction",
        "in",
        "--protocol",
        "tcp",
        "--port",
        "22",
        "--source-ips",
        "0.0.0.0/0",
        "--source-ips",
        "::/0",
      );
      await hcloud("network", "create", "--name", "web-net", "--ip-range", "10.0.0.0/16");
      await hcloud(
        "network",
        "add-subnet",
        "web-net",
        "--type",
        "cloud",
        "--network-zone",
        "eu-central",
        "--ip-range",
        "10.0.1.0/24",
      );

      // The primary IP: the CLI's own way is refused by the current API (it sends the removed `datacenter`) ...
      const old = await runFile(
        HCLOUD,
        ["primary-ip", "create", "--name", "old-way", "--type", "ipv4", "--datacenter", "fsn1-dc14"],
        clientEnv,
      );
      assert.notEqual(old.code, 0);
      assert.match(old.stderr, /datacenter has been removed; use location instead/);
      // ... so curl creates it with `location`.
      const ip = (await curl("primary-ip")).get("primary_ip");
      assert.equal(ip?.status, 201, JSON.stringify(ip?.body));
      const primary = ip?.body?.primary_ip as { id: number; ip: string; assignee_id: number | null };
      assert.match(primary.ip, /^127\.77\.40\.\d+$/, "primary IPs come from the emulator's loopback pool");
      assert.equal(primary.assignee_id, null);

      // The server from snapshot A with all of them.
      await hcloud(
        "server",
        "create",
        "--name",
        "web-1",
        "--type",
        "cx23",
        "--image",
        String(snapshotA),
        "--location",
        "fsn1",
        "--ssh-key",
        "me",
        "--firewall",
        "web-fw",
        "--network",
        "web-net",
        "--primary-ipv4",
        "web-ip",
        "--label",
        "app=web",
      );
      type Described = {
        id: number;
        status: string;
        image: { id: number };
        public_net: { ipv4: { id: number; ip: string }; firewalls: { id: number }[] };
        private_net: { ip: string; mac_address: string }[];
        volumes: number[];
      };
      const web = await hcloudJson<Described>("server", "describe", "web-1");
      assert.equal(web.public_net.ipv4.id, primary.id, "the server holds the primary IP");
      assert.equal(web.public_net.ipv4.ip, primary.ip);
      assert.equal(web.public_net.firewalls.length, 1);
      assert.equal(web.private_net[0]?.ip, "10.0.1.1");
      const mac = web.private_net[0]?.mac_address ?? "";

      // The metadata agent wrote the private network's unit at boot (end to end: API -> metadata -> agent -> file).
      const conn = await ssh(primary.ip);
      try {
        const unit = await execOrThrow(
          conn,
          `cat /run/systemd/network/50-hetznix-private-${mac.replaceAll(":", "")}.network`,
        );
        assert.match(unit.stdoutTail, new RegExp(`MACAddress=${mac}`));
        assert.match(unit.stdoutTail, /DHCP=ipv4/);
        assert.match(unit.stdoutTail, /10\.0\.1\.1 in 10\.0\.1\.0\/24, gateway 10\.0\.0\.1/);
      } finally {
        await conn.close();
      }

      // A volume attached to the running server: a second disk at once.
      await hcloud(
        "volume",
        "create",
        "--name",
        "data",
        "--size",
        "10",
        "--server",
        "web-1",
        "--format",
        "ext4",
        "--automount",
      );
      const volume = await hcloudJson<{ id: number; server: number; linux_device: string }>(
        "volume",
        "describe",
        "data",
      );
      assert.equal(volume.server, web.id);
      const seeDisk = async (what: string) => {
        const c = await ssh(primary.ip);
        try {
          const r = await execOrThrow(
            c,
            `test -b /dev/sdb && blkid -p -o value -s TYPE /dev/sdb && readlink ${volume.linux_device} && findmnt -n -o SOURCE,FSTYPE /mnt/HC_Volume_${volume.id}; cat /var/lib/release/version 2>/dev/null || echo none`,
          );
          assert.equal(r.stdoutTail, `ext4\n../../sdb\n/dev/sdb ext4\n${what}`);
        } finally {
          await c.close();
        }
      };
      await seeDisk("none");

      // Rebuild onto the newer snapshot: same server, same IP, the new disk booted, the volume still attached.
      await hcloud("server", "rebuild", "--image", String(snapshotB), "web-1");
      const rebuilt = await hcloudJson<Described>("server", "describe", "web-1");
      assert.equal(rebuilt.id, web.id);
      assert.equal(rebuilt.image.id, snapshotB);
      assert.equal(rebuilt.status, "running");
      assert.equal(rebuilt.public_net.ipv4.ip, primary.ip, "the rebuild keeps the IP");
      assert.deepEqual(rebuilt.volumes, [volume.id]);
      await seeDisk("v2");

      // The curl probes: HEAD, OPTIONS, unmodelled endpoints, refused fields, labels: null, sort.
      const me = await hcloudJson<{ id: number }>("ssh-key", "describe", "me");
      const probes = await curl("probes", String(me.id));
      assert.equal(probes.get("head_servers")?.status, 200);
      assert.equal(probes.get("options_server")?.status, 204);
      assert.match(probes.get("options_server")?.allow ?? "", /GET.*PUT.*DELETE/);
      for (const step of ["floating_ips", "load_balancer"]) {
        const p = probes.get(step);
        assert.equal(p?.status, 422);
        const err = p?.body?.error as { code: string; message: string };
        assert.equal(err.code, "unsupported_error");
        assert.doesNotMatch(err.message, /not found/);
      }
      const sorted = probes.get("types_sorted")?.body?.server_types as { name: string }[];
      assert.deepEqual(
        sorted.map((t) => t.name),
        ["cx53", "cx43", "cx33"],
      );
      assert.equal(probes.get("labels_null")?.status, 422);
      const unknown = probes.get("pinned_unknown")?.body?.error as { code: string; message: string };
      assert.equal(unknown.code, "unsupported_error");
      assert.match(unknown.message, /public_net\.routed/);
      // The CLI prints the emulator's message for what is not modelled: never "not found".
      const fip = await runFile(HCLOUD, ["floating-ip", "describe", "7"], clientEnv);
      assert.notEqual(fip.code, 0);
      assert.match(fip.stderr, /the hetznix emulator does not support floating IPs/);
      assert.doesNotMatch(fip.stderr, /not found/);

      // The rescue system sees the volume too; detaching it from the running host removes the disk at once.
      await hcloud("server", "enable-rescue", "--ssh-key", "me", "web-1");
      await hcloud("server", "reboot", "web-1");
      const rescue = await ssh(primary.ip);
      try {
        const r = await execOrThrow(rescue, "hostname; test -b /dev/sda && test -b /dev/sdb && echo disks");
        assert.equal(r.stdoutTail, "rescue\ndisks");
      } finally {
        await rescue.close();
      }
      await hcloud("server", "reboot", "web-1");
      await hcloud("volume", "detach", "data");
      const detached = await ssh(primary.ip);
      try {
        const r = await execOrThrow(
          detached,
          `hostname; test -e /dev/sdb || echo no-sdb; findmnt /mnt/HC_Volume_${volume.id} >/dev/null || echo unmounted`,
        );
        assert.equal(r.stdoutTail, "web-1\nno-sdb\nunmounted");
      } finally {
        await detached.close();
      }

      // Everything deleted, nothing left.
      await hcloud("volume", "delete", "data");
      await hcloud("server", "delete", "web-1");
      await serversGone();
      await hcloud("primary-ip", "delete", "web-ip");
      await hcloud("firewall", "delete", "web-fw");
      await hcloud("network", "delete", "web-net");
      await hcloud("ssh-key", "delete", "me");
      await hcloud("image", "delete", String(snapshotB));
      await hcloud("image", "delete", String(snapshotA));
      const left = await curl("leftovers");
      for (const [name, step] of left) {
        const body = step.body ?? {};
        const key = name === "snapshots" ? "images" : name;
        assert.deepEqual(body[key], [], `${name}: nothing left`);
      }
      assert.deepEqual(checker.violations, [], checker.report(100));
    });
  },
);

describe(
  "an emulator killed with SIGKILL while a volume is attached",
  { skip: !canRun && "needs root" },
  () => {
    it("leaves no loop device: the lazily detached devices go with the host's namespace", async () => {
      const emu = await spawnEmulator("hetznix-volume-sigkill-", "127.77.44.");
      const { child, dir, stateDir, hostsTmp, token, exited } = emu;
      try {
        const endpoint = await emu.endpoint;
        const env = {
          PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
          HOME: dir,
          HCLOUD_ENDPOINT: endpoint,
          HCLOUD_TOKEN: token,
        };
        const cli = async (...args: string[]) => {
          const r = await runFile(HCLOUD, ["--poll-interval", "50ms", ...args], env);
          assert.equal(r.code, 0, `hcloud ${args.join(" ")}: ${r.stderr}`);
        };
        await cli(
          "server",
          "create",
          "--name",
          "k",
          "--type",
          "cx23",
          "--image",
          "ubuntu-24.04",
          "--location",
          "fsn1",
        );
        await cli("volume", "create", "--name", "v", "--size", "10", "--server", "k");
        const loops = async () =>
          (
            await runFile("/usr/sbin/losetup", ["--list", "--noheadings", "--output", "BACK-FILE"], env)
          ).stdout
            .split("\n")
            .filter((l) => l.includes(stateDir));
        assert.ok(
          (await loops()).some((l) => /volume-\d+\.img/.test(l)),
          "the volume is a loop device while the host runs",
        );
        child.kill("SIGKILL");
        await exited;
        let left = await loops();
        for (let i = 0; i < 100 && left.length > 0; i++) {
          await new Promise((r) => setTimeout(r, 100));
          left = await loops();
        }
        assert.deepEqual(left, [], "no loop device serves the disk or the volume");
        assert.equal(
          (await readdir(hostsTmp)).filter((d) => d.startsWith("hetznix-host-")).length,
          1,
          "the host directory is left for the next emulator's sweep",
        );
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
        await exited;
        // What the next emulator does first: sweep the crashed one's host directories.
        await sweep({ workDir: hostsTmp });
        await rm(dir, { recursive: true, force: true });
      }
    });
  },
);
