/**
 * The S3 backend against a local S3-compatible server (s3rver, on loopback): a release published to a bucket (the
 * cache and the records) resolves the same as one published to a directory; hosts fetch the channel object and the
 * closure over plain HTTP from the bucket, and Nix accepts the closure with the release key only.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import S3rver from "s3rver";
import { buildTestSystem } from "../scripts/sample/image.js";
import {
  generateSigningKey,
  parsePublicKey,
  parseRecord,
  publishRelease,
  verifyRecord,
  type SignedRecord,
} from "../src/deploy/index.js";
import { isRunError } from "../src/run/errors.js";
import { fetchAsHost, hetznix, publishArgv, releaseEnv, type Ran } from "./support/release.js";

const BUCKET = "hetznix-test";

function json<T>(r: Ran): T {
  assert.equal(r.code, 0, `exit 0 expected:\n${r.stderr}\n${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

/** What a record says, without what differs between two publishes of the same system (time, signature). */
function essence(r: SignedRecord): Record<string, unknown> {
  const { created: _c, signature: _s, substituter: _u, ...rest } = r;
  return rest;
}

describe("hetznix release with an S3-compatible bucket", { timeout: 600_000 }, () => {
  let tmp = "";
  let env: NodeJS.ProcessEnv;
  let savedEnv: NodeJS.ProcessEnv;
  let s3: S3rver | undefined;
  let endpoint = "";
  let sys: string[] = [];
  let keyFile = "";
  let publicKey = "";
  let otherPublic = "";

  const q = () => `?endpoint=${encodeURIComponent(endpoint)}`;
  const bucketUrl = (sub: string) => `${endpoint}/${BUCKET}/${sub}`;
  const s3Publish = (path: string, channel: string) =>
    hetznix(
      publishArgv(
        {
          path,
          channel,
          releases: `s3://${BUCKET}/rel${q()}`,
          cache: `s3://${BUCKET}/cache${q()}`,
          key: keyFile,
        },
        ["--cache-url", bucketUrl("cache"), "--output", "json"],
      ),
      env,
    );
  const channelOverHttp = async (channel: string): Promise<SignedRecord> => {
    const res = await fetch(bucketUrl(`rel/channels/${channel}.json`));
    assert.equal(res.status, 200, `the bucket serves channel ${channel}`);
    const record = parseRecord(await res.text(), channel);
    verifyRecord(record, [parsePublicKey(publicKey)], channel);
    return record;
  };

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), "hetznix-release-s3-"));
    const creds = {
      AWS_ACCESS_KEY_ID: "S3RVER",
      AWS_SECRET_ACCESS_KEY: "S3RVER",
      // Never ask a cloud metadata service for credentials, and read no credential files of this machine.
      AWS_EC2_METADATA_DISABLED: "true",
      AWS_SHARED_CREDENTIALS_FILE: join(tmp, "none"),
      AWS_CONFIG_FILE: join(tmp, "none"),
    };
    env = releaseEnv(tmp, creds);
    savedEnv = { ...process.env };
    Object.assign(process.env, { ...creds, NIX_CONFIG: env.NIX_CONFIG, XDG_CACHE_HOME: env.XDG_CACHE_HOME });
    delete process.env.AWS_ENDPOINT_URL;
    delete process.env.AWS_ENDPOINT_URL_S3;
    await mkdir(join(tmp, "s3"));
    s3 = new S3rver({
      address: "127.0.0.1",
      port: 0,
      silent: true,
      directory: join(tmp, "s3"),
      configureBuckets: [{ name: BUCKET }],
    });
    const { port } = await s3.run();
    endpoint = `http://127.0.0.1:${port}`;
    sys = [];
    for (const label of ["s3-a", "s3-b"]) sys.push(await buildTestSystem({ label }));
    const key = generateSigningKey("test-s3-1");
    publicKey = key.publicKey;
    otherPublic = generateSigningKey("other-s3-1").publicKey;
    keyFile = join(tmp, "release.key");
    const r = await hetznix(["release", "keygen", "--name", "test-s3-1", "--out", keyFile], env);
    assert.equal(r.code, 0, r.stderr);
    publicKey = r.stdout.trim();
  });

  after(async () => {
    await s3?.close();
    process.env = savedEnv;
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it("publishes to the bucket; hosts fetch the channel and the closure over HTTP, signed with the key only", async () => {
    const out = json<{
      record: SignedRecord;
      closure: { paths: number; copied: number; uploaded_bytes: number };
    }>(await s3Publish(sys[0] as string, "staging"));
    assert.equal(out.record.serial, 1);
    assert.equal(out.record.substituter, bucketUrl("cache"));
    assert.equal(out.closure.paths, 2);
    assert.equal(out.closure.copied, 2);
    assert.ok(out.closure.uploaded_bytes > 0);
    assert.deepEqual(await channelOverHttp("staging"), out.record);
    const history = await fetch(bucketUrl("rel/releases/staging/1.json"));
    assert.deepEqual(parseRecord(await history.text(), "1"), out.record, "the history object");

    const good = await fetchAsHost(
      bucketUrl("cache"),
      sys[0] as string,
      publicKey,
      join(tmp, "host-good"),
      env,
    );
    assert.equal(good.code, 0, good.stderr);
    const bad = await fetchAsHost(
      bucketUrl("cache"),
      sys[0] as string,
      otherPublic,
      join(tmp, "host-bad"),
      env,
    );
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /lacks a valid signature/);
  });

  it("resolves the same as a directory: the same record (but time and signature) and the same objects", async () => {
    const dir = join(tmp, "dir");
    const viaDir = await publishRelease({
      storePath: sys[0] as string,
      channel: "staging",
      releases: join(dir, "rel"),
      cache: join(dir, "cache"),
      signingKey: keyFile,
      cacheUrl: bucketUrl("cache"),
    });
    const viaS3 = await channelOverHttp("staging");
    assert.deepEqual(essence(viaDir.record), essence(viaS3));
    const local = async (sub: string) => (await readdir(join(dir, sub), { recursive: true })).map(String);
    const cacheFiles = (await local("cache")).filter((f) => /\.narinfo$|^nar\/|^nix-cache-info$/.test(f));
    for (const f of cacheFiles) {
      const res = await fetch(bucketUrl(`cache/${f}`), { method: "HEAD" });
      assert.equal(res.status, 200, `the bucket has cache/${f}, as the directory has`);
    }
    assert.ok(cacheFiles.filter((f) => f.startsWith("nar/")).length === 2, cacheFiles.join(" "));
  });

  it("a second publish uploads only what the bucket lacks; serials grow; list and show read the bucket", async () => {
    const out = json<{ record: SignedRecord; closure: { present: number; copied: number } }>(
      await s3Publish(sys[1] as string, "staging"),
    );
    assert.equal(out.record.serial, 2);
    assert.deepEqual(out.record.previous, { serial: 1, storePath: sys[0] });
    assert.deepEqual([out.closure.present, out.closure.copied], [1, 1], "busybox was there already");
    const fetched = await fetchAsHost(
      bucketUrl("cache"),
      sys[1] as string,
      publicKey,
      join(tmp, "host-2"),
      env,
    );
    assert.equal(fetched.code, 0, fetched.stderr);

    // The endpoint from the environment instead of the URL.
    const envWithEndpoint = { ...env, AWS_ENDPOINT_URL_S3: endpoint };
    const list = json<{ current: number; records: { record: SignedRecord; verified: boolean }[] }>(
      await hetznix(
        [
          "release",
          "list",
          "--releases",
          `s3://${BUCKET}/rel`,
          "--channel",
          "staging",
          "--trusted-key",
          publicKey,
          "--output",
          "json",
        ],
        envWithEndpoint,
      ),
    );
    assert.equal(list.current, 2);
    assert.deepEqual(
      list.records.map((r) => [r.record.serial, r.verified]),
      [
        [2, true],
        [1, true],
      ],
    );
    const show = json<{ record: SignedRecord }>(
      await hetznix(
        [
          "release",
          "show",
          "--releases",
          `s3://${BUCKET}/rel${q()}`,
          "--channel",
          "staging",
          "--serial",
          "1",
          "--output",
          "json",
        ],
        env,
      ),
    );
    assert.equal(show.record.storePath, sys[0]);
  });

  it("rollback and promote in the bucket, with the closure checked in the bucket", async () => {
    const rel = `s3://${BUCKET}/rel${q()}`;
    const back = json<{ record: SignedRecord; closure_checked: { paths: number } }>(
      await hetznix(
        [
          "release",
          "rollback",
          "--releases",
          rel,
          "--channel",
          "staging",
          "--signing-key",
          keyFile,
          "--cache",
          `s3://${BUCKET}/cache${q()}`,
          "--output",
          "json",
        ],
        env,
      ),
    );
    assert.equal(back.record.serial, 3);
    assert.equal(back.record.kind, "rollback");
    assert.equal(back.record.rollbackOf, 1);
    assert.equal(back.closure_checked.paths, 2);
    assert.deepEqual(await channelOverHttp("staging"), back.record);
    const missing = await hetznix(
      [
        "release",
        "rollback",
        "--releases",
        rel,
        "--channel",
        "staging",
        "--to",
        "2",
        "--signing-key",
        keyFile,
        "--cache",
        `s3://${BUCKET}/elsewhere${q()}`,
      ],
      env,
    );
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /lacks [0-9a-z]{32}\.narinfo/);

    const promoted = json<{ record: SignedRecord }>(
      await hetznix(
        [
          "release",
          "promote",
          "--releases",
          rel,
          "--from",
          "staging",
          "--to",
          "production",
          "--signing-key",
          keyFile,
          "--output",
          "json",
        ],
        env,
      ),
    );
    assert.equal(promoted.record.channel, "production");
    assert.deepEqual(promoted.record.promotedFrom, { channel: "staging", serial: 3 });
    assert.deepEqual(await channelOverHttp("production"), promoted.record);
  });

  it("an aborted publish leaves the bucket's channel where it was", async () => {
    const before = await channelOverHttp("staging");
    const controller = new AbortController();
    await assert.rejects(
      publishRelease({
        storePath: sys[1] as string,
        channel: "staging",
        releases: `s3://${BUCKET}/rel${q()}`,
        cache: `s3://${BUCKET}/cache${q()}`,
        signingKey: keyFile,
        signal: controller.signal,
        onEvent: (e) => {
          if (e.kind === "step" && e.step === "cache" && e.status === "start")
            controller.abort(new Error("test"));
        },
      }),
      (err: unknown) => isRunError(err, "aborted"),
    );
    assert.deepEqual(await channelOverHttp("staging"), before);
    assert.equal((await fetch(bucketUrl("rel/releases/staging/4.json"), { method: "HEAD" })).status, 404);
  });

  it("without credentials or with a missing bucket the error says what to do", async () => {
    const noCreds: NodeJS.ProcessEnv = { ...env };
    delete noCreds.AWS_ACCESS_KEY_ID;
    delete noCreds.AWS_SECRET_ACCESS_KEY;
    const r = await hetznix(["release", "list", "--releases", `s3://${BUCKET}/rel${q()}`], noCreds);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
    const nb = await hetznix(["release", "list", "--releases", `s3://no-such-bucket/rel${q()}`], env);
    assert.equal(nb.code, 1);
    assert.match(nb.stderr, /NoSuchBucket.*create the bucket first/);
    for (const out of [r.stdout, r.stderr, nb.stdout, nb.stderr])
      assert.ok(!out.includes("S3RVER"), "no credentials printed");
  });
});
