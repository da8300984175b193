# Pull mode: the server fetches its channel's signed release record on a timer and applies it with
# `hetznix apply` (verify the record with the trusted key, refuse older serials, fetch the closure from the
# substituter with Nix's signature check, activate, health checks, roll back). No deployer connects to it.
# The trusted key and the substituter are also given to Nix (hetznix.trust, i.e. nix.settings), so Nix accepts
# the closure signed with the same key.
{
  config,
  lib,
  ...
}:

let
  cfg = config.hetznix.pull;
  applyArgs = lib.escapeShellArgs (
    [
      "apply"
      "--channel"
      cfg.channel
      "--trusted-key"
      cfg.trustedKey
    ]
    ++ lib.optionals (cfg.substituter != null) [
      "--substituter"
      cfg.substituter
    ]
    ++ lib.concatMap (check: [
      "--health-check"
      check
    ]) cfg.healthChecks
    ++ cfg.extraArgs
  );
in
{
  options.hetznix.pull = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Apply the channel's current release on a timer (`hetznix apply`).";
    };
    channel = lib.mkOption {
      type = lib.types.str;
      example = "https://releases.fsn1.your-objectstorage.com/web/channels/production.json";
      description = "URL of the channel's record (`channels/CHANNEL.json` at the releases location): https, http or file.";
    };
    trustedKey = lib.mkOption {
      type = lib.types.str;
      example = "releases.example.org-1:AAAA...";
      description = ''
        The release key's public half (`hetznix release keygen` prints it). Records must be signed with it, and Nix
        trusts it for the closure.
      '';
    };
    substituter = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "https://releases.fsn1.your-objectstorage.com/cache";
      description = ''
        The binary cache holding the releases' closures. Null: the one the record names (its `substituter`), which
        must then be among Nix's substituters already.
      '';
    };
    interval = lib.mkOption {
      type = lib.types.str;
      default = "5min";
      description = "How long after the last run the next one starts (systemd OnUnitActiveSec, a systemd.time span).";
    };
    onBoot = lib.mkOption {
      type = lib.types.str;
      default = "1min";
      description = "How long after boot the first run starts (systemd OnBootSec).";
    };
    randomizedDelay = lib.mkOption {
      type = lib.types.str;
      default = "30s";
      description = "A random delay up to this long before each run, so that servers do not all fetch at once.";
    };
    healthChecks = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "curl -fsS http://127.0.0.1/health" ];
      description = "Commands that must succeed on the new system; otherwise `hetznix apply` rolls back.";
    };
    extraArgs = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "More arguments for `hetznix apply`.";
    };
  };

  config = lib.mkIf cfg.enable {
    hetznix.trust.publicKeys = [ cfg.trustedKey ];
    hetznix.trust.substituters = lib.optional (cfg.substituter != null) cfg.substituter;

    systemd.services.hetznix-pull = {
      description = "Apply the current hetznix release of this server's channel";
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      path = [ config.nix.package ];
      # Applying a release switches the system, which must not restart or stop this unit in the middle of it.
      restartIfChanged = false;
      stopIfChanged = false;
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${lib.getExe config.hetznix.package} ${applyArgs}";
      };
    };

    systemd.timers.hetznix-pull = {
      description = "Check this server's hetznix release channel";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = cfg.onBoot;
        OnUnitActiveSec = cfg.interval;
        RandomizedDelaySec = cfg.randomizedDelay;
        Unit = "hetznix-pull.service";
      };
    };
  };
}
