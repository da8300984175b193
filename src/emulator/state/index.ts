/**
 * The emulator's state and rules: servers, images, SSH keys, actions and how they change over time. No HTTP here:
 * the HTTP layer (../http) parses requests into calls of this class and renders the records it returns.
 *
 * Time: every action has a modelled duration (./timing.ts divided by `speed`); a timer completes it, running its
 * effect (disk copies, rescue hosts). State is saved to stateDir/state.json after every change (atomically), and
 * running actions resume after a restart.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Labels, ServerStatus } from "../../hcloud/schema.js";
import { validateLabels, type LabelSelector, matchesSelector } from "../../hcloud/labels.js";
import type { Faults } from "../faults.js";
import type { DiskStore, RescueHost, RescueHostManager } from "../rescue/types.js";
import {
  DISK_GB_BYTES,
  SERVER_TYPES,
  SYSTEM_IMAGES,
  SYSTEM_IMAGE_DISK_GB,
  diskBytes,
  findLocation,
  findServerType,
  type LocationInfo,
  type ServerTypeInfo,
} from "./catalog.js";
import { ApiError, invalidField, invalidInput, notFound, uniqueness, type FieldProblem } from "./errors.js";
import type { ActionRecord, ImageRecord, PersistedState, ServerRecord, SshKeyRecord } from "./records.js";
import { LATENCY_MS, type LatencyName } from "./timing.js";

export * from "./records.js";
export { ApiError } from "./errors.js";

export interface StateOptions {
  stateDir: string;
  /** Divides every modelled latency. */
  speed: number;
  /** Public IPv4 of server N is ipPrefix + N (N from 2 to 254). */
  ipPrefix: string;
  disks: DiskStore;
  rescue?: RescueHostManager | undefined;
  faults: Faults;
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

/** Resources of an action, e.g. [{id: 42, type: "server"}]. */
type Resources = { id: number; type: string }[];

/** Hostname rules (RFC 1123): dot-separated labels of letters, digits and '-', not starting or ending with '-'. */
const HOSTNAME_LABEL = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
export function hostnameProblems(name: string): string[] {
  if (name.length === 0) return ["name must not be empty"];
  if (name.length > 253) return ["name must be at most 253 characters"];
  if (!name.split(".").every((l) => HOSTNAME_LABEL.test(l)))
    return ["name must be a valid hostname (RFC 1123): letters, digits, '-' and '.'"];
  return [];
}

/** user_data limit: 32 KiB (facts). */
export const USER_DATA_MAX_BYTES = 32 * 1024;

const SSH_KEY_TYPES = new Set([
  "ssh-ed25519",
  "ssh-rsa",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "sk-ssh-ed25519@openssh.com",
  "sk-ecdsa-sha2-nistp256@openssh.com",
]);

/** Parses an OpenSSH public key line; returns the key type and blob, or an error message. */
export function parsePublicKey(line: string): { type: string; blob: Buffer } | { error: string } {
  const parts = line.trim().split(/\s+/);
  const [type, data] = parts;
  if (type === undefined || data === undefined)
    return { error: "public key must be '<type> <base64> [comment]'" };
  if (!SSH_KEY_TYPES.has(type)) return { error: `unsupported key type '${type}'` };
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(data)) return { error: "public key data is not base64" };
  const blob = Buffer.from(data, "base64");
  if (blob.length < 4) return { error: "public key data is too short" };
  const len = blob.readUInt32BE(0);
  if (len + 4 > blob.length || blob.subarray(4, 4 + len).toString("latin1") !== type)
    return { error: "public key data does not match its type" };
  return { type, blob };
}

/** Hetzner's fingerprint: MD5 of the key blob, as colon-separated lowercase hex. */
export function fingerprintOf(blob: Buffer): string {
  return (createHash("md5").update(blob).digest("hex").match(/../g) ?? []).join(":");
}

function isoNow(ms = Date.now()): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function randomPassword(): string {
  const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
  const bytes = randomBytes(20);
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

function macFor(id: number): string {
  const hex = (id >>> 0).toString(16).padStart(8, "0");
  return `96:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}:${hex.slice(6, 8)}`;
}

function ipv6NetFor(n: number): string {
  return `2001:db8:${((n >>> 16) & 0xffff).toString(16)}:${(n & 0xffff).toString(16)}::/64`;
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

function labelProblems(labels: Labels): FieldProblem[] {
  const problems = validateLabels(labels);
  if (problems.length === 0) return [];
  return [{ name: "labels", messages: problems.map((p) => `${p.part} '${p.key}': ${p.message}`) }];
}

/** Throws invalid_input when labels break the label rules. */
function checkLabels(labels: Labels): void {
  const problems = labelProblems(labels);
  if (problems.length > 0) throw invalidInput(problems);
}

/** The record with this id, or a not_found error naming it (`what`, e.g. "SSH key"). */
function required<T>(records: Map<number, T>, id: number, what: string): T {
  const record = records.get(id);
  if (!record) throw notFound(`${what} with ID '${id}'`);
  return record;
}

export class EmulatorState {
  private readonly servers = new Map<number, ServerRecord>();
  private readonly images = new Map<number, ImageRecord>();
  private readonly sshKeys = new Map<number, SshKeyRecord>();
  private readonly actions = new Map<number, ActionRecord>();
  /** Ids of running actions (locks are looked up here, not in the whole history). */
  private readonly running = new Set<number>();
  private nextIds: PersistedState["nextIds"] = {
    server: 60_000_001,
    image: 300_000_001,
    sshKey: 20_000_001,
    action: 500_000_001,
    ipv6Net: 1,
  };
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly wakeups = new Set<() => void>();
  /** Effects in flight (not persisted: a restart re-runs them). */
  private readonly effects = new Map<number, Promise<void>>();
  /** Disk copies of create_image started at request time, keyed by image id. */
  private readonly copies = new Map<number, Promise<void>>();
  private readonly hosts = new Map<number, RescueHost>();
  private closed = false;
  /** Notified after every change (for debugging/tests). */
  onChange: (() => void) | undefined;

  private constructor(readonly options: StateOptions) {
    for (const img of systemImageRecords()) this.images.set(img.id, img);
  }

  /** Loads stateDir/state.json if present and resumes what was running. */
  static async open(options: StateOptions): Promise<EmulatorState> {
    const state = new EmulatorState(options);
    mkdirSync(join(options.stateDir, "disks"), { recursive: true });
    let saved: PersistedState | undefined;
    try {
      saved = JSON.parse(readFileSync(state.statePath, "utf8")) as PersistedState;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    if (saved) state.restore(saved);
    state.save();
    return state;
  }

  get statePath(): string {
    return join(this.options.stateDir, "state.json");
  }

  private restore(saved: PersistedState): void {
    this.nextIds = { ...this.nextIds, ...saved.nextIds };
    for (const s of saved.servers) {
      // Rescue hosts do not survive a restart of the emulator: a server that ran the rescue system is off now.
      if (s.inRescue) {
        s.inRescue = false;
        s.status = "off";
        this.leaveRescue(s);
      }
      this.servers.set(s.id, s);
      if (s.offAt !== null) this.scheduleGuestOff(s);
    }
    for (const i of saved.images) this.images.set(i.id, i);
    for (const k of saved.sshKeys) this.sshKeys.set(k.id, k);
    for (const a of saved.actions) this.actions.set(a.id, a);
    for (const a of saved.actions) {
      if (a.status !== "running") continue;
      this.running.add(a.id);
      this.schedule(a);
    }
  }

  /** Writes state.json atomically (temp file + rename). */
  save(): void {
    if (this.closed) return;
    const data: PersistedState = {
      version: 1,
      nextIds: this.nextIds,
      servers: [...this.servers.values()],
      images: [...this.images.values()].filter((i) => i.type !== "system"),
      sshKeys: [...this.sshKeys.values()],
      actions: [...this.actions.values()],
    };
    const tmp = `${this.statePath}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(data));
    renameSync(tmp, this.statePath);
    this.onChange?.();
  }

  /** Stops timers and rescue hosts and saves. Running actions resume on the next open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.save();
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const wake of this.wakeups) wake();
    this.wakeups.clear();
    const hosts = [...this.hosts.values()];
    this.hosts.clear();
    const stopped = await Promise.allSettled(hosts.map((h) => h.stop()));
    try {
      await this.options.rescue?.stopAll();
    } finally {
      await Promise.allSettled([...this.effects.values(), ...this.copies.values()]);
    }
    const failed = stopped.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
  }

  private ms(name: LatencyName, extra = 0): number {
    return Math.max(1, Math.round((LATENCY_MS[name] + extra) / this.options.speed));
  }

  private diskPath(rel: string): string {
    return join(this.options.stateDir, rel);
  }

  // ---- Lookups ----

  serverList(): ServerRecord[] {
    return [...this.servers.values()];
  }

  imageList(): ImageRecord[] {
    return [...this.images.values()];
  }

  sshKeyList(): SshKeyRecord[] {
    return [...this.sshKeys.values()];
  }

  getServer(id: number): ServerRecord {
    return required(this.servers, id, "server");
  }

  findServer(id: number): ServerRecord | undefined {
    return this.servers.get(id);
  }

  getImage(id: number): ImageRecord {
    return required(this.images, id, "image");
  }

  findImage(id: number): ImageRecord | undefined {
    return this.images.get(id);
  }

  getSshKey(id: number): SshKeyRecord {
    return required(this.sshKeys, id, "SSH key");
  }

  getAction(id: number): ActionRecord {
    return required(this.actions, id, "action");
  }

  findAction(id: number): ActionRecord | undefined {
    return this.actions.get(id);
  }

  actionsOf(type: string, id: number): ActionRecord[] {
    return [...this.actions.values()].filter((a) => a.resources.some((r) => r.type === type && r.id === id));
  }

  /** A server is locked while an action on it runs. */
  isLocked(serverId: number): boolean {
    for (const id of this.running) {
      const a = this.actions.get(id);
      if (a?.status === "running" && a.resources.some((r) => r.type === "server" && r.id === serverId))
        return true;
    }
    return false;
  }

  /** Progress of a running action, 0-99, from the modelled time elapsed. */
  progressOf(a: ActionRecord, now = Date.now()): number {
    if (a.status !== "running") return 100;
    const total = a.endsAtMs - a.startedMs;
    if (total <= 0) return 99;
    return Math.max(0, Math.min(99, Math.floor(((now - a.startedMs) / total) * 100)));
  }

  rescueHost(serverId: number): RescueHost | undefined {
    return this.hosts.get(serverId);
  }

  matchingLabels(labels: Labels, selector: LabelSelector | undefined): boolean {
    return selector === undefined || matchesSelector(labels, selector);
  }

  // ---- Actions ----

  private newAction(
    command: string,
    resources: Resources,
    durationMs: number,
    params: ActionRecord["params"] = {},
    startMs = Date.now(),
  ): ActionRecord {
    const a: ActionRecord = {
      id: this.nextIds.action++,
      command,
      status: "running",
      started: isoNow(startMs),
      startedMs: startMs,
      endsAtMs: startMs + durationMs,
      finished: null,
      resources,
      error: null,
      params,
    };
    this.actions.set(a.id, a);
    this.running.add(a.id);
    this.schedule(a);
    return a;
  }

  /** A timer that close() cuts short, so stopping never waits for modelled time. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.closed) return resolve();
      const t = setTimeout(() => {
        this.timers.delete(t);
        this.wakeups.delete(resolve);
        resolve();
      }, ms);
      this.timers.add(t);
      this.wakeups.add(resolve);
    });
  }

  private schedule(a: ActionRecord): void {
    if (this.closed) return;
    const t = setTimeout(
      () => {
        this.timers.delete(t);
        const p = this.complete(a).finally(() => this.effects.delete(a.id));
        this.effects.set(a.id, p);
      },
      Math.max(0, a.endsAtMs - Date.now()),
    );
    this.timers.add(t);
  }

  /** Resolves when an action is no longer running (success or error). */
  private async settled(actionId: number): Promise<ActionRecord | undefined> {
    for (let i = 0; i < 1_000_000; i++) {
      const a = this.actions.get(actionId);
      if (!a || a.status !== "running" || this.closed) return a;
      const effect = this.effects.get(actionId);
      if (effect) await effect;
      else await this.sleep(Math.max(5, Math.min(200, a.endsAtMs - Date.now())));
    }
    return this.actions.get(actionId);
  }

  private async complete(a: ActionRecord): Promise<void> {
    if (a.status !== "running") return;
    // create_image may have been stretched after its timer was set: wait for the new end.
    for (let i = 0; i < 100 && !this.closed && Date.now() < a.endsAtMs; i++)
      await this.sleep(Math.min(10_000, a.endsAtMs - Date.now()));
    if (this.closed) return;
    try {
      await this.effect(a);
      if (this.closed) return;
      a.status = "success";
    } catch (err) {
      if (this.closed) return;
      a.status = "error";
      a.error = {
        code: err instanceof ApiError ? err.code : "action_failed",
        message: err instanceof Error ? err.message : String(err),
      };
    }
    a.finished = isoNow();
    this.running.delete(a.id);
    this.save();
  }

  /** What happens when an action's modelled time is over. */
  private async effect(a: ActionRecord): Promise<void> {
    const serverId = a.resources.find((r) => r.type === "server")?.id;
    const s = serverId === undefined ? undefined : this.servers.get(serverId);
    switch (a.command) {
      case "create_server": {
        if (!s) throw new Error("server disappeared");
        await this.prepareDisk(s);
        s.status = a.params.start ? "starting" : "off";
        return;
      }
      case "start_server":
      case "reboot_server":
      case "reset_server": {
        if (a.params.after !== undefined) {
          const create = await this.settled(Number(a.params.after));
          if (create?.status !== "success") throw new Error("server creation failed");
        }
        if (!s) throw new Error("server disappeared");
        if (a.params.boot) await this.boot(s);
        return;
      }
      case "stop_server": {
        if (!s) throw new Error("server disappeared");
        await this.powerOff(s);
        return;
      }
      case "shutdown_server": {
        // The ACPI request is delivered; the guest powers off later (scheduleGuestOff / the rescue host).
        return;
      }
      case "enable_rescue":
      case "disable_rescue":
      case "change_protection":
        return;
      case "create_image": {
        const image = this.images.get(Number(a.params.image));
        if (!image || !s) throw new Error("image or server disappeared");
        let copy = this.copies.get(image.id);
        if (!copy) copy = this.startCopy(s, image);
        await copy;
        const allocated = await this.options.disks.allocatedBytes(this.diskPath(image.disk ?? ""));
        image.imageSize = Math.round((allocated / DISK_GB_BYTES) * 10_000) / 10_000;
        image.status = "available";
        return;
      }
      case "delete_server": {
        if (!s) return;
        await this.stopHost(s);
        this.servers.delete(s.id);
        await this.options.disks.remove(this.diskPath(s.disk)).catch(() => undefined);
        return;
      }
      default:
        return;
    }
  }

  private startCopy(s: ServerRecord, image: ImageRecord): Promise<void> {
    const p = this.options.disks
      .copy(this.diskPath(s.disk), this.diskPath(image.disk ?? ""))
      .finally(() => this.copies.delete(image.id));
    this.copies.set(image.id, p);
    p.catch(() => undefined);
    return p;
  }

  private async prepareDisk(s: ServerRecord): Promise<void> {
    const path = this.diskPath(s.disk);
    const image = s.imageId === null ? undefined : this.images.get(s.imageId);
    const size = diskBytes(s.primaryDiskSize);
    if (image?.disk) {
      const pending = this.copies.get(image.id);
      if (pending) await pending;
      await this.options.disks.copy(this.diskPath(image.disk), path, size);
    } else {
      await this.options.disks.create(path, size);
    }
  }

  // ---- Power and rescue ----

  /** Boots the server: into the rescue system when enabled and not yet used, else normally. */
  private async boot(s: ServerRecord): Promise<void> {
    await this.halt(s);
    if (s.rescueEnabled && !s.rescueConsumed) {
      s.rescueConsumed = true;
      s.inRescue = true;
      const manager = this.options.rescue;
      if (manager && s.ipv4) {
        const ip = s.ipv4;
        const serverId = s.id;
        try {
          const host = await manager.start({
            serverId,
            ip,
            authorizedKeys: [...s.rescueKeys],
            diskPath: this.diskPath(s.disk),
            onPowerOff: () => this.rescueEnded(serverId, "off"),
            onReboot: () => this.rescueEnded(serverId, "running"),
          });
          host.dropAfterBytes = this.options.faults.sshDropAfter(serverId);
          this.hosts.set(serverId, host);
        } catch (err) {
          s.inRescue = false;
          s.status = "off";
          this.leaveRescue(s);
          throw new Error(
            `rescue system failed to boot: ${err instanceof Error ? err.message : String(err)}`,
          );
        }
      }
    }
    s.status = "running";
  }

  /** Leaving the rescue system ends rescue mode (it lasts one boot, as on Hetzner). */
  private leaveRescue(s: ServerRecord): void {
    if (s.rescueConsumed) {
      s.rescueEnabled = false;
      s.rescueConsumed = false;
      s.rescueKeys = [];
    }
  }

  private async stopHost(s: ServerRecord): Promise<void> {
    const host = this.hosts.get(s.id);
    if (!host) return;
    this.hosts.delete(s.id);
    await host.stop();
  }

  /** Stops what runs on the server (its rescue host, a pending guest shutdown); leaving rescue ends rescue mode. */
  private async halt(s: ServerRecord): Promise<void> {
    await this.stopHost(s);
    s.offAt = null;
    if (s.inRescue) {
      s.inRescue = false;
      this.leaveRescue(s);
    }
  }

  private async powerOff(s: ServerRecord): Promise<void> {
    await this.halt(s);
    s.status = "off";
  }

  /**
   * The rescue system ended itself: powered off (poweroff/shutdown inside the host), or rebooted, so the server comes
   * back with its normal system. Either way rescue is used up.
   */
  private rescueEnded(serverId: number, next: "off" | "running"): void {
    const s = this.servers.get(serverId);
    if (!s || this.closed) return;
    const host = this.hosts.get(serverId);
    this.hosts.delete(serverId);
    void host?.stop().catch(() => undefined);
    if (s.status === "deleting") return;
    s.inRescue = false;
    this.leaveRescue(s);
    if (next === "off") s.offAt = null;
    s.status = next;
    this.save();
  }

  private scheduleGuestOff(s: ServerRecord): void {
    if (this.closed || s.offAt === null) return;
    const serverId = s.id;
    const t = setTimeout(
      () => {
        this.timers.delete(t);
        const cur = this.servers.get(serverId);
        if (!cur || cur.offAt === null || cur.offAt > Date.now() + 5) return;
        if (cur.status !== "stopping") return;
        // The guest (or the rescue system's ACPI handling) powers off.
        const p = this.powerOff(cur)
          .catch(() => undefined)
          .then(() => this.save());
        void p;
      },
      Math.max(0, s.offAt - Date.now()),
    );
    this.timers.add(t);
  }

  /** Applies an ssh_drop fault change to running rescue hosts. */
  refreshSshDrops(): void {
    for (const [id, host] of this.hosts) host.dropAfterBytes = this.options.faults.sshDropAfter(id);
  }

  // ---- Servers ----

  private resolveSshKeys(refs: string[], field: string): SshKeyRecord[] {
    const keys: SshKeyRecord[] = [];
    const missing: string[] = [];
    for (const ref of refs) {
      const k = [...this.sshKeys.values()].find(
        (x) => String(x.id) === String(ref) || x.name === String(ref),
      );
      if (k) keys.push(k);
      else missing.push(String(ref));
    }
    if (missing.length > 0) throw invalidField(field, `SSH key not found: ${missing.join(", ")}`);
    return keys;
  }

  private resolveImageFor(ref: string, type: ServerTypeInfo): ImageRecord {
    const all = [...this.images.values()];
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
    const used = new Set([...this.servers.values()].map((s) => s.ipv4));
    for (let n = 2; n <= 254; n++) {
      const ip = `${this.options.ipPrefix}${n}`;
      if (!used.has(ip)) return ip;
    }
    throw new ApiError("resource_limit_exceeded", "no free IPv4 address left", {
      limits: [{ name: "primary_ip_limit" }],
    });
  }

  createServer(input: CreateServerInput): CreateServerResult {
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
    const keys = this.resolveSshKeys(input.sshKeys, "ssh_keys");
    if ([...this.servers.values()].some((s) => s.name === input.name))
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
    if (this.options.faults.outOfCapacity(location.name, type.name))
      throw new ApiError(
        "resource_unavailable",
        `server type ${type.name} is unavailable in ${location.name}`,
      );

    const id = this.nextIds.server++;
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
      ipv6: input.enableIpv6 ? ipv6NetFor(this.nextIds.ipv6Net++) : null,
      macAddress: macFor(id),
      publicKeys: keys.map((k) => k.publicKey),
      userData: input.userData ?? null,
      disk: join("disks", `server-${id}.img`),
      primaryDiskSize: type.disk,
      offAt: null,
    };
    this.servers.set(id, s);
    const extra =
      image.type === "system"
        ? 0
        : LATENCY_MS.createServerFromSnapshotBase -
          LATENCY_MS.createServer +
          LATENCY_MS.createServerFromSnapshotPerGb * (image.imageSize ?? image.diskSize);
    const res: Resources = [{ id, type: "server" }];
    const createMs = this.ms("createServer", extra);
    const now = Date.now();
    const action = this.newAction("create_server", res, createMs, { start: input.startAfterCreate }, now);
    const nextActions: ActionRecord[] = [];
    if (input.startAfterCreate) {
      const start = this.newAction(
        "start_server",
        res,
        createMs + this.ms("startServer"),
        { after: action.id, boot: true },
        now,
      );
      nextActions.push(start);
    }
    this.save();
    return { server: s, action, nextActions, rootPassword: keys.length === 0 ? randomPassword() : null };
  }

  updateServer(id: number, update: { name?: string | undefined; labels?: Labels | undefined }): ServerRecord {
    const s = this.getServer(id);
    const problems: FieldProblem[] = [];
    if (update.name !== undefined) {
      const p = hostnameProblems(update.name);
      if (p.length > 0) problems.push({ name: "name", messages: p });
    }
    if (update.labels !== undefined) problems.push(...labelProblems(update.labels));
    if (problems.length > 0) throw invalidInput(problems);
    if (update.name !== undefined && update.name !== s.name) {
      if ([...this.servers.values()].some((x) => x.name === update.name))
        throw uniqueness("name", `server name '${update.name}' is already used`);
      s.name = update.name;
    }
    if (update.labels !== undefined) s.labels = { ...update.labels };
    this.save();
    return s;
  }

  private assertUnlocked(s: ServerRecord): void {
    if (this.isLocked(s.id)) throw new ApiError("locked", `server ${s.id} is locked by a running action`);
  }

  deleteServer(id: number): ActionRecord {
    const s = this.getServer(id);
    if (s.protection.delete) throw new ApiError("protected", `server ${id} is protected against deletion`);
    this.assertUnlocked(s);
    s.status = "deleting";
    s.offAt = null;
    void this.stopHost(s).catch(() => undefined);
    const action = this.newAction("delete_server", [{ id, type: "server" }], this.ms("deleteServer"));
    this.save();
    return action;
  }

  serverAction(id: number, command: ServerActionCommand, input: ServerActionInput = {}): ServerActionResult {
    const s = this.getServer(id);
    if (s.status === "deleting") throw new ApiError("conflict", `server ${id} is being deleted`);
    this.assertUnlocked(s);
    const res: Resources = [{ id, type: "server" }];
    const on = s.status === "running" || s.status === "starting";
    let result: ServerActionResult;
    switch (command) {
      case "poweron": {
        // Powering on a running server changes nothing; the action still succeeds.
        if (!on) s.status = "starting";
        result = { action: this.newAction("start_server", res, this.ms("poweron"), { boot: !on }) };
        break;
      }
      case "poweroff": {
        if (s.status !== "off") s.status = "stopping";
        result = { action: this.newAction("stop_server", res, this.ms("poweroff")) };
        break;
      }
      case "shutdown": {
        result = { action: this.newAction("shutdown_server", res, this.ms("shutdownRequest")) };
        if (s.status === "running") {
          // ACPI: the guest decides when it is off. With a real rescue host we model its ACPI handling: the host
          // goes down after the same delay (unless it powers itself off sooner, see rescueEnded).
          s.status = "stopping";
          s.offAt = Date.now() + this.ms("shutdownRequest") + this.ms("guestShutdown");
          this.scheduleGuestOff(s);
        }
        break;
      }
      case "reboot":
      case "reset": {
        // Both boot the server again (an off server is started); completion runs the boot (see effect).
        s.status = "starting";
        s.offAt = null;
        result = { action: this.newAction(`${command}_server`, res, this.ms(command), { boot: true }) };
        break;
      }
      case "enable_rescue": {
        if (input.rescueType !== undefined && input.rescueType !== "linux64")
          throw invalidField("type", "rescue type must be linux64");
        const keys = this.resolveSshKeys((input.rescueSshKeys ?? []).map(String), "ssh_keys");
        s.rescueEnabled = true;
        s.rescueConsumed = false;
        s.rescueKeys = keys.map((k) => k.publicKey);
        result = {
          action: this.newAction("enable_rescue", res, this.ms("enableRescue")),
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
        result = { action: this.newAction("disable_rescue", res, this.ms("disableRescue")) };
        break;
      }
      case "change_protection": {
        // The API requires delete and rebuild protection to be equal; check before changing anything.
        const del = input.protectDelete ?? s.protection.delete;
        const rebuild = input.protectRebuild ?? s.protection.rebuild;
        if (del !== rebuild) throw invalidField("rebuild", "rebuild protection must equal delete protection");
        s.protection = { delete: del, rebuild };
        result = { action: this.newAction("change_protection", res, this.ms("changeProtection")) };
        break;
      }
      case "create_image": {
        const labels = input.labels ?? {};
        checkLabels(labels);
        const type = findServerType(s.serverType);
        const source = s.imageId === null ? undefined : this.images.get(s.imageId);
        const imageId = this.nextIds.image++;
        const imageType = input.imageType ?? "snapshot";
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
        this.images.set(imageId, image);
        this.startCopy(s, image);
        // Duration from the data to copy; allocated size is only known asynchronously, so start with the modelled
        // base and let the completion wait for the copy itself.
        const action = this.newAction(
          "create_image",
          [
            { id, type: "server" },
            { id: imageId, type: "image" },
          ],
          this.ms("createImageBase"),
          { image: imageId },
        );
        void this.stretchCreateImage(action, s);
        result = { action, image };
        break;
      }
    }
    this.save();
    return result;
  }

  /** Extends a create_image action by the per-GB time once the allocated size of the disk is known. */
  private async stretchCreateImage(a: ActionRecord, s: ServerRecord): Promise<void> {
    try {
      const bytes = await this.options.disks.allocatedBytes(this.diskPath(s.disk));
      const extra = Math.round((LATENCY_MS.createImagePerGb * (bytes / DISK_GB_BYTES)) / this.options.speed);
      if (extra <= 0 || a.status !== "running") return;
      a.endsAtMs += extra;
      this.save();
    } catch {
      // No disk yet (server still initializing): the base duration stands.
    }
  }

  // ---- Images ----

  updateImage(
    id: number,
    update: { description?: string | undefined; type?: string | undefined; labels?: Labels | undefined },
  ): ImageRecord {
    const image = this.getImage(id);
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
    this.save();
    return image;
  }

  async deleteImage(id: number): Promise<void> {
    const image = this.getImage(id);
    if (image.type !== "snapshot" && image.type !== "backup")
      throw new ApiError(
        "forbidden",
        `image ${id} is a ${image.type} image; only snapshots and backups can be deleted`,
      );
    if (image.protection.delete) throw new ApiError("protected", `image ${id} is protected against deletion`);
    if (image.status === "creating") throw new ApiError("locked", `image ${id} is being created`);
    this.images.delete(id);
    this.save();
    if (image.disk) await this.options.disks.remove(this.diskPath(image.disk)).catch(() => undefined);
  }

  changeImageProtection(id: number, del: boolean | undefined): ActionRecord {
    const image = this.getImage(id);
    if (image.type !== "snapshot" && image.type !== "backup")
      throw new ApiError("forbidden", `image ${id} is a ${image.type} image`);
    if (del !== undefined) image.protection.delete = del;
    const a = this.newAction("change_protection", [{ id, type: "image" }], this.ms("changeProtection"));
    this.save();
    return a;
  }

  // ---- SSH keys ----

  createSshKey(input: { name: string; publicKey: string; labels: Labels }): SshKeyRecord {
    const problems: FieldProblem[] = [];
    if (input.name.length === 0) problems.push({ name: "name", messages: ["name must not be empty"] });
    const parsed = parsePublicKey(input.publicKey);
    if ("error" in parsed) problems.push({ name: "public_key", messages: [parsed.error] });
    problems.push(...labelProblems(input.labels));
    if (problems.length > 0 || "error" in parsed) throw invalidInput(problems);
    const fingerprint = fingerprintOf(parsed.blob);
    const all = [...this.sshKeys.values()];
    if (all.some((k) => k.name === input.name))
      throw uniqueness("name", `SSH key name '${input.name}' is already used`);
    if (all.some((k) => k.fingerprint === fingerprint))
      throw uniqueness("public_key", "SSH key with the same fingerprint already exists");
    const key: SshKeyRecord = {
      id: this.nextIds.sshKey++,
      name: input.name,
      fingerprint,
      publicKey: input.publicKey.trim(),
      labels: { ...input.labels },
      created: isoNow(),
    };
    this.sshKeys.set(key.id, key);
    this.save();
    return key;
  }

  updateSshKey(id: number, update: { name?: string | undefined; labels?: Labels | undefined }): SshKeyRecord {
    const key = this.getSshKey(id);
    if (update.labels !== undefined) checkLabels(update.labels);
    if (update.name !== undefined && update.name !== key.name) {
      if (update.name.length === 0) throw invalidField("name", "name must not be empty");
      if ([...this.sshKeys.values()].some((k) => k.name === update.name))
        throw uniqueness("name", `SSH key name '${update.name}' is already used`);
      key.name = update.name;
    }
    if (update.labels !== undefined) key.labels = { ...update.labels };
    this.save();
    return key;
  }

  deleteSshKey(id: number): void {
    this.getSshKey(id);
    this.sshKeys.delete(id);
    this.save();
  }

  // ---- Debug view (no secrets: no user data, no passwords) ----

  debugView(): Record<string, unknown> {
    return {
      servers: this.serverList().map((s) => ({
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
        rescue_host: this.hosts.has(s.id)
          ? { bytes_in: this.hosts.get(s.id)?.bytesIn, bytes_out: this.hosts.get(s.id)?.bytesOut }
          : null,
        disk: s.disk,
        user_data_bytes: s.userData === null ? 0 : Buffer.byteLength(s.userData),
      })),
      images: this.imageList()
        .filter((i) => i.type !== "system")
        .map((i) => ({ id: i.id, type: i.type, status: i.status, image_size: i.imageSize, disk: i.disk })),
      ssh_keys: this.sshKeyList().map((k) => ({ id: k.id, name: k.name, fingerprint: k.fingerprint })),
      running_actions: [...this.running]
        .map((id) => this.actions.get(id))
        .filter((a) => a !== undefined)
        .map((a) => ({ id: a.id, command: a.command, resources: a.resources })),
      server_types: SERVER_TYPES.length,
    };
  }
}

export type { ServerStatus };
