/**
 * The actions on a server: power, rescue, protection, create_image, rebuild, reverse DNS, backups, networks and
 * placement groups, each with its effect over time (registered here with the scheduler).
 */
import { join } from "node:path";
import type { Labels } from "../../hcloud/schema.js";
import { diskBytes, findServerType } from "./catalog.js";
import { randomPassword } from "./common.js";
import { ApiError, invalidField, rejected, unsupported } from "./errors.js";
import type { Images } from "./images.js";
import type { Networks } from "./networks.js";
import type { PlacementGroups } from "./placement-groups.js";
import type { Power } from "./power.js";
import type { PrimaryIps } from "./primary-ips.js";
import type { ActionRecord, ImageRecord, ServerRecord } from "./records.js";
import type { Resources, Scheduler } from "./scheduler.js";
import { serverEffect, type Servers } from "./servers.js";
import type { SshKeys } from "./ssh-keys.js";
import type { Store } from "./store.js";
import { LATENCY_MS, type LatencyName } from "./timing.js";

export type ServerActionCommand =
  | "poweron"
  | "poweroff"
  | "shutdown"
  | "reboot"
  | "reset"
  | "enable_rescue"
  | "disable_rescue"
  | "create_image"
  | "change_protection"
  | "rebuild"
  | "change_dns_ptr"
  | "enable_backup"
  | "disable_backup"
  | "attach_to_network"
  | "detach_from_network"
  | "change_alias_ips"
  | "add_to_placement_group"
  | "remove_from_placement_group";

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
  /** rebuild */
  image?: string | undefined;
  userData?: string | undefined;
  /** change_dns_ptr (dnsPtr null resets to the default name) */
  ip?: string | undefined;
  dnsPtr?: string | null | undefined;
  /** attach_to_network, detach_from_network, change_alias_ips */
  network?: number | undefined;
  aliasIps?: string[] | undefined;
  /** add_to_placement_group */
  placementGroup?: number | undefined;
}

export interface ServerActionResult {
  action: ActionRecord;
  rootPassword?: string | null;
  image?: ImageRecord;
}

export interface ServerActionDeps {
  store: Store;
  scheduler: Scheduler;
  power: Power;
  servers: Servers;
  images: Images;
  sshKeys: SshKeys;
  primaryIps: PrimaryIps;
  networks: Networks;
  placementGroups: PlacementGroups;
  removeDisk: (path: string) => Promise<void>;
}

export class ServerActions {
  constructor(private readonly deps: ServerActionDeps) {
    const { scheduler, power, images } = deps;
    const on = serverEffect(scheduler, deps.store);
    const boot = async (s: ServerRecord, a: ActionRecord) => {
      if (a.params.after !== undefined) {
        const create = await scheduler.settled(Number(a.params.after));
        if (create?.status !== "success") throw new Error("server creation failed");
      }
      if (a.params.boot) await power.boot(s);
    };
    on("start_server", boot);
    on("reboot_server", boot);
    on("reset_server", boot);
    on("stop_server", (s) => power.powerOff(s));
    // shutdown_server: the ACPI request is delivered; the guest powers off later (Power.scheduleGuestOff).
    on("rebuild_server", async (s, a) => {
      // Powered off first (as the API says), the disk replaced by the image's, then booted if it ran before.
      await power.halt(s);
      const image = deps.store.images.get(Number(a.params.image));
      await images.writeServerDisk(image, join(deps.store.stateDir, s.disk), diskBytes(s.primaryDiskSize));
      if (a.params.wasOn) {
        s.status = "starting";
        await power.boot(s);
      } else s.status = "off";
    });
  }

  action(id: number, command: ServerActionCommand, input: ServerActionInput = {}): ServerActionResult {
    const { scheduler, power, servers } = this.deps;
    const s = servers.get(id);
    if (s.status === "deleting") throw new ApiError("conflict", `server ${id} is being deleted`);
    servers.assertUnlocked(s);
    const res: Resources = [{ id, type: "server" }];
    const on = s.status === "running" || s.status === "starting";
    const ms = (name: LatencyName) => scheduler.ms(name);
    const act = (
      name: string,
      latency: LatencyName,
      params: ActionRecord["params"] = {},
      more: Resources = [],
    ) => ({
      action: scheduler.newAction(name, [...res, ...more], ms(latency), params),
    });
    let result: ServerActionResult;
    switch (command) {
      case "poweron": {
        // Powering on a running server changes nothing; the action still succeeds.
        if (!on) s.status = "starting";
        result = act("start_server", "poweron", { boot: !on });
        break;
      }
      case "poweroff": {
        if (s.status !== "off") s.status = "stopping";
        result = act("stop_server", "poweroff");
        break;
      }
      case "shutdown": {
        result = act("shutdown_server", "shutdownRequest");
        if (s.status === "running") {
          // ACPI: the guest decides when it is off; we model its shutdown taking the same delay (unless it powers
          // itself off sooner, e.g. a rescue host running `poweroff`).
          s.status = "stopping";
          s.offAt = Date.now() + ms("shutdownRequest") + ms("guestShutdown");
          power.scheduleGuestOff(s);
        }
        break;
      }
      case "reboot":
      case "reset": {
        // Both boot the server again (an off server is started); completion runs the boot (see the effects).
        s.status = "starting";
        s.offAt = null;
        result = act(`${command}_server`, command, { boot: true });
        break;
      }
      case "enable_rescue": {
        if (input.rescueType !== undefined && input.rescueType !== "linux64")
          throw invalidField("type", "rescue type must be linux64");
        const keys = this.deps.sshKeys.resolve((input.rescueSshKeys ?? []).map(String), "ssh_keys");
        s.rescueEnabled = true;
        s.rescueConsumed = false;
        s.rescueKeys = keys.map((k) => k.publicKey);
        // The rescue system always gets a root password (the document's root_password is a non-null string).
        result = { ...act("enable_rescue", "enableRescue"), rootPassword: randomPassword() };
        break;
      }
      case "disable_rescue": {
        s.rescueEnabled = false;
        s.rescueConsumed = s.inRescue;
        s.rescueKeys = [];
        result = act("disable_rescue", "disableRescue");
        break;
      }
      case "change_protection": {
        // The API requires delete and rebuild protection to be equal; check before changing anything.
        const del = input.protectDelete ?? s.protection.delete;
        const rebuild = input.protectRebuild ?? s.protection.rebuild;
        if (del !== rebuild) throw invalidField("rebuild", "rebuild protection must equal delete protection");
        s.protection = { delete: del, rebuild };
        result = act("change_protection", "changeProtection");
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
      case "rebuild":
        result = this.rebuild(s, input, on);
        break;
      case "change_dns_ptr": {
        const ip = input.ip ?? "";
        const p = this.deps.primaryIps.ofServerAddress(s, ip);
        if (!p) throw rejected("ip", `${ip} is not a public address of server ${s.id}`);
        this.deps.primaryIps.setDnsPtr(p, ip, input.dnsPtr ?? null);
        result = act("change_dns_ptr", "changeProtection");
        break;
      }
      case "enable_backup": {
        // Hetzner picks the daily window; the emulator takes no backups by itself (create_image type=backup does).
        s.backupWindow = "22-02";
        result = act("enable_backup", "backup");
        break;
      }
      case "disable_backup": {
        // Disabling backups deletes the server's backups, as on Hetzner.
        s.backupWindow = null;
        for (const img of [...this.deps.store.images.values()]) {
          if (img.type !== "backup" || img.boundTo !== s.id) continue;
          this.deps.store.images.delete(img.id);
          if (img.disk)
            void this.deps.removeDisk(join(this.deps.store.stateDir, img.disk)).catch(() => undefined);
        }
        result = act("disable_backup", "backup");
        break;
      }
      case "attach_to_network": {
        const network = input.network ?? 0;
        this.deps.networks.attach(s, network, { ip: input.ip, aliasIps: input.aliasIps });
        result = act("attach_to_network", "networkChange", {}, [{ id: network, type: "network" }]);
        break;
      }
      case "detach_from_network": {
        const network = input.network ?? 0;
        this.deps.networks.detach(s, network);
        result = act("detach_from_network", "networkChange", {}, [{ id: network, type: "network" }]);
        break;
      }
      case "change_alias_ips": {
        const network = input.network ?? 0;
        this.deps.networks.changeAliasIps(s, network, input.aliasIps ?? []);
        result = act("change_alias_ips", "networkChange", {}, [{ id: network, type: "network" }]);
        break;
      }
      case "add_to_placement_group": {
        const group = input.placementGroup ?? 0;
        this.deps.placementGroups.add(s, group);
        result = act("add_to_placement_group", "backup", {}, [{ id: group, type: "placement_group" }]);
        break;
      }
      case "remove_from_placement_group": {
        const group = s.placementGroup ?? 0;
        this.deps.placementGroups.remove(s);
        result = act("remove_from_placement_group", "backup", {}, [{ id: group, type: "placement_group" }]);
        break;
      }
    }
    this.deps.store.save();
    return result;
  }

  /** rebuild: the server keeps id, name and addresses; its disk becomes the image's and it boots that. */
  private rebuild(s: ServerRecord, input: ServerActionInput, wasOn: boolean): ServerActionResult {
    if (s.protection.rebuild) throw new ApiError("protected", `server ${s.id} is protected against rebuild`);
    const type = findServerType(s.serverType);
    if (!type) throw new Error(`catalogue lost ${s.serverType}`);
    if (input.image === undefined) throw invalidField("image", "image is required");
    const image = this.deps.servers.resolveImageFor(input.image, type);
    if (image.type === "app") throw unsupported("rebuilding from app images");
    if (input.userData !== undefined) s.userData = input.userData;
    s.imageId = image.id;
    s.status = "rebuilding";
    s.offAt = null;
    const extra =
      image.type === "system"
        ? 0
        : LATENCY_MS.createServerFromSnapshotPerGb * (image.imageSize ?? image.diskSize);
    const action = this.deps.scheduler.newAction(
      "rebuild_server",
      [{ id: s.id, type: "server" }],
      this.deps.scheduler.ms("rebuild", extra),
      { image: image.id, wasOn },
    );
    // A system image without keys gets a fresh root password (as at create); snapshots keep their own.
    const rootPassword = image.type === "system" && s.publicKeys.length === 0 ? randomPassword() : null;
    return { action, rootPassword };
  }
}
