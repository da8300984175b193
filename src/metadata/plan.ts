/**
 * From metadata to the files the agent writes. Pure: documents in, planned files out; no I/O.
 *
 * Paths are relative to the target root (the agent's `--root`, "/" at boot), in POSIX form.
 */
import { posix } from "node:path";
import type { HetznerMetadata, PrivateNetwork, PublicInterface } from "./document.js";
import { MetadataError } from "./errors.js";

/** Where systemd-networkd reads runtime units; they vanish at reboot and the agent writes them again. */
export const NETWORK_DIR = "run/systemd/network";
/** Every unit the agent writes starts with this name prefix and {@link UNIT_HEADER}; stale ones are found by both. */
export const UNIT_PREFIX = "50-hetznix-";
export const UNIT_HEADER =
  "# Written by `hetznix metadata apply` from the Hetzner metadata service. Do not edit:";
const UNIT_HEADER_2 =
  "# rewritten at every boot, and removed when the metadata no longer lists this interface.";
/** Root's keys from the metadata, in a file of their own that sshd reads besides ~/.ssh/authorized_keys. */
export const ROOT_KEYS_FILE = "var/lib/hetznix/authorized_keys.d/root";
/** The same path as sshd's AuthorizedKeysFile pattern (absolute, %u = user name). */
export const AUTHORIZED_KEYS_PATTERN = "/var/lib/hetznix/authorized_keys.d/%u";
export const HOSTNAME_FILE = "etc/hostname";

export type PlannedFileKind = "network-public" | "network-private" | "hostname" | "ssh-keys" | "userdata";

export interface PlannedFile {
  kind: PlannedFileKind;
  /** Relative to the root, e.g. "run/systemd/network/50-hetznix-public-960000aabbcc.network". */
  path: string;
  content: string | Buffer;
  mode: number;
}

export interface Plan {
  files: PlannedFile[];
  warnings: string[];
}

export interface PlanInput {
  metadata: HetznerMetadata;
  privateNetworks: PrivateNetwork[];
  /** The raw user data; written only when `userDataPath` is set. */
  userData?: Buffer | null;
  /** Where to write user data (relative to the root; a leading "/" is allowed), or null for "don't". */
  userDataPath?: string | null;
  /** Write /etc/hostname (default true); off when the system's configuration sets the host name itself. */
  hostname?: boolean;
}

function unitName(kind: "public" | "private", macAddress: string): string {
  return `${UNIT_PREFIX}${kind}-${macAddress.replaceAll(":", "")}.network`;
}

function dhcpValue(v4: boolean, v6: boolean): string {
  if (v4 && v6) return "yes";
  if (v4) return "ipv4";
  if (v6) return "ipv6";
  return "no";
}

/** The networkd unit for one public interface: static addresses, gateways and DNS as listed, DHCP where listed. */
export function publicUnit(iface: PublicInterface): string {
  const dhcp4 = iface.subnets.some((s) => s.method === "dhcp" && s.family === 4);
  const dhcp6 = iface.subnets.some((s) => s.method === "dhcp" && s.family === 6);
  const network: string[] = [`DHCP=${dhcpValue(dhcp4, dhcp6)}`];
  const routes: string[][] = [];
  const dns: string[] = [];
  for (const subnet of iface.subnets) {
    for (const server of subnet.dnsNameservers) if (!dns.includes(server)) dns.push(server);
    if (subnet.method !== "static" || subnet.address === null) continue;
    network.push(`Address=${subnet.address}`);
    if (subnet.gateway === null) continue;
    if (subnet.family === 6) network.push(`Gateway=${subnet.gateway}`);
    // An IPv4 gateway is often outside the address's prefix (Hetzner hands out /32s), so route to it on-link.
    else routes.push(["[Route]", `Gateway=${subnet.gateway}`, "GatewayOnLink=yes"]);
  }
  network.push(...dns.map((server) => `DNS=${server}`));
  const lines = [
    UNIT_HEADER,
    UNIT_HEADER_2,
    `# Public interface (${iface.name} in the metadata's network-config).`,
    "[Match]",
    `MACAddress=${iface.macAddress}`,
    "",
    "[Network]",
    ...network,
  ];
  for (const route of routes) lines.push("", ...route);
  return `${lines.join("\n")}\n`;
}

/** The networkd unit for one private network interface: DHCP, as Hetzner serves private addresses. */
export function privateUnit(network: PrivateNetwork): string {
  const lines = [
    UNIT_HEADER,
    UNIT_HEADER_2,
    `# Private network ${network.networkId}: ${network.ip} in ${network.subnet}, gateway ${network.gateway}.`,
    "[Match]",
    `MACAddress=${network.macAddress}`,
    "",
    "[Network]",
    "DHCP=ipv4",
  ];
  return `${lines.join("\n")}\n`;
}

export function authorizedKeys(keys: string[]): string {
  const lines = [
    "# Root's SSH keys from the Hetzner metadata service, written by `hetznix metadata apply` at every boot.",
    "# Keys you add yourself belong in ~/.ssh/authorized_keys, which is left alone.",
    ...keys,
  ];
  return `${lines.join("\n")}\n`;
}

function userDataTarget(path: string): string {
  const normalized = posix.normalize(path.replace(/^\/+/, ""));
  if (normalized === "." || normalized === "" || normalized.startsWith("../") || normalized === "..") {
    throw new MetadataError("usage", `invalid user data path "${path}"`);
  }
  return normalized;
}

/** Every file the agent writes for this metadata, in a stable order. */
export function planFiles(input: PlanInput): Plan {
  const { metadata, privateNetworks } = input;
  const files: PlannedFile[] = [];
  const seen = new Map<string, string>();
  const claim = (macAddress: string, owner: string): void => {
    const previous = seen.get(macAddress);
    if (previous !== undefined) {
      throw new MetadataError(
        "malformed",
        `malformed metadata: MAC address ${macAddress} is listed twice (${previous} and ${owner})`,
      );
    }
    seen.set(macAddress, owner);
  };
  for (const iface of metadata.interfaces) {
    claim(iface.macAddress, `public interface ${iface.name}`);
    files.push({
      kind: "network-public",
      path: posix.join(NETWORK_DIR, unitName("public", iface.macAddress)),
      content: publicUnit(iface),
      mode: 0o644,
    });
  }
  for (const network of [...privateNetworks].sort((a, b) => a.interfaceNum - b.interfaceNum)) {
    claim(network.macAddress, `private network ${network.networkId}`);
    files.push({
      kind: "network-private",
      path: posix.join(NETWORK_DIR, unitName("private", network.macAddress)),
      content: privateUnit(network),
      mode: 0o644,
    });
  }
  if (input.hostname !== false) {
    files.push({ kind: "hostname", path: HOSTNAME_FILE, content: `${metadata.hostname}\n`, mode: 0o644 });
  }
  files.push({
    kind: "ssh-keys",
    path: ROOT_KEYS_FILE,
    content: authorizedKeys(metadata.publicKeys),
    mode: 0o644,
  });
  if (input.userDataPath !== undefined && input.userDataPath !== null) {
    files.push({
      kind: "userdata",
      path: userDataTarget(input.userDataPath),
      content: input.userData ?? Buffer.alloc(0),
      mode: 0o600,
    });
  }
  return { files, warnings: [...metadata.warnings] };
}

/** True for a file name the agent may have written into {@link NETWORK_DIR} (the header is checked separately). */
export function isAgentUnitName(name: string): boolean {
  return name.startsWith(UNIT_PREFIX) && name.endsWith(".network");
}
