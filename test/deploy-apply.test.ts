/**
 * `hetznix apply` on a real server: an emulated system host booted from the sample NixOS-like image (its own Nix
 * store on its disk), releases signed with a real Nix key, the closure in a file:// binary cache served over HTTP on
 * loopback, real `nix copy` with Nix's own signature checks, test systems whose activation succeeds or fails on
 * demand. Covers: apply (profile, activation, boot default), every refusal with nothing changed, activation
 * failing with 2 and 4 and a failing health check (each rolls back), no confirmation (rolls back by itself), the
 * SSH connection dropped during activation, two applies at once, re-applying the active release, a signed rollback.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { buildSampleImage, buildTestSystem } from "../scripts/sample/image.js";
import { generateSigningKey, parseSecretKey } from "../src/deploy/keys.js";
import { signRecord, type ReleaseRecord, type SignedRecord } from "../src/deploy/record.js";
import type { Server } from "../src/hcloud/index.js";
import { connect, exec, generateKeyPair, type SshConnection } from "../src/ssh/index.js";
import { startReleaseFixture, type ReleaseFixture } from "./support/release-fixture.js";
import { deleteAllServers, startUploadEnv, uploadX86, type UploadTestEnv } from "./support/upload.js";

const canRun = process.getuid?.() === 0;
const SWITCH_LOG = "/var/log/hetznix-test-switch.log";

interface ApplyOutcome {
  exitCode: number | null;
  result: {
    status: string;
    message: string;
    storePath?: string;
    serial?: number;
    failure?: { step: string };
  };
}

describe("hetznix apply on an emulated NixOS server", { skip: !canRun && "needs root" }, () => {
  let env: UploadTestEnv;
  let rel: ReleaseFixture;
  let pub = "";
  const trusted = { secretKey: "", publicKey: "" };
  const stranger = generateSigningKey("stranger-1");
  const keys = generateKeyPair("apply-test");
  const systems: Record<string, string> = {};
  let snapshotId = 0;
  let keyId = 0;
  let serial = 0;
  let strangerFile = "";

  /** Points the channel `prod` at `storePath` with the next serial (history in releases/prod-N.json). */
  async function release(storePath: string, extra: Partial<ReleaseRecord> = {}): Promise<SignedRecord> {
    const r = await rel.release(storePath, extra);
    serial = r.serial;
    return r;
  }

  function applyCommand(extra = "", channel = rel.channelUrl()): string {
    return `hetznix apply --channel ${channel} --trusted-key ${rel.publicKey} --substituter ${rel.cacheUrl} --output json ${extra}`;
  }

  async function apply(conn: SshConnection, extra = "", channel?: string): Promise<ApplyOutcome> {
    const r = await exec(conn, applyCommand(extra, channel), { tailLines: 400 });
    let result: ApplyOutcome["result"];
    try {
      result = JSON.parse(r.stdoutTail) as ApplyOutcome["result"];
    } catch {
      throw new Error(`apply printed no JSON (exit ${r.exitCode}): ${r.stdoutTail}\n${r.stderrTail}`);
    }
    return { exitCode: r.exitCode, result };
  }

  /** What runs, what boots, and the activation log of the server. */
  async function systemState(
    conn: SshConnection,
  ): Promise<{ active: string; profile: string; log: string[] }> {
    const r = await exec(
      conn,
      `readlink /run/current-system; readlink -f /nix/var/nix/profiles/system; cat ${SWITCH_LOG} 2>/dev/null`,
      { tailLines: 400 },
    );
    const [active = "", profile = "", ...log] = r.stdoutTail.split("\n");
    return { active, profile, log };
  }

  async function newServer(name: string): Promise<{ server: Server; conn: SshConnection }> {
    const created = await env.client.servers.create({
      name,
      server_type: "cx23",
      image: snapshotId,
      location: "fsn1",
      ssh_keys: [keyId],
    });
    await env.client.waitForActions([created.action as never, ...created.nextActions], { timeoutMs: 60_000 });
    const server = await env.client.servers.getById(created.server.id);
    return { server, conn: await ssh(server) };
  }

  function ssh(server: Server): Promise<SshConnection> {
    return connect({
      host: server.public_net.ipv4?.ip as string,
      privateKey: keys.privateKey,
      maxAttempts: 30,
      maxTotalMs: 30_000,
    });
  }

  before(async () => {
    env = await startUploadEnv("127.77.32.");
    rel = await startReleaseFixture(env.dir);
    pub = join(env.dir, "pub");
    trusted.publicKey = rel.publicKey;
    trusted.secretKey = (await readFile(rel.secretKeyFile, "utf8")).trim();
    strangerFile = join(env.dir, "stranger.sk");
    await writeFile(strangerFile, stranger.secretKey, { mode: 0o600 });
    const specs: [string, Parameters<typeof buildTestSystem>[0]][] = [
      ["v2", { label: "apply-v2" }],
      ["v3", { label: "apply-v3" }],
      ["fail2", { label: "apply-fail2", switchExit: 2 }],
      ["fail4", { label: "apply-fail4", switchExit: 4 }],
      ["slow", { label: "apply-slow", switchDelaySeconds: 3 }],
      ["slow2", { label: "apply-slow2", switchDelaySeconds: 3 }],
      ["strange", { label: "apply-signed-by-a-stranger" }],
    ];
    for (const [name, spec] of specs) systems[name] = await buildTestSystem(spec);
    for (const name of ["v2", "v3", "fail2", "fail4", "slow", "slow2"])
      await rel.cache(systems[name] as string);
    await rel.cache(systems.strange as string, strangerFile);
    const sample = await buildSampleImage({ out: join(env.dir, "nixos.img") });
    snapshotId = (await uploadX86(env, { path: sample.path }, { useStoreIdentity: false })).imageId;
    keyId = (await env.client.sshKeys.create({ name: "me", publicKey: keys.publicKey })).id;
  });

  after(async () => {
    if (!env) return;
    await deleteAllServers(env);
    await rel?.close();
    await env.close();
  });

  it("applies a release: fetched with Nix's signature check, test-activated, then the boot default; the same release again is a no-op", async () => {
    const { conn } = await newServer("apply-1");
    try {
      const rec = await release(systems.v2 as string);
      const out = await apply(conn);
      assert.equal(out.exitCode, 0, out.result.message);
      assert.equal(out.result.status, "applied");
      const state = await systemState(conn);
      assert.equal(state.active, systems.v2, "the new system runs");
      assert.equal(state.profile, systems.v2, "and is the boot default");
      assert.deepEqual(
        state.log.map((l) => l.split(" ").slice(1).join(" ")),
        [`test ${systems.v2}`, `boot ${systems.v2}`],
        "test-activated first, made the boot default only after",
      );
      const again = await apply(conn);
      assert.equal(again.exitCode, 0);
      assert.equal(again.result.status, "noop");
      assert.match(again.result.message, new RegExp(`already active \\(release prod#${rec.serial}\\)`));
      assert.equal((await systemState(conn)).log.length, 2, "nothing was activated again");
    } finally {
      await conn.close();
    }
  });

  it("refuses, changing nothing: a forged record, an untrusted key, a closure signed by a stranger, another system, a replayed older serial", async () => {
    const { conn } = await newServer("apply-2");
    try {
      await release(systems.v2 as string);
      assert.equal((await apply(conn)).result.status, "applied");
      const before = await systemState(conn);
      const cases: { name: string; record: () => Promise<string>; code: number; match: RegExp }[] = [
        {
          name: "forged",
          record: async () => {
            const rec = await release(systems.v3 as string);
            const forged = { ...rec, storePath: systems.strange };
            await writeFile(join(pub, "channels", "forged.json"), JSON.stringify(forged));
            return `${rel.url}/channels/forged.json`;
          },
          code: 3,
          match: /signature does not verify/,
        },
        {
          name: "untrusted key",
          record: async () => {
            const rec = signRecord(
              {
                format: "hetznix-release/1",
                channel: "prod",
                serial: serial + 100,
                kind: "release",
                storePath: systems.v3 as string,
                system: "x86_64-linux",
                created: new Date().toISOString(),
                previous: null,
                keyName: "",
              },
              parseSecretKey(stranger.secretKey),
            );
            await writeFile(join(pub, "channels", "stranger.json"), JSON.stringify(rec));
            return `${rel.url}/channels/stranger.json`;
          },
          code: 3,
          match: /not among the trusted keys/,
        },
        {
          name: "closure signed by a stranger",
          record: async () => {
            await release(systems.strange as string);
            return `${rel.url}/channels/prod.json`;
          },
          code: 3,
          match: /not signed by a trusted key \(Nix refused it\)/,
        },
        {
          name: "another system",
          record: async () => {
            await release(systems.v3 as string, { system: "aarch64-linux" });
            return `${rel.url}/channels/prod.json`;
          },
          code: 3,
          match: /is for aarch64-linux; this host is x86_64-linux/,
        },
      ];
      for (const c of cases) {
        const channel = await c.record();
        const out = await apply(conn, "", channel);
        assert.equal(out.exitCode, c.code, `${c.name}: ${out.result.message}`);
        assert.equal(out.result.status, "refused", c.name);
        assert.match(out.result.message, c.match, c.name);
        assert.deepEqual(await systemState(conn), before, `${c.name}: nothing changed on the host`);
      }
      // A newer release, then the older one replayed at the host.
      const older = await release(systems.v3 as string);
      await release(systems.v3 as string);
      assert.equal((await apply(conn)).result.status, "applied");
      const applied = await systemState(conn);
      const replay = await apply(conn, "", `${rel.url}/releases/prod-${older.serial}.json`);
      assert.equal(replay.exitCode, 3);
      assert.match(replay.result.message, /older than #\d+, applied here before .*hetznix release rollback/);
      assert.deepEqual(await systemState(conn), applied);
      // A signed rollback is a new record (a higher serial) naming the old system: accepted.
      await release(systems.v2 as string, { kind: "rollback", rollbackOf: 1 });
      const back = await apply(conn);
      assert.equal(back.result.status, "applied", back.result.message);
      assert.equal((await systemState(conn)).active, systems.v2);
    } finally {
      await conn.close();
    }
  });

  it("rolls back when activation fails (exit 2 and exit 4) or a health check fails, and says so", async () => {
    const { conn } = await newServer("apply-3");
    try {
      await release(systems.v2 as string);
      assert.equal((await apply(conn)).result.status, "applied");
      const good = await systemState(conn);
      for (const [name, extra, match] of [
        ["fail2", "", /the activation script failed \(exit 2\); rolled back to/],
        ["fail4", "", /switched, but some units failed \(exit 4\); rolled back to/],
        ["v3", "--health-check 'test -e /etc/nonexistent-health-marker'", /health check failed \(exit 1\)/],
      ] as const) {
        await release(systems[name] as string);
        const out = await apply(conn, extra);
        assert.equal(out.exitCode, 4, `${name}: ${out.result.message}`);
        assert.equal(out.result.status, "rolled_back", name);
        assert.match(out.result.message, match, name);
        const now = await systemState(conn);
        assert.equal(now.active, good.active, `${name}: the previous system runs again`);
        assert.equal(now.profile, good.profile, `${name}: the boot default never changed`);
        assert.equal(
          now.log.at(-1),
          `${now.log.at(-1)?.split(" ")[0]} test ${good.active}`,
          `${name}: re-activated`,
        );
      }
      // A health check that passes, with the release's details in its environment.
      await release(systems.v3 as string);
      const ok = await apply(conn, `--health-check 'test "$HETZNIX_STORE_PATH" = ${systems.v3}'`);
      assert.equal(ok.result.status, "applied", ok.result.message);
    } finally {
      await conn.close();
    }
  });

  it("without a confirmation within the timeout, rolls back by itself; with one, commits", async () => {
    const { server, conn } = await newServer("apply-4");
    try {
      await release(systems.v2 as string);
      assert.equal((await apply(conn)).result.status, "applied");
      await release(systems.v3 as string);
      const unconfirmed = await apply(conn, "--confirm-timeout 2s");
      assert.equal(unconfirmed.exitCode, 4);
      assert.match(unconfirmed.result.message, /no confirmation within 2 s .*rolled back/);
      assert.equal((await systemState(conn)).active, systems.v2);

      const nonce = randomBytes(16).toString("hex");
      const pending = apply(conn, `--confirm-timeout 20s --nonce ${nonce}`);
      const second = await ssh(server);
      try {
        let confirmed = false;
        for (let i = 0; i < 200 && !confirmed; i++) {
          const r = await exec(second, `hetznix apply --confirm ${nonce}`);
          confirmed = r.exitCode === 0;
          if (!confirmed) await new Promise((r2) => setTimeout(r2, 100));
        }
        assert.ok(confirmed, "the confirmation was taken");
      } finally {
        await second.close();
      }
      const out = await pending;
      assert.equal(out.result.status, "applied", out.result.message);
      const state = await systemState(conn);
      assert.equal(state.active, systems.v3);
      assert.equal(state.profile, systems.v3);
    } finally {
      await conn.close();
    }
  });

  it("an SSH connection dropped during activation: the apply completes (or, awaiting a confirmation, rolls back), never half-done; two applies at once: one waits its turn", async () => {
    const { server, conn } = await newServer("apply-5");
    await conn.close();
    const resultOf = async (nonce: string) => {
      const c = await ssh(server);
      try {
        for (let i = 0; i < 300; i++) {
          const r = await exec(c, `cat /run/hetznix/apply/${nonce}/result.json 2>/dev/null`, {
            tailLines: 200,
          });
          if (r.exitCode === 0 && r.stdoutTail) return JSON.parse(r.stdoutTail) as ApplyOutcome["result"];
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        throw new Error(`apply ${nonce} never finished`);
      } finally {
        await c.close();
      }
    };
    const dropDuringActivation = async (extra: string, nonce: string) => {
      const c = await ssh(server);
      const running = exec(c, `${applyCommand(`--nonce ${nonce} ${extra}`)} --output events`, {
        tailLines: 50,
      }).catch(() => undefined);
      // Wait until activation started (the slow system sleeps 3 s in it), then cut the connection.
      const w = await ssh(server);
      try {
        for (let i = 0; i < 200; i++) {
          const r = await exec(
            w,
            `grep -c '"step":"activate","status":"start"' /run/hetznix/apply/${nonce}/events.jsonl`,
          );
          if (r.stdoutTail.trim() === "1") break;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      } finally {
        await w.close();
      }
      await c.close();
      await running;
      return resultOf(nonce);
    };

    await release(systems.slow as string);
    const done = await dropDuringActivation("", randomBytes(16).toString("hex"));
    assert.equal(done.status, "applied", done.message);
    const check = await ssh(server);
    try {
      const state = await systemState(check);
      assert.equal(state.active, systems.slow);
      assert.equal(state.profile, systems.slow);
      assert.equal(
        (await exec(check, "pgrep -f '[a]pply --worker' | wc -l")).stdoutTail.trim(),
        "0",
        "no worker left running",
      );
    } finally {
      await check.close();
    }

    await release(systems.slow2 as string);
    const unconfirmed = await dropDuringActivation("--confirm-timeout 2s", randomBytes(16).toString("hex"));
    assert.equal(unconfirmed.status, "rolled_back", unconfirmed.message);
    const after = await ssh(server);
    try {
      const state = await systemState(after);
      assert.equal(state.active, systems.slow, "back on the system before");
      assert.equal(state.profile, systems.slow);

      // Two at once: the second finds the first holding the lock (its activation takes 3 s).
      const first = randomBytes(16).toString("hex");
      const a = apply(after, `--nonce ${first}`);
      const watcher = await ssh(server);
      let b: ApplyOutcome;
      try {
        for (let i = 0; i < 200; i++) {
          const r = await exec(
            watcher,
            `grep -c '"step":"lock","status":"done"' /run/hetznix/apply/${first}/events.jsonl`,
          );
          if (r.stdoutTail.trim() === "1") break;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        b = await apply(watcher);
      } finally {
        await watcher.close();
      }
      const firstOut = await a;
      assert.equal(firstOut.result.status, "applied", firstOut.result.message);
      assert.equal(b.result.status, "busy", b.result.message);
      assert.equal(b.exitCode, 6);
      assert.match(
        b.result.message,
        new RegExp(`another apply runs on this host \\(pid \\d+, nonce ${first}`),
      );
      assert.equal((await systemState(after)).active, systems.slow2, "the first apply finished undisturbed");
    } finally {
      await after.close();
    }
  });
});
