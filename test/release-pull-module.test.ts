/**
 * nix/pull.nix (pull mode) evaluated with stand-ins for `lib` (no nixpkgs here): the options it declares, the
 * `hetznix apply` command line the service runs (flags as `hetznix apply` takes them), the timer, and the key and
 * substituter it hands to Nix through hetznix.trust.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";

const exec = promisify(execFile);
const ROOT = join(import.meta.dirname, "..");

const EVAL = `{ root, enable, substituter, checks }:
let
  lib = {
    mkOption = o: o;
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    optional = c: v: if c then [ v ] else [ ];
    optionals = c: l: if c then l else [ ];
    concatMap = f: l: builtins.concatLists (map f l);
    # Single quotes around every word, as nixpkgs' escapeShellArg does for words that need them.
    escapeShellArgs = l: builtins.concatStringsSep " " (map (w: "'" + w + "'") l);
    getExe = p: p + "/bin/hetznix";
    types = { str = "str"; bool = "bool"; nullOr = t: t; listOf = t: t; };
  };
  module = import (/. + root + "/nix/pull.nix") { inherit lib config; };
  defaults = builtins.mapAttrs (_: o: o.default or null) module.options.hetznix.pull;
  config = {
    hetznix.pull = defaults // {
      inherit enable substituter;
      channel = "https://rel.example.org/web/channels/production.json";
      trustedKey = "rel-1:AAAA";
      healthChecks = checks;
    };
    hetznix.package = "/nix/store/x-hetznix";
    nix.package = "/nix/store/x-nix";
  };
in {
  optionNames = builtins.attrNames module.options.hetznix.pull;
  inherit defaults;
  inherit (module.config) condition;
  service = module.config.content.systemd.services.hetznix-pull;
  timer = module.config.content.systemd.timers.hetznix-pull;
  trust = module.config.content.hetznix.trust;
}`;

interface PullEval {
  optionNames: string[];
  defaults: Record<string, unknown>;
  condition: boolean;
  service: {
    serviceConfig: { Type: string; ExecStart: string };
    restartIfChanged: boolean;
    stopIfChanged: boolean;
    after: string[];
    path: string[];
  };
  timer: { wantedBy: string[]; timerConfig: Record<string, string> };
  trust: { publicKeys: string[]; substituters: string[] };
}

async function evalPull(enable: boolean, substituter: string | null, checks: string[]): Promise<PullEval> {
  const args = [
    "--eval",
    "--strict",
    "--json",
    "--argstr",
    "root",
    ROOT,
    "--arg",
    "enable",
    String(enable),
    "--arg",
    "substituter",
    substituter === null ? "null" : JSON.stringify(substituter),
    "--arg",
    "checks",
    `[ ${checks.map((c) => JSON.stringify(c)).join(" ")} ]`,
    "-E",
    EVAL,
  ];
  const { stdout } = await exec("nix-instantiate", args, { timeout: 60_000 });
  return JSON.parse(stdout) as PullEval;
}

describe("pull mode module (nix/pull.nix, evaluated with stand-ins)", () => {
  it("declares the options, with defaults where a server needs none", async () => {
    const e = await evalPull(false, null, []);
    assert.deepEqual(e.optionNames.sort(), [
      "channel",
      "enable",
      "extraArgs",
      "healthChecks",
      "interval",
      "onBoot",
      "randomizedDelay",
      "substituter",
      "trustedKey",
    ]);
    assert.equal(e.defaults.enable, false);
    assert.equal(e.condition, false, "nothing is configured unless enabled");
  });

  it("runs hetznix apply with the channel, the key, the substituter and each health check", async () => {
    const e = await evalPull(true, "https://rel.example.org/cache", [
      "curl -fsS http://127.0.0.1/health",
      "true",
    ]);
    assert.equal(e.condition, true);
    assert.equal(e.service.serviceConfig.Type, "oneshot");
    assert.equal(
      e.service.serviceConfig.ExecStart,
      "/nix/store/x-hetznix/bin/hetznix 'apply' '--channel' 'https://rel.example.org/web/channels/production.json' " +
        "'--trusted-key' 'rel-1:AAAA' '--substituter' 'https://rel.example.org/cache' " +
        "'--health-check' 'curl -fsS http://127.0.0.1/health' '--health-check' 'true'",
    );
    assert.equal(e.service.restartIfChanged, false, "a switch never restarts the unit that runs it");
    assert.equal(e.service.stopIfChanged, false);
    assert.deepEqual(e.service.after, ["network-online.target"]);
    assert.deepEqual(e.service.path, ["/nix/store/x-nix"]);
    assert.deepEqual(e.timer.wantedBy, ["timers.target"]);
    assert.deepEqual(e.timer.timerConfig, {
      OnBootSec: "1min",
      OnUnitActiveSec: "5min",
      RandomizedDelaySec: "30s",
      Unit: "hetznix-pull.service",
    });
    assert.deepEqual(e.trust, {
      publicKeys: ["rel-1:AAAA"],
      substituters: ["https://rel.example.org/cache"],
    });
  });

  it("without a substituter, passes none and adds none to Nix", async () => {
    const e = await evalPull(true, null, []);
    assert.ok(!e.service.serviceConfig.ExecStart.includes("--substituter"));
    assert.ok(!e.service.serviceConfig.ExecStart.includes("--health-check"));
    assert.deepEqual(e.trust.substituters, []);
  });
});
