/**
 * Images: Hetzner's system images (from the catalogue) and the project's snapshots and backups, whose disks are
 * copies of a server's disk file taken by create_image. Rules, list filters and the create_image effect.
 */
import { join } from "node:path";
import { matchesSelector, type LabelSelector } from "../../hcloud/labels.js";
import type { Labels } from "../../hcloud/schema.js";
import type { DiskStore } from "../hosts/types.js";
import { SYSTEM_IMAGES, SYSTEM_IMAGE_DISK_GB, DISK_GB_BYTES, findServerType } from "./catalog.js";
import { checkLabels } from "./common.js";
import { ApiError, invalidField } from "./errors.js";
import type { ActionRecord, ImageRecord, ServerRecord } from "./records.js";
import type { Scheduler } from "./scheduler.js";
import { isoNow, required, type Store } from "./store.js";
import { LATENCY_MS } from "./timing.js";

export interface ImageFilter {
  selector?: LabelSelector | undefined;
  types?: string[];
  statuses?: string[];
  architecture?: string | null;
  boundTo?: string[];
  includeDeprecated?: boolean;
  name?: string | null;
}

function systemImageRecords(): ImageRecord[] {
  return SYSTEM_IMAGES.map((i) => ({
    id: i.id,
    type: "system",
    status: "available",
    name: i.name,
    description: i.description,
    imageSize: null,
    diskSize: SYSTEM_IMAGE_DISK_GB,
    created: i.created,
    createdFrom: null,
    boundTo: null,
    osFlavor: i.os_flavor,
    osVersion: i.os_version,
    architecture: i.architecture,
    protection: { delete: false },
    deprecated: i.deprecated,
    labels: {},
    rapidDeploy: true,
    disk: null,
  }));
}

export class Images {
  /** Disk copies of create_image started at request time, keyed by image id. */
  private readonly copies = new Map<number, Promise<void>>();

  constructor(
    private readonly store: Store,
    private readonly scheduler: Scheduler,
    private readonly disks: DiskStore,
  ) {
    for (const img of systemImageRecords()) store.images.set(img.id, img);
    scheduler.on("create_image", (a) => this.completeSnapshot(a));
  }

  private path(rel: string): string {
    return join(this.store.stateDir, rel);
  }

  list(filter: ImageFilter = {}): ImageRecord[] {
    return [...this.store.images.values()].filter(
      (i) =>
        (filter.selector === undefined || matchesSelector(i.labels, filter.selector)) &&
        (!filter.types?.length || filter.types.includes(i.type)) &&
        (!filter.statuses?.length || filter.statuses.includes(i.status)) &&
        (filter.architecture == null || i.architecture === filter.architecture) &&
        (!filter.boundTo?.length || (i.boundTo !== null && filter.boundTo.includes(String(i.boundTo)))) &&
        (filter.includeDeprecated === true || i.deprecated === null) &&
        (filter.name == null || i.name === filter.name),
    );
  }

  get(id: number): ImageRecord {
    return required(this.store.images, id, "image");
  }

  find(id: number): ImageRecord | undefined {
    return this.store.images.get(id);
  }

  /** The system image a disk of this image stands for (its own name, or the lineage's OS), if any. */
  systemImageOf(imageId: number | null): string | undefined {
    const image = imageId === null ? undefined : this.store.images.get(imageId);
    if (!image) return undefined;
    if (image.type === "system") return image.name ?? undefined;
    return image.osFlavor !== "unknown"
      ? `${image.osFlavor}${image.osVersion ? `-${image.osVersion}` : ""}`
      : undefined;
  }

  update(
    id: number,
    update: { description?: string | undefined; type?: string | undefined; labels?: Labels | undefined },
  ): ImageRecord {
    const image = this.get(id);
    // System and app images belong to Hetzner, not to the project: the token may not change them (our choice of
    // answer: 403 forbidden, the code for "not allowed on this resource").
    if (image.type === "system" || image.type === "app")
      throw new ApiError("forbidden", `image ${id} is a public image and cannot be changed`);
    if (update.labels !== undefined) checkLabels(update.labels);
    if (update.type !== undefined) {
      if (update.type !== "snapshot") throw invalidField("type", "type can only be changed to snapshot");
      image.type = "snapshot";
      image.boundTo = null;
    }
    if (update.description !== undefined) image.description = update.description;
    if (update.labels !== undefined) image.labels = { ...update.labels };
    this.store.save();
    return image;
  }

  async delete(id: number): Promise<void> {
    const image = this.get(id);
    if (image.type !== "snapshot" && image.type !== "backup")
      throw new ApiError(
        "forbidden",
        `image ${id} is a ${image.type} image; only snapshots and backups can be deleted`,
      );
    if (image.protection.delete) throw new ApiError("protected", `image ${id} is protected against deletion`);
    if (image.status === "creating") throw new ApiError("locked", `image ${id} is being created`);
    this.store.images.delete(id);
    this.store.save();
    if (image.disk) await this.disks.remove(this.path(image.disk)).catch(() => undefined);
  }

  changeProtection(id: number, del: boolean | undefined): ActionRecord {
    const image = this.get(id);
    if (image.type !== "snapshot" && image.type !== "backup")
      throw new ApiError("forbidden", `image ${id} is a ${image.type} image`);
    if (del !== undefined) image.protection.delete = del;
    const a = this.scheduler.newAction(
      "change_protection",
      [{ id, type: "image" }],
      this.scheduler.ms("changeProtection"),
    );
    this.store.save();
    return a;
  }

  /** create_image of a server: the image record (creating) and its action; the disk copy starts at once. */
  snapshotServer(
    s: ServerRecord,
    input: {
      type?: "snapshot" | "backup" | undefined;
      description?: string | undefined;
      labels?: Labels | undefined;
    },
  ): { action: ActionRecord; image: ImageRecord } {
    const labels = input.labels ?? {};
    checkLabels(labels);
    const type = findServerType(s.serverType);
    const source = s.imageId === null ? undefined : this.store.images.get(s.imageId);
    const imageId = this.store.nextId("image");
    const imageType = input.type ?? "snapshot";
    const image: ImageRecord = {
      id: imageId,
      type: imageType,
      status: "creating",
      name: null,
      description:
        input.description ??
        `${s.name}-${isoNow()
          .replace(/[-:TZ]/g, "")
          .slice(0, 14)}`,
      imageSize: null,
      diskSize: s.primaryDiskSize,
      created: isoNow(),
      createdFrom: { id: s.id, name: s.name },
      boundTo: imageType === "backup" ? s.id : null,
      osFlavor: source?.osFlavor ?? "unknown",
      osVersion: source?.osVersion ?? null,
      architecture: type?.architecture ?? "x86",
      protection: { delete: false },
      deprecated: null,
      labels: { ...labels },
      disk: join("disks", `image-${imageId}.img`),
    };
    this.store.images.set(imageId, image);
    this.startCopy(s, image);
    // Duration from the data to copy; allocated size is only known asynchronously, so start with the modelled base
    // and let the completion wait for the copy itself.
    const action = this.scheduler.newAction(
      "create_image",
      [
        { id: s.id, type: "server" },
        { id: imageId, type: "image" },
      ],
      this.scheduler.ms("createImageBase"),
      { image: imageId },
    );
    void this.stretch(action, s);
    return { action, image };
  }

  /** Extends a create_image action by the per-GB time once the allocated size of the disk is known. */
  private async stretch(a: ActionRecord, s: ServerRecord): Promise<void> {
    try {
      const bytes = await this.disks.allocatedBytes(this.path(s.disk));
      const extra = this.scheduler.scaled(LATENCY_MS.createImagePerGb * (bytes / DISK_GB_BYTES));
      if (extra <= 0 || a.status !== "running") return;
      a.endsAtMs += extra;
      this.store.save();
    } catch {
      // No disk yet (server still initializing): the base duration stands.
    }
  }

  private startCopy(s: ServerRecord, image: ImageRecord): Promise<void> {
    const p = this.disks
      .copy(this.path(s.disk), this.path(image.disk ?? ""))
      .finally(() => this.copies.delete(image.id));
    this.copies.set(image.id, p);
    p.catch(() => undefined);
    this.scheduler.track(p).catch(() => undefined);
    return p;
  }

  private async completeSnapshot(a: ActionRecord): Promise<void> {
    const image = this.store.images.get(Number(a.params.image));
    const serverId = a.resources.find((r) => r.type === "server")?.id;
    const s = serverId === undefined ? undefined : this.store.servers.get(serverId);
    if (!image || !s) throw new Error("image or server disappeared");
    await (this.copies.get(image.id) ?? this.startCopy(s, image));
    const allocated = await this.disks.allocatedBytes(this.path(image.disk ?? ""));
    image.imageSize = Math.round((allocated / DISK_GB_BYTES) * 10_000) / 10_000;
    image.status = "available";
  }

  /** Fills a new server's disk: a copy of the image's disk, or an empty sparse file of `sizeBytes`. */
  async writeServerDisk(image: ImageRecord | undefined, diskPath: string, sizeBytes: number): Promise<void> {
    if (image?.disk) {
      const pending = this.copies.get(image.id);
      if (pending) await pending;
      await this.disks.copy(this.path(image.disk), diskPath, sizeBytes);
    } else {
      await this.disks.create(diskPath, sizeBytes);
    }
  }
}
