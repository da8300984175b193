# Everything a NixOS server on Hetzner Cloud needs: the metadata agent before networking, systemd-networkd,
# OpenSSH with keys only, the QEMU guest agent, Hetzner's NTP servers, Nix with flakes; no cloud-init.
# The disk layout and boot loader live in ./image.nix.
{
  config,
  lib,
  pkgs,
  modulesPath,
  ...
}:

let
  cfg = config.hetznix;
  agentArgs = lib.escapeShellArgs (
    [
      "metadata"
      "apply"
      "--timeout"
      cfg.metadata.timeout
    ]
    ++ lib.optionals (cfg.metadata.userDataFile != null) [
      "--userdata"
      cfg.metadata.userDataFile
    ]
    # A host name set in the configuration wins: NixOS then manages /etc/hostname itself.
    ++ lib.optional (config.networking.hostName != "") "--no-hostname"
  );
in
{
  imports = [
    (modulesPath + "/profiles/qemu-guest.nix")
    ./image.nix
    ./pull.nix
  ];

  options.hetznix = {
    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./package.nix { }";
      description = "The hetznix package providing `hetznix metadata apply`.";
    };

    metadata = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = ''
          Run `hetznix metadata apply` at every boot, before network-pre.target: networkd units per interface
          (matched by MAC), the host name, and root's SSH keys in a file of their own.
        '';
      };
      timeout = lib.mkOption {
        type = lib.types.str;
        default = "60s";
        description = "How long the agent keeps retrying the metadata service before failing.";
      };
      userDataFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "/run/hetznix/userdata";
        description = "Also write the server's user data to this file (mode 0600). Not fetched when null.";
      };
    };

    trust = {
      publicKeys = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [ "releases.example.org-1:AAAA..." ];
        description = "Nix signing keys whose signatures this server trusts (e.g. the release signing key).";
      };
      substituters = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [ "https://cache.example.org" ];
        description = "Binary caches to fetch releases from, in addition to the defaults.";
      };
    };
  };

  config = lib.mkMerge [
    {
      boot.initrd.availableKernelModules = [
        "virtio_pci"
        "virtio_scsi"
        "sd_mod"
        "sr_mod"
      ];

      # The host name comes from the metadata agent (which writes /etc/hostname); NixOS leaves /etc/hostname
      # alone when hostName is "".
      networking.hostName = lib.mkDefault "";

      # systemd-networkd reads the agent's units in /run/systemd/network. Links the agent wrote nothing for
      # still get DHCP from NixOS' default unit, so a server stays reachable if the agent fails.
      networking.useNetworkd = true;
      systemd.network.enable = true;
      networking.useDHCP = lib.mkDefault true;

      services.openssh = {
        enable = true;
        settings = {
          PasswordAuthentication = false;
          KbdInteractiveAuthentication = false;
          PermitRootLogin = "prohibit-password";
        };
        # Besides ~/.ssh/authorized_keys and /etc/ssh/authorized_keys.d/%u (which NixOS adds itself): the keys
        # from the metadata, so keys added by hand in ~/.ssh/authorized_keys survive reboots.
        authorizedKeysFiles = [ "/var/lib/hetznix/authorized_keys.d/%u" ];
      };

      services.qemuGuest.enable = true;

      networking.timeServers = [
        "ntp1.hetzner.de"
        "ntp2.hetzner.com"
        "ntp3.hetzner.net"
      ];

      services.cloud-init.enable = false;

      nix.settings = {
        experimental-features = [
          "nix-command"
          "flakes"
        ];
        extra-trusted-public-keys = lib.mkIf (cfg.trust.publicKeys != [ ]) cfg.trust.publicKeys;
        extra-substituters = lib.mkIf (cfg.trust.substituters != [ ]) cfg.trust.substituters;
      };

      environment.systemPackages = [ cfg.package ];

      # Small: no documentation (a flake-based system needs none). The channel is off too, unless
      # hetznix.image.copyChannel puts one into the image (./image.nix).
      documentation.enable = lib.mkDefault false;
      documentation.nixos.enable = lib.mkDefault false;

      system.stateVersion = lib.mkDefault "25.05";
    }

    (lib.mkIf cfg.metadata.enable {
      systemd.services.hetznix-metadata = {
        description = "Network, host name and SSH keys from the Hetzner metadata service";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-pre.target" ];
        before = [
          "network-pre.target"
          "systemd-networkd.service"
          "sshd.service"
        ];
        after = [ "local-fs.target" ];
        # `ip` for bringing a link up with a link-local address while no link is up.
        path = [ pkgs.iproute2 ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${lib.getExe cfg.package} ${agentArgs}";
        };
      };
    })
  ];
}
