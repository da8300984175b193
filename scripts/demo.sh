#!/usr/bin/env bash
# Quick start, first command: install what is missing (Debian packages as root, npm dependencies), then run the demo
# on the built-in emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec npm run --silent demo -- "$@"
