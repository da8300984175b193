/**
 * Servers: create (name, type, image, location, keys, user data, capacity, and the primary IPs, networks,
 * firewalls, volumes and placement group to start with), update, delete, with the effects of create and delete over
 * time. List filters live here too; the server actions are in server-actions.ts.
 */
import { join } from "node:path";
import { matchesSelector, type LabelSelector } from "../../hcloud/labels.js";
import { USER_DATA_MAX_BYTES, hostnameProblems } from "../../hcloud/rules.js";
import type { Labels } from "../../hcloud/schema.js";
import {
  diskBytes,
  findLocation,
  findServerType,
  type LocationInfo,
  type ServerTypeInfo,
} from "./catalog.js";
import { labelProblems, randomPassword } from "./common.js";
import { ApiError, invalidField, invalidInput, rejected, uniqueness, type FieldProblem } from "./errors.js";
import type { Firewalls } from "./firewalls.js";
import type { Images } from "./images.js";
import type { Networks } from "./networks.js";
import type { PlacementGroups } from "./placement-groups.js";
import type { FaultView, Power } from "./power.js";
import type { PrimaryIps } from "./primary-ips.js";
import type { ActionRecord, ImageRecord, ServerRecord } from "./records.js";
import type { Resources, Scheduler } from "./scheduler.js";
import type { SshKeys } from "./ssh-keys.js";
import type { Volumes } from "./volumes.js";
import { isoNow, required, type Store } from "./store.js";
import { LATENCY_MS } from "./timing.js";

/** Registers the effect of a server command: the server it names, or an error when it disappeared meanwhile. */
export function serverEffect(
  scheduler: Scheduler,
  store: Store,
): (command: string, fn: (s: ServerRecord, a: ActionRecord) => Promise<void>) => void {
  return (command, fn) =>
    scheduler.on(command, async (a) => {
      const id = a.resources.find((r) => r.type === "server")?.id;
      const s = id === undefined ? undefined : store.servers.get(id);
      if (!s) {
        if (command === "delete_server") return;
        throw new Error("server disappeared");
      }
      await fn(s, a);
    });
}

export interface CreateServerInput {
  name: string;
  serverType: string;
  image: string;
  location?: string | undefined;
  sshKeys: string[];
  userData?: string | undefined;
  startAfterCreate: boolean;
  labels: Labels;
  enableIpv4: boolean;
  enableIpv6: boolean;
  /** Primary IPs named in public_net (kept when the server is replaced). */
  primaryIpv4?: number | null | undefined;
  primaryIpv6?: number | null | undefined;
  networks: number[];
  firewalls: number[];
  volumes: number[];
  placementGroup?: number | undefined;
  automount?: boolean | undefined;
}

export interface CreateServerResult {
  server: ServerRecord;
  action: ActionRecord;
  nextActions: ActionRecord[];
  rootPassword: string | null;
}

export interface ServerFilter {
  selector?: LabelSelector | undefined;
  statuses?: string[];
  name?: string | null;
}

function macFor(id: number): string {
  const hex = (id >>> 0).toString(16).padStart(8, "0");
  return `96:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}:${hex.slice(6, 8)}`;
}

export interface ServerDeps {
  store: Store;
  scheduler: Scheduler;
  power: Power;
  images: Images;
  sshKeys: SshKeys;
  primaryIps: PrimaryIps;
  firewalls: Firewalls;
  networks: Networks;
  volumes: Volumes;
  placementGroups: PlacementGroups;
  faults: FaultView;
  removeDisk: (path: string) => Promise<void>;
}

export class Servers {
  private readonly store: Store;
  private readonly scheduler: Scheduler;
  private readonly power: Power;

  constructor(private readonly deps: ServerDeps) {
    this.store = deps.store;
    this.scheduler = deps.scheduler;
    this.power = deps.power;
    const on = serverEffect(this.scheduler, this.store);
    on("create_server", async (s, a) => {
      const image = s.imageId === null ? undefined : this.store.images.get(s.imageId);
      await deps.images.writeServerDisk(image, this.diskPath(s), diskBytes(s.primaryDiskSize));
      s.status = a.params.start ? "starting" : "off";
    });
    on("delete_server", async (s) => {
      await this.power.stopHost(s);
      // What the server held: auto_delete primary IPs go, the others stay unassigned; volumes stay detached.
      deps.primaryIps.serverDeleted(s);
      deps.firewalls.serverDeleted(s);
      deps.volumes.serverDeleted(s);
      this.store.servers.delete(s.id);
      await deps.removeDisk(this.diskPath(s)).catch(() => undefined);
    });
  }

  private diskPath(s: ServerRecord): string {
    return join(this.store.stateDir, s.disk);
  }

  list(filter: ServerFilter = {}): ServerRecord[] {
    return [...this.store.servers.values()].filter(
      (s) =>
        (filter.selector === undefined || matchesSelector(s.labels, filter.selector)) &&
        (!filter.statuses?.length || filter.statuses.includes(s.status)) &&
        (filter.name == null || s.name === filter.name),
    );
  }

  get(id: number): ServerRecord {
    return required(this.store.servers, id, "server");
  }

  find(id: number): ServerRecord | undefined {
    return this.store.servers.get(id);
  }

  isLocked(id: number): boolean {
    return this.scheduler.isLocked("server", id);
  }

  assertUnlocked(s: ServerRecord): void {
    if (this.isLocked(s.id)) throw new ApiError("locked", `server ${s.id} is locked by a running action`);
  }

  /** The image a server of `type` can be created (or rebuilt) from; Hetzner's messages for what does not fit. */
  resolveImageFor(ref: string, type: ServerTypeInfo): ImageRecord {
    const all = [...this.store.images.values()];
    let image = /^\d+$/.test(ref) ? all.find((i) => String(i.id) === ref) : undefined;
    if (!image) {
      const named = all.filter((i) => i.name === ref);
      image = named.find((i) => i.architecture === type.architecture) ?? named[0];
    }
    if (!image) throw rejected("image", `image ${ref} not found`);
    if (image.status !== "available") throw rejected("image", `image ${image.id} is not available yet`);
    if (image.architecture !== type.architecture)
      throw rejected(
        "image",
        `server type ${type.name} and image ${image.name ?? image.id} have different architectures`,
      );
    if (image.diskSize > type.disk)
      throw rejected(
        "server_type",
        `image disk size (${image.diskSize} GB) is bigger than the disk of server type ${type.name} (${type.disk} GB)`,
      );
    return image;
  }

  create(input: CreateServerInput): CreateServerResult {
    const problems: FieldProblem[] = [];
    const nameProblems = hostnameProblems(input.name);
    if (nameProblems.length > 0) problems.push({ name: "name", messages: nameProblems });
    problems.push(...labelProblems(input.labels));
    if (input.userData !== undefined && Buffer.byteLength(input.userData) > USER_DATA_MAX_BYTES)
      problems.push({
        name: "user_data",
        messages: [`user_data must be at most ${USER_DATA_MAX_BYTES} bytes`],
      });
    const type = findServerType(input.serverType);
    if (!type)
      problems.push({ name: "server_type", messages: [`server type '${input.serverType}' not found`] });
    let location: LocationInfo | undefined;
    if (input.location !== undefined) {
      location = findLocation(input.location);
      if (!location)
        problems.push({ name: "location", messages: [`location '${input.location}' not found`] });
    }
    problems.push(...this.deps.firewalls.checkForCreate(input.firewalls));
    if (problems.length > 0) throw invalidInput(problems);
    if (!type) throw invalidField("server_type", "server type not found");
    const image = this.resolveImageFor(input.image, type);
    const keys = this.deps.sshKeys.resolve(input.sshKeys, "ssh_keys");
    if ([...this.store.servers.values()].some((s) => s.name === input.name))
      throw uniqueness("name", `server name '${input.name}' is already used`);

    // Location: given, or where a named primary IP is, or the first where the type can be ordered now.
    const pinned = [input.primaryIpv4, input.primaryIpv6]
      .map((id) => (id == null ? undefined : this.store.primaryIps.get(id)))
      .find((p) => p !== undefined);
    if (!location && pinned) location = findLocation(pinned.location);
    const offer = location
      ? type.locations.find((l) => l.location === location?.name)
      : type.locations.find((l) => l.available);
    if (!location) location = offer ? findLocation(offer.location) : undefined;
    if (!offer || !location)
      // Not offered there at all (e.g. CX in the US): the request is wrong, not the capacity. Hetzner's words.
      throw rejected("location", "unsupported location for server type");
    if (!offer.available)
      throw new ApiError(
        "resource_unavailable",
        `server type ${type.name} is no longer available in ${location.name}`,
      );
    if (this.deps.faults.outOfCapacity(location.name, type.name))
      throw new ApiError(
        "resource_unavailable",
        `server type ${type.name} is unavailable in ${location.name}`,
      );

    const ips = this.deps.primaryIps.forNewServer(location.name, {
      ipv4: input.primaryIpv4,
      ipv6: input.primaryIpv6,
    });
    this.deps.networks.checkForCreate(input.networks, location.name);
    this.deps.volumes.checkForCreate(input.volumes, location.name);
    if (input.placementGroup !== undefined)
      this.deps.placementGroups.checkJoin(input.placementGroup, "placement_group");

    const id = this.store.nextId("server");
    const s: ServerRecord = {
      id,
      name: input.name,
      status: "initializing",
      created: isoNow(),
      serverType: type.name,
      location: location.name,
      imageId: image.id,
      labels: { ...input.labels },
      protection: { delete: false, rebuild: false },
      rescueEnabled: false,
      rescueKeys: [],
      rescueConsumed: false,
      inRescue: false,
      ipv4: null,
      ipv6: null,
      macAddress: macFor(id),
      publicKeys: keys.map((k) => k.publicKey),
      userData: input.userData ?? null,
      disk: join("disks", `server-${id}.img`),
      primaryDiskSize: type.disk,
      offAt: null,
      primaryIpv4: null,
      primaryIpv6: null,
      privateNet: [],
      backupWindow: null,
      placementGroup: input.placementGroup ?? null,
    };
    this.store.servers.set(id, s);
    this.deps.primaryIps.assignAtCreate(s, ips.ipv4, ips.ipv6, {
      ipv4: input.enableIpv4,
      ipv6: input.enableIpv6,
    });
    for (const n of input.networks) this.deps.networks.attach(s, n, {});
    this.deps.firewalls.applyAtCreate(s, input.firewalls);
    this.deps.volumes.attachAtCreate(s, input.volumes, input.automount === true);
    const extra =
      image.type === "system"
        ? 0
        : LATENCY_MS.createServerFromSnapshotBase -
          LATENCY_MS.createServer +
          LATENCY_MS.createServerFromSnapshotPerGb * (image.imageSize ?? image.diskSize);
    const res: Resources = [{ id, type: "server" }];
    const createMs = this.scheduler.ms("createServer", extra);
    const now = Date.now();
    const action = this.scheduler.newAction(
      "create_server",
      res,
      createMs,
      { start: input.startAfterCreate },
      now,
    );
    const nextActions: ActionRecord[] = [];
    if (input.startAfterCreate) {
      nextActions.push(
        this.scheduler.newAction(
          "start_server",
          res,
          createMs + this.scheduler.ms("startServer"),
          { after: action.id, boot: true },
          now,
        ),
      );
    }
    this.store.save();
    return { server: s, action, nextActions, rootPassword: keys.length === 0 ? randomPassword() : null };
  }

  update(id: number, update: { name?: string | undefined; labels?: Labels | undefined }): ServerRecord {
    const s = this.get(id);
    const problems: FieldProblem[] = [];
    if (update.name !== undefined) {
      const p = hostnameProblems(update.name);
      if (p.length > 0) problems.push({ name: "name", messages: p });
    }
    if (update.labels !== undefined) problems.push(...labelProblems(update.labels));
    if (problems.length > 0) throw invalidInput(problems);
    if (update.name !== undefined && update.name !== s.name) {
      if ([...this.store.servers.values()].some((x) => x.name === update.name))
        throw uniqueness("name", `server name '${update.name}' is already used`);
      s.name = update.name;
    }
    if (update.labels !== undefined) s.labels = { ...update.labels };
    this.store.save();
    return s;
  }

  delete(id: number): ActionRecord {
    const s = this.get(id);
    if (s.protection.delete) throw new ApiError("protected", `server ${id} is protected against deletion`);
    this.assertUnlocked(s);
    s.status = "deleting";
    s.offAt = null;
    this.scheduler.track(this.power.stopHost(s).catch(() => undefined));
    const action = this.scheduler.newAction(
      "delete_server",
      [{ id, type: "server" }],
      this.scheduler.ms("deleteServer"),
    );
    this.store.save();
    return action;
  }

  /** After a restart: hosts do not survive it, so a server that ran the rescue system is off now. */
  restored(s: ServerRecord): void {
    // Fields of state written before networks, primary IPs, backups and placement groups were modelled.
    s.privateNet ??= [];
    s.backupWindow ??= null;
    s.placementGroup ??= null;
    this.deps.primaryIps.migrate(s);
    if (s.inRescue) {
      s.inRescue = false;
      s.status = "off";
      this.power.leaveRescue(s);
    }
    if (s.offAt !== null) this.power.scheduleGuestOff(s);
  }
}
