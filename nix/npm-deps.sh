#!/usr/bin/env bash
# Installs the npm dependencies that package-lock.json pins, twice: DEST/build/node_modules (with the dev
# dependencies: what `tsc` needs to build dist/) and DEST/runtime/node_modules (what the installed CLI needs).
#
#   bash nix/npm-deps.sh SRC DEST      SRC: a directory with package.json and package-lock.json; DEST: new
#
# nix/package.nix runs this file in a fixed-output derivation whose outputHash is the NAR hash of DEST, and
# test/nix-npm-deps.test.ts runs it here and compares `nix hash path DEST` with that hash. One script for both,
# so the two cannot drift apart. What makes DEST the same on every machine, every npm 10 or 11 and every OS/CPU:
#   - `npm ci` installs exactly the lockfile's tree (and fails if package.json does not match it); packages are
#     verified against the lockfile's integrity hashes and fetched from the registry npm is configured with
#     (npm's default registry in the Nix build: the lockfile names no host);
#   - --omit=optional leaves out the per-OS/CPU packages (esbuild's binaries, fsevents) and ssh2's optional native
#     speed-ups, so the tree does not depend on the platform; --ignore-scripts runs no install script, so nothing
#     is compiled or downloaded besides the tarballs;
#   - npm's own bookkeeping (node_modules/.package-lock.json), its cache and its logs stay out of DEST, and so do
#     empty directories (npm 10 leaves an empty scope directory, such as @esbuild, for packages it omits; npm 11
#     does not);
#   - the layout options are given here, so no npmrc changes them; a NAR records only contents, symlinks and the
#     executable bit, which come from the tarballs and from npm's bin links.
set -euo pipefail
umask 022

if (($# != 2)); then
  echo "usage: npm-deps.sh SRC DEST" >&2
  exit 2
fi
src=$1
dest=$2
if [[ -e $dest ]]; then
  echo "npm-deps.sh: $dest exists" >&2
  exit 2
fi

# Settings that `npm run` and friends pass down in the environment would change what npm does.
while IFS= read -r name; do
  case ${name,,} in npm_config_*) unset "$name" ;; esac
done < <(compgen -e)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export npm_config_cache="$work/cache"

flags=(
  --ignore-scripts
  --omit=optional
  --install-strategy=hoisted
  --bin-links=true
  --no-audit
  --no-fund
  --no-update-notifier
  --loglevel=warn
)

mkdir -p "$dest"
for kind in build runtime; do
  mkdir "$work/$kind"
  cp "$src/package.json" "$src/package-lock.json" "$work/$kind/"
  extra=()
  [[ $kind == runtime ]] && extra=(--omit=dev)
  (cd "$work/$kind" && npm ci "${flags[@]}" "${extra[@]}")
  rm -f "$work/$kind/node_modules/.package-lock.json"
  find "$work/$kind/node_modules" -type d -empty -delete
  mkdir "$dest/$kind"
  mv "$work/$kind/node_modules" "$dest/$kind/node_modules"
done
