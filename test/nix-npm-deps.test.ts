/**
 * nix/package.nix fetches the npm dependencies in a fixed-output derivation that runs nix/npm-deps.sh; its
 * outputHash must be the NAR hash of what that script makes from package-lock.json. This test runs the same script
 * (same file, same npm flags) and compares `nix hash path` (Debian's nix-bin) of the result with the hash that
 * nix/package.nix declares, read by evaluating the file with stand-ins for nixpkgs. So a lockfile change that the
 * Nix side does not follow fails here, not at a user's first `nix build`. It needs the npm registry (npm's
 * configured one) and takes a few seconds.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const exec = promisify(execFile);
const ROOT = join(import.meta.dirname, "..");

interface LockEntry {
  dev?: boolean;
  optional?: boolean;
  devOptional?: boolean;
  resolved?: string;
}

interface NpmDepsDrv {
  name: string;
  outputHash: string;
  outputHashMode: string;
  buildCommand: string;
  script: string;
  depsPath: string;
  /** Of the package itself. */
  disallowedReferences: string[];
  installPhase: string;
}

// nix/package.nix called with just enough of nixpkgs to read its fixed-output derivation (no nixpkgs here).
const EVAL_PACKAGE = `{ root }:
let
  mkDrv = a: a // { outPath = "/nix/store/00000000000000000000000000000000-" + (a.name or a.pname); };
  stubs = {
    lib = {
      importJSON = p: builtins.fromJSON (builtins.readFile p);
      fileset = { toSource = a: "/nix/store/00000000000000000000000000000000-source"; unions = l: l; };
      fetchers.proxyImpureEnvVars = [ "https_proxy" ];
      licenses.mit = "mit";
      platforms = { linux = [ ]; darwin = [ ]; };
    };
    stdenv.mkDerivation = mkDrv;
    stdenvNoCC = { mkDerivation = mkDrv; shell = "/bin/bash"; };
    nodejs_22 = "/nix/store/00000000000000000000000000000000-nodejs";
    cacert = "/nix/store/00000000000000000000000000000000-cacert";
    makeWrapper = "/nix/store/00000000000000000000000000000000-make-wrapper";
  };
  pkg = import (/. + root + "/nix/package.nix") stubs;
  deps = pkg.passthru.npmDeps;
in {
  inherit (deps) name outputHash outputHashMode buildCommand;
  depsPath = deps.outPath; # (a set with an outPath would be printed as that path alone)
  disallowedReferences = map (r: r.outPath or r) pkg.disallowedReferences;
  inherit (pkg) installPhase;
  script = "\${/. + root + "/nix/npm-deps.sh"}";
}`;

async function evalNpmDeps(): Promise<NpmDepsDrv> {
  // --readonly-mode: store paths of local files are computed, nothing is written to /nix/store.
  const { stdout } = await exec(
    "nix-instantiate",
    ["--eval", "--strict", "--json", "--readonly-mode", "--argstr", "root", ROOT, "-E", EVAL_PACKAGE],
    { timeout: 60_000 },
  );
  return JSON.parse(stdout) as NpmDepsDrv;
}

/** Package paths (`node_modules/a`, `node_modules/@s/b`, `node_modules/a/node_modules/c`) under dir. */
async function installedPackages(dir: string, prefix = "node_modules", depth = 0): Promise<string[]> {
  if (depth > 20) return [];
  const found: string[] = [];
  let entries: string[];
  try {
    entries = await readdir(join(dir, prefix));
  } catch {
    return [];
  }
  for (const name of entries) {
    if (name === ".bin") continue;
    const names = name.startsWith("@")
      ? (await readdir(join(dir, prefix, name))).map((n) => `${name}/${n}`)
      : [name];
    for (const pkg of names) {
      const path = `${prefix}/${pkg}`;
      found.push(path);
      found.push(...(await installedPackages(dir, `${path}/node_modules`, depth + 1)));
    }
  }
  return found;
}

describe("npm dependencies of the Nix package", { timeout: 240_000 }, () => {
  let work = "";
  let drv: NpmDepsDrv;
  let lock: Record<string, LockEntry>;
  let lockText = "";

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "hetznix-npm-deps-"));
    lockText = await readFile(join(ROOT, "package-lock.json"), "utf8");
    lock = (JSON.parse(lockText) as { packages: Record<string, LockEntry> }).packages;
    drv = await evalNpmDeps();
  });
  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("package-lock.json names no registry: no entry has a `resolved` URL", () => {
    const withUrl = Object.entries(lock).filter(([, e]) => e.resolved !== undefined);
    assert.deepEqual(
      withUrl.map(([k]) => k),
      [],
      "package-lock.json must not carry `resolved` URLs (npm's omit-lockfile-registry-resolved setting)",
    );
  });

  it("the fixed-output derivation has a real hash and runs nix/npm-deps.sh as it is in the repository", () => {
    assert.match(drv.outputHash, /^sha256-[A-Za-z0-9+/]{43}=$/, "outputHash is an SRI sha256");
    assert.notEqual(drv.outputHash, `sha256-${"A".repeat(43)}=`, "outputHash is not lib.fakeHash");
    assert.equal(drv.outputHashMode, "recursive", "the hash is over the NAR of the output directory");
    assert.match(drv.script, /^\/nix\/store\/[0-9a-z]{32}-npm-deps\.sh$/);
    assert.ok(
      drv.buildCommand.includes(`${drv.script} "$src" "$out"`),
      `the derivation runs ${drv.script} (nix/npm-deps.sh with this content):\n${drv.buildCommand}`,
    );
  });

  it("the package installs the runtime tree and cannot reference the build tree (TypeScript, linters)", () => {
    assert.ok(drv.installPhase.includes(`${drv.depsPath}/runtime/node_modules`), drv.installPhase);
    assert.ok(!drv.installPhase.includes(`${drv.depsPath}/build`), "the build tree is not installed");
    assert.deepEqual(drv.disallowedReferences, [drv.depsPath], "disallowedReferences = [ npmDeps ]");
  });

  it("the derivation's name follows the lockfile, so a changed lockfile is never served from an old download", () => {
    const lockHash = createHash("sha256").update(lockText).digest("hex");
    assert.equal(drv.name, `hetznix-npm-deps-${lockHash.slice(0, 16)}`);
  });

  it("nix/npm-deps.sh on package-lock.json gives exactly the hash in nix/package.nix", async () => {
    const out = join(work, "deps");
    try {
      await exec("bash", [join(ROOT, "nix/npm-deps.sh"), ROOT, out], { timeout: 200_000 });
    } catch (err) {
      const e = err as { stderr?: string };
      assert.fail(`nix/npm-deps.sh failed (it needs the npm registry):\n${e.stderr ?? String(err)}`);
    }
    const { stdout } = await exec(
      "nix",
      ["--extra-experimental-features", "nix-command", "hash", "path", "--type", "sha256", "--sri", out],
      { timeout: 60_000 },
    );
    const actual = stdout.trim();
    assert.equal(
      drv.outputHash,
      actual,
      `package-lock.json changed and nix/package.nix did not follow: set npmDepsHash to "${actual}"`,
    );

    // What the hash stands for: the build tree has everything but optional packages (no per-platform
    // binaries), the runtime tree only the non-dev, non-optional ones (no TypeScript, no linters).
    const keys = Object.keys(lock).filter((k) => k !== "");
    const optional = (e: LockEntry) => e.optional === true || e.devOptional === true;
    const expectBuild = keys.filter((k) => !optional(lock[k]!)).sort();
    const expectRuntime = keys.filter((k) => !optional(lock[k]!) && lock[k]!.dev !== true).sort();
    assert.deepEqual((await installedPackages(join(out, "build"))).sort(), expectBuild);
    assert.deepEqual((await installedPackages(join(out, "runtime"))).sort(), expectRuntime);
    for (const dev of ["node_modules/typescript", "node_modules/eslint", "node_modules/prettier"]) {
      assert.ok(expectBuild.includes(dev) && !expectRuntime.includes(dev), `${dev}: build only`);
    }
    for (const tree of ["build", "runtime"]) {
      await assert.rejects(
        stat(join(out, tree, "node_modules/.package-lock.json")),
        `${tree}: no npm bookkeeping`,
      );
    }
  });
});
