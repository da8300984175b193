/**
 * Power and boots: what runs on a server. The state decides *when* a server boots and *what kind* of boot it is
 * (the rescue system once after enable_rescue, else its own disk); the hosts runtime (../hosts) decides *how*.
 * Without a host manager (no root, `--no-rescue`), boots are modelled only: the status changes, nothing listens.
 */
import { join } from "node:path";
import type { Host, HostManager, VolumeSpec } from "../hosts/types.js";
import type { ServerRecord } from "./records.js";
import type { Scheduler } from "./scheduler.js";
import type { Store } from "./store.js";

/** The narrow view of faults the state needs (so faults.ts never imports the state). */
export interface FaultView {
  outOfCapacity(location: string, serverType: string): boolean;
  sshDropAfter(serverId: number): number | undefined;
}

export interface PowerOptions {
  hosts?: HostManager | undefined;
  faults: FaultView;
  /** The metadata service URL of a server (known once the emulator listens). */
  metadataUrl: (serverId: number) => string | undefined;
  /** The volumes attached to a server (their files), in attach order. */
  volumesOf: (serverId: number) => VolumeSpec[];
  /** The system image a server's disk stands for (see HostSpec.systemImage). */
  systemImageOf: (s: ServerRecord) => string | undefined;
  log: (line: string) => void;
}

export class Power {
  private readonly hosts = new Map<number, Host>();
  /** Hosts being stopped, so a boot of the same server waits for its disk and address to be free. */
  private readonly stopping = new Map<number, Promise<void>>();

  constructor(
    private readonly store: Store,
    private readonly scheduler: Scheduler,
    private readonly opts: PowerOptions,
  ) {}

  host(serverId: number): Host | undefined {
    return this.hosts.get(serverId);
  }

  get runningHosts(): ReadonlyMap<number, Host> {
    return this.hosts;
  }

  /** Boots the server: into the rescue system when enabled and not yet used, else its disk. */
  async boot(s: ServerRecord): Promise<void> {
    await this.halt(s);
    await this.stopping.get(s.id);
    const rescue = s.rescueEnabled && !s.rescueConsumed;
    if (rescue) {
      s.rescueConsumed = true;
      s.inRescue = true;
    }
    const manager = this.opts.hosts;
    if (manager && s.ipv4) {
      const serverId = s.id;
      const metadataUrl = this.opts.metadataUrl(serverId);
      const systemImage = this.opts.systemImageOf(s);
      try {
        const host = await manager.start({
          serverId,
          ip: s.ipv4,
          hostname: s.name,
          diskPath: join(this.store.stateDir, s.disk),
          boot: rescue ? "rescue" : "disk",
          authorizedKeys: rescue ? [...s.rescueKeys] : [...s.publicKeys],
          volumes: this.opts.volumesOf(serverId),
          ...(systemImage ? { systemImage } : {}),
          ...(metadataUrl ? { metadataUrl } : {}),
          onPowerOff: () => this.guestEnded(serverId, "off"),
          onReboot: () => this.guestEnded(serverId, "reboot"),
        });
        host.dropAfterBytes = this.opts.faults.sshDropAfter(serverId);
        this.hosts.set(serverId, host);
        // A volume attached or detached while the host was starting.
        await host.syncVolumes?.(this.opts.volumesOf(serverId));
        if (host.kind === "none") this.opts.log(`server ${serverId} (${s.name}): ${host.description}`);
      } catch (err) {
        if (rescue) {
          s.inRescue = false;
          this.leaveRescue(s);
        }
        s.status = "off";
        throw new Error(
          `${rescue ? "rescue system" : "server"} failed to boot: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    }
    s.status = "running";
  }

  /** Attach/detach of a volume: a running host sees its disks change at once, like a hot-plugged disk. */
  async syncVolumes(serverId: number): Promise<void> {
    await this.hosts.get(serverId)?.syncVolumes?.(this.opts.volumesOf(serverId));
  }

  /** Leaving the rescue system ends rescue mode (it lasts one boot, as on Hetzner). */
  leaveRescue(s: ServerRecord): void {
    if (s.rescueConsumed) {
      s.rescueEnabled = false;
      s.rescueConsumed = false;
      s.rescueKeys = [];
    }
  }

  async stopHost(s: ServerRecord, graceful = false): Promise<void> {
    const host = this.hosts.get(s.id);
    if (!host) return this.stopping.get(s.id);
    this.hosts.delete(s.id);
    await this.stopTracked(s.id, host, graceful);
  }

  /** Stops a host that is already out of the map; boots of the server wait for it. */
  private stopTracked(serverId: number, host: Host, graceful: boolean): Promise<void> {
    const p = host.stop({ graceful }).finally(() => {
      if (this.stopping.get(serverId) === p) this.stopping.delete(serverId);
    });
    this.stopping.set(serverId, p);
    this.scheduler.track(p.catch(() => undefined));
    return p;
  }

  /** Stops what runs on the server (its host, a pending guest shutdown); leaving rescue ends rescue mode. */
  async halt(s: ServerRecord, graceful = false): Promise<void> {
    await this.stopHost(s, graceful);
    s.offAt = null;
    if (s.inRescue) {
      s.inRescue = false;
      this.leaveRescue(s);
    }
  }

  async powerOff(s: ServerRecord, graceful = false): Promise<void> {
    await this.halt(s, graceful);
    s.status = "off";
  }

  /**
   * The guest ended itself: powered off (poweroff/shutdown inside the host), or rebooted. A reboot boots again
   * (the disk, since rescue lasts one boot); a power-off leaves the server off.
   */
  private guestEnded(serverId: number, next: "off" | "reboot"): void {
    const s = this.store.servers.get(serverId);
    if (!s || this.store.closed) return;
    const host = this.hosts.get(serverId);
    this.hosts.delete(serverId);
    if (s.status === "deleting") {
      if (host) void this.stopTracked(serverId, host, false).catch(() => undefined);
      return;
    }
    if (s.inRescue) {
      s.inRescue = false;
      this.leaveRescue(s);
    }
    s.offAt = null;
    s.status = next === "off" ? "off" : "starting";
    this.store.save();
    const stopped = (host ? this.stopTracked(serverId, host, true) : Promise.resolve()).catch(
      () => undefined,
    );
    if (next === "reboot") {
      const rebooted = stopped
        .then(() => (this.store.closed || s.status !== "starting" ? undefined : this.boot(s)))
        .catch((err: unknown) => this.opts.log(`server ${serverId}: reboot failed: ${String(err)}`))
        .finally(() => {
          if (!this.store.closed) this.store.save();
        });
      this.scheduler.track(rebooted);
    } else this.scheduler.track(stopped);
  }

  /** After `shutdown` (ACPI): the guest powers off at s.offAt unless something else happened first. */
  scheduleGuestOff(s: ServerRecord): void {
    if (s.offAt === null) return;
    const serverId = s.id;
    this.scheduler.after(Math.max(0, s.offAt - Date.now()), () => {
      const cur = this.store.servers.get(serverId);
      if (!cur || cur.offAt === null || cur.offAt > Date.now() + 5) return;
      if (cur.status !== "stopping") return;
      const p = this.powerOff(cur, true)
        .catch(() => undefined)
        .then(() => this.store.save());
      this.scheduler.track(p);
    });
  }

  /** Applies an ssh_drop fault change to running hosts. */
  refreshSshDrops(): void {
    for (const [id, host] of this.hosts) host.dropAfterBytes = this.opts.faults.sshDropAfter(id);
  }

  /** Stops every host; never throws (returns the failures). */
  async stopAll(): Promise<unknown[]> {
    const hosts = [...this.hosts.values()];
    this.hosts.clear();
    const results = await Promise.allSettled(hosts.map((h) => h.stop()));
    const failures: unknown[] = results
      .filter((r): r is PromiseRejectedResult => r.status === "rejected")
      .map((r) => r.reason);
    try {
      await this.opts.hosts?.stopAll();
    } catch (err) {
      failures.push(err);
    }
    return failures;
  }
}
