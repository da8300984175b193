#!/usr/bin/env bash
# Installs what hetznix's demo, tests and benchmarks need on Debian 12 (run as root), then the npm dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  openssh-server openssh-client   # rescue hosts run a real sshd; the benchmark baseline uses the OpenSSH client
  util-linux e2fsprogs            # losetup, blkdiscard, unshare, nsenter, mount; mke2fs -d for sample images
  iproute2                        # ip netns, tc (benchmarks shape links with htb/tbf)
  gzip bzip2 xz-utils zstd pigz   # the rescue system's decompressors, and compressors for test images
  qemu-utils                      # qemu-img: qcow2 conversion on the client and in the rescue host
  wget curl procps psmisc time    # URL downloads in the rescue host; process inspection; GNU time (benchmarks)
  nix-bin                         # nix-instantiate --parse for the flake's .nix files; releases: nix copy, sign, build
  git                             # the release tests publish a flake from a git checkout (its revision)
  busybox-static                  # the static shell the sample test systems are built from (scripts/sample/)
  fdisk dosfstools                # sfdisk (GPT) and mkfs.vfat/fsck.vfat (ESP) for the sample NixOS disk image
  python3 python3-hcloud          # Hetzner's official Python client, run unmodified against the emulator
  hcloud-cli                      # Hetzner's official CLI (Debian's 1.30), run unmodified against the emulator
  xfsprogs                        # mkfs.xfs for emulated volumes created with format=xfs
)
missing=()
for p in "${packages[@]}"; do
  [[ "$p" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: these Debian packages are missing: ${missing[*]}; run this script as root (or sudo)." >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian starts the system sshd on install where an init system runs; rescue hosts listen on 127.0.0.N:22, so a
# system sshd bound to 0.0.0.0:22 would take their port.
if pgrep -x sshd >/dev/null 2>&1 && ss -ltn 'sport = :22' | grep -q '0.0.0.0:22\|\*:22\|\[::\]:22'; then
  echo "setup: stopping the system sshd (it holds port 22 on every address; rescue hosts need 127.0.0.N:22)" >&2
  (systemctl stop ssh 2>/dev/null || service ssh stop 2>/dev/null || pkill -x sshd) || true
fi

if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi
