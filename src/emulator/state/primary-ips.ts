/**
 * Primary IPs: the public addresses of servers. Every public address a server has is a primary IP (created with the
 * server, auto_delete on, unless the create names one), as on Hetzner. IPv4 addresses come from the emulator's
 * loopback pool (ipPrefix + 2..254), so a server keeping its primary IP keeps the address its host listens on; IPv6
 * ones are /64 networks from the documentation range. Assigning and unassigning need the server off.
 */
import { matchesSelector, type LabelSelector } from "../../hcloud/labels.js";
import type { Labels } from "../../hcloud/schema.js";
import { findLocation } from "./catalog.js";
import { checkLabels } from "./common.js";
import { ApiError, invalidField, rejected, uniqueness } from "./errors.js";
import type { ActionRecord, PrimaryIpRecord, ServerRecord } from "./records.js";
import type { Scheduler } from "./scheduler.js";
import { isoNow, required, type Store } from "./store.js";

export interface PrimaryIpFilter {
  selector?: LabelSelector | undefined;
  name?: string | null;
  ip?: string | null;
}

export interface CreatePrimaryIpInput {
  name: string;
  type: "ipv4" | "ipv6";
  assigneeId?: number | undefined;
  location?: string | undefined;
  autoDelete: boolean;
  labels: Labels;
}

function ipv6NetFor(n: number): string {
  return `2001:db8:${((n >>> 16) & 0xffff).toString(16)}:${(n & 0xffff).toString(16)}::/64`;
}

/** Hetzner's default reverse DNS name of an IPv4 address. */
export function defaultDnsPtr(ip: string): string {
  return `static.${ip.split(".").reverse().join(".")}.clients.your-server.de`;
}

export class PrimaryIps {
  constructor(
    private readonly store: Store,
    private readonly scheduler: Scheduler,
    private readonly ipPrefix: string,
  ) {
    scheduler.on("assign_primary_ip", async () => undefined);
  }

  list(filter: PrimaryIpFilter = {}): PrimaryIpRecord[] {
    return [...this.store.primaryIps.values()].filter(
      (p) =>
        (filter.selector === undefined || matchesSelector(p.labels, filter.selector)) &&
        (filter.name == null || p.name === filter.name) &&
        (filter.ip == null || p.ip === filter.ip),
    );
  }

  get(id: number): PrimaryIpRecord {
    return required(this.store.primaryIps, id, "primary IP");
  }

  find(id: number | null): PrimaryIpRecord | undefined {
    return id === null ? undefined : this.store.primaryIps.get(id);
  }

  private freeIpv4(): string {
    const used = new Set([...this.store.primaryIps.values()].map((p) => p.ip));
    for (const s of this.store.servers.values()) if (s.ipv4) used.add(s.ipv4);
    for (let n = 2; n <= 254; n++) {
      const ip = `${this.ipPrefix}${n}`;
      if (!used.has(ip)) return ip;
    }
    throw new ApiError("resource_limit_exceeded", "no free IPv4 address left in the emulator's pool", {
      limits: [{ name: "primary_ip_limit" }],
    });
  }

  private record(input: CreatePrimaryIpInput & { location: string }): PrimaryIpRecord {
    const id = this.store.nextId("primaryIp");
    const p: PrimaryIpRecord = {
      id,
      name: input.name || `primary_ip-${id}`,
      type: input.type,
      ip: input.type === "ipv4" ? this.freeIpv4() : ipv6NetFor(this.store.nextId("ipv6Net")),
      location: input.location,
      assigneeId: null,
      autoDelete: input.autoDelete,
      labels: { ...input.labels },
      protection: { delete: false },
      dnsPtr: [],
      created: isoNow(),
    };
    this.store.primaryIps.set(id, p);
    return p;
  }

  private checkName(name: string): void {
    if (name === "") throw invalidField("name", "name must not be empty");
    if ([...this.store.primaryIps.values()].some((p) => p.name === name))
      throw uniqueness("name", `primary IP name '${name}' is already used`);
  }

  /** POST /primary_ips: unassigned in a location, or assigned to an (off) server at once. */
  create(input: CreatePrimaryIpInput): { primaryIp: PrimaryIpRecord; action: ActionRecord | null } {
    checkLabels(input.labels);
    this.checkName(input.name);
    let server: ServerRecord | undefined;
    if (input.assigneeId !== undefined) {
      server = required(this.store.servers, input.assigneeId, "server");
      this.checkAssignable(server, input.type);
      if (input.location !== undefined)
        throw rejected("location", "location and assignee_id are mutually exclusive");
    }
    const location = server?.location ?? (input.location ? findLocation(input.location)?.name : undefined);
    if (!location) throw rejected("location", "a location or an assignee_id is required");
    const p = this.record({ ...input, location });
    let action: ActionRecord | null = null;
    if (server) {
      this.attach(p, server);
      action = this.scheduler.newAction(
        "create_primary_ip",
        [
          { id: p.id, type: "primary_ip" },
          { id: server.id, type: "server" },
        ],
        this.scheduler.ms("changeProtection"),
      );
    }
    this.store.save();
    return { primaryIp: p, action };
  }

  /** The public addresses of a new server: named primary IPs (checked), or new ones that go with the server. */
  forNewServer(
    location: string,
    want: { ipv4: number | null | undefined; ipv6: number | null | undefined },
  ): { ipv4: PrimaryIpRecord | null; ipv6: PrimaryIpRecord | null } {
    const named = (id: number | null | undefined, type: "ipv4" | "ipv6") => {
      if (id == null) return null;
      const p = this.store.primaryIps.get(id);
      if (!p) throw rejected(`public_net.${type}`, `primary IP with ID '${id}' not found`);
      if (p.type !== type) throw rejected(`public_net.${type}`, `primary IP ${id} is not of type ${type}`);
      if (p.assigneeId !== null)
        throw new ApiError("primary_ip_assigned", `primary IP ${id} is already assigned to a server`);
      if (p.location !== location)
        throw new ApiError(
          "primary_ip_datacenter_mismatch",
          `primary IP ${id} is in ${p.location}, the server would be in ${location}`,
        );
      return p;
    };
    const ipv4 = named(want.ipv4, "ipv4");
    const ipv6 = named(want.ipv6, "ipv6");
    return { ipv4, ipv6 };
  }

  /** Gives a new server its addresses (the named primary IPs, or fresh ones with auto_delete). */
  assignAtCreate(
    s: ServerRecord,
    ipv4: PrimaryIpRecord | null,
    ipv6: PrimaryIpRecord | null,
    enable: { ipv4: boolean; ipv6: boolean },
  ): void {
    const v4 = ipv4 ?? (enable.ipv4 ? this.record({ ...auto("ipv4"), location: s.location }) : null);
    const v6 = ipv6 ?? (enable.ipv6 ? this.record({ ...auto("ipv6"), location: s.location }) : null);
    if (v4) this.attach(v4, s);
    if (v6) this.attach(v6, s);
  }

  private attach(p: PrimaryIpRecord, s: ServerRecord): void {
    p.assigneeId = s.id;
    if (p.type === "ipv4") {
      s.primaryIpv4 = p.id;
      s.ipv4 = p.ip;
    } else {
      s.primaryIpv6 = p.id;
      s.ipv6 = p.ip;
    }
  }

  private detach(p: PrimaryIpRecord): void {
    const s = p.assigneeId === null ? undefined : this.store.servers.get(p.assigneeId);
    p.assigneeId = null;
    if (!s) return;
    if (p.type === "ipv4" && s.primaryIpv4 === p.id) {
      s.primaryIpv4 = null;
      s.ipv4 = null;
    } else if (p.type === "ipv6" && s.primaryIpv6 === p.id) {
      s.primaryIpv6 = null;
      s.ipv6 = null;
    }
  }

  private checkAssignable(s: ServerRecord, type: "ipv4" | "ipv6"): void {
    if (s.status !== "off")
      throw new ApiError(
        "server_not_stopped",
        `server ${s.id} must be powered off to change its primary IPs`,
      );
    if ((type === "ipv4" ? s.primaryIpv4 : s.primaryIpv6) !== null)
      throw new ApiError(
        "primary_ip_version_mismatch",
        `server ${s.id} already has a primary ${type === "ipv4" ? "IPv4" : "IPv6"}`,
      );
  }

  private action(command: string, p: PrimaryIpRecord, serverId?: number): ActionRecord {
    const resources = [{ id: p.id, type: "primary_ip" }];
    if (serverId !== undefined) resources.push({ id: serverId, type: "server" });
    return this.scheduler.newAction(command, resources, this.scheduler.ms("changeProtection"));
  }

  assign(id: number, serverId: number): ActionRecord {
    const p = this.get(id);
    const s = this.store.servers.get(serverId);
    if (!s) throw rejected("assignee_id", `server with ID '${serverId}' not found`);
    if (p.assigneeId === serverId) return this.action("assign_primary_ip", p, serverId);
    if (p.assigneeId !== null)
      throw new ApiError("primary_ip_already_assigned", `primary IP ${id} is assigned to another server`);
    if (p.location !== s.location)
      throw new ApiError(
        "primary_ip_datacenter_mismatch",
        `primary IP ${id} is in ${p.location}, server ${s.id} in ${s.location}`,
      );
    this.checkAssignable(s, p.type);
    this.attach(p, s);
    const a = this.action("assign_primary_ip", p, s.id);
    this.store.save();
    return a;
  }

  unassign(id: number): ActionRecord {
    const p = this.get(id);
    const s = p.assigneeId === null ? undefined : this.store.servers.get(p.assigneeId);
    if (s && s.status !== "off")
      throw new ApiError(
        "server_not_stopped",
        `server ${s.id} must be powered off to unassign primary IP ${id}`,
      );
    this.detach(p);
    const a = this.action("unassign_primary_ip", p, s?.id);
    this.store.save();
    return a;
  }

  update(
    id: number,
    u: { name?: string | undefined; labels?: Labels | undefined; autoDelete?: boolean | undefined },
  ) {
    const p = this.get(id);
    if (u.labels !== undefined) checkLabels(u.labels);
    if (u.name !== undefined && u.name !== p.name) {
      this.checkName(u.name);
      p.name = u.name;
    }
    if (u.labels !== undefined) p.labels = { ...u.labels };
    if (u.autoDelete !== undefined) p.autoDelete = u.autoDelete;
    this.store.save();
    return p;
  }

  delete(id: number): void {
    const p = this.get(id);
    if (p.protection.delete)
      throw new ApiError("protected", `primary IP ${id} is protected against deletion`);
    // Since 2026-05-01 an assigned primary IP is refused (the document's must_be_unassigned).
    if (p.assigneeId !== null)
      throw new ApiError(
        "must_be_unassigned",
        `primary IP ${id} is assigned to server ${p.assigneeId}; unassign it first`,
      );
    this.store.primaryIps.delete(id);
    this.store.save();
  }

  changeProtection(id: number, del: boolean | undefined): ActionRecord {
    const p = this.get(id);
    if (del !== undefined) p.protection.delete = del;
    const a = this.action("change_protection", p);
    this.store.save();
    return a;
  }

  /** Sets (or, with null, resets) the reverse DNS entry of `ip`, an address of this primary IP. */
  changeDnsPtr(id: number, ip: string, dnsPtr: string | null, command = "change_dns_ptr"): ActionRecord {
    const p = this.get(id);
    this.setDnsPtr(p, ip, dnsPtr);
    const a = this.action(command, p, p.assigneeId ?? undefined);
    this.store.save();
    return a;
  }

  setDnsPtr(p: PrimaryIpRecord, ip: string, dnsPtr: string | null): void {
    if (!ipBelongs(p, ip)) throw rejected("ip", `${ip} is not an address of primary IP ${p.id} (${p.ip})`);
    if (dnsPtr !== null && !/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/i.test(dnsPtr))
      throw rejected("dns_ptr", `'${dnsPtr}' is not a valid domain name`);
    p.dnsPtr = p.dnsPtr.filter((d) => d.ip !== ip);
    if (dnsPtr !== null) p.dnsPtr.push({ ip, dnsPtr });
  }

  /** The primary IP of a server that holds `ip` (its IPv4, or an address in its IPv6 /64). */
  ofServerAddress(s: ServerRecord, ip: string): PrimaryIpRecord | undefined {
    return [s.primaryIpv4, s.primaryIpv6]
      .map((id) => (id === null ? undefined : this.store.primaryIps.get(id)))
      .find((p) => p !== undefined && ipBelongs(p, ip));
  }

  /** A deleted server: primary IPs with auto_delete go with it, the others stay, unassigned. */
  serverDeleted(s: ServerRecord): void {
    for (const p of [...this.store.primaryIps.values()]) {
      if (p.assigneeId !== s.id) continue;
      p.assigneeId = null;
      if (p.autoDelete) this.store.primaryIps.delete(p.id);
    }
  }

  /** State written before primary IPs were modelled: each server's addresses become auto_delete primary IPs. */
  migrate(s: ServerRecord): void {
    s.primaryIpv4 ??= null;
    s.primaryIpv6 ??= null;
    for (const type of ["ipv4", "ipv6"] as const) {
      const ip = s[type];
      if (ip === null || (type === "ipv4" ? s.primaryIpv4 : s.primaryIpv6) !== null) continue;
      const id = this.store.nextId("primaryIp");
      const p: PrimaryIpRecord = {
        id,
        name: `primary_ip-${id}`,
        type,
        ip,
        location: s.location,
        assigneeId: null,
        autoDelete: true,
        labels: {},
        protection: { delete: false },
        dnsPtr: [],
        created: s.created,
      };
      this.store.primaryIps.set(id, p);
      this.attach(p, s);
    }
  }
}

function auto(type: "ipv4" | "ipv6"): CreatePrimaryIpInput {
  return { name: "", type, autoDelete: true, labels: {} };
}

function ipBelongs(p: PrimaryIpRecord, ip: string): boolean {
  if (p.type === "ipv4") return ip === p.ip;
  const prefix = p.ip.split("::/")[0] ?? "";
  return ip.toLowerCase().startsWith(`${prefix}:`);
}
