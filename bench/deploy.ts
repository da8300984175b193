/**
 * Deploy benchmarks (`npm run bench:deploy`; `npm run bench` measures uploads), against the emulator's real system
 * hosts booted from the sample NixOS-like image, releases in a file:// cache served over HTTP on loopback:
 *
 * 1. publish-to-activated: a small change (a new test system), published (closure signed and copied into the
 *    cache, signed record written), then `hetznix apply` over SSH on one server until it is the active system
 *    and boot default. Goal: under 5 s.
 * 2. fleet: one `hetznix deploy` to N servers at once against the same servers done one after another (--parallel 1)
 *    and against one server alone: the ratio N-at-once / one (goal under 1.3x), with the median time of each step.
 *
 * Runs are interleaved and repeated (`--runs`); medians are reported. Everything started is stopped at the end.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { promisify } from "node:util";
import { buildSampleImage, buildTestSystem } from "../scripts/sample/image.js";
import { generateSigningKey, parseSecretKey } from "../src/deploy/keys.js";
import { signRecord } from "../src/deploy/record.js";
import { deployFleet, type DeployResult } from "../src/deploy/rollout/index.js";
import { startEmulator } from "../src/emulator/index.js";
import { HCloudClient } from "../src/hcloud/index.js";
import { connect, exec, generateKeyPair } from "../src/ssh/index.js";
import { uploadImage } from "../src/upload/index.js";
import { startStaticServer } from "../test/support/static-server.js";

const run = promisify(execFile);
const PREFIX = "127.78.20.";

export interface DeployBenchResult {
  servers: number;
  runs: number;
  publishToActivated: { medianMs: number; samples: number[]; publishMs: number[]; applyMs: number[] };
  fleet: {
    oneMs: number[];
    parallelMs: number[];
    sequentialMs: number[];
    /** Median time of each step over the servers of the parallel runs. */
    stepsParallel: Record<string, number>;
    stepsOne: Record<string, number>;
  };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

function stepMedians(results: DeployResult[]): Record<string, number> {
  const by = new Map<string, number[]>();
  for (const r of results)
    for (const s of r.servers)
      for (const t of s.steps) {
        if (t.status !== "done") continue;
        by.set(t.step, [...(by.get(t.step) ?? []), t.durationMs]);
      }
  return Object.fromEntries([...by].map(([k, v]) => [k, Math.round(median(v))]));
}

export async function runDeployBench(opts: {
  servers: number;
  runs: number;
  log: (line: string) => void;
}): Promise<DeployBenchResult> {
  opts.log("building dist/ (npm run build): the servers run the built hetznix");
  await run("npm", ["run", "--silent", "build"], { cwd: new URL("..", import.meta.url).pathname });
  const dir = await mkdtemp(join(tmpdir(), "hetznix-bench-deploy-"));
  const pub = join(dir, "pub");
  const token = generateKeyPair("bench").fingerprint; // any random string; never printed
  const release = generateSigningKey("hetznix-bench-1");
  const skFile = join(dir, "release.sk");
  await writeFile(skFile, release.secretKey, { mode: 0o600 });
  const http = await startStaticServer(pub).catch(async (err: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw err;
  });
  const emu = await startEmulator({
    token,
    stateDir: join(dir, "state"),
    speed: 100,
    ipPrefix: PREFIX,
    hosts: "real",
    // Servers run the built hetznix, as a NixOS server runs the package (the TypeScript loader alone takes ~1 s).
    hostOptions: { workDir: join(dir), hetznixCode: "dist" },
    rateLimit: { limit: 100_000, refillPerSecond: 1000 },
  });
  const stop = async () => {
    await emu.stop().catch(() => undefined);
    await http.close();
    await rm(dir, { recursive: true, force: true });
  };
  const onSignal = () => void stop().finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const client = new HCloudClient({ token, endpoint: emu.endpoint, waitDefaults: { pollDelay: () => 50 } });
  let serial = 0;
  let label = 0;
  const newRelease = async (): Promise<{ path: string; publishMs: number }> => {
    const path = await buildTestSystem({ label: `bench-${process.pid}-${++label}` });
    const t0 = Date.now();
    await run("nix", [
      "--extra-experimental-features",
      "nix-command",
      "copy",
      "--to",
      `file://${join(pub, "cache")}?secret-key=${skFile}&compression=zstd`,
      path,
    ]);
    const record = signRecord(
      {
        format: "hetznix-release/1",
        channel: "bench",
        serial: ++serial,
        kind: "release",
        storePath: path,
        system: "x86_64-linux",
        created: new Date().toISOString(),
        previous: null,
        substituter: `${http.url}/cache`,
        keyName: "",
      },
      parseSecretKey(release.secretKey),
    );
    await run("mkdir", ["-p", join(pub, "channels")]);
    await writeFile(join(pub, "channels", "bench.json.tmp"), JSON.stringify(record));
    await run("mv", [join(pub, "channels", "bench.json.tmp"), join(pub, "channels", "bench.json")]);
    return { path, publishMs: Date.now() - t0 };
  };
  const keys = generateKeyPair("bench-deploy");
  try {
    opts.log("building the sample image and booting servers");
    const sample = await buildSampleImage({ out: join(dir, "nixos.img") });
    const snapshot = (
      await uploadImage({
        client,
        image: { path: sample.path },
        architecture: "x86",
        useStoreIdentity: false,
      })
    ).imageId;
    const key = await client.sshKeys.create({ name: "bench", publicKey: keys.publicKey });
    const names = Array.from({ length: opts.servers }, (_, i) => `bench-${String(i + 1).padStart(2, "0")}`);
    for (const name of names) {
      const c = await client.servers.create({
        name,
        server_type: "cx23",
        image: snapshot,
        location: "fsn1",
        ssh_keys: [key.id],
        labels: { bench: "fleet" },
      });
      await client.waitForActions([c.action as never, ...c.nextActions], { timeoutMs: 120_000 });
    }
    const first = await client.servers.all({ name: names[0] as string });
    const ip = first[0]?.public_net.ipv4?.ip as string;
    const base = {
      client,
      channel: `${http.url}/channels/bench.json`,
      trustedKeys: [release.publicKey],
      ssh: { privateKey: keys.privateKey },
      stateDir: join(dir, "deploy-state"),
      confirmTimeoutMs: 30_000,
    };
    // Warm-up (first contact, tsx caches): not measured.
    await newRelease();
    await deployFleet({ ...base, selector: "bench=fleet", parallel: opts.servers });

    const result: DeployBenchResult = {
      servers: opts.servers,
      runs: opts.runs,
      publishToActivated: { medianMs: 0, samples: [], publishMs: [], applyMs: [] },
      fleet: { oneMs: [], parallelMs: [], sequentialMs: [], stepsParallel: {}, stepsOne: {} },
    };
    const parallelRuns: DeployResult[] = [];
    const oneRuns: DeployResult[] = [];
    for (let r = 1; r <= opts.runs; r++) {
      // 1. publish-to-activated on the first server, over SSH.
      {
        const t0 = Date.now();
        const rel = await newRelease();
        const conn = await connect({ host: ip, privateKey: keys.privateKey, maxAttempts: 5 });
        const ta = Date.now();
        const out = await exec(
          conn,
          `hetznix apply --channel ${http.url}/channels/bench.json --trusted-key ${release.publicKey} --output json`,
          { tailLines: 200 },
        );
        await conn.close();
        if (out.exitCode !== 0) throw new Error(`apply failed: ${out.stdoutTail} ${out.stderrTail}`);
        const total = Date.now() - t0;
        result.publishToActivated.samples.push(total);
        result.publishToActivated.publishMs.push(rel.publishMs);
        result.publishToActivated.applyMs.push(Date.now() - ta);
        opts.log(`run ${r}: publish-to-activated ${total} ms (publish ${rel.publishMs} ms)`);
      }
      // 2. fleet: one server, all at once, one after another (each to a new release so every server applies).
      await newRelease();
      let t0 = Date.now();
      const one = await deployFleet({ ...base, servers: [names[0] as string] });
      result.fleet.oneMs.push(Date.now() - t0);
      oneRuns.push(one);
      t0 = Date.now();
      const all = await deployFleet({ ...base, selector: "bench=fleet", parallel: opts.servers });
      result.fleet.parallelMs.push(Date.now() - t0);
      parallelRuns.push(all);
      await newRelease();
      t0 = Date.now();
      const seq = await deployFleet({ ...base, selector: "bench=fleet", parallel: 1 });
      result.fleet.sequentialMs.push(Date.now() - t0);
      for (const d of [one, all, seq])
        if (d.exitCode !== 0)
          throw new Error(`a deploy failed: ${JSON.stringify(d.servers.map((s) => s.message))}`);
      opts.log(
        `run ${r}: one ${result.fleet.oneMs.at(-1)} ms, ${opts.servers} at once ${result.fleet.parallelMs.at(-1)} ms, one after another ${result.fleet.sequentialMs.at(-1)} ms`,
      );
    }
    result.publishToActivated.medianMs = median(result.publishToActivated.samples);
    result.fleet.stepsParallel = stepMedians(parallelRuns);
    result.fleet.stepsOne = stepMedians(oneRuns);
    return result;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await stop();
  }
}

/** The BENCHMARKS.md section for a result. */
export function deployReport(r: DeployBenchResult): string {
  const one = median(r.fleet.oneMs);
  const par = median(r.fleet.parallelMs);
  const seq = median(r.fleet.sequentialMs);
  const steps = Object.keys({ ...r.fleet.stepsParallel, ...r.fleet.stepsOne });
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  return [
    `| figure | median of ${r.runs} | goal | met |`,
    "| --- | --- | --- | --- |",
    `| publish-to-activated, small change, one server over SSH | ${s(r.publishToActivated.medianMs)} (publish ${s(median(r.publishToActivated.publishMs))}, apply ${s(median(r.publishToActivated.applyMs))}) | < 5 s | ${r.publishToActivated.medianMs < 5000 ? "yes" : `no (${(r.publishToActivated.medianMs / 5000).toFixed(2)}x the goal)`} |`,
    `| deploy to 1 server | ${s(one)} | | |`,
    `| deploy to ${r.servers} servers at once | ${s(par)} = **${(par / one).toFixed(2)}x** one server | < 1.3x | ${par / one < 1.3 ? "yes" : `no (${(par / one / 1.3).toFixed(2)}x the goal)`} |`,
    `| the same ${r.servers} one after another (--parallel 1) | ${s(seq)} = ${(seq / one).toFixed(2)}x one server; at once is ${(seq / par).toFixed(2)}x faster | | |`,
    "",
    `Median time of each step per server (deploy to one server / to ${r.servers} at once):`,
    "",
    "| step | one server | at once |",
    "| --- | --- | --- |",
    ...steps.map(
      (k) => `| ${k} | ${r.fleet.stepsOne[k] ?? "-"} ms | ${r.fleet.stepsParallel[k] ?? "-"} ms |`,
    ),
  ].join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: { servers: { type: "string", default: "8" }, runs: { type: "string", default: "3" } },
  });
  const log = (line: string) => process.stderr.write(`[bench deploy] ${line}\n`);
  runDeployBench({ servers: Number(values.servers), runs: Number(values.runs), log })
    .then((r) => {
      process.stdout.write(`${deployReport(r)}\n\n${JSON.stringify(r)}\n`);
    })
    .catch((err: unknown) => {
      process.stderr.write(`bench deploy failed: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    });
}
