/**
 * Shell scripts of a rescue host, written into its private directory at start.
 *
 * `init.sh` is pid 1 of the host's own pid + mount namespace. It reports its host-side pid, builds the private
 * mounts (/run, /tmp, /root, /proc, a tmpfs /dev with /dev/sda = the server's loop device), keeps /dev/sda open so
 * the loop device lives exactly as long as the namespace, then runs sshd in the foreground. When it dies, the kernel
 * kills every process of the namespace and drops its mounts.
 *
 * `power` stands in for poweroff/halt/reboot/shutdown/systemctl inside the host: it syncs, then writes the action into
 * a fifo that init relays to the manager on its stdout.
 */

/** Lines init.sh prints on stdout (the manager's protocol). */
export const INIT_PID_PREFIX = "hetznix-init-pid ";
export const INIT_HOLDING = "hetznix-init-holding";
export const POWER_PREFIX = "hetznix-power ";

export interface InitScriptSizes {
  /** tmpfs size for /tmp and /root, like the RAM disk of the real rescue system. */
  ramDisk: string;
}

export function initScript(sizes: InitScriptSizes): string {
  return `#!/bin/bash
# pid 1 of a hetznix rescue host (own mount + pid namespace). Args: HOSTDIR MAJOR MINOR
set -euo pipefail
hostdir=$1 major=$2 minor=$3
hostpid=
while read -r key value _; do
  if [[ $key == NSpid: ]]; then hostpid=$value; fi
done </proc/self/status
echo "${INIT_PID_PREFIX}$hostpid"

mount --make-rprivate /
mount -t tmpfs -o mode=0755,size=16m hetznix-rescue-run /run
mkdir -p /run/sshd /run/rescue
mount --bind "$hostdir" /run/rescue
mount -t tmpfs -o mode=1777,size=${sizes.ramDisk} hetznix-rescue-tmp /tmp
mount -t tmpfs -o mode=0700,size=${sizes.ramDisk} hetznix-rescue-root /root
mount -t proc proc /proc

mount -t tmpfs -o mode=0755,size=1m hetznix-rescue-dev /dev
mknod -m 666 /dev/null c 1 3
mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/full c 1 7
mknod -m 666 /dev/random c 1 8
mknod -m 666 /dev/urandom c 1 9
mknod -m 666 /dev/tty c 5 0
mknod -m 660 /dev/sda b "$major" "$minor"
mkdir /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,size=64m hetznix-rescue-shm /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr

# Power commands: our script first on root's PATH, and over the real binaries' targets.
mount --bind /run/rescue/bin /usr/local/sbin
declare -A covered=()
for cmd in poweroff halt reboot shutdown; do
  for dir in /usr/sbin /sbin /usr/bin /bin; do
    target=$(readlink -f "$dir/$cmd" 2>/dev/null) || continue
    if [[ -f $target && -z \${covered[$target]:-} ]]; then
      mount --bind /run/rescue/bin/power "$target"
      covered[$target]=1
    fi
  done
done

# Power commands write their action into this fifo; relay it to the manager on our stdout.
mkfifo -m 600 /run/rescue/power.fifo
exec 7<>/run/rescue/power.fifo
while read -r action <&7; do
  case $action in poweroff | reboot) echo "${POWER_PREFIX}$action" ;; esac
done 9<&- &

exec 9<>/dev/sda
echo "${INIT_HOLDING}"
/usr/sbin/sshd -D -e -f /run/rescue/sshd_config 7<&- 9<&- </dev/null &
wait $!
`;
}

export function powerScript(): string {
  return `#!/bin/bash
# hetznix rescue host: power commands end the emulated machine's rescue session via the emulator.
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
    echo "$0: only poweroff, halt, reboot and shutdown are available in the rescue system" >&2
    exit 1
    ;;
esac
sync
echo "$action" >/run/rescue/power.fifo
exit 0
`;
}

export function sshdConfig(o: { ip: string; port: number }): string {
  return `# hetznix rescue host
ListenAddress ${o.ip}:${o.port}
HostKey /run/rescue/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile /run/rescue/authorized_keys
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
MaxStartups 64:30:128
MaxSessions 32
LoginGraceTime 30
Subsystem sftp internal-sftp
`;
}
