/**
 * Records -> wire JSON, in the shapes of src/hcloud/schema.ts (the OpenAPI document minus the documented deltas:
 * no `datacenter` on servers; `available`/`recommended` on server_types[].locations[]).
 */
import type {
  Action,
  Image,
  Pagination,
  Server,
  ServerType,
  ServerTypeLocation,
  SshKey,
} from "../../hcloud/schema.js";
import { LOCATIONS, findServerType, locationByName, prices, type ServerTypeInfo } from "../state/catalog.js";
import type { ActionRecord, EmulatorState, ImageRecord, ServerRecord, SshKeyRecord } from "../state/index.js";
import { dnsPtrEntries, renderLocation, renderPlacementGroup } from "./render-resources.js";

export { renderLocation };

export function renderServerType(t: ServerTypeInfo): ServerType {
  const locations: ServerTypeLocation[] = t.locations.map((l) => ({
    id: locationByName(l.location)?.id ?? 0,
    name: l.location,
    deprecation: l.deprecation,
    available: l.available,
    recommended: l.recommended,
  }));
  // Deprecation is per location now; the type-level fields say whether it is deprecated everywhere it is offered.
  const deprecatedEverywhere = t.locations.length > 0 && t.locations.every((l) => l.deprecation !== null);
  const first = t.locations.find((l) => l.deprecation !== null)?.deprecation ?? null;
  return {
    id: t.id,
    name: t.name,
    description: t.description,
    category: t.category,
    cores: t.cores,
    memory: t.memory,
    disk: t.disk,
    cpu_type: t.cpu_type,
    storage_type: "local",
    architecture: t.architecture,
    deprecated: deprecatedEverywhere,
    deprecation: deprecatedEverywhere ? first : null,
    prices: prices(t),
    locations,
  };
}

export function renderImage(i: ImageRecord): Image {
  const out: Image = {
    id: i.id,
    type: i.type,
    status: i.status,
    name: i.name,
    description: i.description,
    image_size: i.imageSize,
    disk_size: i.diskSize,
    created: i.created,
    created_from: i.createdFrom,
    bound_to: i.boundTo,
    os_flavor: i.osFlavor,
    os_version: i.osVersion,
    architecture: i.architecture,
    protection: { delete: i.protection.delete },
    deprecated: i.deprecated,
    deleted: null,
    labels: { ...i.labels },
  };
  if (i.rapidDeploy !== undefined) out.rapid_deploy = i.rapidDeploy;
  return out;
}

export function renderAction(state: EmulatorState, a: ActionRecord): Action {
  return {
    id: a.id,
    command: a.command,
    status: a.status,
    progress: state.progressOf(a),
    started: a.started,
    finished: a.finished,
    resources: a.resources.map((r) => ({ ...r })),
    error: a.error ? { ...a.error } : null,
  };
}

export function renderSshKey(k: SshKeyRecord): SshKey {
  return {
    id: k.id,
    name: k.name,
    fingerprint: k.fingerprint,
    public_key: k.publicKey,
    labels: { ...k.labels },
    created: k.created,
  };
}

export function renderServer(state: EmulatorState, s: ServerRecord): Server {
  const type = findServerType(s.serverType);
  const location = locationByName(s.location) ?? LOCATIONS[0];
  const image = s.imageId === null ? undefined : state.images.find(s.imageId);
  if (!type || !location) throw new Error(`catalogue lost ${s.serverType}/${s.location}`);
  const zone = location.network_zone;
  const v4 = state.primaryIps.find(s.primaryIpv4);
  const v6 = state.primaryIps.find(s.primaryIpv6);
  const group = state.placementGroups.find(s.placementGroup);
  const includedTraffic = prices(type).find((p) => p.location === s.location)?.included_traffic ?? null;
  return {
    id: s.id,
    name: s.name,
    status: s.status,
    created: s.created,
    public_net: {
      ipv4:
        s.ipv4 === null || v4 === undefined
          ? null
          : { id: v4.id, ip: s.ipv4, blocked: false, dns_ptr: dnsPtrEntries(v4)[0]?.dns_ptr ?? "" },
      ipv6:
        s.ipv6 === null || v6 === undefined
          ? null
          : { id: v6.id, ip: s.ipv6, blocked: false, dns_ptr: dnsPtrEntries(v6) },
      floating_ips: [],
      firewalls: state.firewalls.ofServer(s).map((f) => ({ id: f.id, status: "applied" })),
    },
    private_net: s.privateNet.map((p) => ({
      network: p.network,
      ip: p.ip,
      alias_ips: [...p.aliasIps],
      mac_address: p.macAddress,
    })),
    server_type: renderServerType(type),
    location: renderLocation(location),
    image: image ? renderImage(image) : null,
    iso: null,
    rescue_enabled: s.rescueEnabled,
    locked: state.isLocked(s.id),
    backup_window: s.backupWindow,
    outgoing_traffic: 0,
    ingoing_traffic: 0,
    included_traffic: zone ? includedTraffic : null,
    protection: { ...s.protection },
    labels: { ...s.labels },
    volumes: state.volumes.ofServer(s.id).map((v) => v.id),
    load_balancers: [],
    primary_disk_size: s.primaryDiskSize,
    placement_group: group ? renderPlacementGroup(state, group) : null,
  };
}

export function pagination(page: number, perPage: number, total: number): Pagination {
  const last = Math.max(1, Math.ceil(total / perPage));
  return {
    page,
    per_page: perPage,
    previous_page: page > 1 ? Math.min(page - 1, last) : null,
    next_page: page < last ? page + 1 : null,
    last_page: last,
    total_entries: total,
  };
}
