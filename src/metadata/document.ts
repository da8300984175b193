/**
 * Hetzner's metadata documents (YAML) turned into checked, typed values. Pure: text in, values out.
 *
 * Everything that later lands in a file (addresses, MACs, the hostname, keys) is validated here, so a value with a
 * newline or a stray character can never inject lines into a systemd unit or an authorized_keys file.
 */
import { isIP } from "node:net";
import { parse } from "yaml";
import { MetadataError } from "./errors.js";

export interface Subnet {
  /** How the address is obtained. */
  method: "dhcp" | "static";
  family: 4 | 6;
  /** CIDR form, e.g. "2001:db8::1/64"; only for static subnets. */
  address: string | null;
  gateway: string | null;
  dnsNameservers: string[];
}

export interface PublicInterface {
  /** The name in network-config (eth0): a label only, real interface names differ. */
  name: string;
  macAddress: string;
  subnets: Subnet[];
}

export interface HetznerMetadata {
  hostname: string;
  instanceId: number;
  publicIpv4: string | null;
  publicKeys: string[];
  availabilityZone: string | null;
  region: string | null;
  interfaces: PublicInterface[];
  /** Things the agent skipped, e.g. a network-config entry type it does not handle. */
  warnings: string[];
}

/** One entry of the private-networks document (the emulator renders the same shape). */
export interface PrivateNetwork {
  ip: string;
  aliasIps: string[];
  interfaceNum: number;
  macAddress: string;
  networkId: number;
  networkName: string;
  /** The whole network's range, e.g. "10.0.0.0/16". */
  network: string;
  /** The subnet the server sits in, e.g. "10.0.1.0/24". */
  subnet: string;
  gateway: string;
}

type Dict = Record<string, unknown>;

function malformed(what: string, message: string): never {
  throw new MetadataError("malformed", `malformed ${what}: ${message}`);
}

function parseYaml(text: string, what: string): unknown {
  try {
    return parse(text, { prettyErrors: true });
  } catch (err) {
    const reason = err instanceof Error ? err.message.split("\n")[0] : String(err);
    throw new MetadataError("malformed", `malformed ${what}: not valid YAML (${reason})`, { cause: err });
  }
}

function isDict(value: unknown): value is Dict {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;

export function isHostname(name: string): boolean {
  return name.length > 0 && name.length <= 253 && name.split(".").every((label) => LABEL.test(label));
}

function str(doc: Dict, key: string, what: string): string {
  const value = doc[key];
  if (typeof value !== "string") malformed(what, `"${key}" must be a string, got ${describe(value)}`);
  return value;
}

function optionalStr(doc: Dict, key: string, what: string): string | null {
  const value = doc[key];
  if (value === undefined || value === null || value === "") return null;
  if (typeof value !== "string") malformed(what, `"${key}" must be a string, got ${describe(value)}`);
  return value;
}

function int(doc: Dict, key: string, what: string): number {
  const value = doc[key];
  if (typeof value !== "number" || !Number.isInteger(value)) {
    malformed(what, `"${key}" must be an integer, got ${describe(value)}`);
  }
  return value;
}

function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  return `${typeof value} ${JSON.stringify(value)}`;
}

function mac(value: unknown, what: string): string {
  if (typeof value !== "string" || !MAC.test(value.toLowerCase())) {
    malformed(what, `"mac_address" must look like 96:00:00:12:34:56, got ${describe(value)}`);
  }
  return value.toLowerCase();
}

function ip(value: unknown, what: string, key: string, family?: 4 | 6): string {
  if (typeof value !== "string" || isIP(value) === 0 || (family !== undefined && isIP(value) !== family)) {
    malformed(what, `"${key}" must be an IPv${family ?? "4 or IPv6"} address, got ${describe(value)}`);
  }
  return value;
}

/** "10.0.0.0/16" or "2001:db8::1/64", with the prefix length in range for the family. */
function cidr(value: unknown, what: string, key: string): string {
  const [address, length, extra] = typeof value === "string" ? value.split("/") : [];
  const family = address === undefined ? 0 : isIP(address);
  const bits = Number(length);
  if (
    extra !== undefined ||
    family === 0 ||
    length === undefined ||
    !/^\d+$/.test(length) ||
    bits > (family === 4 ? 32 : 128)
  ) {
    malformed(what, `"${key}" must be an address with a prefix length (CIDR), got ${describe(value)}`);
  }
  return value as string;
}

function netmaskBits(mask: string): number | null {
  if (isIP(mask) !== 4) return null;
  const bits = mask
    .split(".")
    .map((octet) => Number(octet).toString(2).padStart(8, "0"))
    .join("");
  return /^1*0*$/.test(bits) ? (bits.indexOf("0") === -1 ? 32 : bits.indexOf("0")) : null;
}

function parseSubnet(raw: unknown, what: string): Subnet | string {
  if (!isDict(raw)) malformed(what, `each subnet must be a mapping, got ${describe(raw)}`);
  const type = raw["type"];
  const dns = raw["dns_nameservers"] ?? [];
  if (!Array.isArray(dns)) malformed(what, `"dns_nameservers" must be a list, got ${describe(dns)}`);
  const dnsNameservers = dns.map((server) => ip(server, what, "dns_nameservers"));
  switch (type) {
    case "dhcp":
    case "dhcp4":
    case "dhcp6": {
      const family = type === "dhcp6" || (raw["ipv6"] === true && raw["ipv4"] !== true) ? 6 : 4;
      return { method: "dhcp", family, address: null, gateway: null, dnsNameservers };
    }
    case "static":
    case "static6": {
      let address = raw["address"];
      const netmask = raw["netmask"];
      if (typeof address === "string" && !address.includes("/") && typeof netmask === "string") {
        const bits = netmaskBits(netmask);
        if (bits === null)
          malformed(what, `"netmask" ${JSON.stringify(netmask)} is not a valid IPv4 netmask`);
        address = `${address}/${bits}`;
      }
      const checked = cidr(address, what, "address");
      const family = isIP(checked.split("/")[0] ?? "") === 6 ? 6 : 4;
      const gatewayRaw = raw["gateway"];
      const gateway =
        gatewayRaw === undefined || gatewayRaw === null ? null : ip(gatewayRaw, what, "gateway", family);
      return { method: "static", family, address: checked, gateway, dnsNameservers };
    }
    default:
      return `skipped a subnet of type ${describe(type)} (only dhcp and static are handled)`;
  }
}

function parseNetworkConfig(raw: unknown, warnings: string[]): PublicInterface[] {
  const what = "network-config";
  if (raw === undefined || raw === null) return [];
  if (!isDict(raw)) malformed(what, `must be a mapping, got ${describe(raw)}`);
  if (raw["version"] !== 1) malformed(what, `only version 1 is understood, got ${describe(raw["version"])}`);
  const config = raw["config"] ?? [];
  if (!Array.isArray(config)) malformed(what, `"config" must be a list, got ${describe(config)}`);
  const interfaces: PublicInterface[] = [];
  for (const entry of config) {
    if (!isDict(entry)) malformed(what, `each "config" entry must be a mapping, got ${describe(entry)}`);
    if (entry["type"] !== "physical") {
      warnings.push(`network-config: skipped an entry of type ${describe(entry["type"])}`);
      continue;
    }
    // The name only lands in a comment, but a comment is a line too: accept plain interface names only.
    const rawName = entry["name"];
    const fallback = `eth${interfaces.length}`;
    const name = typeof rawName === "string" && /^[A-Za-z0-9._-]{1,32}$/.test(rawName) ? rawName : fallback;
    if (rawName !== undefined && name !== rawName) {
      warnings.push(`network-config: replaced the interface name ${describe(rawName)} by ${fallback}`);
    }
    const subnetsRaw = entry["subnets"] ?? [];
    if (!Array.isArray(subnetsRaw)) malformed(what, `"subnets" must be a list, got ${describe(subnetsRaw)}`);
    const subnets: Subnet[] = [];
    for (const s of subnetsRaw) {
      const parsed = parseSubnet(s, what);
      if (typeof parsed === "string") warnings.push(`network-config ${name}: ${parsed}`);
      else subnets.push(parsed);
    }
    interfaces.push({ name, macAddress: mac(entry["mac_address"], what), subnets });
  }
  return interfaces;
}

function parseKeys(raw: unknown): string[] {
  const what = "metadata";
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) malformed(what, `"public-keys" must be a list, got ${describe(raw)}`);
  return raw.map((key) => {
    if (typeof key !== "string" || key.trim() === "" || /[\r\n\0]/.test(key)) {
      malformed(what, `each entry of "public-keys" must be one line of text, got ${describe(key)}`);
    }
    return key.trim();
  });
}

/** Parses the `metadata` document (GET /hetzner/v1/metadata). */
export function parseMetadata(text: string): HetznerMetadata {
  const what = "metadata";
  const doc = parseYaml(text, what);
  if (!isDict(doc)) malformed(what, `expected a mapping at the top, got ${describe(doc)}`);
  const hostname = str(doc, "hostname", what);
  if (!isHostname(hostname))
    malformed(what, `"hostname" ${JSON.stringify(hostname)} is not a valid host name`);
  const publicIpv4 = optionalStr(doc, "public-ipv4", what);
  if (publicIpv4 !== null) ip(publicIpv4, what, "public-ipv4", 4);
  const warnings: string[] = [];
  return {
    hostname,
    instanceId: int(doc, "instance-id", what),
    publicIpv4,
    publicKeys: parseKeys(doc["public-keys"]),
    availabilityZone: optionalStr(doc, "availability-zone", what),
    region: optionalStr(doc, "region", what),
    interfaces: parseNetworkConfig(doc["network-config"], warnings),
    warnings,
  };
}

/** Parses `metadata/private-networks` (a YAML list; empty text or an empty list means none). */
export function parsePrivateNetworks(text: string): PrivateNetwork[] {
  const what = "private-networks";
  const doc = parseYaml(text, what);
  if (doc === null || doc === undefined) return [];
  if (!Array.isArray(doc)) malformed(what, `expected a list, got ${describe(doc)}`);
  return doc.map((entry: unknown) => {
    if (!isDict(entry)) malformed(what, `each entry must be a mapping, got ${describe(entry)}`);
    const aliasRaw = entry["alias_ips"] ?? [];
    if (!Array.isArray(aliasRaw)) malformed(what, `"alias_ips" must be a list, got ${describe(aliasRaw)}`);
    return {
      ip: ip(entry["ip"], what, "ip", 4),
      aliasIps: aliasRaw.map((a) => ip(a, what, "alias_ips", 4)),
      interfaceNum: int(entry, "interface_num", what),
      macAddress: mac(entry["mac_address"], what),
      networkId: int(entry, "network_id", what),
      networkName: typeof entry["network_name"] === "string" ? entry["network_name"] : "",
      network: cidr(entry["network"], what, "network"),
      subnet: cidr(entry["subnet"], what, "subnet"),
      gateway: ip(entry["gateway"], what, "gateway", 4),
    };
  });
}
