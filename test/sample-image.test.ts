/**
 * The sample NixOS disk image and the test systems (scripts/sample/): built for real with Debian's nix-bin, then
 * checked with real tools: switch-to-configuration in scratch roots, the GPT (sfdisk), the file systems (blkid,
 * e2fsck on loop devices), and the mounted root file system (nix-store, nix-env in a mount namespace, chroot).
 * Needs root. Every loop device, mount and temporary directory it makes is removed in `after`, and checked to be gone.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { watch } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  MissingToolError,
  SWITCH_LOG,
  buildSampleImage,
  buildTestSystem,
  findBusybox,
  nixEnv,
  type SampleImage,
} from "../scripts/sample/image.js";

const MiB = 1024 * 1024;
const isRoot = process.getuid?.() === 0;
const expectedSystem = process.arch === "arm64" ? "aarch64-linux" : "x86_64-linux";

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a command to its end (killed after `timeoutMs`); never throws for a non-zero status. */
async function run(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {},
): Promise<Result> {
  const started = Date.now();
  return await new Promise<Result>((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => (stdout += b.toString("utf8")));
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString("utf8")));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 30_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr, ms: Date.now() - started });
    });
  });
}

async function ok(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Our loop devices over `file`: `losetup -j` lists every device whose backing file it is. */
async function loopsOf(file: string): Promise<string[]> {
  const out = await ok("losetup", ["--noheadings", "--output", "NAME", "--associated", file]);
  return out
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
}

async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile("/proc/self/mountinfo", "utf8");
  return info.split("\n").filter((l) => l.split(" ")[4]?.startsWith(dir));
}

describe(
  "sample image and test systems",
  { skip: !isRoot && "needs root (the Nix store, loop devices, mounts)" },
  () => {
    let work = "";
    before(async () => {
      work = await mkdtemp(join(tmpdir(), "hetznix-sample-test-"));
    });
    after(async () => {
      assert.deepEqual(await mountsUnder(work), [], "no mount under the test's directory is left");
      await rm(work, { recursive: true, force: true });
    });

    describe("test systems", () => {
      const label = "sample-test";
      const timings: string[] = [];
      let ok0 = "";
      let fail2 = "";
      let reboot100 = "";
      let units4 = "";

      /** Runs switch-to-configuration ACTION of `system` chrooted into a fresh scratch root holding only /nix/store. */
      async function switchInScratchRoot(system: string, action: string): Promise<Result & { root: string }> {
        const root = await mkdtemp(join(work, "scratch-"));
        await mkdir(join(root, "nix/store"), { recursive: true });
        const r = await run("unshare", [
          "--mount",
          "--propagation",
          "private",
          "--",
          "sh",
          "-c",
          'mount --bind -o ro /nix/store "$1/nix/store" && exec chroot "$1" "$2/bin/switch-to-configuration" "$3"',
          "sh",
          root,
          system,
          action,
        ]);
        return { ...r, root };
      }

      async function logLines(root: string): Promise<string[]> {
        const text = await readFile(join(root, SWITCH_LOG), "utf8").catch(() => "");
        return text.split("\n").filter((l) => l !== "");
      }

      before(async () => {
        const started = Date.now();
        ok0 = await buildTestSystem({ label: `${label}-ok` });
        fail2 = await buildTestSystem({ label: `${label}-fail`, switchExit: 2 });
        reboot100 = await buildTestSystem({
          label: `${label}-reboot`,
          switchExit: 100,
          switchDelaySeconds: 0.6,
        });
        units4 = await buildTestSystem({ label: `${label}-units`, switchExit: 4 });
        timings.push(`four test systems built (or found built) in ${Date.now() - started} ms`);
      });

      it("gives different store paths for different labels, shaped like a NixOS toplevel", async (t) => {
        for (const line of timings) t.diagnostic(line);
        assert.match(ok0, new RegExp(`^/nix/store/[0-9a-z]{32}-nixos-system-hetznix-test-${label}-ok$`));
        assert.equal(new Set([ok0, fail2, reboot100, units4]).size, 4);
        for (const [path, name] of [
          [ok0, `${label}-ok`],
          [fail2, `${label}-fail`],
        ] as const) {
          assert.equal(await readFile(join(path, "system"), "utf8"), expectedSystem);
          assert.equal(await readFile(join(path, "nixos-version"), "utf8"), name);
          for (const applet of ["sh", "true", "false", "cat", "test"]) {
            assert.ok(await exists(join(path, "sw/bin", applet)), `${path}/sw/bin/${applet}`);
          }
        }
        assert.equal((await run(join(ok0, "sw/bin/true"), [])).status, 0);
        assert.equal((await run(join(ok0, "sw/bin/false"), [])).status, 1);
        assert.equal((await run(join(ok0, "sw/bin/test"), ["-f", join(ok0, "system")])).status, 0);
        assert.equal(
          (await run(join(ok0, "sw/bin/cat"), [join(ok0, "nixos-version")])).stdout,
          `${label}-ok`,
        );
        // Its closure is the system and busybox, nothing of the host.
        const refs = (await ok("nix-store", ["-q", "--requisites", ok0], { env: nixEnv() }))
          .trim()
          .split("\n");
        assert.equal(refs.length, 2, refs.join(" "));
        assert.ok(refs.some((r) => r.endsWith("-busybox-static")));
      });

      it("is cached by Nix: rebuilding needs no build, and a new spec does", async () => {
        assert.equal(await buildTestSystem({ label: `${label}-ok` }, { requireCached: true }), ok0);
        // The same check fails for a spec never built (its .drv, the only thing Nix writes then, is deleted again).
        const fresh = `${label}-never-built-${randomBytes(4).toString("hex")}`;
        let drv = "";
        await assert.rejects(buildTestSystem({ label: fresh }, { requireCached: true }), (e: unknown) => {
          assert.ok(e instanceof Error);
          assert.match(e.message, /unable to start any build/);
          drv =
            new RegExp(`/nix/store/[0-9a-z]{32}-nixos-system-hetznix-test-${fresh}\\.drv`).exec(
              e.message,
            )?.[0] ?? "";
          return true;
        });
        assert.notEqual(drv, "", "nix-build named the derivation it would have built");
        // Nix leaves the lock file of the output it could not build; nothing holds it any more.
        const output = (await ok("nix-store", ["-q", "--outputs", drv], { env: nixEnv() })).trim();
        assert.match(output, new RegExp(`-nixos-system-hetznix-test-${fresh}$`));
        assert.equal(await exists(output), false);
        await rm(`${output}.lock`, { force: true });
        await ok("nix-store", ["--delete", drv], { env: nixEnv() });
        assert.equal(await exists(drv), false);
      });

      it("switch: logs, activates, exits 0", async () => {
        const r = await switchInScratchRoot(ok0, "switch");
        assert.equal(r.status, 0, r.stderr);
        const lines = await logLines(r.root);
        assert.equal(lines.length, 1);
        assert.match(lines[0] ?? "", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ switch \/nix\/store\/\S+$/);
        assert.equal(lines[0]?.split(" ")[2], ok0);
        assert.equal(await readlink(join(r.root, "run/current-system")), ok0);
      });

      it("status 2: activates as real activation does, exits 2 and does not claim success", async () => {
        const r = await switchInScratchRoot(fail2, "switch");
        assert.equal(r.status, 2);
        assert.match(r.stderr, /error\(s\) occurred while switching/);
        assert.doesNotMatch(r.stdout + r.stderr, /success/i);
        assert.deepEqual(
          (await logLines(r.root)).map((l) => l.split(" ").slice(1).join(" ")),
          [`switch ${fail2}`],
        );
        assert.equal(await readlink(join(r.root, "run/current-system")), fail2);
        const boot = await switchInScratchRoot(fail2, "boot");
        assert.equal(boot.status, 2);
        assert.equal(await exists(join(boot.root, "run/current-system")), false, "boot does not activate");
      });

      it("status 4: switched, some units failed", async () => {
        const r = await switchInScratchRoot(units4, "test");
        assert.equal(r.status, 4);
        assert.match(r.stderr, /the following units failed/);
        assert.equal((await logLines(r.root))[0]?.split(" ").slice(1).join(" "), `test ${units4}`);
        assert.equal(await readlink(join(r.root, "run/current-system")), units4);
      });

      it("status 100 with a delay: sleeps, exits 100, changes nothing", async () => {
        const r = await switchInScratchRoot(reboot100, "test");
        assert.equal(r.status, 100);
        assert.ok(r.ms >= 600, `took ${r.ms} ms`);
        assert.match(r.stderr, /reboot is needed/);
        assert.deepEqual(
          (await logLines(r.root)).map((l) => l.split(" ").slice(1).join(" ")),
          [`test ${reboot100}`],
        );
        assert.equal(await exists(join(r.root, "run/current-system")), false);
      });

      it("dry-activate changes nothing; an unknown action is refused", async () => {
        const dry = await switchInScratchRoot(fail2, "dry-activate");
        assert.equal(dry.status, 0);
        assert.equal((await logLines(dry.root))[0]?.split(" ")[1], "dry-activate");
        assert.equal(await exists(join(dry.root, "run/current-system")), false);
        const bad = await switchInScratchRoot(ok0, "frobnicate");
        assert.equal(bad.status, 1);
        assert.match(bad.stderr, /Usage:/);
        assert.deepEqual(await logLines(bad.root), []);
      });

      it("refuses a busybox that is not static, naming the package", async () => {
        const dir = await mkdtemp(join(work, "bb-"));
        await copyFile("/bin/ls", join(dir, "busybox"));
        await assert.rejects(findBusybox(join(dir, "busybox")), (e: unknown) => {
          assert.ok(e instanceof MissingToolError);
          assert.match(e.message, /busybox-static/);
          return true;
        });
        assert.match(await findBusybox(), /\/busybox$/);
      });
    });

    describe("disk image", () => {
      const pub = { key: "" };
      const rootUuid = "6c1c5fc6-52a0-4e4e-9d4b-3f1a2b3c4d5e";
      let tmp = "";
      let image: SampleImage;
      let buildMs = 0;
      const loops: string[] = [];
      let mnt = "";
      let mounted = false;

      async function attach(offset: number, size: number, readOnly: boolean): Promise<string> {
        const args = ["--find", "--show", "--offset", String(offset), "--sizelimit", String(size)];
        if (readOnly) args.push("--read-only");
        const dev = (await ok("losetup", [...args, image.path])).trim();
        loops.push(dev);
        return dev;
      }

      before(async () => {
        tmp = join(work, "tmp");
        await mkdir(tmp);
        const keyDir = await mkdtemp(join(work, "key-"));
        await ok("nix-store", [
          "--generate-binary-cache-key",
          "hetznix-sample-test-1",
          join(keyDir, "sk"),
          join(keyDir, "pk"),
        ]);
        pub.key = (await readFile(join(keyDir, "pk"), "utf8")).trim();
        const started = Date.now();
        image = await buildSampleImage({
          out: join(work, "disk.img"),
          trustedPublicKeys: [pub.key],
          substituters: ["http://127.0.0.1:9/cache"],
          rootUuid,
          tmpDir: tmp,
        });
        buildMs = Date.now() - started;
        mnt = join(work, "mnt");
        await mkdir(mnt);
      });

      after(async () => {
        const errors: unknown[] = [];
        if (mounted) {
          const r = await run("umount", [mnt]);
          if (r.status !== 0) errors.push(new Error(`umount ${mnt}: ${r.stderr}`));
        }
        for (const dev of loops.splice(0)) {
          const r = await run("losetup", ["--detach", dev]);
          if (r.status !== 0) errors.push(new Error(`losetup --detach ${dev}: ${r.stderr}`));
        }
        assert.deepEqual(errors, []);
        if (image) assert.deepEqual(await loopsOf(image.path), [], "no loop device over the image is left");
        assert.deepEqual(await mountsUnder(work), [], "no mount is left");
      });

      it("is a sparse file of the requested size, built fast, leaving no temporary file", async (t) => {
        t.diagnostic(`sample image built in ${buildMs} ms (${image.allocatedBytes} bytes allocated)`);
        assert.equal(image.sizeBytes, 256 * MiB);
        assert.equal((await stat(image.path)).size, 256 * MiB);
        assert.ok(image.allocatedBytes < 48 * MiB, `allocated ${image.allocatedBytes}`);
        assert.ok(buildMs < 10_000, `took ${buildMs} ms`);
        assert.deepEqual(await readdir(tmp), []);
        assert.deepEqual(
          (await readdir(work)).filter((n) => n.includes(".partial-")),
          [],
        );
        assert.match(image.systemPath, /-nixos-system-hetznix-test-sample-1$/);
        assert.equal(image.rootUuid, rootUuid);
      });

      it("has the GPT layout it reports (sfdisk)", async () => {
        const table = JSON.parse(await ok("sfdisk", ["--json", image.path])) as {
          partitiontable: {
            label: string;
            sectorsize: number;
            partitions: Array<{ node: string; start: number; size: number; type: string; name?: string }>;
          };
        };
        const pt = table.partitiontable;
        assert.equal(pt.label, "gpt");
        assert.equal(pt.sectorsize, 512);
        const byNumber = new Map(pt.partitions.map((p) => [Number(/(\d+)$/.exec(p.node)?.[1]), p]));
        assert.equal(byNumber.size, image.partitions.length);
        for (const want of image.partitions) {
          const got = byNumber.get(want.number);
          assert.ok(got, `partition ${want.number}`);
          assert.equal(got.start * 512, want.startBytes);
          assert.equal(got.size * 512, want.sizeBytes);
          assert.equal(got.type.toUpperCase(), want.type);
          assert.equal(got.name, want.name);
        }
        assert.equal(byNumber.get(image.espPartition)?.type, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert.equal(byNumber.get(image.rootPartition)?.type, "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
        if (image.layout === "hybrid") {
          assert.equal(image.rootPartition, 3);
          assert.equal(byNumber.get(2)?.type, "21686148-6449-6E6F-744E-656564454649");
        }
        assert.match(await ok("sfdisk", ["--verify", image.path]), /No errors detected/);
      });

      it("holds a vfat ESP and a clean ext4 root labelled nixos (blkid, fsck on loop devices)", async () => {
        const esp = image.partitions.find((p) => p.number === image.espPartition);
        const root = image.partitions.find((p) => p.number === image.rootPartition);
        assert.ok(esp && root);
        const espDev = await attach(esp.startBytes, esp.sizeBytes, true);
        const rootDev = await attach(root.startBytes, root.sizeBytes, true);
        const probe = async (dev: string): Promise<Record<string, string>> =>
          Object.fromEntries(
            (await ok("blkid", ["-p", "-o", "export", dev]))
              .trim()
              .split("\n")
              .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
          );
        const e = await probe(espDev);
        assert.equal(e.TYPE, "vfat");
        assert.equal(e.LABEL, "ESP");
        assert.equal(e.UUID?.replace("-", "").toLowerCase(), image.espVolumeId);
        const r = await probe(rootDev);
        assert.equal(r.TYPE, "ext4");
        assert.equal(r.LABEL, "nixos");
        assert.equal(r.UUID, rootUuid);
        // e2fsck -f -n: a full check that changes nothing; exit 0 = no errors.
        await ok("e2fsck", ["-f", "-n", rootDev]);
        const sb = await ok("dumpe2fs", ["-h", rootDev]);
        assert.match(sb, /^Block size:\s+4096$/m);
        assert.match(sb, new RegExp(`^Directory Hash Seed:\\s+${rootUuid}$`, "m"));
        await ok("fsck.vfat", ["-n", espDev]);
        for (const dev of [espDev, rootDev]) {
          await ok("losetup", ["--detach", dev]);
          loops.splice(loops.indexOf(dev), 1);
        }
      });

      describe("its root file system, mounted", () => {
        const env = nixEnv();
        let other = "";
        before(async () => {
          const root = image.partitions.find((p) => p.number === image.rootPartition);
          assert.ok(root);
          // Read-write: Nix opens its database with locks and a journal even to read it. The image is this test's own.
          const dev = await attach(root.startBytes, root.sizeBytes, false);
          await ok("mount", ["-t", "ext4", dev, mnt]);
          mounted = true;
          other = await buildTestSystem({ label: "sample-2", switchExit: 4 });
        });

        it("has the system's closure, registered, with the right contents", async () => {
          const inImage = join(mnt, image.systemPath);
          assert.ok(await exists(join(inImage, "bin/switch-to-configuration")));
          const storeEntries = (await readdir(join(mnt, "nix/store"))).filter((n) => n !== ".links").sort();
          assert.deepEqual(
            storeEntries,
            image.storePaths.map((p) => basename(p)),
          );
          const verify = await run("nix-store", ["--store", mnt, "--verify", "--check-contents"], { env });
          assert.equal(verify.status, 0, verify.stderr);
          assert.doesNotMatch(verify.stderr, /was modified|disappeared|error/i);
          const hostReqs = (await ok("nix-store", ["-q", "--requisites", image.systemPath], { env }))
            .trim()
            .split("\n");
          const imgReqs = (
            await ok("nix-store", ["--store", mnt, "-q", "--requisites", image.systemPath], { env })
          )
            .trim()
            .split("\n");
          assert.deepEqual([...imgReqs].sort(), [...hostReqs].sort());
          assert.deepEqual([...imgReqs].sort(), image.storePaths);
          const refs = (
            await ok("nix-store", ["--store", mnt, "-q", "--references", image.systemPath], { env })
          )
            .trim()
            .split("\n");
          assert.ok(
            refs.some((r) => r.endsWith("-busybox-static")),
            refs.join(" "),
          );
          for (const p of image.storePaths) {
            const hostHash = await ok("nix-store", ["-q", "--hash", p], { env });
            assert.equal(await ok("nix-store", ["--store", mnt, "-q", "--hash", p], { env }), hostHash);
          }
          const all = await ok("nix", ["path-info", "--store", mnt, "--all"], { env });
          assert.deepEqual(all.trim().split("\n").sort(), image.storePaths);
        });

        it("has the system profile as Nix makes it, and the rest of a NixOS root", async () => {
          const profiles = join(mnt, "nix/var/nix/profiles");
          assert.equal(await readlink(join(profiles, "system")), "system-1-link");
          assert.equal(await readlink(join(profiles, "system-1-link")), image.systemPath);
          assert.equal(await readlink(join(mnt, "nix/var/nix/gcroots/profiles")), "/nix/var/nix/profiles");
          const conf = await readFile(join(mnt, "etc/nix/nix.conf"), "utf8");
          assert.equal(conf, image.nixConf);
          assert.match(conf, new RegExp(`^trusted-public-keys = ${pub.key.replace(/[+/]/g, "\\$&")}$`, "m"));
          assert.match(conf, /^require-sigs = true$/m);
          assert.match(conf, /^substituters = http:\/\/127\.0\.0\.1:9\/cache$/m);
          assert.match(conf, /^build-users-group =$/m);
          assert.match(await readFile(join(mnt, "etc/os-release"), "utf8"), /^ID=nixos$/m);
          for (const d of ["var/log", "etc/ssh", "boot", "root"]) {
            assert.ok((await stat(join(mnt, d))).isDirectory(), d);
            assert.deepEqual(await readdir(join(mnt, d)), [], `${d} is empty`);
          }
          assert.equal((await stat(join(mnt, "root"))).mode & 0o777, 0o700);
        });

        it("works with nix-env generations and nix.conf when mounted as /nix of a mount namespace", async () => {
          // The other system goes into the image's store the way a deploy would put it there (nix copy).
          await ok("nix", ["copy", "--no-check-sigs", "--to", mnt, other], { env });
          /** Runs `nix ...args` with the image's /nix bound over /nix and its /etc/nix as NIX_CONF_DIR. */
          const inNs = async (cmd: string, args: string[]): Promise<string> => {
            const nsEnv: NodeJS.ProcessEnv = { ...process.env, NIX_CONF_DIR: join(mnt, "etc/nix") };
            delete nsEnv.NIX_CONFIG;
            return await ok(
              "unshare",
              [
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                'mount --bind "$1/nix" /nix && shift && exec "$@"',
                "sh",
                mnt,
                cmd,
                ...args,
              ],
              { env: nsEnv },
            );
          };
          const hostProfiles = await readdir("/nix/var/nix/profiles");
          const config = await inNs("nix", ["--extra-experimental-features", "nix-command", "show-config"]);
          assert.match(
            config,
            new RegExp(`^trusted-public-keys = ${pub.key.replace(/[+/]/g, "\\$&")}$`, "m"),
          );
          assert.match(config, /^require-sigs = true$/m);
          assert.match(config, /^sandbox = false$/m);
          const profile = ["-p", "/nix/var/nix/profiles/system"];
          assert.match(
            await inNs("nix-env", [...profile, "--list-generations"]),
            /^\s*1\s.*\(current\)\s*$/m,
          );
          await inNs("nix-env", [...profile, "--set", other]);
          const two = await inNs("nix-env", [...profile, "--list-generations"]);
          assert.match(two, /^\s*1\s+\S+\s+\S+\s*$/m);
          assert.match(two, /^\s*2\s.*\(current\)\s*$/m);
          const profiles = join(mnt, "nix/var/nix/profiles");
          assert.equal(await readlink(join(profiles, "system")), "system-2-link");
          assert.equal(await readlink(join(profiles, "system-2-link")), other);
          await inNs("nix-env", [...profile, "--rollback"]);
          assert.equal(await readlink(join(profiles, "system")), "system-1-link");
          assert.match(
            await inNs("nix-env", [...profile, "--list-generations"]),
            /^\s*1\s.*\(current\)\s*$/m,
          );
          await inNs("nix-store", ["--verify", "--check-contents"]);
          // All of it happened in the image: the host's profiles are as they were.
          assert.deepEqual(await readdir("/nix/var/nix/profiles"), hostProfiles);
        });

        it("runs the system's switch-to-configuration chrooted into the image (its closure is complete)", async () => {
          const r = await run("chroot", [mnt, `${image.systemPath}/bin/switch-to-configuration`, "switch"]);
          assert.equal(r.status, 0, r.stderr);
          const log = (await readFile(join(mnt, SWITCH_LOG), "utf8")).trim().split("\n");
          assert.equal(log.length, 1);
          assert.equal(log[0]?.split(" ").slice(1).join(" "), `switch ${image.systemPath}`);
          assert.equal(await readlink(join(mnt, "run/current-system")), image.systemPath);
        });
      });
    });

    it("has a CLI that builds an image (here with the efi layout) and prints it as JSON", async () => {
      const repo = join(import.meta.dirname, "..");
      const script = join(repo, "scripts/sample/image.ts");
      const out = join(work, "cli.img");
      const key = "cli-test-1:" + Buffer.alloc(32, 7).toString("base64");
      const r = await run(
        process.execPath,
        [
          "--import",
          "tsx",
          script,
          "--out",
          out,
          "--trusted-key",
          key,
          "--size-mib",
          "128",
          "--layout",
          "efi",
        ],
        { cwd: repo },
      );
      assert.equal(r.status, 0, r.stderr);
      const printed = JSON.parse(r.stdout) as SampleImage;
      assert.equal(printed.path, out);
      assert.equal((await stat(out)).size, 128 * MiB);
      assert.equal(printed.layout, "efi");
      assert.equal(printed.rootPartition, 2);
      const table = JSON.parse(await ok("sfdisk", ["--json", out])) as {
        partitiontable: { partitions: Array<{ node: string; type: string }> };
      };
      assert.deepEqual(
        table.partitiontable.partitions.map((p) => [
          Number(/(\d+)$/.exec(p.node)?.[1]),
          p.type.toUpperCase(),
        ]),
        [
          [1, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"],
          [2, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"],
        ],
      );
      assert.match(
        printed.nixConf,
        new RegExp(`^trusted-public-keys = ${key.replace(/[+/]/g, "\\$&")}$`, "m"),
      );
      const usage = await run(process.execPath, ["--import", "tsx", script], { cwd: repo });
      assert.equal(usage.status, 2);
      assert.match(usage.stderr, /--out is required/);
      await rm(out);
    });

    describe("clean-up on errors and abort", () => {
      let tmp = "";
      before(async () => {
        tmp = await mkdtemp(join(work, "errors-"));
        await mkdir(join(tmp, "t"));
      });

      it("rejects bad options before making anything", async () => {
        await assert.rejects(
          buildSampleImage({
            out: join(tmp, "bad.img"),
            trustedPublicKeys: ["no key"],
            tmpDir: join(tmp, "t"),
          }),
          /NAME:BASE64/,
        );
        await assert.rejects(
          buildSampleImage({ out: join(tmp, "bad.img"), sizeMiB: 80, tmpDir: join(tmp, "t") }),
          /root/,
        );
        await assert.rejects(buildTestSystem({ label: "bad label" }), /label/);
        assert.deepEqual(await readdir(join(tmp, "t")), []);
        assert.deepEqual((await readdir(tmp)).sort(), ["t"]);
      });

      it("refuses a system that is not in the store, and removes its temporary files when a late step fails", async () => {
        const missing = `/nix/store/${"0".repeat(32)}-hetznix-not-there`;
        await assert.rejects(
          buildSampleImage({ out: join(tmp, "fail.img"), system: missing, tmpDir: join(tmp, "t") }),
          /not in this machine's Nix store.*hetznix-not-there/,
        );
        // The output is a directory that is not empty: everything is built, and the final rename fails.
        await mkdir(join(tmp, "taken.img", "x"), { recursive: true });
        await assert.rejects(
          buildSampleImage({ out: join(tmp, "taken.img"), tmpDir: join(tmp, "t") }),
          (e: NodeJS.ErrnoException) => e.code === "EISDIR" || e.code === "ENOTEMPTY",
        );
        assert.deepEqual(await readdir(join(tmp, "t")), []);
        assert.deepEqual((await readdir(tmp)).sort(), ["t", "taken.img"]);
        assert.deepEqual(await readdir(join(tmp, "taken.img")), ["x"]);
        await rm(join(tmp, "taken.img"), { recursive: true });
      });

      it("removes its temporary files when aborted midway", async () => {
        const controller = new AbortController();
        const reason = new Error("test abort");
        const t = join(tmp, "t");
        // Abort as soon as the temporary directory appears, i.e. in the middle of the build.
        const watcher = watch(t, () => controller.abort(reason));
        const guard = setTimeout(() => controller.abort(reason), 5_000);
        try {
          await assert.rejects(
            buildSampleImage({ out: join(tmp, "abort.img"), tmpDir: t, signal: controller.signal }),
            (e: unknown) => e === reason,
          );
        } finally {
          clearTimeout(guard);
          watcher.close();
        }
        assert.deepEqual(await readdir(t), []);
        assert.deepEqual((await readdir(tmp)).sort(), ["t"]);
      });

      it("names the missing tool and its Debian package", async () => {
        // A busybox that does not exist stands in for a machine without busybox-static.
        await assert.rejects(findBusybox(join(tmp, "nothing", "busybox")), (e: unknown) => {
          assert.ok(e instanceof MissingToolError);
          assert.equal(e.debianPackage, "busybox-static");
          assert.match(e.message, /apt-get install busybox-static/);
          return true;
        });
      });
    });
  },
);
