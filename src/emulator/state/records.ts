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

export interface PersistedState {
  version: 1;
  nextIds: { server: number; image: number; sshKey: number; action: number; ipv6Net: number };
  servers: ServerRecord[];
  images: ImageRecord[];
  sshKeys: SshKeyRecord[];
  actions: ActionRecord[];
}
