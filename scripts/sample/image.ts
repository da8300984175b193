/**
 * A small raw disk image that looks like a NixOS server, and test "systems" (NixOS-toplevel-like store paths) whose
 * activation succeeds or fails on demand. Built with Debian's nix-bin from plain derivations (system.nix), no nixpkgs.
 *
 * Library module: importing it runs nothing. CLI:
 *   node --import tsx scripts/sample/image.ts --out FILE [--trusted-key KEY]... [--substituter URL]... [--size-mib N]
 *
 * Needs root (the local Nix store at /nix is root's) and these tools: nix-build, nix-store, nix (nix-bin), busybox
 * (busybox-static), sfdisk (fdisk), mke2fs (e2fsprogs), mkfs.vfat (dosfstools), dd (coreutils). No mounts, no loop
 * devices: the partitions are made as separate files and copied into place.
 */
import { spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { realpathSync } from "node:fs";
import {
  access,
  chmod,
  constants,
  mkdir,
  mkdtemp,
  open,
  readFile,
  realpath,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

// ---------------------------------------------------------------------------------------------------------------
// Nix settings

/**
 * Settings every Nix call of hetznix's samples and tests uses on a Debian host: no `nixbld` group, no sandbox (Debian
 * ships empty `sandbox-paths`), no substituters (no internet: the default cache.nixos.org would only cost time-outs),
 * and the `nix` command enabled (`nix copy`, `nix store sign`).
 */
export const NIX_SETTINGS: Readonly<Record<string, string>> = Object.freeze({
  "build-users-group": "",
  sandbox: "false",
  substituters: "",
  "extra-experimental-features": "nix-command",
});

/** NIX_SETTINGS as command-line flags, for any Nix command (nix-build, nix-store, nix-env, nix). */
export const NIX_FLAGS: readonly string[] = Object.freeze(
  Object.entries(NIX_SETTINGS).flatMap(([name, value]) => ["--option", name, value]),
);

/**
 * The environment for a Nix command on this machine: `base` (default process.env) with NIX_SETTINGS appended to
 * NIX_CONFIG (so they win over the configuration files and over an inherited NIX_CONFIG), and /usr/sbin and /sbin on
 * PATH. Not for a Nix that should follow an image's own /etc/nix/nix.conf: `substituters` here is empty.
 */
export function nixEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const ours = Object.entries(NIX_SETTINGS)
    .map(([name, value]) => `${name} = ${value}`)
    .join("\n");
  const inherited = base.NIX_CONFIG?.trim();
  return {
    ...base,
    PATH: searchPath(base.PATH).join(delimiter),
    NIX_CONFIG: inherited ? `${inherited}\n${ours}` : ours,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Tools

/** The Debian package that provides each tool used here. */
export const TOOL_PACKAGES: Readonly<Record<string, string>> = Object.freeze({
  "nix-build": "nix-bin",
  "nix-store": "nix-bin",
  "nix-env": "nix-bin",
  nix: "nix-bin",
  busybox: "busybox-static",
  sfdisk: "fdisk",
  mke2fs: "e2fsprogs",
  "mkfs.vfat": "dosfstools",
  dd: "coreutils",
});

/** A tool is missing: the message names it and the Debian package that provides it. */
export class MissingToolError extends Error {
  constructor(
    readonly tool: string,
    readonly debianPackage: string,
    detail = "",
  ) {
    super(
      `${tool} is missing${detail ? ` (${detail})` : ""}: install the Debian package ${debianPackage} ` +
        `(apt-get install ${debianPackage}, or run scripts/setup.sh)`,
    );
    this.name = "MissingToolError";
  }
}

/** A command failed: the message holds the command line, its exit status and the end of its stderr. */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly args: readonly string[],
    readonly status: number | null,
    readonly signalName: string | null,
    readonly stderr: string,
  ) {
    const how = status !== null ? `exit status ${status}` : `signal ${signalName ?? "?"}`;
    const tail = stderr.trim().split("\n").slice(-15).join("\n");
    super(`${[command, ...args].map(shellQuote).join(" ")} failed (${how})${tail ? `:\n${tail}` : ""}`);
    this.name = "CommandError";
  }
}

/** A word as a shell would need it, for messages. */
function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./:=,+@%-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`;
}

function searchPath(path: string | undefined): string[] {
  const dirs = (path ?? "").split(delimiter).filter((d) => d !== "");
  for (const extra of ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]) {
    if (!dirs.includes(extra)) dirs.push(extra);
  }
  return dirs;
}

/** The absolute path of `tool` (searched on PATH, then the sbin and bin directories), or a MissingToolError. */
export async function findTool(tool: string): Promise<string> {
  for (const dir of searchPath(process.env.PATH)) {
    const candidate = join(dir, tool);
    try {
      await access(candidate, constants.X_OK);
      if ((await stat(candidate)).isFile()) return candidate;
    } catch {
      // not in this directory
    }
  }
  throw new MissingToolError(tool, TOOL_PACKAGES[tool] ?? "(unknown package)");
}

async function findTools<const T extends readonly string[]>(tools: T): Promise<Record<T[number], string>> {
  const found = await Promise.all(tools.map(async (t) => [t, await findTool(t)] as const));
  return Object.fromEntries(found) as Record<T[number], string>;
}

interface RunOptions {
  signal?: AbortSignal | undefined;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** Runs a command to its end; resolves with its stdout, rejects with a CommandError (or the abort reason). */
async function runCommand(command: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  opts.signal?.throwIfAborted();
  return await new Promise<string>((resolvePromise, reject) => {
    const child = spawn(command, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let errBytes = 0;
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => {
      // keep the last 64 KiB of stderr: enough for an error message, bounded for a chatty command
      err.push(b);
      errBytes += b.length;
      while (errBytes > 65536 && err.length > 1) errBytes -= err.shift()?.length ?? 0;
    });
    let aborted = false;
    const onAbort = (): void => {
      aborted = true;
      child.kill("SIGTERM");
    };
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    child.on("error", (e: NodeJS.ErrnoException) => {
      opts.signal?.removeEventListener("abort", onAbort);
      if (e.code === "ENOENT") {
        const tool = basename(command);
        reject(new MissingToolError(tool, TOOL_PACKAGES[tool] ?? "(unknown package)"));
      } else reject(e);
    });
    child.on("close", (status, signalName) => {
      opts.signal?.removeEventListener("abort", onAbort);
      if (aborted) reject(opts.signal?.reason ?? new Error("aborted"));
      else if (status === 0) resolvePromise(Buffer.concat(out).toString("utf8"));
      else reject(new CommandError(command, args, status, signalName, Buffer.concat(err).toString("utf8")));
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Test systems

/** Where system.nix lives (next to this module, in any checkout). */
export const SYSTEM_NIX: string = fileURLToPath(new URL("./system.nix", import.meta.url));

/** The log every test system's switch-to-configuration appends "TIME ACTION STOREPATH" to. */
export const SWITCH_LOG = "/var/log/hetznix-test-switch.log";

export interface TestSystemSpec {
  /** Goes into the store path's name and `nixos-version`; different labels give different store paths. */
  label: string;
  /** Exit status of switch-to-configuration switch/test/boot (default 0). 0, 2 and 4 activate; see system.nix. */
  switchExit?: number;
  /** Seconds switch-to-configuration sleeps before it activates and exits (default 0; up to 3 decimals). */
  switchDelaySeconds?: number;
  /** The system string, e.g. "x86_64-linux" (default: Nix's builtins.currentSystem). Must be buildable here. */
  system?: string;
}

export interface BuildTestSystemOptions {
  signal?: AbortSignal;
  /** The static busybox binary (default: $HETZNIX_BUSYBOX, else /bin/busybox or /usr/bin/busybox). */
  busybox?: string;
  /** Make this path an indirect GC root for the result (nix-build --out-link); by default no root is made. */
  outLink?: string;
  /** Fail unless the result is already in the store (nix-build --max-jobs 0): proves a rebuild is cached. */
  requireCached?: boolean;
}

const LABEL_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/;
const SYSTEM_RE = /^[a-z0-9_]+-[a-z0-9_]+$/;

function delayText(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0 || seconds > 86400) {
    throw new RangeError(`switchDelaySeconds must be between 0 and 86400, not ${seconds}`);
  }
  const text = String(Math.round(seconds * 1000) / 1000);
  if (!/^[0-9]{1,5}(\.[0-9]{1,3})?$/.test(text))
    throw new RangeError(`switchDelaySeconds ${seconds} is not usable`);
  return text;
}

/** The static busybox binary: checked to be named `busybox` (it dispatches on argv[0]) and statically linked. */
export async function findBusybox(explicit?: string): Promise<string> {
  const candidates = explicit
    ? [explicit]
    : process.env.HETZNIX_BUSYBOX
      ? [process.env.HETZNIX_BUSYBOX]
      : ["/bin/busybox", "/usr/bin/busybox"];
  let found: string | undefined;
  for (const c of candidates) {
    try {
      found = await realpath(c);
      break;
    } catch {
      // try the next
    }
  }
  if (found === undefined)
    throw new MissingToolError("busybox", "busybox-static", `looked for ${candidates.join(", ")}`);
  if (basename(found) !== "busybox") {
    throw new Error(
      `${found} must be a file named "busybox" (busybox picks its applet from the name it is run as)`,
    );
  }
  if (await hasInterpreter(found)) {
    throw new MissingToolError("a static busybox", "busybox-static", `${found} is dynamically linked`);
  }
  return found;
}

/** Does this ELF file name a program interpreter (PT_INTERP), i.e. is it dynamically linked? */
async function hasInterpreter(file: string): Promise<boolean> {
  const fh = await open(file, "r");
  try {
    const head = Buffer.alloc(64);
    await fh.read(head, 0, 64, 0);
    if (head.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file} is not an ELF executable`);
    const is64 = head[4] === 2;
    const le = head[5] === 1;
    const u16 = (b: Buffer, o: number): number => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
    const u32 = (b: Buffer, o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
    const phoff = is64 ? Number(le ? head.readBigUInt64LE(32) : head.readBigUInt64BE(32)) : u32(head, 28);
    const phentsize = u16(head, is64 ? 54 : 42);
    const phnum = u16(head, is64 ? 56 : 44);
    if (phnum > 256 || phentsize > 128) return true; // implausible: treat as unusable
    const table = Buffer.alloc(phentsize * phnum);
    await fh.read(table, 0, table.length, phoff);
    for (let i = 0; i < phnum; i++) {
      if (u32(table, i * phentsize) === 3 /* PT_INTERP */) return true;
    }
    return false;
  } finally {
    await fh.close();
  }
}

/**
 * Builds a test system (system.nix) in this machine's /nix/store and returns its store path. Cached by Nix: the
 * same spec gives the same path, built once. Needs root.
 */
export async function buildTestSystem(
  spec: TestSystemSpec,
  opts: BuildTestSystemOptions = {},
): Promise<string> {
  if (!LABEL_RE.test(spec.label)) {
    throw new RangeError(
      `label "${spec.label}": use 1 to 64 of A-Z a-z 0-9 . _ + - (starting with a letter or digit)`,
    );
  }
  const exit = spec.switchExit ?? 0;
  if (!Number.isInteger(exit) || exit < 0 || exit > 255)
    throw new RangeError(`switchExit must be 0..255, not ${exit}`);
  const delay = delayText(spec.switchDelaySeconds ?? 0);
  if (spec.system !== undefined && !SYSTEM_RE.test(spec.system)) {
    throw new RangeError(`system "${spec.system}" is not a system string such as x86_64-linux`);
  }
  const tools = await findTools(["nix-build"] as const);
  const busybox = await findBusybox(opts.busybox);
  const args = [
    SYSTEM_NIX,
    ...(opts.outLink !== undefined ? ["--out-link", resolve(opts.outLink)] : ["--no-out-link"]),
    "--argstr",
    "busybox",
    dirname(busybox),
    "--argstr",
    "label",
    spec.label,
    "--argstr",
    "switchExit",
    String(exit),
    "--argstr",
    "switchDelaySeconds",
    delay,
    ...(spec.system !== undefined ? ["--argstr", "system", spec.system] : []),
    ...NIX_FLAGS,
    ...(opts.requireCached ? ["--max-jobs", "0"] : []),
  ];
  const stdout = await runCommand(tools["nix-build"], args, { signal: opts.signal, env: nixEnv() });
  const path = stdout.trim().split("\n").pop() ?? "";
  if (!/^\/nix\/store\/[0-9a-z]{32}-nixos-system-hetznix-test-/.test(path)) {
    throw new Error(
      `nix-build printed no store path of a test system: ${JSON.stringify(stdout.slice(-300))}`,
    );
  }
  return path;
}

// ---------------------------------------------------------------------------------------------------------------
// Sample disk image

/** GPT type GUIDs. */
export const GPT_TYPES = Object.freeze({
  esp: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
  biosBoot: "21686148-6449-6E6F-744E-656564454649",
  linux: "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
});

const MiB = 1024 * 1024;
const SECTOR = 512;

export interface SampleImageOptions {
  /** The image file to write (replaced atomically; its directory must exist). */
  out: string;
  /** The store path to install as generation 1 of /nix/var/nix/profiles/system (default: a test system "sample-1"). */
  system?: string;
  /** More store paths (with their closures) to put into the image's store, without making them a generation. */
  extraStorePaths?: string[];
  /** `trusted-public-keys` of the image's /etc/nix/nix.conf (default: none, so nothing from a cache is accepted). */
  trustedPublicKeys?: string[];
  /** `substituters` of the image's /etc/nix/nix.conf (default: none). */
  substituters?: string[];
  /** More lines for /etc/nix/nix.conf, e.g. "narinfo-cache-negative-ttl = 0". */
  extraNixConf?: string[];
  /** Disk size in MiB (default 256; most of it stays sparse). */
  sizeMiB?: number;
  /** Size of the EFI system partition in MiB (default 64, FAT32). */
  espMiB?: number;
  /**
   * Partition layout, as NixOS' make-disk-image makes it. "hybrid" (default on x86_64): 1 ESP, 2 BIOS boot, 3 root.
   * "efi" (default elsewhere): 1 ESP, 2 root.
   */
  layout?: "hybrid" | "efi";
  /** UUID of the root ext4 file system, also its directory hash seed (default: random). */
  rootUuid?: string;
  /** Volume id of the ESP, 8 hex digits (default: random). */
  espVolumeId?: string;
  /** Where temporary files go (default: the OS temp directory). Needs about the image's size in sparse files. */
  tmpDir?: string;
  /** Options for building the default system. */
  build?: BuildTestSystemOptions;
  signal?: AbortSignal;
}

export interface SamplePartition {
  number: number;
  name: string;
  type: string;
  startBytes: number;
  sizeBytes: number;
}

export interface SampleImage {
  /** Absolute path of the image file. */
  path: string;
  /** The store path the system profile points at (generation 1). */
  systemPath: string;
  /** Every store path in the image's store (the closure of systemPath and extraStorePaths), sorted. */
  storePaths: string[];
  /** Apparent size of the image file. */
  sizeBytes: number;
  /** Bytes the image file occupies on disk (sparse). */
  allocatedBytes: number;
  layout: "hybrid" | "efi";
  partitions: SamplePartition[];
  /** Partition number (1-based) of the ext4 root file system labelled "nixos". */
  rootPartition: number;
  /** Partition number of the EFI system partition (vfat, label "ESP"). */
  espPartition: number;
  rootUuid: string;
  espVolumeId: string;
  /** /etc/nix/nix.conf as written into the image. */
  nixConf: string;
  durationMs: number;
}

const KEY_RE = /^[^\s:]+:[A-Za-z0-9+/]+={0,2}$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The text of the image's /etc/nix/nix.conf. */
export function sampleNixConf(
  opts: Pick<SampleImageOptions, "trustedPublicKeys" | "substituters" | "extraNixConf">,
): string {
  const keys = opts.trustedPublicKeys ?? [];
  for (const k of keys) {
    if (!KEY_RE.test(k)) throw new RangeError(`trusted public key ${JSON.stringify(k)} is not NAME:BASE64`);
  }
  const subs = opts.substituters ?? [];
  for (const s of subs) {
    if (!/^\S+$/.test(s))
      throw new RangeError(`substituter ${JSON.stringify(s)} must be one URL without spaces`);
  }
  const extra = opts.extraNixConf ?? [];
  for (const line of extra) {
    if (line.includes("\n"))
      throw new RangeError(`extra nix.conf line ${JSON.stringify(line)} holds a newline`);
  }
  return [
    "# hetznix sample image",
    "build-users-group =",
    "sandbox = false",
    "require-sigs = true",
    `trusted-public-keys = ${keys.join(" ")}`,
    `substituters = ${subs.join(" ")}`,
    "experimental-features = nix-command",
    ...extra,
    "",
  ].join("\n");
}

function osRelease(version: string): string {
  return [
    "NAME=NixOS",
    "ID=nixos",
    `VERSION="${version} (hetznix sample)"`,
    `VERSION_ID="${version}"`,
    `PRETTY_NAME="NixOS ${version} (hetznix sample image, not a real NixOS)"`,
    'VARIANT="hetznix sample"',
    "VARIANT_ID=hetznix-sample",
    "",
  ].join("\n");
}

interface Layout {
  partitions: SamplePartition[];
  root: SamplePartition;
  esp: SamplePartition;
}

function planLayout(layout: "hybrid" | "efi", sizeMiB: number, espMiB: number): Layout {
  // As make-disk-image: ESP from 8 MiB, (hybrid) BIOS boot at 1-2 MiB, root after the ESP; 1 MiB left at the end
  // for the backup GPT.
  const rootStartMiB = 8 + espMiB;
  const rootMiB = sizeMiB - rootStartMiB - 1;
  if (rootMiB < 32) {
    throw new RangeError(
      `a ${sizeMiB} MiB disk with a ${espMiB} MiB ESP leaves ${rootMiB} MiB for root (< 32)`,
    );
  }
  const part = (n: number, name: string, type: string, startMiB: number, size: number): SamplePartition => ({
    number: n,
    name,
    type,
    startBytes: startMiB * MiB,
    sizeBytes: size * MiB,
  });
  const esp = part(1, "ESP", GPT_TYPES.esp, 8, espMiB);
  if (layout === "hybrid") {
    const root = part(3, "primary", GPT_TYPES.linux, rootStartMiB, rootMiB);
    return { partitions: [esp, part(2, "no-fs", GPT_TYPES.biosBoot, 1, 1), root], root, esp };
  }
  const root = part(2, "primary", GPT_TYPES.linux, rootStartMiB, rootMiB);
  return { partitions: [esp, root], root, esp };
}

function sfdiskScript(layout: Layout): string {
  const lines = ["label: gpt", "unit: sectors", "first-lba: 2048", ""];
  for (const p of [...layout.partitions].sort((a, b) => a.number - b.number)) {
    lines.push(
      `${p.number}: start=${p.startBytes / SECTOR}, size=${p.sizeBytes / SECTOR}, type=${p.type}, name="${p.name}"`,
    );
  }
  return lines.join("\n") + "\n";
}

/** Runs sfdisk with a script on stdin. */
async function runSfdisk(sfdisk: string, disk: string, script: string, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted();
  await new Promise<void>((resolvePromise, reject) => {
    const child = spawn(sfdisk, ["--quiet", "--no-reread", "--no-tell-kernel", disk], {
      stdio: ["pipe", "ignore", "pipe"],
    });
    let err = "";
    child.stderr.on("data", (b: Buffer) => {
      if (err.length < 65536) err += b.toString("utf8");
    });
    let aborted = false;
    const onAbort = (): void => {
      aborted = true;
      child.kill("SIGTERM");
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    child.on("error", (e: NodeJS.ErrnoException) => {
      signal?.removeEventListener("abort", onAbort);
      reject(e.code === "ENOENT" ? new MissingToolError("sfdisk", "fdisk") : e);
    });
    child.on("close", (status, signalName) => {
      signal?.removeEventListener("abort", onAbort);
      if (aborted) reject(signal?.reason ?? new Error("aborted"));
      else if (status === 0) resolvePromise();
      else reject(new CommandError(sfdisk, [disk], status, signalName, err));
    });
    child.stdin.on("error", () => {
      // reported through "close"
    });
    child.stdin.end(script);
  });
}

/** Fixes what a chroot store (nix copy --to DIR) leaves unlike a real /nix, and adds the system profile. */
async function finishNixState(root: string, systemPath: string): Promise<void> {
  const state = join(root, "nix/var/nix");
  // The chroot store points gcroots/profiles at DIR/nix/var/nix/profiles; on the server it is /nix/var/nix/profiles.
  await rm(join(state, "gcroots/profiles"), { force: true });
  await mkdir(join(state, "gcroots"), { recursive: true });
  await symlink("/nix/var/nix/profiles", join(state, "gcroots/profiles"));
  // Space Nix keeps back for a full disk's garbage collection (8 MiB of data); Nix makes it again when it opens the DB.
  await rm(join(state, "db/reserved"), { force: true });
  await rm(join(state, "temproots"), { recursive: true, force: true });
  await mkdir(join(state, "temproots"), { recursive: true });
  // As nix-env --set makes it: system -> system-1-link (relative), system-1-link -> the store path.
  const profiles = join(state, "profiles");
  await mkdir(profiles, { recursive: true });
  await symlink(systemPath, join(profiles, "system-1-link"));
  await symlink("system-1-link", join(profiles, "system"));
}

async function writeRootTree(root: string, systemPath: string, nixConf: string): Promise<void> {
  const dirs: Array<[string, number]> = [
    ["boot", 0o755],
    ["dev", 0o755],
    ["proc", 0o555],
    ["sys", 0o555],
    ["run", 0o755],
    ["tmp", 0o1777],
    ["root", 0o700],
    ["etc", 0o755],
    ["etc/nix", 0o755],
    ["etc/ssh", 0o755],
    ["var", 0o755],
    ["var/log", 0o755],
    ["var/lib", 0o755],
    ["var/tmp", 0o1777],
  ];
  for (const [d, mode] of dirs) {
    await mkdir(join(root, d), { recursive: true });
    await chmod(join(root, d), mode); // mkdir's mode is filtered by the umask
  }
  let version = "unknown";
  try {
    version = (await readFile(join(systemPath, "nixos-version"), "utf8")).trim() || version;
  } catch {
    // not a test system: keep "unknown"
  }
  if (!/^[A-Za-z0-9._+-]{1,64}$/.test(version)) version = "unknown";
  await writeFile(join(root, "etc/nix/nix.conf"), nixConf, { mode: 0o644 });
  await writeFile(join(root, "etc/os-release"), osRelease(version), { mode: 0o644 });
  await writeFile(join(root, "etc/NIXOS"), "", { mode: 0o644 });
}

/** Copies `src` into `disk` at `offset` (MiB-aligned), skipping zero blocks (dd conv=notrunc,sparse). */
async function ddInto(
  dd: string,
  src: string,
  disk: string,
  offset: number,
  signal?: AbortSignal,
): Promise<void> {
  if (offset % MiB !== 0) throw new Error(`partition offset ${offset} is not MiB-aligned`);
  await runCommand(
    dd,
    [`if=${src}`, `of=${disk}`, "bs=1M", `seek=${offset / MiB}`, "conv=notrunc,sparse", "status=none"],
    { signal },
  );
}

/**
 * Builds the sample disk image: GPT with an EFI system partition (vfat "ESP") and an ext4 root labelled "nixos"
 * holding the system's closure with a registered Nix database, the system profile (generation 1), /etc/nix/nix.conf,
 * /etc/os-release, and empty /var/log, /root, /etc/ssh and /boot. Temporary files are removed on success, error and
 * abort. Needs root.
 */
export async function buildSampleImage(opts: SampleImageOptions): Promise<SampleImage> {
  const started = Date.now();
  const signal = opts.signal;
  signal?.throwIfAborted();
  const layoutName = opts.layout ?? (process.arch === "x64" ? "hybrid" : "efi");
  if (layoutName !== "hybrid" && layoutName !== "efi")
    throw new RangeError(`layout must be "hybrid" or "efi"`);
  const sizeMiB = opts.sizeMiB ?? 256;
  const espMiB = opts.espMiB ?? 64;
  if (!Number.isInteger(sizeMiB) || sizeMiB <= 0) throw new RangeError(`sizeMiB must be a positive integer`);
  if (!Number.isInteger(espMiB) || espMiB < 33)
    throw new RangeError(`espMiB must be an integer >= 33 (FAT32)`);
  const layout = planLayout(layoutName, sizeMiB, espMiB);
  const rootUuid = (opts.rootUuid ?? randomUUID()).toLowerCase();
  if (!UUID_RE.test(rootUuid))
    throw new RangeError(`rootUuid ${JSON.stringify(opts.rootUuid)} is not a UUID`);
  const espVolumeId = (opts.espVolumeId ?? randomBytes(4).toString("hex")).toLowerCase();
  if (!/^[0-9a-f]{8}$/.test(espVolumeId)) throw new RangeError(`espVolumeId must be 8 hex digits`);
  const nixConf = sampleNixConf(opts);
  const tools = await findTools(["nix", "nix-store", "sfdisk", "mke2fs", "mkfs.vfat", "dd"] as const);

  const out = resolve(opts.out);
  const outDir = await realpath(dirname(out)).catch(() => {
    throw new Error(`the directory of ${out} does not exist`);
  });
  const target = join(outDir, basename(out));

  const systemPath =
    opts.system ??
    (await buildTestSystem({ label: "sample-1" }, { ...opts.build, signal: signal ?? opts.build?.signal }));
  const storeRoots = [systemPath, ...(opts.extraStorePaths ?? [])];
  for (const p of storeRoots) {
    if (!/^\/nix\/store\/[0-9a-z]{32}-[^/]+$/.test(p)) throw new RangeError(`${p} is not a store path`);
  }
  const env = nixEnv();
  const validity = await runCommand(
    tools["nix-store"],
    [...NIX_FLAGS, "--check-validity", "--print-invalid", ...storeRoots],
    {
      signal,
      env,
    },
  );
  if (validity.trim() !== "") {
    throw new Error(
      `not in this machine's Nix store (build or copy it first): ${validity.trim().split("\n").join(", ")}`,
    );
  }

  const work = await mkdtemp(join(opts.tmpDir ?? tmpdir(), "hetznix-sample-"));
  const partial = `${target}.partial-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    // 1. The root tree: the closure copied into a chroot store (registers it in DIR/nix/var/nix/db), then the rest.
    const root = join(work, "root");
    await mkdir(root, { mode: 0o755 });
    await chmod(root, 0o755);
    await runCommand(tools.nix, ["copy", ...NIX_FLAGS, "--no-check-sigs", "--to", root, ...storeRoots], {
      signal,
      env,
    });
    const requisites = await runCommand(
      tools["nix-store"],
      [...NIX_FLAGS, "--query", "--requisites", ...storeRoots],
      {
        signal,
        env,
      },
    );
    const storePaths = requisites
      .trim()
      .split("\n")
      .filter((l) => l !== "")
      .sort();
    await finishNixState(root, systemPath);
    await writeRootTree(root, systemPath, nixConf);
    signal?.throwIfAborted();

    // 2. The partitions as separate files.
    const rootImg = join(work, "root.img");
    const fh = await open(rootImg, "wx");
    await fh.truncate(layout.root.sizeBytes);
    await fh.close();
    await runCommand(
      tools.mke2fs,
      [
        "-q",
        "-F",
        "-t",
        "ext4",
        "-b",
        "4096",
        "-L",
        "nixos",
        "-U",
        rootUuid,
        "-E",
        `hash_seed=${rootUuid}`,
        "-d",
        root,
        rootImg,
      ],
      { signal },
    );
    const espImg = join(work, "esp.img");
    await runCommand(
      tools["mkfs.vfat"],
      [
        "-F",
        "32",
        "-s",
        "1",
        "-n",
        "ESP",
        "-i",
        espVolumeId,
        "-C",
        espImg,
        String(layout.esp.sizeBytes / 1024),
      ],
      { signal },
    );

    // 3. The disk: a sparse file, the GPT, the partitions copied into place.
    const disk = await open(partial, "wx", 0o644);
    await disk.truncate(sizeMiB * MiB);
    await disk.close();
    await runSfdisk(tools.sfdisk, partial, sfdiskScript(layout), signal);
    await ddInto(tools.dd, espImg, partial, layout.esp.startBytes, signal);
    await ddInto(tools.dd, rootImg, partial, layout.root.startBytes, signal);
    signal?.throwIfAborted();
    await rename(partial, target);

    const st = await stat(target);
    return {
      path: target,
      systemPath,
      storePaths,
      sizeBytes: st.size,
      allocatedBytes: st.blocks * 512,
      layout: layoutName,
      partitions: layout.partitions,
      rootPartition: layout.root.number,
      espPartition: layout.esp.number,
      rootUuid,
      espVolumeId,
      nixConf,
      durationMs: Date.now() - started,
    };
  } finally {
    await rm(partial, { force: true });
    await rm(work, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// CLI

const USAGE = `usage: node --import tsx scripts/sample/image.ts --out FILE [options]

  --out FILE            the raw disk image to write
  --trusted-key KEY     a Nix public key for the image's nix.conf (repeatable)
  --substituter URL     a binary cache for the image's nix.conf (repeatable)
  --system PATH         the store path to install (default: build the test system "sample-1")
  --label LABEL         build the default system with this label instead
  --switch-exit N       ... and this switch-to-configuration exit status
  --size-mib N          disk size in MiB (default 256)
  --layout hybrid|efi   partition layout (default: hybrid on x86_64, efi elsewhere)
  --root-uuid UUID      UUID of the root file system (default: random)
`;

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: "string" },
      "trusted-key": { type: "string", multiple: true },
      substituter: { type: "string", multiple: true },
      system: { type: "string" },
      label: { type: "string" },
      "switch-exit": { type: "string" },
      "size-mib": { type: "string" },
      layout: { type: "string" },
      "root-uuid": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!values.out) {
    process.stderr.write(`--out is required\n${USAGE}`);
    return 2;
  }
  const controller = new AbortController();
  const onSignal = (name: string) => (): void => controller.abort(new Error(`interrupted (${name})`));
  const onInt = onSignal("SIGINT");
  const onTerm = onSignal("SIGTERM");
  process.once("SIGINT", onInt);
  process.once("SIGTERM", onTerm);
  try {
    const layout = values.layout;
    if (layout !== undefined && layout !== "hybrid" && layout !== "efi")
      throw new RangeError("--layout: hybrid or efi");
    let system = values.system;
    if (system === undefined && (values.label !== undefined || values["switch-exit"] !== undefined)) {
      system = await buildTestSystem(
        { label: values.label ?? "sample-1", switchExit: Number(values["switch-exit"] ?? 0) },
        { signal: controller.signal },
      );
    }
    const image = await buildSampleImage({
      out: values.out,
      ...(system !== undefined ? { system } : {}),
      trustedPublicKeys: values["trusted-key"] ?? [],
      substituters: values.substituter ?? [],
      ...(values["size-mib"] !== undefined ? { sizeMiB: Number(values["size-mib"]) } : {}),
      ...(layout !== undefined ? { layout } : {}),
      ...(values["root-uuid"] !== undefined ? { rootUuid: values["root-uuid"] } : {}),
      signal: controller.signal,
    });
    process.stdout.write(JSON.stringify(image, null, 2) + "\n");
    return 0;
  } finally {
    process.off("SIGINT", onInt);
    process.off("SIGTERM", onTerm);
  }
}

function isMain(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`sample image: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
