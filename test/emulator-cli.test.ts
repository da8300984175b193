/**
 * `hetznix emulator`: prints how to point clients at it, applies --fault flags, keeps state in --state-dir, stops
 * cleanly on SIGTERM, and rejects malformed flags with exit code 2.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const MAIN = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url));

function startCli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, "emulator", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, HETZNIX_EMULATOR_TOKEN: "", ...env },
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
  it("takes the token from the environment, never prints it, applies --fault, persists state, stops on SIGTERM, and refuses a second emulator on its state directory", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hetznix-emu-cli-"));
    const token = `cli-${Math.random().toString(36).slice(2)}`;
    const cli = startCli(
      [
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        dir,
        "--speed",
        "100",
        "--ip-prefix",
        "127.77.16.",
        "--no-rescue",
        "--fault",
        "capacity:fsn1:cx23",
      ],
      { HETZNIX_EMULATOR_TOKEN: token },
    );
    try {
      const endpoint = await until(
        "endpoint line",
        () => /export HCLOUD_ENDPOINT=(\S+)/.exec(cli.out())?.[1],
      );
      assert.match(endpoint, /^http:\/\/127\.0\.0\.1:\d+\/v1$/);
      assert.ok(cli.out().includes(`export HCLOUD_TOKEN="$HETZNIX_EMULATOR_TOKEN"`), cli.out());
      assert.ok(!cli.out().includes(token) && !cli.err().includes(token), "the token is never printed");
      const cmdline = readFileSync(`/proc/${cli.child.pid}/cmdline`, "utf8");
      assert.ok(!cmdline.includes(token), "the token is not on the command line (ps)");

      // A second emulator on the same state directory is refused before it touches anything.
      const second = startCli(["--listen", "127.0.0.1:0", "--state-dir", dir, "--no-rescue"], {
        HETZNIX_EMULATOR_TOKEN: "other",
      });
      assert.equal(await second.exited, 1);
      assert.match(second.err(), new RegExp(`in use by another emulator \\(pid ${cli.child.pid}\\)`));
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

  it("warns that --token is visible to every local user, takes --token-file, and names both when no token is given", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hetznix-emu-cli-"));
    try {
      const none = startCli(["--state-dir", dir, "--no-rescue"]);
      assert.equal(await none.exited, 2);
      assert.match(none.err(), /no API token: set HETZNIX_EMULATOR_TOKEN .* or pass --token-file FILE/);
      const tokenFile = join(dir, "token");
      writeFileSync(tokenFile, "from-a-file\n", { mode: 0o600 });
      for (const args of [
        ["--token", "visible"],
        ["--token-file", tokenFile],
      ]) {
        const cli = startCli([
          "--listen",
          "127.0.0.1:0",
          "--state-dir",
          join(dir, "s"),
          "--no-rescue",
          ...args,
        ]);
        try {
          const endpoint = await until(
            "endpoint line",
            () => /export HCLOUD_ENDPOINT=(\S+)/.exec(cli.out())?.[1],
          );
          const tok = args[0] === "--token" ? "visible" : "from-a-file";
          const res = await fetch(`${endpoint}/servers`, { headers: { Authorization: `Bearer ${tok}` } });
          assert.equal(res.status, 200);
          if (args[0] === "--token") assert.match(cli.err(), /warning: --token is visible to every user/);
          else assert.doesNotMatch(cli.err(), /warning/);
          cli.child.kill("SIGTERM");
          assert.equal(await cli.exited, 0, cli.err());
        } finally {
          if (cli.child.exitCode === null) cli.child.kill("SIGKILL");
          await cli.exited;
        }
      }
    } finally {
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
