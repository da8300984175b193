# The raw disk image: ext4 root labelled "nixos" that grows to fill the disk at boot, and an ESP mounted on /boot.
# x86_64: GPT "hybrid" layout (BIOS boot partition + ESP) with GRUB installed for both BIOS and UEFI: Hetzner's x86
# cloud servers boot with BIOS today, and the same image stays bootable should they move to UEFI. aarch64: GPT
# "efi" layout, GRUB for UEFI only (Hetzner's Arm servers boot UEFI).
# GRUB goes to the removable-media path (EFI/BOOT/BOOT*.EFI), which needs no NVRAM entry: a snapshot boots on a
# fresh server whose firmware has never seen it.
{
  config,
  lib,
  pkgs,
  modulesPath,
  ...
}:

let
  cfg = config.hetznix.image;
  x86 = pkgs.stdenv.hostPlatform.isx86_64;
in
{
  options.hetznix.image = {
    diskSize = lib.mkOption {
      type = lib.types.either (lib.types.enum [ "auto" ]) lib.types.ints.positive;
      default = "auto";
      description = ''
        Size of the raw image in MiB, or "auto" (the closure plus `additionalSpace`). The root file system
        grows to the server's disk on first boot either way; keep it small so the upload is fast.
      '';
    };
    additionalSpace = lib.mkOption {
      type = lib.types.str;
      default = "512M";
      description = ''Free space added to an "auto"-sized image.'';
    };
    bootSize = lib.mkOption {
      type = lib.types.str;
      default = "1G";
      description = ''
        Where the ESP (mounted on /boot) ends, counted from the start of the disk; it starts at 8 MiB. GRUB
        copies each generation's kernel and initrd there, so it must hold `boot.loader.grub.configurationLimit`
        generations for the server's whole life: an existing server keeps the ESP its image was built with.
      '';
    };
    copyChannel = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Copy a nixpkgs channel into the image (larger; flake-based systems do not need it). Turns
        `nix.channel.enable` on, without which NixOS puts no channel on NIX_PATH and removes nix-channel.
      '';
    };
  };

  config = {
    # A channel in the image is only usable with NixOS' channel support, which ./hetzner.nix otherwise turns off.
    nix.channel.enable = lib.mkDefault cfg.copyChannel;
    assertions = [
      {
        assertion = cfg.copyChannel -> config.nix.channel.enable;
        message = "hetznix.image.copyChannel needs nix.channel.enable (else the copied channel is unusable).";
      }
    ];

    boot.growPartition = true;

    fileSystems."/" = {
      device = "/dev/disk/by-label/nixos";
      fsType = "ext4";
      autoResize = true;
    };
    fileSystems."/boot" = {
      device = "/dev/disk/by-label/ESP";
      fsType = "vfat";
      options = [ "umask=0077" ];
    };

    boot.loader.grub = {
      enable = true;
      efiSupport = true;
      efiInstallAsRemovable = true;
      # BIOS GRUB into the disk's boot area on x86 (Hetzner's disk is /dev/sda; the image builder links its
      # build disk to this name); UEFI only on aarch64.
      device = if x86 then "/dev/sda" else "nodev";
      # Every generation in the menu keeps its kernel and initrd on the ESP (nixpkgs' default is 100).
      configurationLimit = lib.mkDefault 10;
    };
    boot.loader.efi.canTouchEfiVariables = false;

    system.build.hetznerImage = import (modulesPath + "/../lib/make-disk-image.nix") {
      inherit lib config pkgs;
      inherit (cfg)
        diskSize
        additionalSpace
        bootSize
        copyChannel
        ;
      format = "raw";
      partitionTableType = if x86 then "hybrid" else "efi";
      label = "nixos";
    };
  };
}
