/**
 * The CLI's answers to usage mistakes: an unknown command (with or without --help) is an error with exit status 2,
 * not the top-level help and success; the top-level help promises only what exists; a missing image file is named
 * before any flag is asked for. No API is needed (the endpoint is a closed port: nothing may be called).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runCli } from "./support/cli.js";

describe("cli: usage mistakes", { timeout: 120_000 }, () => {
  let home = "";
  const cli = (args: string[]) =>
    runCli(args, { home, endpoint: "http://127.0.0.1:9/v1", token: "usage-test-token", timeoutMs: 60_000 });

  before(async () => {
    home = await mkdtemp(join(tmpdir(), "hetznix-cli-usage-"));
  });

  after(async () => {
    await rm(home, { recursive: true, force: true });
  });

  // As reported: `hetznix release publish --help` before a release command existed. A name no command will take
  // keeps the test meaningful once it does.
  const unknown = "frobnicate";
  for (const args of [[unknown, "publish", "--help"], [unknown], [unknown, "--x"], ["help", unknown]]) {
    it(`\`hetznix ${args.join(" ")}\`: unknown command, exit status 2`, async () => {
      const out = await cli(args);
      assert.equal(out.code, 2, `exit status\n${out.stdout}\n${out.stderr}`);
      assert.match(out.stderr, new RegExp(`unknown command '${unknown}'`));
      assert.doesNotMatch(out.stdout + out.stderr, /Usage: hetznix \[options\] \[command\]/, "not the help");
    });
  }

  it("an unknown option is a usage error too (exit status 2)", async () => {
    const out = await cli(["cleanup", "--bogus"]);
    assert.equal(out.code, 2, out.stderr);
    assert.match(out.stderr, /unknown option '--bogus'/);
  });

  it("--help and --version still succeed; the help promises only commands that exist", async () => {
    const help = await cli(["--help"]);
    assert.equal(help.code, 0, help.stderr);
    const [intro = "", listed = ""] = help.stdout.split(/^Commands:$/m);
    const commands = [...listed.matchAll(/^ {2}([a-z-]+)/gm)].map((m) => m[1]);
    assert.ok(commands.includes("upload"), help.stdout);
    const promises: [word: string, command: string][] = [
      ["deploy", "deploy"],
      ["upload", "upload"],
      ["emulat", "emulator"],
    ];
    for (const [word, command] of promises) {
      if (intro.includes(word))
        assert.ok(commands.includes(command), `the help promises ${word}, a command does it`);
    }
    const version = await cli(["--version"]);
    assert.equal(version.code, 0);
    assert.match(version.stdout, /^\d+\.\d+\.\d+/);
    const sub = await cli(["upload", "--help"]);
    assert.equal(sub.code, 0);
    assert.match(sub.stdout, /--image-path/);
  });

  it("`upload --image-path /nonexistent` says the file does not exist before asking for --architecture", async () => {
    const out = await cli(["upload", "--image-path", "/nonexistent/image.raw"]);
    assert.equal(out.code, 1, out.stderr);
    assert.match(out.stderr, /\/nonexistent\/image\.raw does not exist/);
    assert.doesNotMatch(out.stderr, /--architecture/);
  });
});
