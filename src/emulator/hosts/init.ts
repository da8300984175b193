/**
 * The shell of a host, written into its private directory at start.
 *
 * `init.sh` is pid 1 of the host's own mount, pid and UTS namespaces. While it still sees the machine it builds the
 * host's root: a tmpfs holding the machine's userland read-only (/usr and the /bin, /lib... links), an /etc of its
 * own made from a short list of harmless files (no /etc/shadow, no host keys), its own /dev with only the server's
 * disk, /proc with /proc/sys read-only, and tmpfs /run and /tmp. A system host mounts the root file system from the
 * server's disk and binds its /nix, /etc/nix, /etc/ssh, /var and /root; it runs the metadata agent against the
 * disk, as the NixOS module does at boot. Then init moves into that root (pivot_root, the old root unmounted) and
 * runs sshd with a reduced capability set (no CAP_SYS_ADMIN, CAP_MKNOD, CAP_SYS_MODULE, ...), so root in the host
 * can neither remount nor reach the machine's files, devices or the emulator's state.
 *
 * `power` stands in for poweroff/halt/reboot/shutdown/systemctl inside the host: it syncs, then writes the action
 * into a fifo that init relays to the manager on its stdout.
 */

/** Lines init.sh prints on stdout (the manager's protocol). */
export const INIT_PID_PREFIX = "hetznix-init-pid ";
export const INIT_HOLDING = "hetznix-init-holding";
export const POWER_PREFIX = "hetznix-power ";
export const HOSTKEY_PREFIX = "hetznix-hostkey ";
export const LOG_PREFIX = "hetznix-log ";

/**
 * Capabilities sshd (and so every session) keeps. Left out on purpose: sys_admin (mount, pivot, namespaces),
 * mknod, sys_module, sys_rawio, sys_ptrace, sys_boot, sys_time, dac_read_search (open_by_handle_at), net_admin,
 * bpf, perfmon, syslog, mac_*, linux_immutable, ipc_lock, sys_resource, sys_nice, lease, audit_control, wake_alarm,
 * block_suspend, checkpoint_restore, sys_pacct, sys_tty_config.
 */
export const HOST_CAPABILITIES = [
  "chown",
  "dac_override",
  "fowner",
  "fsetid",
  "kill",
  "setgid",
  "setuid",
  "net_bind_service",
  "net_raw",
  "sys_chroot",
  "audit_write",
  "setfcap",
] as const;

/** Files copied from the machine's /etc into a host's own /etc (public configuration only). */
export const ETC_FILES = [
  "passwd",
  "group",
  "nsswitch.conf",
  "ld.so.cache",
  "ld.so.conf",
  "ld.so.conf.d",
  "hosts",
  "host.conf",
  "resolv.conf",
  "services",
  "protocols",
  "localtime",
  "ssl",
  "ca-certificates",
  "ca-certificates.conf",
  "alternatives",
  "profile",
  "bash.bashrc",
  "environment",
  "login.defs",
  "inputrc",
  "debian_version",
  "os-release",
  "terminfo",
  "ssh/ssh_config",
  "ssh/moduli",
] as const;

export function initScript(): string {
  return `#!/bin/bash
# pid 1 of a hetznix host (own mount + pid + uts namespaces). Arg: HOSTDIR (holds host.env, written by the manager).
set -euo pipefail
hostdir=$1
# shellcheck disable=SC1091
source "$hostdir/host.env"
hostpid=
while read -r key value _; do
  if [[ $key == NSpid: ]]; then hostpid=$value; fi
done </proc/self/status
echo "${INIT_PID_PREFIX}$hostpid"
log() { echo "${LOG_PREFIX}$*"; }

mount --make-rprivate /
R=$hostdir/root
mount -t tmpfs -o mode=0755,size=64m hetznix-host-root "$R"

# The machine's userland, read-only.
for top in usr bin sbin lib lib32 lib64 libx32; do
  if [[ -L /$top ]]; then
    ln -s "$(readlink "/$top")" "$R/$top"
  elif [[ -d /$top ]]; then
    mkdir "$R/$top"
    mount --rbind "/$top" "$R/$top"
    mount -o remount,bind,ro "$R/$top"
  fi
done

# An /etc of its own: public configuration only; a shadow file without passwords.
mkdir -p "$R/etc/ssh"
for f in ${ETC_FILES.join(" ")}; do
  if [[ -e /etc/$f ]]; then cp -a "/etc/$f" "$R/etc/$f"; fi
done
awk -F: '{ print $1 ":*:19000:0:99999:7:::" }' /etc/passwd >"$R/etc/shadow"
chmod 0640 "$R/etc/shadow"
ln -s ../proc/self/mounts "$R/etc/mtab"
echo "$HOST_NAME" >"$R/etc/hostname"

# /run, /tmp, /root.
mkdir -p "$R/run" "$R/tmp" "$R/root" "$R/nix" "$R/var" "$R/opt" "$R/home" "$R/boot" "$R/mnt"
mount -t tmpfs -o mode=0755,size=64m hetznix-host-run "$R/run"
mkdir -p "$R/run/sshd" "$R/run/hetznix" "$R/run/host"
mount --bind "$hostdir" "$R/run/host"
mount -o remount,bind,ro "$R/run/host"
mount -t tmpfs -o mode=1777,size=$RAMDISK hetznix-host-tmp "$R/tmp"

# /dev: only the server's disk (and its partitions).
mkdir -p "$R/dev"
mount -t tmpfs -o mode=0755,size=1m hetznix-host-dev "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3
mknod -m 666 "$R/dev/zero" c 1 5
mknod -m 666 "$R/dev/full" c 1 7
mknod -m 666 "$R/dev/random" c 1 8
mknod -m 666 "$R/dev/urandom" c 1 9
mknod -m 666 "$R/dev/tty" c 5 0
if [[ -n $DISK_DEV ]]; then
  mknod -m 660 "$R/dev/sda" b "\${DISK_DEV%:*}" "\${DISK_DEV#*:}"
  for part in $PART_DEVS; do
    num=\${part%%=*} dev=\${part#*=}
    mknod -m 660 "$R/dev/sda$num" b "\${dev%:*}" "\${dev#*:}"
  done
fi
mkdir "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,size=64m hetznix-host-shm "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"

# /proc of this pid namespace; the kernel's knobs read-only.
mkdir -p "$R/proc"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
for p in sys sysrq-trigger irq bus fs; do
  if [[ -e $R/proc/$p ]]; then
    mount --bind "$R/proc/$p" "$R/proc/$p"
    mount -o remount,bind,ro "$R/proc/$p"
  fi
done

if [[ $KIND == system ]]; then
  # The root file system from the server's disk.
  disk=$hostdir/disk
  mkdir -p "$disk"
  mount -t ext4 "$R/dev/sda$ROOT_PART" "$disk"
  mkdir -p "$disk/nix" "$disk/etc/nix" "$disk/etc/ssh" "$disk/var" "$disk/root" "$disk/run" "$disk/boot"
  chmod 0700 "$disk/root"
  if [[ ! -s $disk/etc/ssh/ssh_host_ed25519_key ]]; then
    rm -f "$disk/etc/ssh/ssh_host_ed25519_key" "$disk/etc/ssh/ssh_host_ed25519_key.pub"
    ssh-keygen -q -t ed25519 -N '' -C "root@$HOST_NAME" -f "$disk/etc/ssh/ssh_host_ed25519_key"
    log "first boot: made the SSH host key"
  fi
  echo "${HOSTKEY_PREFIX}$(cat "$disk/etc/ssh/ssh_host_ed25519_key.pub")"
  for d in nix var root boot etc/nix etc/ssh; do
    mkdir -p "$R/$d"
    mount --bind "$disk/$d" "$R/$d"
  done
  # /run is the host's tmpfs, also where the agent writes its network units.
  mount --bind "$R/run" "$disk/run"
  if [[ \${#AGENT[@]} -gt 0 && -n \${METADATA_URL:-} ]]; then
    if ! env -i PATH="$PATH" LANG=C.UTF-8 HOME=/nonexistent "\${AGENT[@]}" metadata apply --root "$disk" \\
      --metadata-url "$METADATA_URL" --no-link-setup --timeout 30s >"$R/run/hetznix/agent.log" 2>&1; then
      log "the metadata agent failed: $(tail -n 3 "$R/run/hetznix/agent.log" | tr '\\n' ' ')"
    fi
  fi
  if [[ -s $disk/etc/hostname ]]; then HOST_NAME=$(head -n 1 "$disk/etc/hostname"); fi
  # What the system profile points at (links inside the profiles directory are relative, the last is absolute).
  profile=system
  for _ in 1 2 3 4 5 6; do
    [[ $profile == /nix/store/* ]] && break
    profile=$(readlink "$disk/nix/var/nix/profiles/$profile" 2>/dev/null) || { profile=; break; }
  done
  if [[ $profile == /nix/store/* ]]; then
    ln -sfn "$profile" "$R/run/current-system"
    ln -sfn "$profile" "$R/run/booted-system"
  fi
  umount -l "$disk/run"
else
  mount -t tmpfs -o mode=0700,size=$RAMDISK hetznix-host-roothome "$R/root"
  echo "${HOSTKEY_PREFIX}$(cat "$hostdir/ssh_host_ed25519_key.pub")"
fi
hostname "$HOST_NAME"
echo "$HOST_NAME" >"$R/etc/hostname"

# Commands of our own over the machine's: power commands, and hetznix itself.
mount -t tmpfs -o mode=0755,size=1m hetznix-host-bin "$R/usr/local/sbin"
cp -a "$hostdir/bin/." "$R/usr/local/sbin/"
if [[ -n \${PACKAGE_DIR:-} ]]; then
  mkdir -p "$R/opt/hetznix"
  mount -t tmpfs -o mode=0755,size=1m hetznix-host-pkg "$R/opt/hetznix"
  for entry in "\${PACKAGE_ENTRIES[@]}"; do
    if [[ -d $PACKAGE_DIR/$entry ]]; then mkdir -p "$R/opt/hetznix/$entry"; else touch "$R/opt/hetznix/$entry"; fi
    mount --bind "$PACKAGE_DIR/$entry" "$R/opt/hetznix/$entry"
    mount -o remount,bind,ro "$R/opt/hetznix/$entry"
  done
fi
declare -A covered=()
for cmd in poweroff halt reboot shutdown; do
  for dir in /usr/sbin /sbin /usr/bin /bin; do
    [[ -e $R$dir/$cmd ]] || continue
    target=$R$(chroot "$R" readlink -f "$dir/$cmd" 2>/dev/null) || continue
    if [[ -f $target && $target != "$R/usr/local/sbin/"* && -z \${covered[$target]:-} ]]; then
      mount --bind "$R/usr/local/sbin/power" "$target" 2>/dev/null || true
      covered[$target]=1
    fi
  done
done

# Into the new root; nothing of the machine's root stays reachable.
mkdir -p "$R/.old-root"
cd "$R"
pivot_root . .old-root
cd /
umount -l /.old-root
rmdir /.old-root

mkfifo -m 600 /run/hetznix/power.fifo
exec 7<>/run/hetznix/power.fifo
while read -r action <&7; do
  case $action in poweroff | reboot) echo "${POWER_PREFIX}$action" ;; esac
done 9<&- &

if [[ -e /dev/sda ]]; then exec 9<>/dev/sda; fi
echo "${INIT_HOLDING}"
sshd_pid=
stopping() {
  trap - TERM
  if [[ -n $sshd_pid ]]; then kill -TERM "$sshd_pid" 2>/dev/null || true; fi
  kill -TERM -1 2>/dev/null || true
  sync
  exit 0
}
trap stopping TERM
setpriv --bounding-set -all,${HOST_CAPABILITIES.map((c) => `+${c}`).join(",")} -- \\
  /usr/sbin/sshd -D -e -f /run/host/sshd_config 7<&- 9<&- </dev/null &
sshd_pid=$!
wait "$sshd_pid" || true
`;
}

export function powerScript(): string {
  return `#!/bin/bash
# hetznix host: power commands end the emulated machine's session through the emulator.
name=\${0##*/}
args=("$@")
if [[ $name == systemctl ]]; then
  name=\${1:-}
  args=("\${@:2}")
fi
action=poweroff
case $name in
  reboot) action=reboot ;;
  poweroff | halt) ;;
  shutdown)
    for a in "\${args[@]}"; do
      case $a in
        -c) exit 0 ;;
        --reboot) action=reboot ;;
        --*) ;;
        -*r*) action=reboot ;;
      esac
    done
    ;;
  *)
    echo "$0: only poweroff, halt, reboot and shutdown are available here" >&2
    exit 1
    ;;
esac
sync
echo "$action" >/run/hetznix/power.fifo
exit 0
`;
}

export interface SshdConfigInput {
  ip: string;
  port: number;
  kind: "rescue" | "system" | "plain";
}

export function sshdConfig(o: SshdConfigInput): string {
  const system = o.kind === "system";
  return `# hetznix ${o.kind} host
ListenAddress ${o.ip}:${o.port}
HostKey ${system ? "/etc/ssh/ssh_host_ed25519_key" : "/run/host/ssh_host_ed25519_key"}
PidFile none
AuthorizedKeysFile ${system ? "/var/lib/hetznix/authorized_keys.d/%u .ssh/authorized_keys" : "/run/host/authorized_keys"}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
PermitUserEnvironment no
SetEnv PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${system ? ":/run/current-system/sw/bin" : ""}
MaxStartups 64:30:128
MaxSessions 32
LoginGraceTime 30
Subsystem sftp internal-sftp
`;
}

/** The `hetznix` command inside a host (the emulator's own package, bound read-only at /opt/hetznix). */
export function hetznixWrapper(loader: string | undefined, main: string): string {
  return `#!/bin/sh
exec /usr/bin/env node ${loader ? `--import ${loader} ` : ""}${main} "$@"
`;
}
