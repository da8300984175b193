/**
 * Output that fails must never skip cleanup: `hetznix upload ... 2>&1 | tee log` and Ctrl-C (tee dies with the
 * terminal's SIGINT, the next progress line hits EPIPE), or the reader of stderr going away on its own. The CLI runs as
 * a child process whose stderr pipe the test closes; the emulator must be left with no server and no key.
 */
import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import { cleanupTemporary } from "../src/upload/index.js";
import { startCli } from "./support/cli.js";
import {
  assertNoTemporaryResources,
  snapshotIds,
  startUploadEnv,
  type UploadTestEnv,
} from "./support/upload.js";

describe("upload: output errors never skip cleanup", { timeout: 300_000 }, () => {
  let env: UploadTestEnv;

  before(async () => {
    env = await startUploadEnv("127.83.1.");
  });

  afterEach(async () => {
    // Whatever a failing run left, so the next test and env.close() start clean.
    await cleanupTemporary({ client: env.client, olderThanMs: 0 });
  });

  after(async () => {
    await env?.close();
  });

  /** Starts `hetznix upload` of a fresh image; calls `atServer` once the temporary server exists. */
  async function upload(atServer: (run: ReturnType<typeof startCli>) => void) {
    const img = await env.freshImage(6, 2);
    const run = startCli(["upload", "--image-path", img.path, "--architecture", "x86"], {
      home: env.dir,
      endpoint: env.te.emulator.endpoint,
      token: env.te.token,
    });
    let fired = false;
    run.child.stderr.on("data", () => {
      if (!fired && /create temporary server: ok/.test(run.stderr())) {
        fired = true;
        atServer(run);
      }
    });
    const out = await run.done;
    assert.ok(fired, `the server step was seen\n${out.stderr}`);
    return { img, out };
  }

  it("Ctrl-C after the reader of stderr died (2>&1 | tee, Ctrl-C): cleanup still runs, exit 130", async () => {
    const before = await snapshotIds(env);
    const { out } = await upload((run) => {
      // tee is gone: our end of the pipe closes, every later write to stderr fails with EPIPE.
      run.child.stderr.destroy();
      run.child.kill("SIGINT");
    });
    await assertNoTemporaryResources(env);
    assert.deepEqual(await snapshotIds(env), before);
    assert.equal(out.signal, null, "not killed by a signal");
    assert.equal(out.code, 130, "exit status of an interrupted run");
  });

  it("the reader of stderr exits mid-run: the upload completes, prints the id on stdout, leaves nothing", async () => {
    const { out } = await upload((run) => run.child.stderr.destroy());
    assert.equal(out.code, 0, `exit status\n${out.stdout}`);
    const id = Number(out.stdout.trim());
    assert.ok(Number.isInteger(id) && id > 0, `an image id on stdout: ${JSON.stringify(out.stdout)}`);
    assert.ok((await snapshotIds(env)).includes(id));
    await assertNoTemporaryResources(env);
  });
});
