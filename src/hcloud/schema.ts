/**
 * Wire shapes of the Hetzner Cloud API resources hetznix uses, as they appear in JSON.
 *
 * Source: ../shared/hcloud-openapi/hcloud.json (components.schemas), amended by the changes Hetzner made after that
 * copy was taken (see ../shared/docs/hetzner-facts.md):
 *  - `server.datacenter` and the `datacenter` create parameter were removed on 2026-07-01, so they are absent here;
 *  - `server_types[].locations[]` carries `available` and `recommended`, and deprecation is per location.
 *
 * These types are shared by the client (src/hcloud) and the emulator (src/emulator). They are plain data: no
 * behaviour lives here.
 */

export type Labels = Record<string, string>;
export type Architecture = "x86" | "arm";

export interface Pagination {
  page: number;
  per_page: number;
  previous_page: number | null;
  next_page: number | null;
  last_page: number | null;
  total_entries: number | null;
}

export interface ListMeta {
  pagination: Pagination;
}

export interface ErrorBody {
  error: {
    code: string;
    message: string;
    details?: Record<string, unknown> | null;
  };
}

export type ActionStatus = "running" | "success" | "error";

export interface Action {
  id: number;
  command: string;
  status: ActionStatus;
  progress: number;
  started: string;
  finished: string | null;
  resources: { id: number; type: string }[];
  error: { code: string; message: string } | null;
}

export interface DeprecationInfo {
  announced: string;
  unavailable_after: string;
}

export interface Price {
  net: string;
  gross: string;
}

export interface PricePerTime {
  location: string;
  price_hourly: Price;
  price_monthly: Price;
  included_traffic: number;
  price_per_tb_traffic: Price;
}

export interface ServerTypeLocation {
  id: number;
  name: string;
  deprecation: DeprecationInfo | null;
  /** Added after the OpenAPI copy: whether the type can be ordered in this location now. */
  available?: boolean;
  /** Added after the OpenAPI copy. */
  recommended?: boolean;
}

export interface ServerType {
  id: number;
  name: string;
  description: string;
  category?: string;
  cores: number;
  memory: number;
  disk: number;
  cpu_type: "shared" | "dedicated";
  storage_type: "local" | "network";
  architecture: Architecture;
  deprecated: boolean | null;
  deprecation?: DeprecationInfo | null;
  prices: PricePerTime[];
  locations: ServerTypeLocation[];
}

export interface Location {
  id: number;
  name: string;
  description: string;
  country: string;
  city: string;
  latitude: number;
  longitude: number;
  network_zone: string;
}

export type ImageType = "system" | "app" | "snapshot" | "backup";
export type ImageStatus = "available" | "creating" | "unavailable";

export interface Image {
  id: number;
  type: ImageType;
  status: ImageStatus;
  name: string | null;
  description: string;
  image_size: number | null;
  disk_size: number;
  created: string;
  created_from: { id: number; name: string } | null;
  bound_to: number | null;
  os_flavor: string;
  os_version: string | null;
  rapid_deploy?: boolean;
  architecture: Architecture;
  protection: { delete: boolean };
  deprecated: string | null;
  deleted: string | null;
  labels: Labels;
}

export type ServerStatus =
  | "initializing"
  | "starting"
  | "running"
  | "stopping"
  | "off"
  | "deleting"
  | "migrating"
  | "rebuilding"
  | "unknown";

export interface ServerPublicNet {
  ipv4: { id?: number; ip: string; blocked: boolean; dns_ptr: string } | null;
  ipv6: {
    id?: number;
    ip: string;
    blocked: boolean;
    dns_ptr: { ip: string; dns_ptr: string }[] | null;
  } | null;
  floating_ips: number[];
  firewalls?: { id: number; status: string }[];
}

export interface ServerPrivateNet {
  network: number;
  ip: string;
  alias_ips: string[];
  mac_address: string;
}

export interface Server {
  id: number;
  name: string;
  status: ServerStatus;
  created: string;
  public_net: ServerPublicNet;
  private_net: ServerPrivateNet[];
  server_type: ServerType;
  location: Location;
  image: Image | null;
  iso: null;
  rescue_enabled: boolean;
  locked: boolean;
  backup_window: string | null;
  outgoing_traffic: number | null;
  ingoing_traffic: number | null;
  included_traffic: number | null;
  protection: { delete: boolean; rebuild: boolean };
  labels: Labels;
  volumes?: number[];
  load_balancers?: number[];
  primary_disk_size: number;
  placement_group?: PlacementGroup | null;
}

export interface PlacementGroup {
  id: number;
  name: string;
  type: "spread";
  labels: Labels;
  servers: number[];
  created: string;
}

export interface SshKey {
  id: number;
  name: string;
  fingerprint: string;
  public_key: string;
  labels: Labels;
  created: string;
}

// ---- Requests ----

export interface CreateServerRequest {
  name: string;
  server_type: string | number;
  image: string | number;
  location?: string;
  ssh_keys?: (string | number)[];
  user_data?: string;
  start_after_create?: boolean;
  labels?: Labels;
  public_net?: { enable_ipv4?: boolean; enable_ipv6?: boolean };
  networks?: number[];
  firewalls?: { firewall: number }[];
  automount?: boolean;
  volumes?: number[];
}

export interface CreateServerResponse {
  server: Server;
  action: Action;
  next_actions: Action[];
  root_password: string | null;
}

export interface EnableRescueRequest {
  type?: "linux64";
  ssh_keys?: number[];
}

export interface CreateImageRequest {
  type?: "snapshot" | "backup";
  description?: string;
  labels?: Labels;
}

export interface CreateSshKeyRequest {
  name: string;
  public_key: string;
  labels?: Labels;
}

export interface UpdateServerRequest {
  name?: string;
  labels?: Labels;
}

export interface UpdateSshKeyRequest {
  name?: string;
  labels?: Labels;
}

export interface UpdateImageRequest {
  description?: string;
  type?: "snapshot";
  labels?: Labels;
}
