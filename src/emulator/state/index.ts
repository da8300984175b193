/**
 * The emulator's state and rules, moto-style: a store (records, ids, persistence, the state directory's lock), a
 * scheduler (actions over time, effects registered per command), one module per resource owning its rules and list
 * filters (servers, images, SSH keys), and power (what runs on a server). No HTTP here: ../http parses requests into
 * calls of these modules and renders the records they return.
 */
import type { HostManager } from "../hosts/types.js";
import type { DiskStore } from "../hosts/types.js";
import { SERVER_TYPES } from "./catalog.js";
import { Firewalls } from "./firewalls.js";
import { Images } from "./images.js";
import { Networks } from "./networks.js";
import { PlacementGroups } from "./placement-groups.js";
import { Power, type FaultView } from "./power.js";
import { PrimaryIps } from "./primary-ips.js";
import type { ActionRecord } from "./records.js";
import { Scheduler } from "./scheduler.js";
import { ServerActions } from "./server-actions.js";
import { Servers } from "./servers.js";
import { SshKeys } from "./ssh-keys.js";
import { Store, required } from "./store.js";
import { Volumes } from "./volumes.js";

export * from "./records.js";
export { ApiError } from "./errors.js";
export { StateDirInUseError } from "./store.js";
export type { FaultView } from "./power.js";
export type { CreateServerInput, CreateServerResult, ServerFilter } from "./servers.js";
export type { ServerActionCommand, ServerActionInput, ServerActionResult } from "./server-actions.js";
export type { ImageFilter } from "./images.js";
export type { SshKeyFilter } from "./ssh-keys.js";

export interface StateOptions {
  stateDir: string;
  /** Divides every modelled latency. */
  speed: number;
  /** Public IPv4 of server N is ipPrefix + N (N from 2 to 254). */
  ipPrefix: string;
  disks: DiskStore;
  /** Real hosts; without them boots are modelled only. */
  hosts?: HostManager | undefined;
  faults: FaultView;
  /** Diagnostics (why a server has nothing to boot, ...). */
  log?: (line: string) => void;
}

export class EmulatorState {
  readonly servers: Servers;
  readonly images: Images;
  readonly sshKeys: SshKeys;
  readonly serverActions: ServerActions;
  readonly primaryIps: PrimaryIps;
  readonly firewalls: Firewalls;
  readonly networks: Networks;
  readonly volumes: Volumes;
  readonly placementGroups: PlacementGroups;
  readonly power: Power;
  private readonly scheduler: Scheduler;
  /** Where each server's metadata service is (set by the HTTP layer once it listens). */
  metadataUrl: ((serverId: number) => string) | undefined;

  private constructor(
    private readonly store: Store,
    options: StateOptions,
  ) {
    this.scheduler = new Scheduler(store, options.speed);
    this.images = new Images(store, this.scheduler, options.disks);
    this.sshKeys = new SshKeys(store);
    this.power = new Power(store, this.scheduler, {
      hosts: options.hosts,
      faults: options.faults,
      metadataUrl: (id) => this.metadataUrl?.(id),
      systemImageOf: (s) => this.images.systemImageOf(s.imageId),
      volumesOf: (serverId) => this.volumes.specsOf(serverId),
      log: options.log ?? (() => undefined),
    });
    this.primaryIps = new PrimaryIps(store, this.scheduler, options.ipPrefix);
    this.firewalls = new Firewalls(store, this.scheduler);
    this.networks = new Networks(store, this.scheduler);
    this.volumes = new Volumes(store, this.scheduler, options.disks, this.power);
    this.placementGroups = new PlacementGroups(store);
    const removeDisk = (path: string) => options.disks.remove(path);
    const common = {
      store,
      scheduler: this.scheduler,
      power: this.power,
      images: this.images,
      sshKeys: this.sshKeys,
      primaryIps: this.primaryIps,
      networks: this.networks,
      placementGroups: this.placementGroups,
      removeDisk,
    };
    this.servers = new Servers({
      ...common,
      firewalls: this.firewalls,
      volumes: this.volumes,
      faults: options.faults,
    });
    this.serverActions = new ServerActions({ ...common, servers: this.servers });
  }

  /**
   * Takes the state directory (refusing one another emulator uses), loads state.json if present and resumes what
   * was running. Servers that were running boot again once the listener is up (see `resume`).
   */
  static open(options: StateOptions): EmulatorState {
    const { store, saved } = Store.open(options.stateDir);
    const state = new EmulatorState(store, options);
    try {
      if (saved) {
        // Resources modelled later are absent from older state.json files: empty then.
        for (const f of saved.firewalls ?? []) store.firewalls.set(f.id, f);
        for (const p of saved.primaryIps ?? []) store.primaryIps.set(p.id, p);
        for (const n of saved.networks ?? []) store.networks.set(n.id, n);
        for (const v of saved.volumes ?? []) store.volumes.set(v.id, v);
        for (const g of saved.placementGroups ?? []) store.placementGroups.set(g.id, g);
        for (const s of saved.servers) {
          store.servers.set(s.id, s);
          state.servers.restored(s);
        }
        for (const i of saved.images) store.images.set(i.id, i);
        for (const k of saved.sshKeys) store.sshKeys.set(k.id, k);
        for (const a of saved.actions) store.actions.set(a.id, a);
        for (const a of saved.actions) state.scheduler.resume(a);
      }
      store.save();
    } catch (err) {
      store.unlock();
      throw err;
    }
    return state;
  }

  /** Boots the hosts of servers that were running when the emulator stopped (their machines "kept running"). */
  resume(): void {
    for (const s of this.store.servers.values()) {
      if (s.status !== "running" || this.power.host(s.id)) continue;
      if (this.scheduler.isLocked("server", s.id)) continue;
      this.scheduler.track(
        this.power.boot(s).then(
          () => this.store.save(),
          () => this.store.save(),
        ),
      );
    }
  }

  get statePath(): string {
    return this.store.statePath;
  }

  get stateDir(): string {
    return this.store.stateDir;
  }

  set onChange(fn: (() => void) | undefined) {
    this.store.onChange = fn;
  }

  /**
   * Stops everything: timers first, then every host (sshd, loop devices, mounts), then work in flight; saves last
   * and never lets a failed save (a vanished state directory) keep hosts running. Running actions resume on the
   * next open. Throws only after everything is stopped, when a host did not stop cleanly.
   */
  async close(): Promise<void> {
    if (this.store.closed) return;
    this.store.closed = true;
    this.scheduler.stopTimers();
    const failures = await this.power.stopAll();
    await this.scheduler.drain();
    const saveError = this.store.trySave();
    this.store.unlock();
    if (failures.length > 0) throw failures[0];
    if (saveError && !/ENOENT/.test(saveError.message)) throw saveError;
  }

  // ---- Actions ----

  getAction(id: number): ActionRecord {
    return required(this.store.actions, id, "action");
  }

  findAction(id: number): ActionRecord | undefined {
    return this.store.actions.get(id);
  }

  actionsOf(type: string, id: number): ActionRecord[] {
    return this.scheduler.actionsOf(type, id);
  }

  progressOf(a: ActionRecord, now = Date.now()): number {
    return this.scheduler.progressOf(a, now);
  }

  isLocked(serverId: number): boolean {
    return this.scheduler.isLocked("server", serverId);
  }

  /** The host running on a server (rescue, system, plain or none), if any. */
  host(serverId: number) {
    return this.power.host(serverId);
  }

  /** Applies an ssh_drop fault change to running hosts. */
  refreshSshDrops(): void {
    this.power.refreshSshDrops();
  }

  // ---- Debug view (no secrets: no user data, no passwords) ----

  debugView(): Record<string, unknown> {
    return {
      servers: this.servers.list().map((s) => {
        const host = this.power.host(s.id);
        return {
          id: s.id,
          name: s.name,
          status: s.status,
          locked: this.isLocked(s.id),
          server_type: s.serverType,
          location: s.location,
          ipv4: s.ipv4,
          ipv6: s.ipv6,
          rescue_enabled: s.rescueEnabled,
          in_rescue: s.inRescue,
          host: host
            ? {
                kind: host.kind,
                description: host.description,
                bytes_in: host.bytesIn,
                bytes_out: host.bytesOut,
              }
            : null,
          disk: s.disk,
          user_data_bytes: s.userData === null ? 0 : Buffer.byteLength(s.userData),
        };
      }),
      images: this.images
        .list({ includeDeprecated: true })
        .filter((i) => i.type !== "system")
        .map((i) => ({ id: i.id, type: i.type, status: i.status, image_size: i.imageSize, disk: i.disk })),
      ssh_keys: this.sshKeys.list().map((k) => ({ id: k.id, name: k.name, fingerprint: k.fingerprint })),
      running_actions: this.scheduler
        .runningActions()
        .map((a) => ({ id: a.id, command: a.command, resources: a.resources })),
      server_types: SERVER_TYPES.length,
    };
  }
}
