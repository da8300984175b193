/**
 * Every .nix file in the repository parses (`nix-instantiate --parse`, from Debian's nix-bin; a parse also
 * rejects undefined variables). NixOS cannot be evaluated here: test/nix-image.test.ts and
 * test/nix-npm-deps.test.ts check what can be checked without nixpkgs, and the README says which nixpkgs file each
 * option was checked against.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdir } from "node:fs/promises";
import { join, relative } from "node:path";
import { promisify } from "node:util";

const exec = promisify(execFile);
const ROOT = join(import.meta.dirname, "..");
const SKIP = new Set(["node_modules", ".git", "dist", ".work"]);

async function nixFiles(dir: string, depth = 0): Promise<string[]> {
  if (depth > 12) return [];
  const found: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (SKIP.has(entry.name)) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...(await nixFiles(path, depth + 1)));
    else if (entry.isFile() && entry.name.endsWith(".nix")) found.push(path);
  }
  return found;
}

describe("nix files parse", async () => {
  const files = (await nixFiles(ROOT)).sort();

  it("nix-instantiate is installed", async () => {
    try {
      await exec("nix-instantiate", ["--version"], { timeout: 30_000 });
    } catch {
      assert.fail("nix-instantiate not found: install the Debian package nix-bin (apt-get install nix-bin)");
    }
  });

  it("the flake and its modules exist", () => {
    const names = files.map((f) => relative(ROOT, f));
    for (const expected of ["flake.nix", "nix/hetzner.nix", "nix/image.nix", "nix/package.nix"]) {
      assert.ok(names.includes(expected), `${expected} is present (found: ${names.join(", ")})`);
    }
  });

  for (const file of files) {
    it(`parses ${relative(ROOT, file)}`, async () => {
      try {
        await exec("nix-instantiate", ["--parse", file], { timeout: 30_000 });
      } catch (err) {
        const e = err as { code?: string; stderr?: string };
        if (e.code === "ENOENT") assert.fail("nix-instantiate not found: install the Debian package nix-bin");
        assert.fail(`nix-instantiate --parse ${relative(ROOT, file)} failed:\n${e.stderr ?? String(err)}`);
      }
    });
  }
});
