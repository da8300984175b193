/**
 * `hetznix deploy` against several emulated NixOS servers (system hosts booted from the sample image), found by
 * label: a parallel deploy where one server's health check fails (it rolls back, the rollout stops per
 * --max-failures, the summary and exit code say so; --only-failed then finishes the job); failing canaries stop the
 * rollout before any other server is touched; a deployer killed after activation (each server rolls back by
 * itself); a changed host key refused (and accepted on purpose); only running servers are selected; JSON output
 * validated against a schema.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Ajv } from "ajv";
import { buildSampleImage, buildTestSystem } from "../scripts/sample/image.js";
import { deployFleet, type DeployOptions, type DeployResult } from "../src/deploy/rollout/index.js";
import type { Server } from "../src/hcloud/index.js";
import { connect, exec, generateKeyPair, type SshConnection } from "../src/ssh/index.js";
import { startReleaseFixture, type ReleaseFixture } from "./support/release-fixture.js";
import { deleteAllServers, startUploadEnv, uploadX86, type UploadTestEnv } from "./support/upload.js";

const canRun = process.getuid?.() === 0;
const MAIN = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url));
const FAIL_MARKER = "/var/lib/fail-health";
const HEALTH = `test ! -e ${FAIL_MARKER}`;

const RESULT_SCHEMA = {
  type: "object",
  required: ["channel", "servers", "skipped", "notTouched", "durationMs", "exitCode"],
  additionalProperties: false,
  properties: {
    channel: { type: "string" },
    stopped: { type: "string" },
    durationMs: { type: "number" },
    exitCode: { type: "integer" },
    notTouched: { type: "array", items: { type: "string" } },
    skipped: {
      type: "array",
      items: {
        type: "object",
        required: ["name", "reason"],
        additionalProperties: false,
        properties: { name: { type: "string" }, reason: { type: "string" } },
      },
    },
    servers: {
      type: "array",
      items: {
        type: "object",
        required: ["id", "name", "ip", "outcome", "message", "steps", "durationMs"],
        additionalProperties: false,
        properties: {
          id: { type: "integer" },
          name: { type: "string" },
          ip: { type: "string" },
          outcome: {
            enum: [
              "deployed",
              "unchanged",
              "rolled_back",
              "rollback_failed",
              "refused",
              "failed",
              "busy",
              "unreachable",
              "host_key_changed",
            ],
          },
          message: { type: "string" },
          serial: { type: "integer" },
          storePath: { type: "string" },
          rebootNeeded: { type: "boolean" },
          durationMs: { type: "number" },
          steps: {
            type: "array",
            items: {
              type: "object",
              required: ["step", "status", "durationMs"],
              properties: {
                step: { type: "string" },
                status: { type: "string" },
                durationMs: { type: "number" },
              },
            },
          },
        },
      },
    },
  },
} as const;

describe("hetznix deploy to a fleet of emulated NixOS servers", { skip: !canRun && "needs root" }, () => {
  let env: UploadTestEnv;
  let rel: ReleaseFixture;
  let stateDir = "";
  const keys = generateKeyPair("fleet-test");
  const systems: Record<string, string> = {};
  const servers = new Map<string, Server>();
  let sampleSystem = "";

  const base = (): Omit<DeployOptions, "channel"> & { channel: string } => ({
    client: env.client,
    selector: "role=web",
    channel: rel.channelUrl(),
    trustedKeys: [rel.publicKey],
    substituter: rel.cacheUrl,
    healthChecks: [HEALTH],
    confirmTimeoutMs: 10_000,
    ssh: { privateKey: keys.privateKey },
    stateDir,
  });

  async function onServer<T>(name: string, fn: (c: SshConnection) => Promise<T>): Promise<T> {
    const s = servers.get(name) as Server;
    const c = await connect({
      host: s.public_net.ipv4?.ip as string,
      privateKey: keys.privateKey,
      maxAttempts: 30,
      maxTotalMs: 30_000,
    });
    try {
      return await fn(c);
    } finally {
      await c.close();
    }
  }

  const active = (name: string) =>
    onServer(name, async (c) => (await exec(c, "readlink /run/current-system")).stdoutTail.trim());
  const sh = (name: string, cmd: string) =>
    onServer(name, async (c) => {
      const r = await exec(c, cmd, { tailLines: 1000 });
      assert.equal(r.exitCode, 0, `${cmd} on ${name}: ${r.stderrTail}`);
      return r.stdoutTail;
    });

  before(async () => {
    env = await startUploadEnv("127.77.33.");
    stateDir = join(env.dir, "state");
    rel = await startReleaseFixture(env.dir);
    for (const n of ["1", "2", "3", "4", "5"]) {
      systems[`v${n}`] = await buildTestSystem({ label: `fleet-v${n}` });
      await rel.cache(systems[`v${n}`] as string);
    }
    systems.slow = await buildTestSystem({ label: "fleet-slow", switchDelaySeconds: 3 });
    await rel.cache(systems.slow);
    const sample = await buildSampleImage({ out: join(env.dir, "nixos.img") });
    sampleSystem = sample.systemPath;
    const snapshot = (await uploadX86(env, { path: sample.path }, { useStoreIdentity: false })).imageId;
    const key = await env.client.sshKeys.create({ name: "fleet", publicKey: keys.publicKey });
    const specs: [string, Record<string, string>][] = [
      ["web-a", { role: "web" }],
      ["web-b", { role: "web" }],
      ["web-c", { role: "web" }],
      ["web-d", { role: "web" }],
      ["web-off", { role: "web" }],
      ["db-1", { role: "db" }],
    ];
    await Promise.all(
      specs.map(async ([name, labels]) => {
        const created = await env.client.servers.create({
          name,
          server_type: "cx23",
          image: snapshot,
          location: "fsn1",
          ssh_keys: [key.id],
          labels,
          start_after_create: name !== "web-off",
        });
        await env.client.waitForActions([created.action as never, ...created.nextActions], {
          timeoutMs: 60_000,
        });
        servers.set(name, await env.client.servers.getById(created.server.id));
      }),
    );
  });

  after(async () => {
    if (!env) return;
    await deleteAllServers(env);
    await rel?.close();
    await env.close();
  });

  it("deploys in parallel to the running servers a selector finds, records their host keys, and skips the rest", async () => {
    await rel.release(systems.v1 as string);
    const r = await deployFleet({ ...base(), parallel: 4 });
    assert.equal(r.exitCode, 0, JSON.stringify(r, null, 2));
    assert.deepEqual(
      r.servers.map((s) => `${s.name} ${s.outcome}`),
      ["web-a deployed", "web-b deployed", "web-c deployed", "web-d deployed"],
    );
    assert.deepEqual(r.skipped, [{ name: "web-off", reason: "not running (off)" }]);
    for (const name of ["web-a", "web-b", "web-c", "web-d"]) assert.equal(await active(name), systems.v1);
    assert.equal(await active("db-1"), sampleSystem, "a server the selector does not find is not touched");
    const known = JSON.parse(await readFile(join(stateDir, "known_hosts.json"), "utf8")) as Record<
      string,
      { name: string }
    >;
    assert.deepEqual(
      Object.values(known)
        .map((k) => k.name)
        .sort(),
      ["web-a", "web-b", "web-c", "web-d"],
    );
    const steps = r.servers[0]?.steps.map((s) => s.step);
    assert.deepEqual(steps?.slice(0, 2), ["connect", "reconnect"]);
    assert.ok(
      steps?.includes("confirm") && steps.includes("commit"),
      `magic rollback confirmed: ${steps?.join(",")}`,
    );
  });

  it("a failing health check rolls that server back and stops the rollout (--max-failures 0); --only-failed finishes the job", async () => {
    await sh("web-b", `touch ${FAIL_MARKER}`);
    await rel.release(systems.v2 as string);
    const r = await deployFleet({ ...base(), parallel: 1, maxFailures: 0 });
    assert.equal(r.exitCode, 4);
    assert.deepEqual(
      r.servers.map((s) => `${s.name} ${s.outcome}`),
      ["web-a deployed", "web-b rolled_back"],
    );
    assert.match(r.servers[1]?.message ?? "", /health check failed .*rolled back to/);
    assert.deepEqual(r.notTouched, ["web-c", "web-d"]);
    assert.match(r.stopped ?? "", /1 failure\(s\), more than --max-failures 0/);
    assert.equal(await active("web-b"), systems.v1, "rolled back");
    assert.equal(await active("web-c"), systems.v1, "not touched");

    // The cause fixed, --only-failed deploys just b (rolled back), c and d (not reached).
    await sh("web-b", `rm ${FAIL_MARKER}`);
    const again = await deployFleet({ ...base(), parallel: 2, onlyFailed: true });
    assert.equal(again.exitCode, 0, JSON.stringify(again, null, 2));
    assert.deepEqual(
      again.servers.map((s) => `${s.name} ${s.outcome}`),
      ["web-b deployed", "web-c deployed", "web-d deployed"],
    );
    assert.ok(again.skipped.some((s) => s.name === "web-a" && /last deploy deployed/.test(s.reason)));
    for (const name of ["web-a", "web-b", "web-c", "web-d"]) assert.equal(await active(name), systems.v2);
  });

  it("failing canaries stop the rollout before any other server is touched", async () => {
    await sh("web-a", `touch ${FAIL_MARKER}`);
    const applies = (name: string) => sh(name, "ls /run/hetznix/apply | grep -c '^[0-9a-f]' || true");
    const before = new Map<string, string>();
    for (const name of ["web-b", "web-c", "web-d"]) before.set(name, await applies(name));
    await rel.release(systems.v3 as string);
    const r = await deployFleet({ ...base(), canary: 1, parallel: 3, maxFailures: 2 });
    assert.equal(r.exitCode, 4);
    assert.deepEqual(
      r.servers.map((s) => `${s.name} ${s.outcome}`),
      ["web-a rolled_back"],
    );
    assert.deepEqual(r.notTouched, ["web-b", "web-c", "web-d"]);
    assert.match(r.stopped ?? "", /canary .* failed: no other server was touched/);
    for (const name of ["web-b", "web-c", "web-d"]) {
      assert.equal(await active(name), systems.v2);
      assert.equal(await applies(name), before.get(name), `${name}: no apply was started on it`);
    }
    await sh("web-a", `rm ${FAIL_MARKER}`);
  });

  it("a deployer killed after activation: every server rolls back by itself; JSON output validates", async () => {
    await rel.release(systems.slow as string);
    await writeFile(join(env.dir, "fleet.key"), keys.privateKey, { mode: 0o600 });
    const cli = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        MAIN,
        "deploy",
        "--server",
        "web-c",
        "--server",
        "web-d",
        "--channel",
        rel.channelUrl(),
        "--trusted-key",
        rel.publicKey,
        "--substituter",
        rel.cacheUrl,
        "--confirm-timeout",
        "4s",
        "--parallel",
        "2",
        "--ssh-key",
        join(env.dir, "fleet.key"),
        "--output",
        "json",
      ],
      {
        stdio: ["ignore", "pipe", "pipe"],
        env: {
          ...process.env,
          HCLOUD_ENDPOINT: env.te.emulator.endpoint,
          HCLOUD_TOKEN: env.te.token,
          XDG_STATE_HOME: join(env.dir, "xdg"),
        },
      },
    );
    const exited = new Promise<void>((r) => cli.once("close", () => r()));
    try {
      // Freeze the deployer while both servers activate the new system (3 s each), so it cannot confirm; once both
      // wait for a confirmation, kill it.
      const activating = (n: string) =>
        sh(
          n,
          `grep -l '"step":"activate","status":"start"' /run/hetznix/apply/*/events.jsonl 2>/dev/null | wc -l`,
        );
      const before = Number((await activating("web-c")).trim());
      for (let i = 0; i < 400; i++) {
        const now = await Promise.all(["web-c", "web-d"].map(activating));
        if (now.every((n) => Number(n.trim()) > before)) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      cli.kill("SIGSTOP");
      for (let i = 0; i < 400; i++) {
        const waiting = await Promise.all(
          ["web-c", "web-d"].map((n) => sh(n, "ls /run/hetznix/apply/*/awaiting 2>/dev/null | wc -l")),
        );
        if (waiting.every((w) => Number(w.trim()) >= 1)) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(await active("web-c"), systems.slow, "activated, unconfirmed");
      cli.kill("SIGKILL");
      await exited;
      for (const name of ["web-c", "web-d"]) {
        let status = "";
        for (let i = 0; i < 200 && status === ""; i++) {
          const text = await sh(
            name,
            "d=$(ls -t /run/hetznix/apply | grep '^[0-9a-f]' | head -1); cat /run/hetznix/apply/$d/result.json 2>/dev/null || true",
          );
          if (text.trim()) status = (JSON.parse(text) as { status: string }).status;
          else await new Promise((r) => setTimeout(r, 100));
        }
        assert.equal(status.trim(), "rolled_back", `${name} rolled itself back`);
        assert.equal(await active(name), systems.v2, `${name} runs the previous system`);
      }
    } finally {
      if (cli.exitCode === null) cli.kill("SIGKILL");
      await exited;
    }

    // JSON output of a normal run (the CLI), validated.
    await rel.release(systems.v4 as string);
    const out = await runCli([
      "--selector",
      "role=web",
      "--ssh-key",
      join(env.dir, "fleet.key"),
      "--output",
      "json",
    ]);
    assert.equal(out.code, 0, out.stderr);
    const parsed = JSON.parse(out.stdout) as DeployResult;
    const validate = new Ajv({ allErrors: true }).compile(RESULT_SCHEMA);
    assert.ok(validate(parsed), JSON.stringify(validate.errors));
    assert.equal(parsed.servers.length, 4);
  });

  it("refuses a server whose host key changed, and accepts it on purpose", async () => {
    // web-d gets a new host key (as a rebuilt server would): remove it from its disk and reboot.
    await sh("web-d", "rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub");
    const reboot = await env.client.servers.reboot((servers.get("web-d") as Server).id);
    await env.client.waitForActions([reboot], { timeoutMs: 60_000 });
    await rel.release(systems.v5 as string);
    const r = await deployFleet({ ...base(), parallel: 4, maxFailures: 1 });
    assert.equal(r.exitCode, 4);
    const d = r.servers.find((s) => s.name === "web-d");
    assert.equal(d?.outcome, "host_key_changed");
    assert.match(
      d?.message ?? "",
      /host key of web-d .* changed: it was SHA256:.*, now SHA256:.* --accept-host-key web-d/,
    );
    assert.equal(await active("web-d"), systems.v4, "not touched");
    const accepted = await deployFleet({
      ...base(),
      servers: ["web-d"],
      selector: undefined,
      acceptHostKeys: ["web-d"],
    });
    assert.equal(accepted.exitCode, 0, JSON.stringify(accepted));
    assert.equal(await active("web-d"), systems.v5);
    // The new key is what is known now: a plain deploy connects again.
    const plain = await deployFleet({ ...base(), servers: ["web-d"], selector: undefined });
    assert.equal(plain.servers[0]?.outcome, "unchanged");
  });

  async function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        MAIN,
        "deploy",
        "--channel",
        rel.channelUrl(),
        "--trusted-key",
        rel.publicKey,
        "--substituter",
        rel.cacheUrl,
        ...args,
      ],
      {
        stdio: ["ignore", "pipe", "pipe"],
        env: {
          ...process.env,
          HCLOUD_ENDPOINT: env.te.emulator.endpoint,
          HCLOUD_TOKEN: env.te.token,
          XDG_STATE_HOME: join(env.dir, "xdg"),
        },
      },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((r) => child.once("close", (c) => r(c)));
    return { code, stdout, stderr };
  }
});

describe("hetznix deploy: bad input", () => {
  it("says what is missing, and exits 2", async () => {
    const dir = await mkdtemp(join(tmpdir(), "hetznix-deploy-usage-"));
    try {
      const r = spawn(process.execPath, ["--import", "tsx", MAIN, "deploy", "--selector", "role=web"], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, HCLOUD_TOKEN: "x", XDG_STATE_HOME: dir },
      });
      let stderr = "";
      r.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      const code = await new Promise<number | null>((res) => r.once("close", (c) => res(c)));
      assert.equal(code, 2);
      assert.match(stderr, /--channel URL is required/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
