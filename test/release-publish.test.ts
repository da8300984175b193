/**
 * Publishing releases with real Nix and real signatures: a file:// cache and a releases directory, both served over
 * HTTP on loopback by a static server, fetched by Nix as a host would (trusting only the release key). keygen,
 * publish (store path and flake), serials, history, list, show, rollback, promote, --output json, interrupted and
 * concurrent publishes, and bad input.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmod, cp, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildTestSystem, findBusybox } from "../scripts/sample/image.js";
import {
  generateSigningKey,
  parsePublicKey,
  parseRecord,
  publishRelease,
  verifyRecord,
  type SignedRecord,
} from "../src/deploy/index.js";
import { isRunError } from "../src/run/errors.js";
import { startStaticServer } from "./support/static-server.js";
import {
  ROOT,
  fetchAsHost,
  hetznix,
  hetznixArgv,
  publishArgv,
  releaseEnv,
  run,
  type Ran,
} from "./support/release.js";

const SAMPLE = join(ROOT, "scripts/sample");

function json<T = Record<string, unknown>>(r: Ran): T {
  assert.equal(r.code, 0, `exit 0 expected:\n${r.stderr}\n${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

describe("hetznix release with a file:// cache served over HTTP", { timeout: 900_000 }, () => {
  let tmp = "";
  let env: NodeJS.ProcessEnv;
  let savedEnv: NodeJS.ProcessEnv;
  let server: { url: string; close(): Promise<void> } | undefined;
  let sys: string[] = [];
  let keyFile = "";
  let publicKey = "";
  let otherPublic = "";
  let cache = "";
  let rel = "";

  /** `release publish --store-path PATH --channel CHANNEL` with the suite's locations unless overridden. */
  const pub = (
    path: string,
    channel: string,
    over: { releases?: string; cache?: string; key?: string } = {},
    extra: string[] = [],
  ) =>
    hetznix(
      publishArgv(
        {
          path,
          channel,
          releases: over.releases ?? rel,
          cache: over.cache ?? cache,
          key: over.key ?? keyFile,
        },
        extra,
      ),
      env,
    );
  const publish = (path: string, channel: string, extra: string[] = []) =>
    pub(path, channel, {}, ["--cache-url", `${server?.url}/cache`, "--output", "json", ...extra]);
  /** `release rollback|promote` at the suite's releases with the suite's key. */
  const change = (sub: "rollback" | "promote", args: string[]) =>
    hetznix(["release", sub, "--releases", rel, "--signing-key", keyFile, ...args], env);
  /** A host fetching `path` from the served cache into a store of its own, trusting only `key`. */
  const fetchHost = (path: string, host: string, key = publicKey, sub = "cache") =>
    fetchAsHost(`${server?.url}/${sub}`, path, key, join(tmp, host), env);
  const channelOverHttp = async (channel: string): Promise<SignedRecord> => {
    const res = await fetch(`${server?.url}/rel/channels/${channel}.json`);
    assert.equal(res.status, 200, `channel ${channel} is served`);
    const record = parseRecord(await res.text(), channel);
    verifyRecord(record, [parsePublicKey(publicKey)], channel);
    return record;
  };
  const history = async (channel: string) =>
    (await readdir(join(rel, "releases", channel)))
      .filter((n) => /^\d+\.json$/.test(n))
      .map((n) => Number(n.slice(0, -5)))
      .sort((a, b) => a - b);

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), "hetznix-release-"));
    env = releaseEnv(tmp);
    savedEnv = { ...process.env };
    // The library runs Nix with this process's environment.
    Object.assign(process.env, {
      NIX_CONFIG: env.NIX_CONFIG,
      XDG_CACHE_HOME: env.XDG_CACHE_HOME,
      PATH: env.PATH,
    });
    sys = [];
    for (const label of ["rel-a", "rel-b", "rel-c", "rel-d"]) sys.push(await buildTestSystem({ label }));
    cache = join(tmp, "www/cache");
    rel = join(tmp, "www/rel");
    await mkdir(join(tmp, "www"), { recursive: true });
    server = await startStaticServer(join(tmp, "www"));
    keyFile = join(tmp, "release.key");
    const other = generateSigningKey("other-key-1");
    otherPublic = other.publicKey;
  });

  after(async () => {
    await server?.close();
    process.env = savedEnv;
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it("keygen writes a Nix key pair: the secret key mode 0600 and never printed; Nix signs and verifies with it", async () => {
    const r = await hetznix(["release", "keygen", "--name", "test-release-1", "--out", keyFile], env);
    assert.equal(r.code, 0, r.stderr);
    const secret = (await readFile(keyFile, "utf8")).trim();
    publicKey = (await readFile(`${keyFile}.pub`, "utf8")).trim();
    assert.equal((await stat(keyFile)).mode & 0o777, 0o600);
    assert.equal(r.stdout, `${publicKey}\n`, "stdout is the public key alone");
    assert.match(publicKey, /^test-release-1:[A-Za-z0-9+/]{43}=$/);
    const secretB64 = secret.slice(secret.indexOf(":") + 1);
    for (const out of [r.stdout, r.stderr])
      assert.ok(!out.includes(secretB64), "the secret key is never printed");
    // Nix's own tools take it: sign a path in a cache with it, verify with the public half, refuse another key.
    const store = `file://${join(tmp, "keytest")}`;
    const nixc = (args: string[]) =>
      run("nix", ["--extra-experimental-features", "nix-command", ...args], { env });
    assert.equal((await nixc(["copy", "--to", store, sys[0] as string])).code, 0);
    const signed = await nixc(["store", "sign", "--store", store, "-k", keyFile, "-r", sys[0] as string]);
    assert.equal(signed.code, 0, signed.stderr);
    const verify = (pk: string) =>
      nixc([
        "store",
        "verify",
        "--store",
        store,
        "--no-contents",
        "-r",
        sys[0] as string,
        "--option",
        "trusted-public-keys",
        pk,
      ]);
    assert.equal((await verify(publicKey)).code, 0, "Nix accepts the signature with the public key");
    assert.notEqual((await verify(otherPublic)).code, 0, "and not with another key");

    const again = await hetznix(["release", "keygen", "--name", "test-release-1", "--out", keyFile], env);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /exists; keygen never replaces a key/);
    const badName = await hetznix(
      ["release", "keygen", "--name", "bad name", "--out", join(tmp, "x.key")],
      env,
    );
    assert.equal(badName.code, 2);
    assert.match(badName.stderr, /key name "bad name" must be/);
  });

  it("publish --store-path: the closure is in the cache, signed; Nix fetches it over HTTP with the key, not with another", async () => {
    const out = json<{ record: SignedRecord; closure: { paths: number; copied: number } }>(
      await publish(sys[0] as string, "staging"),
    );
    assert.equal(out.record.serial, 1);
    assert.equal(out.record.kind, "release");
    assert.equal(out.record.storePath, sys[0]);
    assert.equal(out.record.system, (await readFile(join(sys[0] as string, "system"), "utf8")).trim());
    assert.equal(out.record.previous, null);
    assert.equal(out.record.substituter, `${server?.url}/cache`);
    assert.equal(out.closure.paths, 2, "the system and busybox");
    assert.deepEqual(await channelOverHttp("staging"), out.record);

    const good = await fetchHost(sys[0] as string, "host-good");
    assert.equal(good.code, 0, good.stderr);
    await stat(join(tmp, "host-good", sys[0] as string, "bin/switch-to-configuration"));
    const bad = await fetchHost(sys[0] as string, "host-bad", otherPublic);
    assert.notEqual(bad.code, 0, "a host trusting another key refuses the closure");
    assert.match(bad.stderr, /lacks a valid signature/);
    // And the record does not verify with another key either.
    assert.throws(
      () => verifyRecord(out.record, [parsePublicKey(otherPublic)], "x"),
      /not among the trusted keys/,
    );
  });

  it("serials grow, the history keeps every record, previous names the replaced one", async () => {
    const second = json<{ record: SignedRecord }>(await publish(sys[1] as string, "staging"));
    assert.equal(second.record.serial, 2);
    assert.deepEqual(second.record.previous, { serial: 1, storePath: sys[0] });
    const third = json<{ record: SignedRecord }>(
      await publish(sys[1] as string, "staging", ["--revision", "ABCDEF1"]),
    );
    assert.equal(third.record.serial, 3, "the same system published again is a new release");
    assert.equal(third.record.revision, "abcdef1");
    assert.deepEqual(await history("staging"), [1, 2, 3]);
    const first = parseRecord(await readFile(join(rel, "releases/staging/1.json"), "utf8"), "1");
    assert.equal(first.storePath, sys[0], "history objects never change");
    assert.equal((await channelOverHttp("staging")).serial, 3);
  });

  it("list and show, as text and JSON", async () => {
    const channels = json<{ channels: { channel: string; record: SignedRecord; verified: boolean }[] }>(
      await hetznix(
        ["release", "list", "--releases", rel, "--output", "json", "--trusted-key", `${keyFile}.pub`],
        env,
      ),
    );
    assert.deepEqual(
      channels.channels.map((c) => [c.channel, c.record.serial, c.verified]),
      [["staging", 3, true]],
    );
    const hist = json<{
      current: number;
      total: number;
      records: { current: boolean; record: SignedRecord }[];
    }>(
      await hetznix(
        ["release", "list", "--releases", `file://${rel}`, "--channel", "staging", "--output", "json"],
        env,
      ),
    );
    assert.equal(hist.current, 3);
    assert.deepEqual(
      hist.records.map((r) => [r.record.serial, r.current]),
      [
        [3, true],
        [2, false],
        [1, false],
      ],
    );
    const text = await hetznix(
      ["release", "list", "--releases", rel, "--channel", "staging", "--limit", "2"],
      env,
    );
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trim().split("\n");
    assert.equal(lines.length, 2);
    assert.match(lines[0] as string, /^\* 3\trelease\t/);
    const show = json<{ current: boolean; verified: boolean; record: SignedRecord }>(
      await hetznix(
        [
          "release",
          "show",
          "--releases",
          rel,
          "--channel",
          "staging",
          "--serial",
          "1",
          "--trusted-key",
          publicKey,
          "--output",
          "json",
        ],
        env,
      ),
    );
    assert.equal(show.record.storePath, sys[0]);
    assert.equal(show.current, false);
    assert.equal(show.verified, true);
    const showText = await hetznix(["release", "show", "--releases", rel, "--channel", "staging"], env);
    assert.match(showText.stdout, /^serial: +3 \(current\)$/m);
    assert.match(showText.stdout, /^signature: +not checked/m);
  });

  it("rollback: the newest earlier system by default, or --to; a new signed record of kind rollback", async () => {
    const back = json<{ record: SignedRecord; closure_checked: { paths: number } }>(
      await change("rollback", ["--channel", "staging", "--cache", cache, "--output", "json"]),
    );
    assert.equal(back.record.serial, 4);
    assert.equal(back.record.kind, "rollback");
    assert.equal(back.record.rollbackOf, 1, "serial 2 and 3 have the current system: 1 is the one before");
    assert.equal(back.record.storePath, sys[0]);
    assert.deepEqual(back.record.previous, { serial: 3, storePath: sys[1] });
    assert.equal(back.closure_checked.paths, 2);
    assert.deepEqual(await channelOverHttp("staging"), back.record);

    const to = json<{ record: SignedRecord }>(
      await change("rollback", ["--channel", "staging", "--to", "3", "--output", "json"]),
    );
    assert.equal(to.record.serial, 5);
    assert.equal(to.record.storePath, sys[1]);
    assert.equal(to.record.rollbackOf, 3);
    assert.equal(to.record.revision, "abcdef1", "the rolled-back-to release's revision is kept");

    const same = await change("rollback", ["--channel", "staging", "--to", "2"]);
    assert.equal(same.code, 2);
    assert.match(same.stderr, /same system as the current serial 5/);
    assert.deepEqual(await history("staging"), [1, 2, 3, 4, 5]);
  });

  it("rollback with --cache refuses a release whose closure is no longer in the cache", async () => {
    const gone = join(tmp, "www/emptycache");
    await mkdir(gone);
    const r = await change("rollback", ["--channel", "staging", "--cache", gone]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /lacks [0-9a-z]{32}\.narinfo/);
    assert.equal((await channelOverHttp("staging")).serial, 5, "nothing written");
  });

  it("promote: a staging release becomes production's next record without rebuilding", async () => {
    const p = json<{ record: SignedRecord; replaced: null }>(
      await change("promote", [
        "--from",
        "staging",
        "--to",
        "production",
        "--serial",
        "2",
        "--cache",
        cache,
        "--output",
        "json",
      ]),
    );
    assert.equal(p.record.channel, "production");
    assert.equal(p.record.serial, 1);
    assert.equal(p.record.kind, "promote");
    assert.deepEqual(p.record.promotedFrom, { channel: "staging", serial: 2 });
    assert.equal(p.record.storePath, sys[1]);
    assert.equal(p.record.substituter, `${server?.url}/cache`);
    assert.equal(p.replaced, null);
    const next = json<{ record: SignedRecord }>(
      await change("promote", ["--from", "staging", "--to", "production", "--output", "json"]),
    );
    assert.equal(next.record.serial, 2);
    assert.deepEqual(next.record.promotedFrom, { channel: "staging", serial: 5 });
    assert.deepEqual(await channelOverHttp("production"), next.record);
    assert.equal((await channelOverHttp("staging")).serial, 5, "the source channel is unchanged");
  });

  it("rollback and promote refuse a history record that does not verify (no laundering through the key)", async () => {
    const forged = parseRecord(await readFile(join(rel, "releases/staging/1.json"), "utf8"), "1");
    forged.storePath = sys[3] as string; // changed after signing
    await writeFile(join(rel, "releases/staging/1.json"), JSON.stringify(forged));
    try {
      const r = await change("rollback", ["--channel", "staging", "--to", "1"]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /signature does not verify/);
      assert.equal((await channelOverHttp("staging")).serial, 5);
    } finally {
      forged.storePath = sys[0] as string;
      await writeFile(join(rel, "releases/staging/1.json"), `${JSON.stringify(forged, null, 2)}\n`);
    }
  });

  it("publish --flake REF#NAME builds the toplevel offline and records the flake and its git revision", async () => {
    const flake = join(tmp, "flake");
    await mkdir(flake);
    for (const f of ["system.nix", "build.sh", "switch.sh"]) await cp(join(SAMPLE, f), join(flake, f));
    await cp(await findBusybox(), join(flake, "busybox"));
    const system = (await readFile(join(sys[0] as string, "system"), "utf8")).trim();
    await writeFile(
      join(flake, "flake.nix"),
      `{
  outputs = { self }: {
    nixosConfigurations.web.config.system.build.toplevel = import ./system.nix {
      busybox = ./.;
      label = "rel-flake";
      system = "${system}";
    };
  };
}
`,
    );
    const git = (args: string[]) =>
      run(
        "git",
        ["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main", ...args],
        {
          cwd: flake,
          env,
        },
      );
    assert.equal((await git(["init", "-q"])).code, 0);
    assert.equal((await git(["add", "-A"])).code, 0);
    assert.equal((await git(["commit", "-qm", "flake"])).code, 0);
    const rev = (await git(["rev-parse", "HEAD"])).stdout.trim();
    const r = await hetznix(
      [
        "release",
        "publish",
        "--flake",
        `${flake}#web`,
        "--channel",
        "flake",
        "--releases",
        rel,
        "--cache",
        `file://${cache}`,
        "--signing-key",
        keyFile,
        "--output",
        "json",
      ],
      { ...env, GITHUB_SHA: "0".repeat(40) },
    );
    const out = json<{ record: SignedRecord }>(r);
    assert.match(out.record.storePath, /-nixos-system-hetznix-test-rel-flake$/);
    assert.equal(out.record.flake, `${flake}#web`);
    assert.equal(out.record.revision, rev, "the flake's revision wins over the CI environment");
    assert.equal(out.record.system, system);
    const fetched = await fetchHost(out.record.storePath, "host-flake");
    assert.equal(fetched.code, 0, fetched.stderr);

    const noName = await hetznix(
      [
        "release",
        "publish",
        "--flake",
        flake,
        "--channel",
        "flake",
        "--releases",
        rel,
        "--cache",
        cache,
        "--signing-key",
        keyFile,
      ],
      env,
    );
    assert.equal(noName.code, 2);
    assert.match(noName.stderr, /give the flake and the configuration, e\.g\. --flake \.#web/);
  });

  it("a publish aborted before the record leaves the channel where it was; the next publish works", async () => {
    const before = await channelOverHttp("staging");
    const controller = new AbortController();
    await assert.rejects(
      publishRelease({
        storePath: sys[2] as string,
        channel: "staging",
        releases: rel,
        cache,
        signingKey: keyFile,
        signal: controller.signal,
        onEvent: (e) => {
          if (e.kind === "step" && e.step === "cache" && e.status === "start")
            controller.abort(new Error("test"));
        },
      }),
      (err: unknown) => isRunError(err, "aborted") && /The publish was aborted/.test((err as Error).message),
    );
    assert.deepEqual(await channelOverHttp("staging"), before);
    assert.deepEqual(await history("staging"), [1, 2, 3, 4, 5]);
    const next = await publishRelease({
      storePath: sys[2] as string,
      channel: "staging",
      releases: rel,
      cache,
      signingKey: keyFile,
    });
    assert.equal(next.record.serial, 6);
  });

  it("a publish killed (SIGKILL) while copying the closure leaves the channel where it was; the next publish works", async () => {
    const before = await channelOverHttp("staging");
    const child = spawn(
      process.execPath,
      hetznixArgv([
        "release",
        "publish",
        "--store-path",
        sys[3] as string,
        "--channel",
        "staging",
        "--releases",
        rel,
        "--cache",
        cache,
        "--signing-key",
        keyFile,
      ]),
      { cwd: ROOT, env, detached: true, stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    const killed = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 120_000);
      child.stderr.on("data", (d: Buffer) => {
        stderr += d.toString();
        // The cache step's first note comes before `nix copy` starts: kill the whole group (the CLI and Nix).
        if (/paths in the closure/.test(stderr)) {
          clearTimeout(timer);
          process.kill(-(child.pid as number), "SIGKILL");
          resolve(true);
        }
      });
      child.once("close", () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    await new Promise((r) =>
      child.exitCode !== null || child.signalCode !== null ? r(null) : child.once("close", r),
    );
    assert.ok(killed, `the publish was killed during the cache step:\n${stderr}`);
    assert.deepEqual(await channelOverHttp("staging"), before, "the channel is unchanged");
    assert.deepEqual(await history("staging"), [1, 2, 3, 4, 5, 6], "no record was written");
    const next = json<{ record: SignedRecord }>(await publish(sys[3] as string, "staging"));
    assert.equal(next.record.serial, 7);
    const fetched = await fetchHost(sys[3] as string, "host-killed");
    assert.equal(fetched.code, 0, fetched.stderr);
  });

  it("two publishes at once get distinct serials; the channel ends at the higher one", async () => {
    const results = await Promise.all(
      [sys[0], sys[2]].map((p) =>
        publishRelease({
          storePath: p as string,
          channel: "race",
          releases: rel,
          cache,
          signingKey: keyFile,
        }),
      ),
    );
    const serials = results.map((r) => r.record.serial).sort();
    assert.deepEqual(serials, [1, 2]);
    const top = results.find((r) => r.record.serial === 2);
    const low = results.find((r) => r.record.serial === 1);
    assert.deepEqual(top?.record.previous, { serial: 1, storePath: low?.record.storePath });
    assert.deepEqual(await channelOverHttp("race"), top?.record);
    assert.deepEqual(await history("race"), [1, 2]);
  });

  it("a path already in the cache without the key's signature gets it", async () => {
    const c2 = join(tmp, "www/cache2");
    const nixCopy = ["--extra-experimental-features", "nix-command", "copy", "--to", `file://${c2}`];
    const unsigned = await run("nix", [...nixCopy, sys[0] as string], { env });
    assert.equal(unsigned.code, 0, unsigned.stderr);
    const out = json<{ closure: { present: number; copied: number; signatures_added: number } }>(
      await pub(sys[0] as string, "resign", { cache: c2 }, ["--output", "json"]),
    );
    assert.deepEqual([out.closure.present, out.closure.copied, out.closure.signatures_added], [2, 0, 2]);
    const fetched = await fetchHost(sys[0] as string, "host-resign", publicKey, "cache2");
    assert.equal(fetched.code, 0, fetched.stderr);
  });

  it("bad input fails clearly, writes nothing, and exits 2 for usage errors", async () => {
    const expectFail = async (r: Promise<Ran>, code: number, message: RegExp) => {
      const ran = await r;
      assert.equal(ran.code, code, `exit ${code} expected:\n${ran.stderr}`);
      assert.match(ran.stderr, message);
    };
    const sys0 = sys[0] as string;
    await expectFail(
      pub(sys0, "staging", { key: join(tmp, "nope.key") }),
      1,
      /cannot read the signing key .*nope\.key \(no such file\); make one with: hetznix release keygen/,
    );
    await expectFail(
      pub(await findBusyboxStorePath(sys0), "staging"),
      1,
      /is not a NixOS system \(it has no bin\/switch-to-configuration\)/,
    );
    await expectFail(pub(tmp, "staging"), 2, /is not a store path/);
    await expectFail(
      pub(sys0, "staging", {}, ["--flake", ".#x"]),
      2,
      /exactly one of --store-path PATH and --flake/,
    );
    await expectFail(
      pub(sys0, "staging", { releases: "http://example.org/rel" }),
      2,
      /--releases http:\/\/example\.org\/rel: use a directory, file:\/\/\/dir or s3:\/\/bucket\/prefix/,
    );
    await expectFail(
      hetznix(["release", "list", "--releases", "s3://Bad_Bucket/x"], env),
      2,
      /"Bad_Bucket" is not a bucket name/,
    );
    await expectFail(
      pub(sys0, "staging", { cache: join(tmp, "a cache") }),
      2,
      /Nix cannot open a cache directory with spaces/,
    );
    await expectFail(pub(sys0, "Prod!"), 2, /channel "Prod!" must be 1-63 lowercase letters/);
    await expectFail(
      hetznix(["release", "publish", "--store-path", sys0, "--channel", "staging"], env),
      2,
      /give --releases/,
    );
    await expectFail(hetznix(["release", "list", "--releases", rel, "--bogus"], env), 2, /unknown option/);

    const unknown = await hetznix(
      ["release", "show", "--releases", rel, "--channel", "nosuch", "--output", "json"],
      env,
    );
    assert.equal(unknown.code, 1);
    const err = (JSON.parse(unknown.stdout) as { error: { code: string; message: string } }).error;
    assert.equal(err.code, "not_found");
    assert.match(
      err.message,
      /no channel "nosuch" at .* \(channels: flake, production, race, resign, staging\)/,
    );
    assert.deepEqual(await history("staging"), [1, 2, 3, 4, 5, 6, 7], "none of them wrote a record");
  });

  it("a signing key file others can read works, with a warning (also in JSON output)", async () => {
    const loose = join(tmp, "loose.key");
    await cp(keyFile, loose);
    await chmod(loose, 0o644);
    const r = await pub(sys[0] as string, "loose", { key: loose }, ["--output", "json"]);
    const out = json<{ warnings: string[] }>(r);
    assert.match(out.warnings.join("\n"), /loose\.key is readable by others \(mode 0644\); run: chmod 600/);
    assert.match(r.stderr, /warning: the signing key .*loose\.key is readable by others/);
    const secret = (await readFile(keyFile, "utf8")).trim();
    const secretB64 = secret.slice(secret.indexOf(":") + 1);
    assert.ok(
      !r.stdout.includes(secretB64) && !r.stderr.includes(secretB64),
      "the secret key is never printed",
    );
  });
});

/** The busybox store path in a test system's closure (a store path that is not a NixOS toplevel). */
async function findBusyboxStorePath(system: string): Promise<string> {
  const r = await run("nix-store", ["-qR", system]);
  const path = r.stdout.split("\n").find((l) => l.endsWith("-busybox-static"));
  assert.ok(path, r.stderr);
  return path;
}
