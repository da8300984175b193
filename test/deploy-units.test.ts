/**
 * The pure parts of deploy: Nix keys (checked against Nix itself), release records (canonical bytes, signatures,
 * tampering), and apply's decisions (admission, switch exit statuses, steps per action, exit codes).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { APPLY_EXIT, admit, stepsFor, switchOutcome, type HostFacts } from "../src/deploy/apply/plan.js";
import { pathInfoEntries } from "../src/deploy/apply/fetch.js";
import { KeyError, generateSigningKey, parsePublicKey, parseSecretKey } from "../src/deploy/keys.js";
import {
  RecordError,
  canonicalJson,
  parseRecord,
  signRecord,
  verifyRecord,
  type ReleaseRecord,
} from "../src/deploy/record.js";

const run = promisify(execFile);
const PATH_A = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-a";
const PATH_B = "/nix/store/abcdfghijklmnpqrsvwxyz0123456789-nixos-system-b";

function record(extra: Partial<ReleaseRecord> = {}): ReleaseRecord {
  return {
    format: "hetznix-release/1",
    channel: "prod",
    serial: 5,
    kind: "release",
    storePath: PATH_A,
    system: "x86_64-linux",
    created: "2026-12-03T10:00:00Z",
    previous: null,
    keyName: "",
    ...extra,
  };
}

describe("deploy: Nix signing keys", () => {
  it("reads keys Nix generates, and Nix reads keys hetznix generates (same format, same signatures)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "hetznix-keys-"));
    try {
      await run(
        "nix-store",
        ["--generate-binary-cache-key", "made-by-nix-1", join(dir, "sk"), join(dir, "pk")],
        {
          env: { ...process.env, NIX_CONFIG: "build-users-group =" },
        },
      );
      const sk = parseSecretKey(await readFile(join(dir, "sk"), "utf8"));
      assert.equal(sk.publicKey, (await readFile(join(dir, "pk"), "utf8")).trim());
      const pk = parsePublicKey(sk.publicKey);
      assert.ok(pk.verify("data", sk.sign("data")));
      assert.ok(!pk.verify("date", sk.sign("data")), "another message does not verify");
      const ours = generateSigningKey("made-by-hetznix-1");
      assert.equal(parseSecretKey(ours.secretKey).publicKey, ours.publicKey);
      assert.ok(
        !parsePublicKey(ours.publicKey).verify("data", sk.sign("data")),
        "another key does not verify",
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses malformed keys without echoing them", () => {
    const secret = generateSigningKey("k-1").secretKey;
    for (const bad of ["", "nocolon", "k:!!!", `k:${Buffer.alloc(10).toString("base64")}`]) {
      assert.throws(() => parseSecretKey(bad), KeyError);
    }
    const damaged = `k-1:${Buffer.concat([Buffer.from(secret.split(":")[1] as string, "base64").subarray(0, 32), Buffer.alloc(32)]).toString("base64")}`;
    assert.throws(
      () => parseSecretKey(damaged),
      (e: unknown) => e instanceof KeyError && /damaged/.test(e.message) && !e.message.includes(damaged),
    );
    assert.throws(() => parsePublicKey(secret), /expected 32 bytes/);
    assert.throws(() => generateSigningKey("bad name"), /key name/);
  });
});

describe("deploy: release records", () => {
  const key = parseSecretKey(generateSigningKey("rel-1").secretKey);
  const trusted = [parsePublicKey(key.publicKey)];

  it("canonical JSON sorts keys at every level and leaves out undefined", () => {
    assert.equal(
      canonicalJson({ b: 1, a: { d: [2, { z: 1, y: 2 }], c: undefined } }),
      '{"a":{"d":[2,{"y":2,"z":1}]},"b":1}',
    );
  });

  it("a signed record verifies after a JSON round trip in any key order; any change breaks it", () => {
    const signed = signRecord(record(), key);
    assert.equal(signed.keyName, "rel-1");
    const reordered = JSON.stringify(Object.fromEntries(Object.entries(signed).reverse()));
    const parsed = parseRecord(reordered, "test");
    assert.equal(verifyRecord(parsed, trusted, "test").name, "rel-1");
    for (const change of [
      { storePath: PATH_B },
      { serial: 6 },
      { system: "aarch64-linux" },
      { kind: "rollback" as const },
    ]) {
      assert.throws(
        () => verifyRecord({ ...parsed, ...change }, trusted, "test"),
        (e: unknown) => e instanceof RecordError && e.code === "bad_signature",
        JSON.stringify(change),
      );
    }
    const other = parsePublicKey(generateSigningKey("rel-1").publicKey);
    assert.throws(
      () => verifyRecord(parsed, [other], "test"),
      (e: unknown) => e instanceof RecordError && e.code === "bad_signature",
    );
    assert.throws(
      () => verifyRecord(parsed, [parsePublicKey(generateSigningKey("other-1").publicKey)], "test"),
      (e: unknown) => e instanceof RecordError && e.code === "untrusted_key",
    );
  });

  it("parseRecord names what is wrong", () => {
    assert.throws(() => parseRecord("<html>", "u"), /is not JSON/);
    assert.throws(
      () => parseRecord(JSON.stringify({ ...record(), storePath: "/etc/passwd", signature: "x" }), "u"),
      /bad store path/,
    );
    assert.throws(
      () => parseRecord(JSON.stringify({ ...record(), serial: 0, signature: "x" }), "u"),
      /bad serial/,
    );
  });
});

describe("deploy: apply's decisions", () => {
  const facts = (over: Partial<HostFacts> = {}): HostFacts => ({
    system: "x86_64-linux",
    activePath: PATH_B,
    profilePath: PATH_B,
    last: { channel: "prod", serial: 4, storePath: PATH_B },
    ...over,
  });
  const signed = (r: Partial<ReleaseRecord> = {}) => ({ ...record(r), signature: "x" });

  it("admits a newer release, refuses another system and a replayed older serial, and no-ops the active one", () => {
    assert.deepEqual(admit(signed(), facts(), "switch"), { verdict: "apply" });
    const other = admit(signed({ system: "aarch64-linux" }), facts(), "switch");
    assert.equal(other.verdict === "refuse" && other.code, "wrong_system");
    const old = admit(signed({ serial: 3 }), facts(), "switch");
    assert.equal(old.verdict === "refuse" && old.code, "older_serial");
    assert.equal(
      admit(signed({ serial: 3, channel: "staging" }), facts(), "switch").verdict,
      "apply",
      "another channel's serials are its own",
    );
    assert.equal(admit(signed({ storePath: PATH_B }), facts(), "switch").verdict, "noop");
    assert.equal(
      admit(signed({ storePath: PATH_B }), facts({ profilePath: PATH_A }), "switch").verdict,
      "apply",
      "active but not the boot default",
    );
    assert.equal(
      admit(signed({ storePath: PATH_B }), facts({ profilePath: PATH_A }), "test").verdict,
      "noop",
    );
    assert.equal(admit(signed({ storePath: PATH_B }), facts({ activePath: PATH_A }), "boot").verdict, "noop");
    assert.equal(admit(signed({ storePath: PATH_B }), facts(), "dry-activate").verdict, "apply");
  });

  it("maps switch-to-configuration's exit statuses as NixOS defines them", () => {
    assert.deepEqual(switchOutcome("test", 0), { ok: true, rebootNeeded: false });
    assert.deepEqual(switchOutcome("test", 100), { ok: true, rebootNeeded: true });
    assert.match((switchOutcome("test", 2) as { reason: string }).reason, /activation script failed/);
    assert.match((switchOutcome("test", 4) as { reason: string }).reason, /some units failed/);
    assert.match((switchOutcome("boot", 1) as { reason: string }).reason, /exit status 1/);
    assert.match((switchOutcome("test", null, "SIGKILL") as { reason: string }).reason, /killed by SIGKILL/);
  });

  it("orders the steps so nothing unconfirmed becomes the boot default", () => {
    assert.deepEqual(stepsFor("switch", false), ["activate", "health", "commit"]);
    assert.deepEqual(stepsFor("switch", true), ["activate", "health", "confirm", "commit"]);
    assert.deepEqual(stepsFor("test", true), ["activate", "health", "confirm"]);
    assert.deepEqual(stepsFor("boot", false), ["commit"]);
    assert.deepEqual(stepsFor("dry-activate", false), ["dry-activate"]);
    assert.deepEqual(
      [
        APPLY_EXIT.applied,
        APPLY_EXIT.noop,
        APPLY_EXIT.failed,
        APPLY_EXIT.refused,
        APPLY_EXIT.rolled_back,
        APPLY_EXIT.rollback_failed,
        APPLY_EXIT.busy,
      ],
      [0, 0, 1, 3, 4, 5, 6],
    );
  });
});

describe("deploy: reading Nix's output", () => {
  it("reads nix path-info --json of old Nix (a list) and of new Nix (an object keyed by path)", () => {
    const old = JSON.stringify([{ path: PATH_A, narSize: 10, downloadSize: 4 }]);
    const current = JSON.stringify({ [PATH_A]: { narSize: 10, downloadSize: 4 }, [PATH_B]: null });
    assert.deepEqual(pathInfoEntries(old), [{ path: PATH_A, narSize: 10, downloadSize: 4 }]);
    assert.deepEqual(pathInfoEntries(current), [{ narSize: 10, downloadSize: 4, path: PATH_A }]);
    assert.throws(() => pathInfoEntries("3"), /no list/);
  });
});
