# A test "system": a store path shaped like a NixOS toplevel, built without nixpkgs.
#
#   nix-build system.nix --argstr busybox /usr/bin --argstr label sample-1 \
#     --option sandbox false --option build-users-group '' --option substituters ''
#
# Every argument may be given with --argstr (strings) or --arg. The only input is Debian's static busybox, imported
# from `busybox` (a directory holding a file named `busybox`; only that file is taken, so /usr/bin works).
#
# The output:
#   system                          the system string, e.g. "x86_64-linux" (no newline, as NixOS writes it)
#   nixos-version                   the label (no newline)
#   sw/bin/{sh,true,false,cat,...}  busybox applets, for health checks
#   bin/switch-to-configuration     ACTION = switch | boot | test | dry-activate; see switch.sh
{
  busybox,
  label ? "sample-1",
  switchExit ? 0,
  switchDelaySeconds ? 0,
  system ? builtins.currentSystem,
}:
let
  str = toString;
  # Each value ends up in a shell script, so only plain characters are let through.
  check =
    what: re: value:
    if builtins.match re (str value) != null then
      str value
    else
      throw "hetznix test system: invalid ${what}: '${str value}'";
  labelOk = check "label" "[A-Za-z0-9][A-Za-z0-9._+-]{0,63}" label;
  exitOk = check "switchExit (0..255)" "0|[1-9][0-9]?|1[0-9][0-9]|2[0-4][0-9]|25[0-5]" switchExit;
  delayOk = check "switchDelaySeconds" "[0-9]{1,5}([.][0-9]{1,3})?" switchDelaySeconds;
  systemOk = check "system" "[a-z0-9_]+-[a-z0-9_]+" system;
  busyboxDir = builtins.path {
    path = if builtins.isPath busybox then busybox else /. + busybox;
    name = "busybox-static";
    filter = path: type: baseNameOf path == "busybox" && type == "regular";
  };
in
builtins.derivation {
  name = "nixos-system-hetznix-test-${labelOk}";
  system = systemOk;
  builder = "${busyboxDir}/busybox";
  args = [
    "sh"
    ./build.sh
  ];
  busybox = "${busyboxDir}/busybox";
  switchScript = ./switch.sh;
  label = labelOk;
  systemString = systemOk;
  switchExit = exitOk;
  switchDelaySeconds = delayOk;
  applets = "sh ash true false cat test [ echo printf date mkdir ln ls readlink rm mv sleep env id uname grep sed head tail wc";
}
