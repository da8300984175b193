/**
 * The emulator's metadata service: renders what a server sees at http://169.254.169.254/hetzner/v1/, in Hetzner's
 * format (see ../shared/docs/hetzner-facts.md, "Metadata service"). Pure: the HTTP layer mounts `renderMetadata`
 * under /metadata/{server_id}/hetzner/v1/ and writes the returned status, content type and body as they are.
 */
import { stringify } from "yaml";
import type { PrivateNetwork } from "../metadata/document.js";

/** The agent's parsed form of a private network is exactly what the emulator renders (a type, no code shared). */
export type MetadataPrivateNetwork = PrivateNetwork;

export interface MetadataInfo {
  id: number;
  hostname: string;
  publicIpv4: string | null;
  /** The server's IPv6 /64, e.g. "2001:db8:0:5::/64"; the server's own address is the network's ::1. */
  ipv6Network: string | null;
  /** MAC address of the public interface. */
  macAddress: string;
  publicKeys: string[];
  userData: string | null;
  /** e.g. "fsn1-dc14". */
  availabilityZone: string;
  /** e.g. "eu-central". */
  region: string;
  privateNetworks: MetadataPrivateNetwork[];
}

export interface MetadataResponse {
  status: number;
  contentType: string;
  body: string;
}

/** The resolvers Hetzner hands out for IPv6 in network-config. */
export const HETZNER_IPV6_DNS = ["2a01:4ff:ff00::add:1", "2a01:4ff:ff00::add:2"] as const;

const TEXT = "text/plain; charset=utf-8";
const YAML = "text/yaml; charset=utf-8";
const JSON_TYPE = "application/json";

/** Expands an IPv6 address to its eight 16-bit groups. */
function ipv6Groups(address: string): number[] {
  const [head = "", tail] = address.split("::");
  const parse = (part: string): number[] => (part === "" ? [] : part.split(":").map((g) => parseInt(g, 16)));
  const front = parse(head);
  const back = tail === undefined ? [] : parse(tail);
  const fill = new Array<number>(8 - front.length - back.length).fill(0);
  return [...front, ...fill, ...back];
}

/** Formats eight groups in the shortest form (RFC 5952: the longest run of zero groups, if > 1, becomes "::"). */
function formatIpv6(groups: number[]): string {
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < groups.length;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLength < 2) return hex.join(":");
  const left = hex.slice(0, bestStart).join(":");
  const right = hex.slice(bestStart + bestLength).join(":");
  return `${left}::${right}`;
}

/** "2001:db8:0:5::/64" -> "2001:db8:0:5::1/64": Hetzner gives the server the first address of its /64. */
export function serverIpv6Address(ipv6Network: string): string {
  const [prefix = "", length = "64"] = ipv6Network.split("/");
  const groups = ipv6Groups(prefix);
  groups[7] = 1;
  return `${formatIpv6(groups)}/${length}`;
}

function networkConfig(info: MetadataInfo): Record<string, unknown> {
  const subnets: Record<string, unknown>[] = [];
  if (info.publicIpv4 !== null) subnets.push({ ipv4: true, type: "dhcp" });
  if (info.ipv6Network !== null) {
    subnets.push({
      address: serverIpv6Address(info.ipv6Network),
      dns_nameservers: [...HETZNER_IPV6_DNS],
      gateway: "fe80::1",
      ipv6: true,
      type: "static",
    });
  }
  return {
    config: [{ mac_address: info.macAddress, name: "eth0", subnets, type: "physical" }],
    version: 1,
  };
}

function privateNetworks(info: MetadataInfo): Record<string, unknown>[] {
  return info.privateNetworks.map((n) => ({
    ip: n.ip,
    alias_ips: [...n.aliasIps],
    interface_num: n.interfaceNum,
    mac_address: n.macAddress,
    network_id: n.networkId,
    network_name: n.networkName,
    network: n.network,
    subnet: n.subnet,
    gateway: n.gateway,
  }));
}

/** The whole `metadata` document (keys in alphabetical order, as Hetzner serves them). */
function metadataDocument(info: MetadataInfo): Record<string, unknown> {
  return {
    "availability-zone": info.availabilityZone,
    hostname: info.hostname,
    "instance-id": info.id,
    "local-ipv4": "",
    "network-config": networkConfig(info),
    "public-ipv4": info.publicIpv4 ?? "",
    "public-keys": [...info.publicKeys],
    region: info.region,
    vendor_data: "#cloud-config\n",
  };
}

function ok(contentType: string, body: string): MetadataResponse {
  return { status: 200, contentType, body };
}

function yaml(value: unknown): MetadataResponse {
  return ok(YAML, stringify(value, { lineWidth: 0 }));
}

/**
 * Renders one metadata path. `subpath` is what follows /hetzner/v1/ ("metadata", "metadata/hostname",
 * "metadata/public-keys", "metadata/private-networks", "metadata/network-config", "userdata", ...); leading and
 * trailing slashes are ignored. Unknown paths answer 404.
 */
export function renderMetadata(info: MetadataInfo, subpath: string): MetadataResponse {
  const path = subpath.replace(/^\/+|\/+$/g, "");
  switch (path) {
    case "metadata":
      return yaml(metadataDocument(info));
    case "metadata/hostname":
      return ok(TEXT, info.hostname);
    case "metadata/instance-id":
      return ok(TEXT, String(info.id));
    case "metadata/public-ipv4":
      return ok(TEXT, info.publicIpv4 ?? "");
    case "metadata/local-ipv4":
      return ok(TEXT, "");
    case "metadata/availability-zone":
      return ok(TEXT, info.availabilityZone);
    case "metadata/region":
      return ok(TEXT, info.region);
    case "metadata/public-keys":
      return ok(JSON_TYPE, JSON.stringify(info.publicKeys));
    case "metadata/private-networks":
      return yaml(privateNetworks(info));
    case "metadata/network-config":
      return yaml(networkConfig(info));
    case "metadata/vendor_data":
      return ok(TEXT, "#cloud-config\n");
    case "userdata":
      return ok("application/octet-stream", info.userData ?? "");
    default:
      return { status: 404, contentType: TEXT, body: "not found\n" };
  }
}
