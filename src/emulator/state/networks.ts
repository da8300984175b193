/**
 * Networks: private IPv4 ranges with subnets and routes, and the servers attached to them (each attachment is an
 * interface of the server with an address of a subnet in its network zone, a MAC address and alias IPs). What a
 * server's metadata service lists under private-networks comes from here (see ../http/app.ts metadataInfo).
 */
import { matchesSelector, type LabelSelector } from "../../hcloud/labels.js";
import type { Labels } from "../../hcloud/schema.js";
import { locationByName } from "./catalog.js";
import { checkLabels } from "./common.js";
import { ApiError, rejected, uniqueness } from "./errors.js";
import type { ActionRecord, NetworkRecord, PrivateNetRecord, ServerRecord, SubnetRecord } from "./records.js";
import type { Scheduler } from "./scheduler.js";
import { isoNow, required, type Store } from "./store.js";
import { contains, overlaps, parseCidr, size, toInt, toIp, within, type Cidr } from "./cidr.js";

export interface NetworkFilter {
  selector?: LabelSelector | undefined;
  name?: string | null;
}

export interface SubnetInput {
  type: string;
  ipRange?: string | undefined;
  networkZone: string;
  vswitchId?: number | undefined;
}

const NETWORK_ZONES = ["eu-central", "us-east", "us-west", "ap-southeast"];
const PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"].map((c) => parseCidr(c) as Cidr);

export class Networks {
  constructor(
    private readonly store: Store,
    private readonly scheduler: Scheduler,
  ) {}

  list(filter: NetworkFilter = {}): NetworkRecord[] {
    return [...this.store.networks.values()].filter(
      (n) =>
        (filter.selector === undefined || matchesSelector(n.labels, filter.selector)) &&
        (filter.name == null || n.name === filter.name),
    );
  }

  get(id: number): NetworkRecord {
    return required(this.store.networks, id, "network");
  }

  /** Servers attached to a network. */
  servers(n: NetworkRecord): ServerRecord[] {
    return [...this.store.servers.values()].filter((s) => s.privateNet.some((p) => p.network === n.id));
  }

  private checkName(name: string, self?: NetworkRecord): void {
    if (name === "") throw rejected("name", "name must not be empty");
    if ([...this.store.networks.values()].some((n) => n.name === name && n !== self))
      throw uniqueness("name", `network name '${name}' is already used`);
  }

  private checkRange(text: string): Cidr {
    const c = parseCidr(text);
    if (!c || !PRIVATE_RANGES.some((r) => within(c, r)) || c.bits > 24)
      throw rejected(
        "ip_range",
        `ip_range '${text}' must be a private IPv4 network (RFC 1918) of at most /24`,
      );
    return c;
  }

  private subnet(n: NetworkRecord, input: SubnetInput): SubnetRecord {
    const range = parseCidr(n.ipRange) as Cidr;
    if (!["cloud", "server", "vswitch"].includes(input.type))
      throw rejected("type", "subnet type must be cloud, server or vswitch");
    if (!NETWORK_ZONES.includes(input.networkZone))
      throw rejected("network_zone", `network_zone must be one of ${NETWORK_ZONES.join(", ")}`);
    if (input.type === "vswitch" && input.vswitchId === undefined)
      throw rejected("vswitch_id", "vswitch_id is required for subnets of type vswitch");
    let c: Cidr | undefined;
    if (input.ipRange !== undefined) {
      c = parseCidr(input.ipRange);
      if (!c || !within(c, range))
        throw rejected("ip_range", `subnet ${input.ipRange} must be a network inside ${n.ipRange}`);
    } else {
      // The first free /24 of the network (or the whole network when it is smaller).
      const bits = Math.max(24, range.bits);
      for (let base = range.base; base < range.base + size(range) && !c; base += 2 ** (32 - bits)) {
        const candidate = { base, bits };
        if (!n.subnets.some((s) => overlaps(parseCidr(s.ipRange) as Cidr, candidate))) c = candidate;
      }
      if (!c) throw rejected("ip_range", `no free range left in ${n.ipRange}`);
    }
    const chosen = c;
    if (n.subnets.some((s) => overlaps(parseCidr(s.ipRange) as Cidr, chosen)))
      throw rejected("ip_range", `subnet ${toIp(chosen.base)}/${chosen.bits} overlaps another subnet`);
    return {
      type: input.type as SubnetRecord["type"],
      ipRange: `${toIp(chosen.base)}/${chosen.bits}`,
      networkZone: input.networkZone,
      // Servers reach the network through its first address; a vSwitch subnet's gateway is its own first address.
      gateway: toIp((input.type === "vswitch" ? chosen.base : range.base) + 1),
      vswitchId: input.vswitchId ?? null,
    };
  }

  private action(
    command: string,
    n: NetworkRecord,
    extra: { id: number; type: string }[] = [],
  ): ActionRecord {
    return this.scheduler.newAction(
      command,
      [{ id: n.id, type: "network" }, ...extra],
      this.scheduler.ms("networkChange"),
    );
  }

  create(input: {
    name: string;
    ipRange: string;
    labels: Labels;
    subnets: SubnetInput[];
    routes: { destination: string; gateway: string }[];
    exposeRoutesToVswitch: boolean;
  }): NetworkRecord {
    checkLabels(input.labels);
    this.checkName(input.name);
    this.checkRange(input.ipRange);
    const n: NetworkRecord = {
      id: 0,
      name: input.name,
      ipRange: input.ipRange,
      labels: { ...input.labels },
      created: isoNow(),
      protection: { delete: false },
      subnets: [],
      routes: [],
      exposeRoutesToVswitch: input.exposeRoutesToVswitch,
    };
    for (const s of input.subnets) n.subnets.push(this.subnet(n, s));
    for (const r of input.routes) n.routes.push(this.route(n, r));
    n.id = this.store.nextId("network");
    this.store.networks.set(n.id, n);
    this.store.save();
    return n;
  }

  private route(
    n: NetworkRecord,
    r: { destination: string; gateway: string },
  ): { destination: string; gateway: string } {
    const dest = parseCidr(r.destination);
    const gw = toInt(r.gateway);
    if (!dest) throw rejected("destination", `destination '${r.destination}' is not an IPv4 network`);
    if (gw === undefined || !contains(parseCidr(n.ipRange) as Cidr, gw))
      throw rejected("gateway", `gateway '${r.gateway}' must be an address inside ${n.ipRange}`);
    return { destination: r.destination, gateway: r.gateway };
  }

  update(
    id: number,
    u: {
      name?: string | undefined;
      labels?: Labels | undefined;
      exposeRoutesToVswitch?: boolean | undefined;
    },
  ) {
    const n = this.get(id);
    if (u.labels !== undefined) checkLabels(u.labels);
    if (u.name !== undefined) this.checkName(u.name, n);
    if (u.name !== undefined) n.name = u.name;
    if (u.labels !== undefined) n.labels = { ...u.labels };
    if (u.exposeRoutesToVswitch !== undefined) n.exposeRoutesToVswitch = u.exposeRoutesToVswitch;
    this.store.save();
    return n;
  }

  /** Deletes a network; attached servers are detached (as the API documents). */
  delete(id: number): void {
    const n = this.get(id);
    if (n.protection.delete) throw new ApiError("protected", `network ${id} is protected against deletion`);
    for (const s of this.servers(n)) s.privateNet = s.privateNet.filter((p) => p.network !== id);
    this.store.networks.delete(id);
    this.store.save();
  }

  addSubnet(id: number, input: SubnetInput): ActionRecord {
    const n = this.get(id);
    n.subnets.push(this.subnet(n, input));
    return this.saved(this.action("add_subnet", n));
  }

  deleteSubnet(id: number, ipRange: string): ActionRecord {
    const n = this.get(id);
    const sub = n.subnets.find((s) => s.ipRange === ipRange);
    if (!sub) throw rejected("ip_range", `network ${id} has no subnet ${ipRange}`);
    const c = parseCidr(ipRange) as Cidr;
    const inUse = this.servers(n).some((s) =>
      s.privateNet.some((p) => p.network === id && contains(c, toInt(p.ip) ?? -1)),
    );
    if (inUse)
      throw new ApiError("resource_in_use", `subnet ${ipRange} has attached servers; detach them first`);
    n.subnets = n.subnets.filter((s) => s !== sub);
    return this.saved(this.action("delete_subnet", n));
  }

  addRoute(id: number, r: { destination: string; gateway: string }): ActionRecord {
    const n = this.get(id);
    if (n.routes.some((x) => x.destination === r.destination && x.gateway === r.gateway))
      throw uniqueness("destination", "the route already exists");
    n.routes.push(this.route(n, r));
    return this.saved(this.action("add_route", n));
  }

  deleteRoute(id: number, r: { destination: string; gateway: string }): ActionRecord {
    const n = this.get(id);
    const before = n.routes.length;
    n.routes = n.routes.filter((x) => !(x.destination === r.destination && x.gateway === r.gateway));
    if (n.routes.length === before) throw rejected("destination", "no such route");
    return this.saved(this.action("delete_route", n));
  }

  changeIpRange(id: number, ipRange: string): ActionRecord {
    const n = this.get(id);
    const c = this.checkRange(ipRange);
    const old = parseCidr(n.ipRange) as Cidr;
    if (!within(old, c)) throw rejected("ip_range", "the IP range can only be extended");
    n.ipRange = ipRange;
    return this.saved(this.action("change_ip_range", n));
  }

  changeProtection(id: number, del: boolean | undefined): ActionRecord {
    const n = this.get(id);
    if (del !== undefined) n.protection.delete = del;
    return this.saved(this.action("change_protection", n));
  }

  private saved(a: ActionRecord): ActionRecord {
    this.store.save();
    return a;
  }

  /** Attaches a server (at create, or by attach_to_network): an address of a subnet in the server's zone. */
  attach(
    s: ServerRecord,
    id: number,
    want: { ip?: string | undefined; aliasIps?: string[] | undefined },
  ): PrivateNetRecord {
    const n = this.store.networks.get(id);
    if (!n) throw rejected("network", `network with ID '${id}' not found`);
    if (s.privateNet.some((p) => p.network === id))
      throw new ApiError("server_already_attached", `server ${s.id} is already attached to network ${id}`);
    const zone = locationByName(s.location)?.network_zone;
    const subnets = n.subnets.filter((x) => x.networkZone === zone && x.type !== "vswitch");
    if (subnets.length === 0)
      throw new ApiError(
        "no_subnet_available",
        `network ${id} has no subnet in the server's network zone ${zone ?? "?"}`,
      );
    const used = new Set(
      this.servers(n).flatMap((x) =>
        x.privateNet.filter((p) => p.network === id).flatMap((p) => [p.ip, ...p.aliasIps]),
      ),
    );
    const free = (ip: number, sub: SubnetRecord): boolean => {
      const c = parseCidr(sub.ipRange) as Cidr;
      return ip > c.base && ip < c.base + size(c) - 1 && toIp(ip) !== sub.gateway && !used.has(toIp(ip));
    };
    let ip: string | undefined;
    if (want.ip !== undefined) {
      const v = toInt(want.ip);
      const sub = subnets.find((x) => v !== undefined && contains(parseCidr(x.ipRange) as Cidr, v));
      if (v === undefined || !sub || !free(v, sub))
        throw new ApiError(
          "ip_not_available",
          `${want.ip} is not a free address of network ${id} in zone ${zone ?? "?"}`,
        );
      ip = want.ip;
    } else {
      for (const sub of subnets) {
        const c = parseCidr(sub.ipRange) as Cidr;
        for (let v = c.base + 1; v < c.base + size(c) - 1 && ip === undefined; v++)
          if (free(v, sub)) ip = toIp(v);
        if (ip) break;
      }
      if (!ip) throw new ApiError("no_subnet_available", `no free address left in network ${id}`);
    }
    for (const alias of want.aliasIps ?? []) {
      const v = toInt(alias);
      if (
        v === undefined ||
        alias === ip ||
        !subnets.some((sub) => contains(parseCidr(sub.ipRange) as Cidr, v) && free(v, sub))
      )
        throw new ApiError("ip_not_available", `alias IP ${alias} is not a free address of network ${id}`);
    }
    const entry: PrivateNetRecord = {
      network: id,
      ip,
      aliasIps: [...(want.aliasIps ?? [])],
      macAddress: privateMac(s.id, n.id),
    };
    s.privateNet.push(entry);
    return entry;
  }

  detach(s: ServerRecord, id: number): void {
    if (!s.privateNet.some((p) => p.network === id))
      throw rejected("network", `server ${s.id} is not attached to network ${id}`);
    s.privateNet = s.privateNet.filter((p) => p.network !== id);
  }

  changeAliasIps(s: ServerRecord, id: number, aliasIps: string[]): void {
    const entry = s.privateNet.find((p) => p.network === id);
    if (!entry) throw rejected("network", `server ${s.id} is not attached to network ${id}`);
    const index = s.privateNet.indexOf(entry);
    s.privateNet.splice(index, 1);
    try {
      const fresh = this.attach(s, id, { ip: entry.ip, aliasIps });
      s.privateNet.pop();
      s.privateNet.splice(index, 0, { ...fresh, macAddress: entry.macAddress });
    } catch (err) {
      s.privateNet.splice(index, 0, entry);
      throw err;
    }
  }

  /** Checks the networks named at server create before the server exists. */
  checkForCreate(ids: number[], location: string): void {
    const zone = locationByName(location)?.network_zone;
    for (const id of ids) {
      const n = this.store.networks.get(id);
      if (!n) throw rejected("networks", `network with ID '${id}' not found`);
      if (!n.subnets.some((x) => x.networkZone === zone && x.type !== "vswitch"))
        throw new ApiError(
          "no_subnet_available",
          `network ${id} has no subnet in network zone ${zone ?? "?"}`,
        );
    }
  }

  /** What the metadata service lists for a server (interface_num from 1, in attach order). */
  metadataOf(s: ServerRecord) {
    return s.privateNet.flatMap((p, i) => {
      const n = this.store.networks.get(p.network);
      const v = toInt(p.ip);
      const sub = n?.subnets.find((x) => v !== undefined && contains(parseCidr(x.ipRange) as Cidr, v));
      if (!n || !sub) return [];
      return [
        {
          ip: p.ip,
          aliasIps: [...p.aliasIps],
          interfaceNum: i + 1,
          macAddress: p.macAddress,
          networkId: n.id,
          networkName: n.name,
          network: n.ipRange,
          subnet: sub.ipRange,
          gateway: sub.gateway,
        },
      ];
    });
  }
}

/** Private interfaces' MAC addresses start with 86:00:00 on Hetzner; the rest is derived from server and network. */
function privateMac(serverId: number, networkId: number): string {
  const n = (serverId * 31 + networkId) % 2 ** 24;
  const hex = n.toString(16).padStart(6, "0");
  return `86:00:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}`;
}
