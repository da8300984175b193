/**
 * Servers: create (name, type, image, location, keys, user data, capacity), update, delete, and the server actions
 * (power, rescue, protection, create_image) with their effects over time. List filters live here too.
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
import { ApiError, invalidField, invalidInput, uniqueness, type FieldProblem } from "./errors.js";
import type { Images } from "./images.js";
import type { FaultView, Power } from "./power.js";
import type { ActionRecord, ImageRecord, ServerRecord } from "./records.js";
import type { Resources, Scheduler } from "./scheduler.js";
import type { SshKeys } from "./ssh-keys.js";
import { isoNow, required, type Store } from "./store.js";
import { LATENCY_MS } from "./timing.js";

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
  networks: number[];
  firewalls: number[];
  volumes: number[];
}

export interface CreateServerResult {
  server: ServerRecord;
  action: ActionRecord;
  nextActions: ActionRecord[];
  rootPassword: string | null;
}

export type ServerActionCommand =
  | "poweron"
  | "poweroff"
  | "shutdown"
  | "reboot"
  | "reset"
  | "enable_rescue"
  | "disable_rescue"
  | "create_image"
  | "change_protection";

export interface ServerActionInput {
  /** enable_rescue */
  rescueType?: string | undefined;
  rescueSshKeys?: number[] | undefined;
  /** create_image */
  imageType?: "snapshot" | "backup" | undefined;
  description?: string | undefined;
  labels?: Labels | undefined;
  /** change_protection */
  protectDelete?: boolean | undefined;
  protectRebuild?: boolean | undefined;
}

export interface ServerActionResult {
  action: ActionRecord;
  rootPassword?: string;
  image?: ImageRecord;
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

function ipv6NetFor(n: number): string {
  return `2001:db8:${((n >>> 16) & 0xffff).toString(16)}:${(n & 0xffff).toString(16)}::/64`;
}

export interface ServerDeps {
  store: Store;
  scheduler: Scheduler;
  power: Power;
  images: Images;
  sshKeys: SshKeys;
  faults: FaultView;
  /** Public IPv4 of server N is ipPrefix + N (N from 2 to 254). */
  ipPrefix: string;
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
    const on = (command: string, fn: (s: ServerRecord, a: ActionRecord) => Promise<void>) =>
      this.scheduler.on(command, async (a) => {
        const id = a.resources.find((r) => r.type === "server")?.id;
        const s = id === undefined ? undefined : this.store.servers.get(id);
        if (!s) {
          if (command === "delete_server") return;
          throw new Error("server disappeared");
        }
        await fn(s, a);
      });
    on("create_server", async (s, a) => {
      const image = s.imageId === null ? undefined : this.store.images.get(s.imageId);
      await deps.images.writeServerDisk(image, this.diskPath(s), diskBytes(s.primaryDiskSize));
      s.status = a.params.start ? "starting" : "off";
    });
    const boot = async (s: ServerRecord, a: ActionRecord) => {
      if (a.params.after !== undefined) {
        const create = await this.scheduler.settled(Number(a.params.after));
        if (create?.status !== "success") throw new Error("server creation failed");
      }
      if (a.params.boot) await this.power.boot(s);
    };
    on("start_server", boot);
    on("reboot_server", boot);
    on("reset_server", boot);
    on("stop_server", (s) => this.power.powerOff(s));
    // shutdown_server: the ACPI request is delivered; the guest powers off later (Power.scheduleGuestOff).
    on("delete_server", async (s) => {
      await this.power.stopHost(s);
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

  private assertUnlocked(s: ServerRecord): void {
    if (this.isLocked(s.id)) throw new ApiError("locked", `server ${s.id} is locked by a running action`);
  }

  private resolveImageFor(ref: string, type: ServerTypeInfo): ImageRecord {
    const all = [...this.store.images.values()];
    let image = /^\d+$/.test(ref) ? all.find((i) => String(i.id) === ref) : undefined;
    if (!image) {
      const named = all.filter((i) => i.name === ref);
      image = named.find((i) => i.architecture === type.architecture) ?? named[0];
    }
    if (!image) throw invalidField("image", `image '${ref}' not found`);
    if (image.status !== "available") throw invalidField("image", `image ${image.id} is not available`);
    if (image.architecture !== type.architecture)
      throw invalidField(
        "image",
        `image architecture ${image.architecture} does not match server type architecture ${type.architecture}`,
      );
    if (image.diskSize > type.disk)
      throw invalidField(
        "server_type",
        `disk of ${type.name} (${type.disk} GB) is too small for the image (${image.diskSize} GB)`,
      );
    return image;
  }

  private allocateIpv4(): string {
    const used = new Set([...this.store.servers.values()].map((s) => s.ipv4));
    for (let n = 2; n <= 254; n++) {
      const ip = `${this.deps.ipPrefix}${n}`;
      if (!used.has(ip)) return ip;
    }
    throw new ApiError("resource_limit_exceeded", "no free IPv4 address left", {
      limits: [{ name: "primary_ip_limit" }],
    });
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
    if (input.networks.length > 0) problems.push({ name: "networks", messages: ["network not found"] });
    if (input.firewalls.length > 0) problems.push({ name: "firewalls", messages: ["firewall not found"] });
    if (input.volumes.length > 0) problems.push({ name: "volumes", messages: ["volume not found"] });
    if (problems.length > 0) throw invalidInput(problems);
    if (!type) throw invalidField("server_type", "server type not found");
    const image = this.resolveImageFor(input.image, type);
    const keys = this.deps.sshKeys.resolve(input.sshKeys, "ssh_keys");
    if ([...this.store.servers.values()].some((s) => s.name === input.name))
      throw uniqueness("name", `server name '${input.name}' is already used`);

    // Location: given, or the first where the type can be ordered now.
    const offer = location
      ? type.locations.find((l) => l.location === location?.name)
      : type.locations.find((l) => l.available);
    if (!location) location = offer ? findLocation(offer.location) : undefined;
    if (!offer || !location)
      // Not offered there at all (e.g. CX in the US): the request is wrong, not the capacity.
      throw invalidField(
        "location",
        `server type ${type.name} is not offered in location ${location?.name ?? "any"}`,
      );
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
      ipv4: input.enableIpv4 ? this.allocateIpv4() : null,
      ipv6: input.enableIpv6 ? ipv6NetFor(this.store.nextId("ipv6Net")) : null,
      macAddress: macFor(id),
      publicKeys: keys.map((k) => k.publicKey),
      userData: input.userData ?? null,
      disk: join("disks", `server-${id}.img`),
      primaryDiskSize: type.disk,
      offAt: null,
    };
    this.store.servers.set(id, s);
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

  action(id: number, command: ServerActionCommand, input: ServerActionInput = {}): ServerActionResult {
    const s = this.get(id);
    if (s.status === "deleting") throw new ApiError("conflict", `server ${id} is being deleted`);
    this.assertUnlocked(s);
    const res: Resources = [{ id, type: "server" }];
    const on = s.status === "running" || s.status === "starting";
    const ms = (name: Parameters<Scheduler["ms"]>[0]) => this.scheduler.ms(name);
    let result: ServerActionResult;
    switch (command) {
      case "poweron": {
        // Powering on a running server changes nothing; the action still succeeds.
        if (!on) s.status = "starting";
        result = { action: this.scheduler.newAction("start_server", res, ms("poweron"), { boot: !on }) };
        break;
      }
      case "poweroff": {
        if (s.status !== "off") s.status = "stopping";
        result = { action: this.scheduler.newAction("stop_server", res, ms("poweroff")) };
        break;
      }
      case "shutdown": {
        result = { action: this.scheduler.newAction("shutdown_server", res, ms("shutdownRequest")) };
        if (s.status === "running") {
          // ACPI: the guest decides when it is off; we model its shutdown taking the same delay (unless it powers
          // itself off sooner, e.g. a rescue host running `poweroff`).
          s.status = "stopping";
          s.offAt = Date.now() + ms("shutdownRequest") + ms("guestShutdown");
          this.power.scheduleGuestOff(s);
        }
        break;
      }
      case "reboot":
      case "reset": {
        // Both boot the server again (an off server is started); completion runs the boot (see the effects).
        s.status = "starting";
        s.offAt = null;
        result = { action: this.scheduler.newAction(`${command}_server`, res, ms(command), { boot: true }) };
        break;
      }
      case "enable_rescue": {
        if (input.rescueType !== undefined && input.rescueType !== "linux64")
          throw invalidField("type", "rescue type must be linux64");
        const keys = this.deps.sshKeys.resolve((input.rescueSshKeys ?? []).map(String), "ssh_keys");
        s.rescueEnabled = true;
        s.rescueConsumed = false;
        s.rescueKeys = keys.map((k) => k.publicKey);
        result = {
          action: this.scheduler.newAction("enable_rescue", res, ms("enableRescue")),
          // The rescue system always gets a root password (the document's root_password is a non-null string),
          // also when keys are given.
          rootPassword: randomPassword(),
        };
        break;
      }
      case "disable_rescue": {
        s.rescueEnabled = false;
        s.rescueConsumed = s.inRescue;
        s.rescueKeys = [];
        result = { action: this.scheduler.newAction("disable_rescue", res, ms("disableRescue")) };
        break;
      }
      case "change_protection": {
        // The API requires delete and rebuild protection to be equal; check before changing anything.
        const del = input.protectDelete ?? s.protection.delete;
        const rebuild = input.protectRebuild ?? s.protection.rebuild;
        if (del !== rebuild) throw invalidField("rebuild", "rebuild protection must equal delete protection");
        s.protection = { delete: del, rebuild };
        result = { action: this.scheduler.newAction("change_protection", res, ms("changeProtection")) };
        break;
      }
      case "create_image": {
        result = this.deps.images.snapshotServer(s, {
          type: input.imageType,
          description: input.description,
          labels: input.labels,
        });
        break;
      }
    }
    this.store.save();
    return result;
  }

  /** After a restart: hosts do not survive it, so a server that ran the rescue system is off now. */
  restored(s: ServerRecord): void {
    if (s.inRescue) {
      s.inRescue = false;
      s.status = "off";
      this.power.leaveRescue(s);
    }
    if (s.offAt !== null) this.power.scheduleGuestOff(s);
  }
}
