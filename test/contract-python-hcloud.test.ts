/**
 * Third-party client test: Hetzner's official Python client (Debian's python3-hcloud 1.18, run with /usr/bin/python3,
 * unmodified) drives the emulator through test/support/python-hcloud-scenario.py: SSH key, server, rescue, power on,
 * shutdown, snapshot with labels found by label selector, cleanup; and (python-hcloud-network-scenario.py) firewalls,
 * networks, placement groups, volumes and a server replaced by another keeping its primary IP. All traffic is also checked against the OpenAPI
 * document (test/support/contract.ts).
 *
 * Notes on this older client against the current API:
 * - primary_ips.create() always sends `datacenter`, which the current API no longer takes: it cannot create a
 *   primary IP on its own (the scenario keeps the one a server was created with, via auto_delete=False).
 * - It still models `server.datacenter`; the current API no longer sends it (removed 2026-07-01), so the client
 *   reports None there, which the scenario checks. It does not crash on the missing field, but it has no
 *   `server.location` either (it only knew the location through the datacenter), so with the current API this
 *   client cannot tell where a server is. That is the client's limit, not the emulator's: we follow the current API.
 * - images.get_list() sends `status=<per_page>` when a status filter is given (a bug in 1.18), so the scenario
 *   filters snapshots by type and label selector only.
 * - It sends Python booleans as `True`/`False` in query strings; the emulator accepts those like the API does.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { ContractChecker } from "./support/contract.js";
import { randomPublicKey, startTestEmulator, type TestEmulator } from "./support/emulator.js";

const PYTHON = "/usr/bin/python3";
const realRescue = process.getuid?.() === 0 && existsSync("/usr/sbin/sshd");
const SCRIPT = fileURLToPath(new URL("./support/python-hcloud-scenario.py", import.meta.url));
const NETWORK_SCRIPT = fileURLToPath(new URL("./support/python-hcloud-network-scenario.py", import.meta.url));

function hasPythonHcloud(): boolean {
  return existsSync(PYTHON) && existsSync("/usr/lib/python3/dist-packages/hcloud/__init__.py");
}

interface Step {
  step: string;
  [key: string]: unknown;
}

function runScenario(
  env: Record<string, string>,
  timeoutMs: number,
  script = SCRIPT,
): Promise<{ code: number | null; steps: Step[]; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [script], {
      env: { PATH: "/usr/bin:/bin", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      const steps = stdout
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as Step);
      resolve({ code, steps, stderr });
    });
  });
}

describe(
  "official Python client (python3-hcloud)",
  { skip: !hasPythonHcloud() && "python3-hcloud not installed" },
  () => {
    const checker = new ContractChecker();
    let t: TestEmulator;

    before(async () => {
      // With root and sshd the rescue boot is a real rescue host (started on power on, stopped by the ACPI shutdown).
      t = await startTestEmulator({
        ipPrefix: "127.77.12.",
        speed: 100,
        onExchange: checker.exchange,
        hosts: realRescue ? "real" : "modelled",
      });
    });
    after(async () => {
      await t?.close();
    });

    it("runs the upload-style scenario unmodified and leaves nothing behind", async () => {
      const publicKey = randomPublicKey("python");
      const run = await runScenario(
        {
          HCLOUD_ENDPOINT: t.emulator.endpoint,
          HCLOUD_TOKEN: t.token,
          SSH_PUBLIC_KEY: publicKey,
          RUN_LABEL: "py1",
        },
        120_000,
      );
      const byStep = new Map(run.steps.map((s) => [s.step, s]));
      assert.equal(
        run.code,
        0,
        `scenario failed: ${JSON.stringify(byStep.get("error"))}\n${run.stderr.slice(-2000)}`,
      );

      const key = byStep.get("ssh_key");
      assert.match(String(key?.fingerprint), /^([0-9a-f]{2}:){15}[0-9a-f]{2}$/);

      const server = byStep.get("server");
      assert.equal(server?.status, "off", "created with start_after_create=false");
      assert.match(String(server?.ipv4), /^127\.77\.12\.\d+$/);
      assert.match(String(server?.ipv6), /^2001:db8:/);
      assert.equal(server?.has_location, false, "1.18 has no server.location; it read it from datacenter");
      assert.equal(server?.server_type, "cx23");
      assert.equal(server?.datacenter, null, "the current API has no datacenter on servers");

      const rescue = byStep.get("rescue");
      assert.equal(rescue?.status, "running");
      assert.equal(rescue?.rescue_enabled, true);
      assert.equal(rescue?.password, true);
      const off = byStep.get("off");
      assert.equal(off?.status, "off");
      assert.equal(off?.rescue_enabled, false, "rescue ends after the first boot into it");

      const snap = byStep.get("snapshot");
      assert.deepEqual(snap?.found, [snap?.id]);
      assert.deepEqual(snap?.status, ["available"]);
      assert.deepEqual(snap?.created_from, [server?.id]);
      assert.deepEqual(snap?.disk_size, [40]);

      assert.deepEqual(byStep.get("cleanup"), { step: "cleanup", servers: 0, ssh_keys: 0, images: 0 });
      assert.equal(t.emulator.state.host(Number(server?.id)), undefined, "no rescue host left running");
      assert.deepEqual(checker.violations, [], checker.report());
    });

    it("firewall, network, placement group, volume, and a replaced server keeping its primary IP", async () => {
      const run = await runScenario(
        { HCLOUD_ENDPOINT: t.emulator.endpoint, HCLOUD_TOKEN: t.token },
        120_000,
        NETWORK_SCRIPT,
      );
      const byStep = new Map(run.steps.map((s) => [s.step, s]));
      assert.equal(
        run.code,
        0,
        `scenario failed: ${JSON.stringify(byStep.get("error"))}\n${run.stderr.slice(-2000)}`,
      );
      const created = byStep.get("created");
      const a = byStep.get("server_a");
      assert.deepEqual(a?.firewalls, [created?.firewall], "the label selector applies the firewall");
      assert.deepEqual(a?.private_ips, ["10.1.1.1"]);
      assert.equal(a?.placement_group, created?.placement_group);
      assert.deepEqual(a?.group_servers, [a?.id], "the placement group lists its server");
      const volume = byStep.get("volume");
      assert.equal(volume?.size, 20, "resized");
      assert.equal(volume?.server, null, "detached");
      assert.equal(volume?.format, "xfs");
      assert.match(String(volume?.linux_device), /^\/dev\/disk\/by-id\/scsi-0HC_Volume_\d+$/);
      assert.deepEqual(byStep.get("ip_kept"), {
        step: "ip_kept",
        ip: a?.ip,
        assignee_id: null,
        auto_delete: false,
      });
      const b = byStep.get("server_b");
      assert.equal(b?.ip, a?.ip, "the new server has the old server's address");
      assert.equal(b?.ipv6, null);
      assert.equal(b?.dns_ptr, "py-b.example.com");
      assert.equal(b?.backup_window, "22-02");
      assert.equal(b?.image, "debian-12", "rebuilt");
      assert.deepEqual(b?.firewalls, [created?.firewall]);
      const refused = byStep.get("refused") as Record<string, { code: string; message: string }> | undefined;
      for (const name of ["floating_ips", "load_balancer"]) {
        assert.equal(refused?.[name]?.code, "unsupported_error", name);
        assert.doesNotMatch(refused?.[name]?.message ?? "", /not found/);
      }
      assert.equal(refused?.primary_ip_datacenter?.code, "invalid_input");
      assert.deepEqual(byStep.get("cleanup"), {
        step: "cleanup",
        servers: 0,
        primary_ips: 0,
        volumes: 0,
        networks: 0,
        firewalls: 0,
        placement_groups: 0,
      });
      assert.deepEqual(checker.violations, [], checker.report(100));
    });
  },
);
