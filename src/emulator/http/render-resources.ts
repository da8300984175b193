/**
 * Records -> wire JSON for firewalls, primary IPs, networks, volumes and placement groups (the OpenAPI document's
 * shapes, without the deprecated `datacenter` of primary IPs: removed on 2026-07-01 like the servers' one).
 */
import type { Location } from "../../hcloud/schema.js";
import { LOCATIONS, locationByName, type LocationInfo } from "../state/catalog.js";
import type {
  EmulatorState,
  FirewallRecord,
  NetworkRecord,
  PlacementGroupRecord,
  PrimaryIpRecord,
  VolumeRecord,
} from "../state/index.js";
import { defaultDnsPtr } from "../state/primary-ips.js";
import { linuxDevice } from "../state/volumes.js";

function location(name: string) {
  const l = locationByName(name) ?? LOCATIONS[0];
  if (!l) throw new Error("empty catalogue");
  return renderLocation(l);
}

export function renderFirewall(state: EmulatorState, f: FirewallRecord): Record<string, unknown> {
  return {
    id: f.id,
    name: f.name,
    labels: { ...f.labels },
    created: f.created,
    rules: f.rules.map((r) => ({
      direction: r.direction,
      protocol: r.protocol,
      port: r.port,
      source_ips: [...r.sourceIps],
      destination_ips: [...r.destinationIps],
      description: r.description,
    })),
    applied_to: f.appliedTo.map((t) =>
      t.type === "server"
        ? { type: "server", server: { id: t.server } }
        : {
            type: "label_selector",
            label_selector: { selector: t.selector },
            applied_to_resources: state.firewalls
              .selected(t.selector)
              .map((s) => ({ type: "server", server: { id: s.id } })),
          },
    ),
  };
}

/** The reverse DNS entries of a primary IP (an IPv4 always has one: Hetzner's default name unless set). */
export function dnsPtrEntries(p: PrimaryIpRecord): { ip: string; dns_ptr: string }[] {
  const set = p.dnsPtr.map((d) => ({ ip: d.ip, dns_ptr: d.dnsPtr }));
  if (p.type === "ipv4" && set.length === 0) return [{ ip: p.ip, dns_ptr: defaultDnsPtr(p.ip) }];
  return set;
}

export function renderPrimaryIp(p: PrimaryIpRecord): Record<string, unknown> {
  return {
    id: p.id,
    name: p.name,
    type: p.type,
    ip: p.ip,
    assignee_id: p.assigneeId,
    assignee_type: "server",
    auto_delete: p.autoDelete,
    blocked: false,
    created: p.created,
    dns_ptr: dnsPtrEntries(p),
    labels: { ...p.labels },
    location: location(p.location),
    protection: { ...p.protection },
  };
}

export function renderNetwork(state: EmulatorState, n: NetworkRecord): Record<string, unknown> {
  return {
    id: n.id,
    name: n.name,
    ip_range: n.ipRange,
    labels: { ...n.labels },
    created: n.created,
    protection: { ...n.protection },
    expose_routes_to_vswitch: n.exposeRoutesToVswitch,
    subnets: n.subnets.map((s) => ({
      type: s.type,
      ip_range: s.ipRange,
      network_zone: s.networkZone,
      gateway: s.gateway,
      ...(s.type === "vswitch" ? { vswitch_id: s.vswitchId } : {}),
    })),
    routes: n.routes.map((r) => ({ ...r })),
    servers: state.networks.servers(n).map((s) => s.id),
    load_balancers: [],
  };
}

export function renderVolume(v: VolumeRecord): Record<string, unknown> {
  return {
    id: v.id,
    name: v.name,
    size: v.size,
    location: location(v.location),
    labels: { ...v.labels },
    created: v.created,
    protection: { ...v.protection },
    server: v.server,
    format: v.format,
    status: v.status,
    linux_device: linuxDevice(v.id),
  };
}

export function renderPlacementGroup(state: EmulatorState, g: PlacementGroupRecord) {
  return {
    id: g.id,
    name: g.name,
    type: g.type,
    labels: { ...g.labels },
    created: g.created,
    servers: state.placementGroups.members(g.id).map((s) => s.id),
  };
}

export function renderLocation(l: LocationInfo): Location {
  return {
    id: l.id,
    name: l.name,
    description: l.description,
    country: l.country,
    city: l.city,
    latitude: l.latitude,
    longitude: l.longitude,
    network_zone: l.network_zone,
  };
}
