/**
 * Answers that are not what the API promises: a 200 carrying a proxy's HTML page, a JSON body cut short, JSON without
 * the list or item the endpoint returns. Each is an error naming the endpoint, never "nothing there": the client, the
 * `cleanup` command (which would otherwise say nothing was found and exit 0) and the upload (which would otherwise say
 * no server type is orderable).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { HCloudClient, HCloudError } from "../src/hcloud/index.js";
import { uploadImage } from "../src/upload/index.js";
import { runCli } from "./support/cli.js";
import { startScripted, type Reply, type ScriptedServer } from "./support/hcloud-scripted-server.js";

const TOKEN = "bad-answers-test-token";
const HTML =
  "<!DOCTYPE html>\n<html><head><title>Captive portal</title></head><body>Log in first</body></html>\n";

const servers: ScriptedServer[] = [];
let dir = "";

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hetznix-bad-answers-"));
});

after(async () => {
  await Promise.all(servers.map((s) => s.close()));
  await rm(dir, { recursive: true, force: true });
});

async function answering(reply: (path: string) => Reply): Promise<ScriptedServer> {
  const s = await startScripted((req) => reply(req.path));
  servers.push(s);
  return s;
}

function client(s: ScriptedServer): HCloudClient {
  return new HCloudClient({
    token: TOKEN,
    endpoint: s.endpoint,
    timeoutMs: 5000,
    retry: { baseDelayMs: 1, maxDelayMs: 5, maxTries: 3 },
  });
}

function invalidAnswer(method: string, path: string, why: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof HCloudError, String(err));
    assert.equal(err.code, "invalid_response");
    assert.equal(err.method, method);
    assert.equal(err.path, path);
    assert.match(err.message, why);
    assert.match(err.message, new RegExp(`${method} ${path.replace(/\//g, "\\/")}`));
    return true;
  };
}

describe("answers that are not the JSON the API promises", { timeout: 120_000 }, () => {
  it("a 200 with an HTML page is an error naming the endpoint, not an empty list", async () => {
    const s = await answering(() => ({ status: 200, raw: HTML }));
    await assert.rejects(
      client(s).servers.all(),
      invalidAnswer("GET", "/servers", /not JSON.*DOCTYPE html/s),
    );
    assert.equal(s.requests.length, 1, "not retried: the same page would come back");
  });

  it("a 200 with JSON cut short is an error naming the endpoint", async () => {
    const s = await answering(() => ({ status: 200, raw: '{"server_types": [{"id": 1, "name": "cx2' }));
    await assert.rejects(
      client(s).serverTypes.all(),
      invalidAnswer("GET", "/server_types", /not valid JSON|cut short|truncated/),
    );
  });

  it("JSON without the list the endpoint returns is an error, not an empty list", async () => {
    const s = await answering(() => ({ status: 200, body: { hello: "world" } }));
    await assert.rejects(client(s).sshKeys.all(), invalidAnswer("GET", "/ssh_keys", /ssh_keys/));
  });

  it("JSON without the item of a get-by-id is an error, not undefined", async () => {
    const s = await answering(() => ({ status: 200, body: {} }));
    await assert.rejects(client(s).servers.getById(7), invalidAnswer("GET", "/servers/7", /server/));
  });

  it("an empty 204 (a deletion) is still fine", async () => {
    const s = await answering(() => ({ status: 204 }));
    await client(s).images.delete(5);
  });

  it("`hetznix cleanup` against an HTML answer fails with exit 1 and names the endpoint", async () => {
    const s = await answering(() => ({ status: 200, raw: HTML }));
    const out = await runCli(["cleanup", "--older-than", "0s"], {
      home: dir,
      endpoint: s.endpoint,
      token: TOKEN,
      timeoutMs: 60_000,
    });
    assert.equal(out.code, 1, `exit status\n${out.stdout}\n${out.stderr}`);
    assert.doesNotMatch(out.stdout, /no temporary resources/);
    assert.match(out.stderr, /GET \/(servers|ssh_keys)/);
    assert.match(out.stderr, /not JSON/);
  });

  it("an upload whose catalogue answer is cut short says so, not 'no server type is orderable'", async () => {
    const s = await answering((path) =>
      path === "/server_types"
        ? { status: 200, raw: '{"server_types": [{"id": 1, "name": "cx23", "architecture": "x86"' }
        : { status: 200, body: { locations: [], meta: { pagination: null } } },
    );
    const image = join(dir, "small.raw");
    await writeFile(image, Buffer.alloc(1024 * 1024, 7));
    await assert.rejects(
      uploadImage({ client: client(s), image: { path: image }, architecture: "x86" }),
      invalidAnswer("GET", "/server_types", /not valid JSON|cut short|truncated/),
    );
    assert.ok(!s.requests.some((r) => r.method !== "GET"), "nothing was created");
  });
});
