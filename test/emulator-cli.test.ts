/**
 * `hetznix emulator`: prints how to point clients at it, applies --fault flags, keeps state in --state-dir, stops
 * cleanly on SIGTERM, and rejects malformed flags with exit code 2.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const MAIN = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url));

function startCli(args: string[]) {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, "emulator", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  return { child, exited, out: () => stdout, err: () => stderr };
}

async function until<T>(what: string, f: () => T | undefined, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
    const v = f();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe("hetznix emulator command", () => {
  it("prints the endpoint and token to use, applies --fault, persists state and stops on SIGTERM", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hetznix-emu-cli-"));
    const token = `cli-${Math.random().toString(36).slice(2)}`;
    const cli = startCli([
      "--listen",
      "127.0.0.1:0",
      "--token",
      token,
      "--state-dir",
      dir,
      "--speed",
      "100",
      "--ip-prefix",
      "127.77.16.",
      "--no-rescue",
      "--fault",
      "capacity:fsn1:cx23",
    ]);
    try {
      const endpoint = await until(
        "endpoint line",
        () => /export HCLOUD_ENDPOINT=(\S+)/.exec(cli.out())?.[1],
      );
      assert.match(endpoint, /^http:\/\/127\.0\.0\.1:\d+\/v1$/);
      assert.ok(cli.out().includes(`export HCLOUD_TOKEN=${token}`));
      const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
      const full = await fetch(`${endpoint}/servers`, {
        method: "POST",
        headers,
        body: JSON.stringify({ name: "cli-1", server_type: "cx23", image: "ubuntu-24.04", location: "fsn1" }),
      });
      assert.equal(full.status, 412);
      const ok = await fetch(`${endpoint}/servers`, {
        method: "POST",
        headers,
        body: JSON.stringify({ name: "cli-1", server_type: "cx23", image: "ubuntu-24.04", location: "nbg1" }),
      });
      assert.equal(ok.status, 201);
      cli.child.kill("SIGTERM");
      assert.equal(await cli.exited, 0, cli.err());
      const saved = JSON.parse(readFileSync(join(dir, "state.json"), "utf8")) as {
        servers: { name: string }[];
      };
      assert.deepEqual(
        saved.servers.map((s) => s.name),
        ["cli-1"],
      );
      assert.ok(!readFileSync(join(dir, "state.json"), "utf8").includes(token), "the token is not persisted");
      await assert.rejects(fetch(`${endpoint}/servers`, { headers }), "nothing listens after SIGTERM");
    } finally {
      if (cli.child.exitCode === null) cli.child.kill("SIGKILL");
      await cli.exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("rejects a malformed --fault with exit code 2", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hetznix-emu-cli-"));
    const cli = startCli([
      "--token",
      "x",
      "--state-dir",
      dir,
      "--no-rescue",
      "--fault",
      "http:GET:/servers:teapot",
    ]);
    try {
      assert.equal(await cli.exited, 2);
      assert.match(cli.err(), /code must be one of/);
      assert.equal(existsSync(join(dir, "state.json")), false, "nothing was started");
    } finally {
      if (cli.child.exitCode === null) cli.child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
