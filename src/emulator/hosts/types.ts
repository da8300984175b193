/**
 * Contract between the emulator's state (src/emulator/state), which decides *when* a server boots and *what kind* of
 * boot it is (the rescue system, or its own disk), and the hosts runtime, which decides *how*: disks (sparse files,
 * loop devices) and hosts (a real sshd per running server, confined to a root of its own).
 */

export interface DiskStore {
  /** Create a sparse file of `sizeBytes` at `path` (parent directories are created). */
  create(path: string, sizeBytes: number): Promise<void>;
  /** Copy `from` to `to` keeping holes (sparse), e.g. for create_image and for servers made from a snapshot. */
  copy(from: string, to: string, sizeBytes?: number): Promise<void>;
  /** Bytes actually allocated on the host filesystem (what a snapshot's image_size reflects). */
  allocatedBytes(path: string): Promise<number>;
  remove(path: string): Promise<void>;
  /** Make a file system (ext4 or xfs) on the whole file, as a volume's `format` asks. */
  format(path: string, fsType: string): Promise<void>;
  /** Grow a sparse file to `sizeBytes` (never shrinks). */
  grow(path: string, sizeBytes: number): Promise<void>;
}

/** What a server runs after a boot. */
export type HostKind =
  /** The rescue system: the machine's tools, /dev/sda = the server's disk, root's keys from enable_rescue. */
  | "rescue"
  /** The server's own NixOS-like root file system (ext4 labelled `nixos`), booted with the metadata agent. */
  | "system"
  /** A system image (ubuntu-24.04, ...) whose disk the emulator leaves empty: root's keys from create. */
  | "plain"
  /** Nothing bootable on the disk: the server runs, nothing answers on port 22 (`reason` says why). */
  | "none";

export interface HostSpec {
  serverId: number;
  /** Loopback address the server answers on, e.g. 127.0.0.5; the proxy in front of sshd listens on :22. */
  ip: string;
  /** The server's host name (the system host's UTS name until the metadata agent sets its own). */
  hostname: string;
  /** The server's disk file; /dev/sda inside the host. */
  diskPath: string;
  /** "rescue" boots the rescue system; "disk" boots what the disk holds (system, plain or none). */
  boot: "rescue" | "disk";
  /** rescue: the keys of enable_rescue; plain: the ssh_keys given at create. */
  authorizedKeys: string[];
  /**
   * The system image the server's disk stands for, when its lineage is one (e.g. "ubuntu-24.04", or the image a
   * snapshot was taken from): an empty disk then boots a plain host, as the emulator does not hold real OS files.
   */
  systemImage?: string;
  /** Volumes attached at boot: the next disks (/dev/sdb, ...) in rescue and system hosts. */
  volumes?: VolumeSpec[];
  /** The server's metadata service (http://127.0.0.1:PORT/metadata/ID/hetzner/v1/), for the agent at boot. */
  metadataUrl?: string;
  /** `poweroff`, `halt`, `shutdown` inside the host (after `sync`): the host keeps running until stopped. */
  onPowerOff: () => void;
  /** `reboot`, `shutdown -r` inside the host. */
  onReboot: () => void;
}

export interface VolumeSpec {
  id: number;
  /** The volume's sparse file. */
  path: string;
  /** Automount: mount its file system (ext4 or xfs) at /mnt/HC_Volume_ID inside the host. */
  mount?: { fsType: string; at: string };
}

export interface Host {
  readonly serverId: number;
  readonly ip: string;
  readonly kind: HostKind;
  /** Why a `none` host has nothing to run, or what a system host booted (for the emulator's log). */
  readonly description: string;
  /**
   * Drop every SSH connection after this many bytes in either direction (fault injection); undefined = never.
   * Counted per connection and direction; setting it also cuts open connections that already carried more.
   */
  dropAfterBytes: number | undefined;
  /** Bytes carried client->server and server->client so far (counted at the TCP proxy in front of sshd). */
  readonly bytesIn: number;
  readonly bytesOut: number;
  /**
   * Stop the host: with `graceful` (ACPI shutdown) sshd and the host's processes get SIGTERM and a moment to end
   * first; then every process is killed, the disk's file systems unmounted and the loop device detached. Idempotent.
   */
  stop(opts?: { graceful?: boolean }): Promise<void>;
  /**
   * Makes the host's disks match `volumes`: a volume not yet there appears as the next free /dev/sdX (and
   * /dev/disk/by-id/scsi-0HC_Volume_ID), live; one no longer listed disappears (its device is released once nothing
   * in the host uses it). Hosts without disks (none) ignore it.
   */
  syncVolumes?(volumes: VolumeSpec[]): Promise<void>;
}

export interface HostManager {
  start(spec: HostSpec): Promise<Host>;
  get(serverId: number): Host | undefined;
  /** Stop every host. Used on emulator shutdown and signals. */
  stopAll(): Promise<void>;
}
