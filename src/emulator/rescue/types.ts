/**
 * Contract between the emulator's state machine (src/emulator/state) and the parts that touch the real machine:
 * disks (sparse files, loop devices) and rescue hosts (a real sshd per server). The state machine decides *when*;
 * these decide *how*.
 */

export interface DiskStore {
  /** Create a sparse file of `sizeBytes` at `path` (parent directories are created). */
  create(path: string, sizeBytes: number): Promise<void>;
  /** Copy `from` to `to` keeping holes (sparse), e.g. for create_image and for servers made from a snapshot. */
  copy(from: string, to: string, sizeBytes?: number): Promise<void>;
  /** Bytes actually allocated on the host filesystem (what a snapshot's image_size reflects). */
  allocatedBytes(path: string): Promise<number>;
  remove(path: string): Promise<void>;
}

export interface RescueHostSpec {
  serverId: number;
  /** Loopback address the server answers on, e.g. 127.0.0.5; sshd (or the proxy in front of it) listens on :22. */
  ip: string;
  /** OpenSSH public key lines accepted for root. */
  authorizedKeys: string[];
  /** The server's disk file; it appears as /dev/sda inside the rescue host. */
  diskPath: string;
  /**
   * Called when the rescue system powers itself off (`poweroff`, `shutdown now`, `halt` inside the host), after the
   * command ran `sync`. The host keeps running until the caller stops it; the command itself exits 0.
   */
  onPowerOff: () => void;
  /** Called when the rescue system reboots itself (`reboot`, `shutdown -r now`). */
  onReboot: () => void;
}

export interface RescueHost {
  readonly serverId: number;
  readonly ip: string;
  /**
   * Drop every SSH connection after this many bytes in either direction (fault injection); undefined = never.
   * Counted per connection from its start and per direction; checked at every chunk, so setting it also cuts open
   * connections that already carried more. The client sees a TCP reset.
   */
  dropAfterBytes: number | undefined;
  /** Bytes carried client->server and server->client so far (counted at the TCP proxy in front of sshd). */
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** Stop sshd, kill every process of the host, detach the loop device, unmount everything. Idempotent. */
  stop(): Promise<void>;
}

export interface RescueHostManager {
  start(spec: RescueHostSpec): Promise<RescueHost>;
  get(serverId: number): RescueHost | undefined;
  /** Stop every host. Used on emulator shutdown and signals. */
  stopAll(): Promise<void>;
}
