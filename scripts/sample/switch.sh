# hetznix test system "@label@": stands in for NixOS' switch-to-configuration (the shebang line is added by build.sh).
#
# Every call with a known ACTION appends "TIME ACTION STOREPATH" to /var/log/hetznix-test-switch.log, then sleeps
# @switchDelaySeconds@ s.
#   switch, test   exit @switchExit@; with 0, 2 or 4 the configuration is activated (/run/current-system points here),
#                  as real activation does (2: the activation script failed, 4: some units failed); any other status
#                  models a failure before activation (1: boot loader, 100: reboot needed) and changes nothing.
#   boot           exit @switchExit@, never touches /run/current-system.
#   dry-activate   exit 0, changes nothing.
# Only store paths are used, so it runs in any root that has this closure in /nix/store.
PATH=@out@/sw/bin
export PATH
out=@out@
status=@switchExit@
action=${1-}

case $action in
switch | boot | test | dry-activate) ;;
*)
  echo "Usage: $0 [switch|boot|test|dry-activate]" >&2
  exit 1
  ;;
esac

mkdir -p /var/log
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $action $out" >>/var/log/hetznix-test-switch.log

sleep @switchDelaySeconds@

case $action in
dry-activate)
  echo "would activate the configuration @label@ (hetznix test system, changes nothing)"
  exit 0
  ;;
boot)
  if [ "$status" = 0 ]; then
    echo "hetznix test system @label@: boot configuration updated"
  else
    echo "error: hetznix test system @label@: boot failed (configured status $status)" >&2
  fi
  exit "$status"
  ;;
esac

case $status in
0 | 2 | 4)
  echo "activating the configuration..."
  mkdir -p /run
  ln -sfn "$out" /run/current-system
  ;;
esac
case $status in
0) ;;
1) echo "error: hetznix test system @label@: failed before activation (configured status 1)" >&2 ;;
2) echo "warning: error(s) occurred while switching to the new configuration" >&2 ;;
4)
  echo "warning: the following units failed: hetznix-test-failing.service" >&2
  echo "warning: error(s) occurred while switching to the new configuration" >&2
  ;;
100) echo "NOT restarting the current system: a reboot is needed (hetznix test system @label@)" >&2 ;;
*) echo "error: hetznix test system @label@: configured to exit with status $status" >&2 ;;
esac
exit "$status"
