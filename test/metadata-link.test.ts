/**
 * The link step for real, inside a network namespace this test creates: a veth pair with no link up, the agent
 * run in the namespace (`ip netns exec`) against a metadata service on the namespace's own 127.0.0.1. The service
 * records the links' state while it answers, so the test sees the link-local address exist during the fetch and
 * vanish afterwards. Needs root and `ip netns`; skipped (with the reason) where the kernel refuses namespaces.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { parseIpAddr, type LinkState } from "../src/metadata/index.js";

const exec = promisify(execFile);
const NS = `hxmeta-${process.pid}`;
const SRC = join(import.meta.dirname, "..", "src");

let workDir = "";
let script = "";
let skipReason: string | false = false;

/** Runs in the namespace: serve metadata on 127.0.0.1, apply with linkSetup "always", print what happened. */
const SCRIPT = (src: string) => `
import { createServer } from "node:http";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { applyMetadata } from ${JSON.stringify(join(src, "metadata/index.ts"))};
import { renderMetadata } from ${JSON.stringify(join(src, "emulator/metadata.ts"))};

const malformed = process.argv[2] === "malformed";
const namespaceOf = process.argv[3];
const info = {
  id: 1, hostname: "ns-host", publicIpv4: "203.0.113.7", ipv6Network: "2001:db8::/64",
  macAddress: "96:00:00:00:00:09", publicKeys: [], userData: null, availabilityZone: "fsn1-dc14",
  region: "eu-central", privateNetworks: [],
};
const during = [];
const server = createServer((req, res) => {
  during.push(execFileSync("ip", ["-json", "addr", "show"], { encoding: "utf8" }));
  const path = (req.url ?? "").replace(/^\\/hetzner\\/v1\\//, "");
  const r = malformed && path === "metadata" ? { status: 200, contentType: "text/plain", body: "a: [" } : renderMetadata(info, path);
  res.writeHead(r.status, { "content-type": r.contentType }).end(r.body);
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const root = mkdtempSync(join(tmpdir(), "hetznix-ns-"));
let outcome;
try {
  const result = await applyMetadata({
    metadataUrl: \`http://127.0.0.1:\${server.address().port}/hetzner/v1/\`,
    root, timeoutMs: 20000, linkSetup: "always",
    onWaitForLink: () => process.stderr.write("waiting-for-link\\n"),
  });
  outcome = { ok: true, link: result.link, written: result.written.length };
} catch (err) {
  outcome = { ok: false, code: err.code, message: err.message };
} finally {
  server.close();
  rmSync(root, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify({ ...outcome, during }));
`;

interface Outcome {
  ok: boolean;
  code?: string;
  message?: string;
  link?: { kind: string; link?: string; wasUp?: boolean; address?: string };
  during: string[];
}

async function ipIn(...args: string[]): Promise<string> {
  return (await exec("ip", ["-n", NS, ...args], { timeout: 10_000 })).stdout;
}

async function links(): Promise<LinkState[]> {
  return parseIpAddr(await ipIn("-json", "addr", "show"));
}

function byName(states: LinkState[], name: string): LinkState {
  const found = states.find((l) => l.name === name);
  assert.ok(found, `link ${name} exists`);
  return found;
}

/** Runs the agent in `ns` without waiting for it; resolves `waiting` when it reports it waits for a link. */
function startAgent(ns: string): { waiting: Promise<void>; done: Promise<Outcome> } {
  const child = spawn("ip", ["netns", "exec", ns, process.execPath, "--import", "tsx", script, "normal"], {
    cwd: join(import.meta.dirname, ".."),
    stdio: ["ignore", "pipe", "pipe"],
  });
  const kill = setTimeout(() => child.kill("SIGKILL"), 60_000);
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  const waiting = new Promise<void>((resolve) => {
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
      if (stderr.includes("waiting-for-link")) resolve();
    });
  });
  const done = new Promise<Outcome>((resolve, reject) => {
    child.on("close", (code) => {
      clearTimeout(kill);
      if (code === 0) resolve(JSON.parse(stdout) as Outcome);
      else reject(new Error(`agent exited with ${code}: ${stderr}`));
    });
  });
  return { waiting, done };
}

async function runAgent(mode = "normal"): Promise<Outcome> {
  const { stdout } = await exec(
    "ip",
    ["netns", "exec", NS, process.execPath, "--import", "tsx", script, mode],
    {
      cwd: join(import.meta.dirname, ".."),
      timeout: 60_000,
    },
  );
  return JSON.parse(stdout) as Outcome;
}

before(async () => {
  try {
    await exec("ip", ["netns", "add", NS], { timeout: 10_000 });
  } catch (err) {
    skipReason = `cannot create a network namespace here: ${(err as { stderr?: string }).stderr?.trim() ?? String(err)}`;
    return;
  }
  await ipIn("link", "set", "lo", "up");
  await ipIn("link", "add", "hxa", "type", "veth", "peer", "name", "hxb");
  workDir = await mkdtemp(join(tmpdir(), "hetznix-link-"));
  script = join(workDir, "agent-in-netns.mts");
  await writeFile(script, SCRIPT(SRC));
});

after(async () => {
  if (!skipReason) await exec("ip", ["netns", "del", NS], { timeout: 10_000 }).catch(() => undefined);
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

describe("link step inside a network namespace", () => {
  it("brings the first Ethernet link up with a link-local address for the fetch, then back down", async (t) => {
    if (skipReason) return t.skip(skipReason);
    const before = await links();
    const first = [...before].sort((a, b) => a.index - b.index).find((l) => l.ethernet);
    assert.ok(first);
    assert.equal(first.up, false);
    const outcome = await runAgent();
    assert.equal(outcome.ok, true, outcome.message);
    assert.equal(outcome.link?.kind, "bring-up");
    assert.equal(outcome.link?.link, first.name);
    assert.equal(outcome.link?.wasUp, false);
    assert.match(outcome.link?.address ?? "", /^169\.254\.\d+\.\d+\/16$/);
    assert.ok(outcome.during.length >= 2, "the service saw the fetches");
    for (const snapshot of outcome.during) {
      const link = byName(parseIpAddr(snapshot), first.name);
      assert.equal(link.up, true, "up during the fetch");
      assert.deepEqual(link.ipv4, [outcome.link?.address]);
    }
    const restored = byName(await links(), first.name);
    assert.equal(restored.up, false, "down again afterwards");
    assert.deepEqual(restored.ipv4, []);
  });

  it("a link that was up without an address stays up, and loses only the address it was given", async (t) => {
    if (skipReason) return t.skip(skipReason);
    const first = [...(await links())].sort((a, b) => a.index - b.index).find((l) => l.ethernet);
    assert.ok(first);
    await ipIn("link", "set", "dev", first.name, "up");
    try {
      const outcome = await runAgent();
      assert.equal(outcome.ok, true, outcome.message);
      assert.equal(outcome.link?.wasUp, true);
      const restored = byName(await links(), first.name);
      assert.equal(restored.up, true);
      assert.deepEqual(restored.ipv4, []);
    } finally {
      await ipIn("link", "set", "dev", first.name, "down");
    }
  });

  it("restores the link also when the agent fails", async (t) => {
    if (skipReason) return t.skip(skipReason);
    const outcome = await runAgent("malformed");
    assert.equal(outcome.ok, false);
    assert.equal(outcome.code, "malformed");
    assert.ok(outcome.during.length >= 1);
    for (const link of await links()) {
      if (link.loopback) continue;
      assert.equal(link.up, false, `${link.name} down`);
      assert.deepEqual(link.ipv4, []);
    }
  });

  it("waits for an Ethernet link that appears late (a NIC driver still loading)", async (t) => {
    if (skipReason) return t.skip(skipReason);
    const late = `${NS}-late`;
    await exec("ip", ["netns", "add", late], { timeout: 10_000 });
    try {
      await exec("ip", ["-n", late, "link", "set", "lo", "up"], { timeout: 10_000 });
      const agent = startAgent(late);
      await Promise.race([agent.waiting, agent.done]);
      // The agent has looked, found no Ethernet link, and is waiting: now the "driver" brings the NIC.
      await exec("ip", ["-n", late, "link", "add", "hxlate", "type", "veth", "peer", "name", "hxpeer"], {
        timeout: 10_000,
      });
      const outcome = await agent.done;
      assert.equal(outcome.ok, true, outcome.message);
      assert.equal(outcome.link?.kind, "bring-up");
      assert.ok(["hxlate", "hxpeer"].includes(outcome.link?.link ?? ""), `brought up ${outcome.link?.link}`);
      const after = parseIpAddr((await exec("ip", ["-n", late, "-json", "addr", "show"])).stdout);
      for (const link of after.filter((l) => !l.loopback)) {
        assert.equal(link.up, false);
        assert.deepEqual(link.ipv4, []);
      }
    } finally {
      await exec("ip", ["netns", "del", late], { timeout: 10_000 }).catch(() => undefined);
    }
  });

  it("leaves links alone when one is already up with an IPv4 address", async (t) => {
    if (skipReason) return t.skip(skipReason);
    await ipIn("link", "set", "dev", "hxb", "up");
    await ipIn("addr", "add", "192.0.2.10/24", "dev", "hxb");
    try {
      const outcome = await runAgent();
      assert.equal(outcome.ok, true, outcome.message);
      assert.deepEqual(outcome.link, { kind: "ready", link: "hxb" });
      const after = await links();
      assert.deepEqual(byName(after, "hxb").ipv4, ["192.0.2.10/24"]);
      assert.deepEqual(byName(after, "hxa").ipv4, []);
    } finally {
      await ipIn("addr", "del", "192.0.2.10/24", "dev", "hxb");
      await ipIn("link", "set", "dev", "hxb", "down");
    }
  });
});
