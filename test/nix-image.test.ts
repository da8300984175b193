/**
 * What can be checked of the image modules without nixpkgs (none is available here): nix/image.nix and
 * nix/hetzner.nix are evaluated with stand-ins for `lib`, `pkgs` and make-disk-image.nix, and the values they hand
 * to NixOS and to make-disk-image are checked: only parameters that nixpkgs' nixos/lib/make-disk-image.nix
 * declares, the partition layout per architecture, an ESP that holds the generations GRUB keeps, and a channel
 * copy that is never left unusable. The option names themselves were checked by reading nixpkgs (README).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const exec = promisify(execFile);
const ROOT = join(import.meta.dirname, "..");
const MiB = 1024 * 1024;

// The parameters of nixos/lib/make-disk-image.nix, as read in nixpkgs.
const MAKE_DISK_IMAGE_PARAMS = [
  "pkgs",
  "lib",
  "config",
  "diskSize",
  "additionalSpace",
  "bootSize",
  "contents",
  "partitionTableType",
  "installBootLoader",
  "touchEFIVars",
  "OVMF",
  "efiFirmware",
  "efiVariables",
  "fsType",
  "label",
  "configFile",
  "postVM",
  "memSize",
  "onlyNixStore",
  "name",
  "format",
  "deterministic",
  "rootGPUID",
  "rootFSUID",
  "copyChannel",
  "additionalPaths",
];

// Room on the ESP per generation in GRUB's menu: a kernel and an initrd, which install-grub.pl copies to
// /boot/kernels (a NixOS kernel image and initrd together are some tens of MiB), plus GRUB's own files once.
const PER_GENERATION = 64 * MiB;
const GRUB_FILES = 64 * MiB;

interface Override<T> {
  _type: "override";
  priority: number;
  content: T;
}

interface ImageEval {
  options: { bootSize: string; copyChannel: boolean };
  diskImage: Record<string, unknown> & { argNames: string[] };
  grub: {
    device: string;
    efiSupport: boolean;
    efiInstallAsRemovable: boolean;
    configurationLimit: Override<number>;
  };
  canTouchEfiVariables: boolean;
  channelEnable: Override<boolean>;
  assertionsHold: boolean;
  hetznerSetsChannel: boolean;
}

const EVAL = `{ root, stubDir, system, copyChannel, channelEnable }:
let
  lib = {
    mkOption = o: o;
    mkDefault = v: { _type = "override"; priority = 1000; content = v; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    optional = c: v: if c then [ v ] else [ ];
    optionals = c: l: if c then l else [ ];
    escapeShellArgs = builtins.concatStringsSep " ";
    getExe = p: "\${p}/bin/hetznix";
    literalExpression = s: s;
    types = {
      str = "str"; bool = "bool"; package = "package"; ints.positive = "int";
      either = a: b: a; enum = l: l; nullOr = t: t; listOf = t: t;
    };
  };
  pkgs.stdenv.hostPlatform.isx86_64 = system == "x86_64-linux";
  modulesPath = /. + stubDir + "/modules";
  args = { inherit lib pkgs modulesPath config; };
  image = import (/. + root + "/nix/image.nix") args;
  hetzner = import (/. + root + "/nix/hetzner.nix") args;
  cfg = builtins.mapAttrs (_: o: o.default) image.options.hetznix.image // { inherit copyChannel; };
  config = {
    hetznix = { image = cfg; metadata = builtins.mapAttrs (_: o: o.default) hetzner.options.hetznix.metadata; };
    networking.hostName = "";
    nix.channel.enable = channelEnable;
  };
  hetznerConfigs = map (c: c.content or c) hetzner.config.contents;
in {
  options = { inherit (cfg) bootSize copyChannel; };
  diskImage = image.config.system.build.hetznerImage;
  grub = { inherit (image.config.boot.loader.grub) device efiSupport efiInstallAsRemovable configurationLimit; };
  canTouchEfiVariables = image.config.boot.loader.efi.canTouchEfiVariables;
  channelEnable = image.config.nix.channel.enable;
  assertionsHold = builtins.all (a: a.assertion) image.config.assertions;
  hetznerSetsChannel = builtins.any (c: (c.nix or { }) ? channel) hetznerConfigs;
}`;

/** numfmt --from=iec, which make-disk-image applies to bootSize. */
function iec(size: string): number {
  const m = /^(\d+)([KMGT]?)$/.exec(size);
  assert.ok(m, `bootSize "${size}" is a size make-disk-image understands (e.g. 1G)`);
  const power = "KMGT".indexOf(m[2] ?? "") + 1;
  return Number(m[1]) * 1024 ** power;
}

describe("NixOS image modules (evaluated with stand-ins for nixpkgs)", () => {
  let stubDir = "";

  before(async () => {
    stubDir = await mkdtemp(join(tmpdir(), "hetznix-nix-image-"));
    await mkdir(join(stubDir, "lib"));
    // Stands in for nixpkgs' make-disk-image.nix: hands back what it was called with.
    await writeFile(
      join(stubDir, "lib", "make-disk-image.nix"),
      `args: removeAttrs args [ "config" "pkgs" "lib" ] // { argNames = builtins.attrNames args; }\n`,
    );
  });
  after(async () => {
    if (stubDir) await rm(stubDir, { recursive: true, force: true });
  });

  async function evalImage(system: string, copyChannel: boolean, channelEnable: boolean): Promise<ImageEval> {
    const { stdout } = await exec(
      "nix-instantiate",
      [
        "--eval",
        "--strict",
        "--json",
        "--readonly-mode",
        ...["--argstr", "root", ROOT, "--argstr", "stubDir", stubDir, "--argstr", "system", system],
        ...["--arg", "copyChannel", String(copyChannel), "--arg", "channelEnable", String(channelEnable)],
        "-E",
        EVAL,
      ],
      { timeout: 60_000 },
    );
    return JSON.parse(stdout) as ImageEval;
  }

  for (const [system, layout, device] of [
    ["x86_64-linux", "hybrid", "/dev/sda"],
    ["aarch64-linux", "efi", "nodev"],
  ] as const) {
    it(`${system}: a raw ${layout} image through make-disk-image's own parameters`, async () => {
      const r = await evalImage(system, false, false);
      const unknown = r.diskImage.argNames.filter((a) => !MAKE_DISK_IMAGE_PARAMS.includes(a));
      assert.deepEqual(unknown, [], "every argument is a parameter of make-disk-image.nix");
      assert.equal(r.diskImage["format"], "raw");
      assert.equal(r.diskImage["partitionTableType"], layout);
      assert.equal(r.diskImage["label"], "nixos");
      assert.equal(r.diskImage["bootSize"], r.options.bootSize);
      assert.equal(r.diskImage["copyChannel"], false);
      assert.equal(r.grub.device, device);
      // grub.nix asserts both: removable-path installs need EFI support and must not touch EFI variables.
      assert.equal(r.grub.efiSupport, true);
      assert.equal(r.grub.efiInstallAsRemovable, true);
      assert.equal(r.canTouchEfiVariables, false);
    });
  }

  it("the ESP holds every generation GRUB keeps, and both limits stay overridable", async () => {
    const r = await evalImage("x86_64-linux", false, false);
    const limit = r.grub.configurationLimit;
    assert.equal(limit._type, "override");
    assert.equal(limit.priority, 1000, "configurationLimit is a mkDefault");
    assert.ok(
      limit.content >= 2 && limit.content < 100,
      `a small limit below nixpkgs' 100 (${limit.content})`,
    );
    // make-disk-image's ESP runs from 8 MiB to bootSize. GRUB's menu holds the default entry plus `limit`
    // generations, and install-grub.pl copies a new kernel and initrd before it removes the ones no entry uses.
    const esp = iec(r.options.bootSize) - 8 * MiB;
    const needed = (limit.content + 2) * PER_GENERATION + GRUB_FILES;
    assert.ok(
      esp >= needed,
      `ESP of ${esp / MiB} MiB >= ${needed / MiB} MiB for ${limit.content} generations`,
    );
  });

  it("copyChannel turns the channel on, and a channel that NixOS would ignore is refused", async () => {
    const off = await evalImage("x86_64-linux", false, false);
    assert.deepEqual(off.channelEnable, { _type: "override", priority: 1000, content: false });
    assert.equal(off.assertionsHold, true);

    const on = await evalImage("x86_64-linux", true, true);
    assert.deepEqual(on.channelEnable, { _type: "override", priority: 1000, content: true });
    assert.equal(on.diskImage["copyChannel"], true);
    assert.equal(on.assertionsHold, true);

    const forcedOff = await evalImage("x86_64-linux", true, false);
    assert.equal(
      forcedOff.assertionsHold,
      false,
      "copyChannel with nix.channel.enable = false fails evaluation",
    );

    // A second default in hetzner.nix would conflict with image.nix's whenever copyChannel is set.
    assert.equal(off.hetznerSetsChannel, false, "only image.nix sets nix.channel.enable");
  });
});
