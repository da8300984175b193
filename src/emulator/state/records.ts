/**
 * What the emulator keeps (and persists to state.json): plain records, close to the wire shapes but holding only
 * what is not derived. Rendering to the wire happens in ../http/render.ts.
 */
import type {
  ActionStatus,
  Architecture,
  ImageStatus,
  ImageType,
  Labels,
  ServerStatus,
} from "../../hcloud/schema.js";

export interface ServerRecord {
  id: number;
  name: string;
  status: ServerStatus;
  created: string;
  serverType: string;
  location: string;
  imageId: number | null;
  labels: Labels;
  protection: { delete: boolean; rebuild: boolean };
  /** As the API shows it: true from enable_rescue until the server leaves the rescue system (or disable_rescue). */
  rescueEnabled: boolean;
  /** OpenSSH lines accepted by the rescue system. */
  rescueKeys: string[];
  /** The rescue system has been booted once since enable_rescue: the next boot is a normal one. */
  rescueConsumed: boolean;
  /** The server currently runs the rescue system. */
  inRescue: boolean;
  ipv4: string | null;
  ipv6: string | null;
  macAddress: string;
  /** OpenSSH lines of the ssh_keys given at create (metadata public-keys). */
  publicKeys: string[];
  userData: string | null;
  /** Disk file, relative to the state directory. */
  disk: string;
  primaryDiskSize: number;
  /** Epoch ms when the guest finishes an ACPI shutdown (after `shutdown`), or null. */
  offAt: number | null;
  /** Primary IPs holding the public addresses (ipv4/ipv6 above mirror their addresses); null without one. */
  primaryIpv4: number | null;
  primaryIpv6: number | null;
  /** Private networks the server is attached to, in attach order (interface_num = position + 1). */
  privateNet: PrivateNetRecord[];
  /** Backup window after enable_backup (e.g. "22-02"), else null. */
  backupWindow: string | null;
  placementGroup: number | null;
}

export interface PrivateNetRecord {
  network: number;
  ip: string;
  aliasIps: string[];
  macAddress: string;
}

export interface ImageRecord {
  id: number;
  type: ImageType;
  status: ImageStatus;
  name: string | null;
  description: string;
  imageSize: number | null;
  diskSize: number;
  created: string;
  createdFrom: { id: number; name: string } | null;
  boundTo: number | null;
  osFlavor: string;
  osVersion: string | null;
  architecture: Architecture;
  protection: { delete: boolean };
  deprecated: string | null;
  labels: Labels;
  rapidDeploy?: boolean;
  /** Disk file of a snapshot/backup, relative to the state directory; null for system images. */
  disk: string | null;
}

export interface SshKeyRecord {
  id: number;
  name: string;
  fingerprint: string;
  publicKey: string;
  labels: Labels;
  created: string;
}

export interface ActionRecord {
  id: number;
  command: string;
  status: ActionStatus;
  started: string;
  startedMs: number;
  /** Epoch ms when the modelled time is over (the effect may still be finishing). */
  endsAtMs: number;
  finished: string | null;
  resources: { id: number; type: string }[];
  error: { code: string; message: string } | null;
  /** What the completion needs (e.g. the image id of create_image, the action that must finish first). */
  params: Record<string, string | number | boolean | null>;
}

export interface FirewallRule {
  direction: "in" | "out";
  protocol: "tcp" | "udp" | "icmp" | "esp" | "gre";
  port: string | null;
  sourceIps: string[];
  destinationIps: string[];
  description: string | null;
}

/** Where a firewall applies: one server, or every server whose labels match a selector. */
export type FirewallTarget =
  { type: "server"; server: number } | { type: "label_selector"; selector: string };

export interface FirewallRecord {
  id: number;
  name: string;
  labels: Labels;
  created: string;
  rules: FirewallRule[];
  appliedTo: FirewallTarget[];
}

export interface PrimaryIpRecord {
  id: number;
  name: string;
  type: "ipv4" | "ipv6";
  /** An IPv4 address, or an IPv6 /64 network. */
  ip: string;
  location: string;
  assigneeId: number | null;
  autoDelete: boolean;
  labels: Labels;
  protection: { delete: boolean };
  /** Reverse DNS entries set with change_dns_ptr (IPv4: at most one, for `ip`). */
  dnsPtr: { ip: string; dnsPtr: string }[];
  created: string;
}

export interface SubnetRecord {
  type: "cloud" | "server" | "vswitch";
  ipRange: string;
  networkZone: string;
  gateway: string;
  vswitchId: number | null;
}

export interface NetworkRecord {
  id: number;
  name: string;
  ipRange: string;
  labels: Labels;
  created: string;
  protection: { delete: boolean };
  subnets: SubnetRecord[];
  routes: { destination: string; gateway: string }[];
  exposeRoutesToVswitch: boolean;
}

export interface VolumeRecord {
  id: number;
  name: string;
  /** GB (Hetzner GB, as server disks). */
  size: number;
  location: string;
  labels: Labels;
  created: string;
  protection: { delete: boolean };
  server: number | null;
  format: string | null;
  /** Mount it inside the server at /mnt/HC_Volume_ID when attached (with a format); absent in older state. */
  automount?: boolean;
  status: "creating" | "available";
  /** Disk file, relative to the state directory. */
  disk: string;
}

export interface PlacementGroupRecord {
  id: number;
  name: string;
  type: "spread";
  labels: Labels;
  created: string;
}

export interface PersistedState {
  version: 1;
  nextIds: {
    server: number;
    image: number;
    sshKey: number;
    action: number;
    ipv6Net: number;
    firewall: number;
    primaryIp: number;
    network: number;
    volume: number;
    placementGroup: number;
  };
  servers: ServerRecord[];
  images: ImageRecord[];
  sshKeys: SshKeyRecord[];
  actions: ActionRecord[];
  /** Absent in state written before these resources were modelled. */
  firewalls?: FirewallRecord[];
  primaryIps?: PrimaryIpRecord[];
  networks?: NetworkRecord[];
  volumes?: VolumeRecord[];
  placementGroups?: PlacementGroupRecord[];
}
