# Builder of system.nix, run by busybox sh with no PATH. Writes a NixOS-toplevel-like $out.
set -eu
bb=$busybox
"$bb" mkdir -p "$out/bin" "$out/sw/bin"
for applet in $applets; do
  "$bb" ln -s "$bb" "$out/sw/bin/$applet"
done
PATH=$out/sw/bin
export PATH

printf '%s' "$systemString" >"$out/system"
printf '%s' "$label" >"$out/nixos-version"

# switch.sh with its placeholders filled in; every value was checked by system.nix to hold no special characters.
{
  printf '#!%s sh\n' "$bb"
  sed -e "s|@out@|$out|g" \
    -e "s|@label@|$label|g" \
    -e "s|@switchExit@|$switchExit|g" \
    -e "s|@switchDelaySeconds@|$switchDelaySeconds|g" \
    "$switchScript"
} >"$out/bin/switch-to-configuration"
chmod 0555 "$out/bin/switch-to-configuration"
