/**
 * Volumes: block storage as a sparse file per volume (`disks/volume-ID.img`, formatted ext4 or xfs when asked),
 * attached to at most one server in the same location. An attached volume is the server's next disk (/dev/sdb, ...,
 * and /dev/disk/by-id/scsi-0HC_Volume_ID) in its rescue and system hosts, live while the host runs (see Power).
 */
import { join } from "node:path";
import { matchesSelector, type LabelSelector } from "../../hcloud/labels.js";
import type { Labels } from "../../hcloud/schema.js";
import type { DiskStore, VolumeSpec } from "../hosts/types.js";
import { findLocation } from "./catalog.js";
import { checkLabels } from "./common.js";
import { ApiError, rejected, uniqueness } from "./errors.js";
import type { Power } from "./power.js";
import type { ActionRecord, ServerRecord, VolumeRecord } from "./records.js";
import type { Scheduler } from "./scheduler.js";
import { isoNow, required, type Store } from "./store.js";

export interface VolumeFilter {
  selector?: LabelSelector | undefined;
  name?: string | null;
  statuses?: string[];
}

/** Volume sizes are GiB on Hetzner (a 10 GB volume has 10 737 418 240 bytes). */
export const VOLUME_GB_BYTES = 2 ** 30;
export const VOLUME_MIN_GB = 10;
export const VOLUME_MAX_GB = 10_240;
/** At most this many volumes per server (Hetzner's limit). */
const MAX_PER_SERVER = 16;

export function linuxDevice(id: number): string {
  return `/dev/disk/by-id/scsi-0HC_Volume_${id}`;
}

export class Volumes {
  constructor(
    private readonly store: Store,
    private readonly scheduler: Scheduler,
    private readonly disks: DiskStore,
    private readonly power: Power,
  ) {
    scheduler.on("create_volume", async (a) => {
      const v = this.store.volumes.get(Number(a.resources.find((r) => r.type === "volume")?.id));
      if (!v) throw new Error("volume disappeared");
      const path = this.path(v);
      await disks.create(path, v.size * VOLUME_GB_BYTES);
      if (v.format) await disks.format(path, v.format);
      v.status = "available";
      if (v.server !== null) await this.power.syncVolumes(v.server);
    });
    // The record changes at request time; the hosts follow when the action completes.
    const sync = async (a: ActionRecord) => {
      const serverId = a.resources.find((r) => r.type === "server")?.id;
      if (serverId !== undefined) await this.power.syncVolumes(serverId);
    };
    scheduler.on("attach_volume", sync);
    scheduler.on("detach_volume", sync);
    scheduler.on("resize_volume", async (a) => {
      const { v } = this.of(a);
      if (v) await disks.grow(this.path(v), v.size * VOLUME_GB_BYTES);
    });
  }

  private of(a: ActionRecord): { v: VolumeRecord | undefined; s: ServerRecord | undefined } {
    const v = this.store.volumes.get(Number(a.resources.find((r) => r.type === "volume")?.id));
    const s = this.store.servers.get(Number(a.resources.find((r) => r.type === "server")?.id));
    return { v, s };
  }

  path(v: VolumeRecord): string {
    return join(this.store.stateDir, v.disk);
  }

  list(filter: VolumeFilter = {}): VolumeRecord[] {
    return [...this.store.volumes.values()].filter(
      (v) =>
        (filter.selector === undefined || matchesSelector(v.labels, filter.selector)) &&
        (filter.name == null || v.name === filter.name) &&
        (!filter.statuses?.length || filter.statuses.includes(v.status)),
    );
  }

  get(id: number): VolumeRecord {
    return required(this.store.volumes, id, "volume");
  }

  /** What a host needs of a server's volumes: the file, and where to mount it (automount with a format). */
  specsOf(serverId: number): VolumeSpec[] {
    return this.ofServer(serverId)
      .filter((v) => v.status === "available")
      .map((v) => ({
        id: v.id,
        path: this.path(v),
        ...(v.automount && v.format ? { mount: { fsType: v.format, at: `/mnt/HC_Volume_${v.id}` } } : {}),
      }));
  }

  /** Volumes attached to a server, in the order they became its disks. */
  ofServer(serverId: number): VolumeRecord[] {
    return [...this.store.volumes.values()].filter((v) => v.server === serverId);
  }

  private assertUnlocked(v: VolumeRecord): void {
    if (this.scheduler.isLocked("volume", v.id))
      throw new ApiError("locked", `volume ${v.id} is locked by a running action`);
  }

  create(input: {
    name: string;
    size: number;
    location?: string | undefined;
    server?: number | undefined;
    automount?: boolean | undefined;
    format?: string | undefined;
    labels: Labels;
  }): { volume: VolumeRecord; action: ActionRecord; nextActions: ActionRecord[] } {
    checkLabels(input.labels);
    if (input.name === "") throw rejected("name", "name must not be empty");
    if ([...this.store.volumes.values()].some((v) => v.name === input.name))
      throw uniqueness("name", `volume name '${input.name}' is already used`);
    if (!Number.isInteger(input.size) || input.size < VOLUME_MIN_GB || input.size > VOLUME_MAX_GB)
      throw rejected("size", `size must be between ${VOLUME_MIN_GB} and ${VOLUME_MAX_GB} GB`);
    if (input.format !== undefined && input.format !== "ext4" && input.format !== "xfs")
      throw rejected("format", "format must be ext4 or xfs");
    if (input.automount === true && input.server === undefined)
      throw rejected("automount", "automount needs a server to attach the volume to");
    const server = input.server === undefined ? undefined : this.store.servers.get(input.server);
    if (input.server !== undefined && !server)
      throw rejected("server", `server with ID '${input.server}' not found`);
    if (server && input.location !== undefined)
      throw rejected("location", "location and server are mutually exclusive");
    const location = server?.location ?? (input.location ? findLocation(input.location)?.name : undefined);
    if (!location) throw rejected("location", "a location or a server is required");
    if (server) this.checkAttachable(server);
    const id = this.store.nextId("volume");
    const v: VolumeRecord = {
      id,
      name: input.name,
      size: input.size,
      location,
      labels: { ...input.labels },
      created: isoNow(),
      protection: { delete: false },
      server: null,
      format: input.format ?? null,
      automount: input.automount === true,
      status: "creating",
      disk: join("disks", `volume-${id}.img`),
    };
    this.store.volumes.set(id, v);
    const now = Date.now();
    const createMs = this.scheduler.ms("createVolume");
    const action = this.scheduler.newAction("create_volume", [{ id, type: "volume" }], createMs, {}, now);
    const nextActions: ActionRecord[] = [];
    if (server) {
      v.server = server.id;
      nextActions.push(
        this.scheduler.newAction(
          "attach_volume",
          [
            { id, type: "volume" },
            { id: server.id, type: "server" },
          ],
          createMs + this.scheduler.ms("attachVolume"),
          {},
          now,
        ),
      );
    }
    this.store.save();
    return { volume: v, action, nextActions };
  }

  private checkAttachable(s: ServerRecord): void {
    if (this.ofServer(s.id).length >= MAX_PER_SERVER)
      throw rejected("server", `server ${s.id} has ${MAX_PER_SERVER} volumes already`);
  }

  update(id: number, u: { name?: string | undefined; labels?: Labels | undefined }): VolumeRecord {
    const v = this.get(id);
    if (u.labels !== undefined) checkLabels(u.labels);
    if (u.name !== undefined && u.name !== v.name) {
      if ([...this.store.volumes.values()].some((x) => x.name === u.name))
        throw uniqueness("name", `volume name '${u.name}' is already used`);
      v.name = u.name;
    }
    if (u.labels !== undefined) v.labels = { ...u.labels };
    this.store.save();
    return v;
  }

  async delete(id: number): Promise<void> {
    const v = this.get(id);
    if (v.protection.delete) throw new ApiError("protected", `volume ${id} is protected against deletion`);
    if (v.server !== null)
      throw new ApiError(
        "resource_in_use",
        `volume ${id} is attached to server ${v.server}; detach it first`,
      );
    this.assertUnlocked(v);
    this.store.volumes.delete(id);
    this.store.save();
    await this.disks.remove(this.path(v)).catch(() => undefined);
  }

  attach(id: number, serverId: number, automount: boolean | undefined): ActionRecord {
    const v = this.get(id);
    const s = this.store.servers.get(serverId);
    if (!s) throw rejected("server", `server with ID '${serverId}' not found`);
    this.assertUnlocked(v);
    if (this.scheduler.isLocked("server", s.id))
      throw new ApiError("locked", `server ${s.id} is locked by a running action`);
    if (v.server !== null) throw rejected("server", `volume ${id} is already attached to server ${v.server}`);
    if (v.location !== s.location)
      throw rejected("server", `volume ${id} is in ${v.location}, server ${s.id} in ${s.location}`);
    this.checkAttachable(s);
    v.server = s.id;
    v.automount = automount === true;
    const a = this.scheduler.newAction(
      "attach_volume",
      [
        { id: v.id, type: "volume" },
        { id: s.id, type: "server" },
      ],
      this.scheduler.ms("attachVolume"),
    );
    this.store.save();
    return a;
  }

  detach(id: number): ActionRecord {
    const v = this.get(id);
    this.assertUnlocked(v);
    if (v.server === null) throw rejected("volume", `volume ${id} is not attached`);
    const serverId = v.server;
    v.server = null;
    const a = this.scheduler.newAction(
      "detach_volume",
      [
        { id: v.id, type: "volume" },
        { id: serverId, type: "server" },
      ],
      this.scheduler.ms("attachVolume"),
      { server: serverId },
    );
    this.store.save();
    return a;
  }

  resize(id: number, size: number): ActionRecord {
    const v = this.get(id);
    this.assertUnlocked(v);
    if (!Number.isInteger(size) || size <= v.size || size > VOLUME_MAX_GB)
      throw rejected(
        "size",
        `a volume can only grow: size must be more than ${v.size} and at most ${VOLUME_MAX_GB} GB`,
      );
    v.size = size;
    const a = this.scheduler.newAction(
      "resize_volume",
      [{ id: v.id, type: "volume" }],
      this.scheduler.ms("attachVolume"),
    );
    this.store.save();
    return a;
  }

  changeProtection(id: number, del: boolean | undefined): ActionRecord {
    const v = this.get(id);
    if (del !== undefined) v.protection.delete = del;
    const a = this.scheduler.newAction(
      "change_protection",
      [{ id: v.id, type: "volume" }],
      this.scheduler.ms("changeProtection"),
    );
    this.store.save();
    return a;
  }

  /** Volumes named at server create: they must exist, be free and be in the server's location. */
  checkForCreate(ids: number[], location: string): void {
    for (const id of ids) {
      const v = this.store.volumes.get(id);
      if (!v) throw rejected("volumes", `volume with ID '${id}' not found`);
      if (v.server !== null)
        throw rejected("volumes", `volume ${id} is already attached to server ${v.server}`);
      if (v.location !== location)
        throw rejected("volumes", `volume ${id} is in ${v.location}, not in ${location}`);
    }
    if (ids.length > MAX_PER_SERVER)
      throw rejected("volumes", `at most ${MAX_PER_SERVER} volumes per server`);
  }

  attachAtCreate(s: ServerRecord, ids: number[], automount: boolean): void {
    for (const id of ids) {
      const v = this.store.volumes.get(id);
      if (!v) continue;
      v.server = s.id;
      v.automount = automount;
    }
  }

  /** A deleted server's volumes stay, detached (as on Hetzner). */
  serverDeleted(s: ServerRecord): void {
    for (const v of this.ofServer(s.id)) v.server = null;
  }
}
