/**
 * The emulator's fixed catalogue: locations, server types and system images, as Hetzner Cloud offers them in late
 * 2026 (see ../shared/docs/hetzner-facts.md, "Server types" and "Locations").
 *
 * Where each number comes from:
 * - Location ids, cities, coordinates and network zones: the ids and values the public API has answered for years
 *   (fsn1=1, nbg1=2, hel1=3, ash=4, hil=5, sin=6); the availability zones (`fsn1-dc14`, ...) are the datacenter
 *   names the metadata service reports.
 * - Server type ids: the long-standing public ids for cpx11..51 (22-26), cax11 (45), cax21..41 (93-95) and ccx13..63
 *   (96-101). The ids of the 2025 generation (cx23..cx53, cpx12..cpx62) are not in our sources: they are assigned
 *   here from 114 up, after the last id we know (cx52 = 107), and marked "assumed".
 * - Cores, memory and disk: the facts file (CX/CAX: 2/4/8/16 vCPU, 40/80/160/320 GB; CPX12 1 vCPU 40 GB) and
 *   Hetzner's public price list for the rest.
 * - Prices: approximate net EUR prices from Hetzner's public price list after the 2026 price changes; gross = net x
 *   1.19 (German VAT, what the API shows for an EU project). Good enough for tools that compare prices; not
 *   authoritative.
 * - Availability: CX and CAX are EU-only (facts); CPX11..51 are deprecated per location (facts): no longer orderable
 *   in the EU, still orderable but not recommended in the US and Singapore.
 * - System image ids: ubuntu-22.04 (67794396), ubuntu-24.04 (161547269) and debian-12 (114690387) are the x86 ids
 *   the public API answers; the others are assigned near them (marked "assumed"). Arm variants are a separate image
 *   with the same name, as on Hetzner.
 */
import type { Architecture, DeprecationInfo, Location, PricePerTime } from "../../hcloud/schema.js";

export interface LocationInfo extends Location {
  /** Datacenter name reported by the metadata service as availability-zone. */
  availabilityZone: string;
}

export const LOCATIONS: readonly LocationInfo[] = [
  {
    id: 1,
    name: "fsn1",
    description: "Falkenstein DC Park 1",
    country: "DE",
    city: "Falkenstein",
    latitude: 50.47612,
    longitude: 12.370071,
    network_zone: "eu-central",
    availabilityZone: "fsn1-dc14",
  },
  {
    id: 2,
    name: "nbg1",
    description: "Nuremberg DC Park 1",
    country: "DE",
    city: "Nuremberg",
    latitude: 49.452102,
    longitude: 11.076665,
    network_zone: "eu-central",
    availabilityZone: "nbg1-dc3",
  },
  {
    id: 3,
    name: "hel1",
    description: "Helsinki DC Park 1",
    country: "FI",
    city: "Helsinki",
    latitude: 60.169855,
    longitude: 24.938379,
    network_zone: "eu-central",
    availabilityZone: "hel1-dc2",
  },
  {
    id: 4,
    name: "ash",
    description: "Ashburn, VA",
    country: "US",
    city: "Ashburn, VA",
    latitude: 39.045821,
    longitude: -77.487073,
    network_zone: "us-east",
    availabilityZone: "ash-dc1",
  },
  {
    id: 5,
    name: "hil",
    description: "Hillsboro, OR",
    country: "US",
    city: "Hillsboro, OR",
    latitude: 45.54222,
    longitude: -122.951924,
    network_zone: "us-west",
    availabilityZone: "hil-dc1",
  },
  {
    id: 6,
    name: "sin",
    description: "Singapore",
    country: "SG",
    city: "Singapore",
    latitude: 1.283333,
    longitude: 103.833333,
    network_zone: "ap-southeast",
    availabilityZone: "sin-dc1",
  },
];

const EU = ["fsn1", "nbg1", "hel1"];
const ALL = ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"];

export interface ServerTypeLocationInfo {
  location: string;
  available: boolean;
  recommended: boolean;
  deprecation: DeprecationInfo | null;
}

export interface ServerTypeInfo {
  id: number;
  name: string;
  description: string;
  category: string;
  cores: number;
  memory: number;
  /** Disk size in GB (Hetzner GB; see DISK_GB_BYTES). */
  disk: number;
  cpu_type: "shared" | "dedicated";
  architecture: Architecture;
  /** Net monthly price in EUR in the EU; other regions are derived (see prices()). */
  monthlyNet: number;
  locations: ServerTypeLocationInfo[];
}

/**
 * Size in bytes of a server disk of `gb` Hetzner GB. A "20 GB" cloud server disk is 20 480 786 432 bytes (40 001 536
 * sectors, from a user's published `fdisk -l` on a CX11), i.e. 1.024e9 bytes per GB plus 768 KiB; we assume the same
 * shape for every size. The disk files are sparse, so the size costs nothing on the host. Image sizes (`image_size`,
 * `disk_size` of snapshots) are reported in the same GB.
 */
export const DISK_GB_BYTES = 1_024_000_000;
export function diskBytes(gb: number): number {
  return gb * DISK_GB_BYTES + 786_432;
}

/** CPX11..51: announced 2025-10-16, no longer orderable in the EU from 2026-01-01 (facts: "deprecated per location"). */
const CPX_EU_DEPRECATION: DeprecationInfo = {
  announced: "2025-10-16T06:00:00Z",
  unavailable_after: "2026-01-01T00:00:00Z",
};
/** Outside the EU the old CPX line stays orderable until 2027 (assumed dates). */
const CPX_OTHER_DEPRECATION: DeprecationInfo = {
  announced: "2026-06-01T06:00:00Z",
  unavailable_after: "2027-01-01T00:00:00Z",
};

function offered(names: string[]): ServerTypeLocationInfo[] {
  return names.map((location) => ({ location, available: true, recommended: true, deprecation: null }));
}

function deprecatedCpx(): ServerTypeLocationInfo[] {
  return ALL.map((location) => {
    const eu = EU.includes(location);
    return {
      location,
      available: !eu,
      recommended: false,
      deprecation: eu ? CPX_EU_DEPRECATION : CPX_OTHER_DEPRECATION,
    };
  });
}

function type(
  id: number,
  name: string,
  category: string,
  cores: number,
  memory: number,
  disk: number,
  cpu: "shared" | "dedicated",
  architecture: Architecture,
  monthlyNet: number,
  locations: ServerTypeLocationInfo[],
): ServerTypeInfo {
  return {
    id,
    name,
    description: name.toUpperCase(),
    category,
    cores,
    memory,
    disk,
    cpu_type: cpu,
    architecture,
    monthlyNet,
    locations,
  };
}

export const SERVER_TYPES: readonly ServerTypeInfo[] = [
  // Cost-optimised x86 (2025 generation; ids assumed), EU only.
  type(114, "cx23", "cost_optimized", 2, 4, 40, "shared", "x86", 3.49, offered(EU)),
  type(115, "cx33", "cost_optimized", 4, 8, 80, "shared", "x86", 5.49, offered(EU)),
  type(116, "cx43", "cost_optimized", 8, 16, 160, "shared", "x86", 9.49, offered(EU)),
  type(117, "cx53", "cost_optimized", 16, 32, 320, "shared", "x86", 17.49, offered(EU)),
  // Arm (Ampere), EU only; ids are the public ones.
  type(45, "cax11", "cost_optimized", 2, 4, 40, "shared", "arm", 3.79, offered(EU)),
  type(93, "cax21", "cost_optimized", 4, 8, 80, "shared", "arm", 6.49, offered(EU)),
  type(94, "cax31", "cost_optimized", 8, 16, 160, "shared", "arm", 12.49, offered(EU)),
  type(95, "cax41", "cost_optimized", 16, 32, 320, "shared", "arm", 24.49, offered(EU)),
  // Regular performance AMD (2025 generation; ids assumed), every location.
  type(118, "cpx12", "regular_purpose", 1, 2, 40, "shared", "x86", 6.49, offered(ALL)),
  type(119, "cpx22", "regular_purpose", 2, 4, 80, "shared", "x86", 7.99, offered(ALL)),
  type(120, "cpx32", "regular_purpose", 4, 8, 160, "shared", "x86", 13.99, offered(ALL)),
  type(121, "cpx42", "regular_purpose", 8, 16, 320, "shared", "x86", 25.49, offered(ALL)),
  type(122, "cpx52", "regular_purpose", 12, 24, 480, "shared", "x86", 36.49, offered(ALL)),
  type(123, "cpx62", "regular_purpose", 16, 32, 640, "shared", "x86", 49.49, offered(ALL)),
  // Dedicated vCPU; ids are the public ones.
  type(96, "ccx13", "general_purpose", 2, 8, 80, "dedicated", "x86", 13.49, offered(ALL)),
  type(97, "ccx23", "general_purpose", 4, 16, 160, "dedicated", "x86", 26.49, offered(ALL)),
  type(98, "ccx33", "general_purpose", 8, 32, 240, "dedicated", "x86", 52.49, offered(ALL)),
  type(99, "ccx43", "general_purpose", 16, 64, 360, "dedicated", "x86", 104.99, offered(ALL)),
  type(100, "ccx53", "general_purpose", 32, 128, 600, "dedicated", "x86", 209.99, offered(ALL)),
  type(101, "ccx63", "general_purpose", 48, 192, 960, "dedicated", "x86", 314.99, offered(ALL)),
  // Previous regular performance line, deprecated per location; ids are the public ones.
  type(22, "cpx11", "regular_purpose", 2, 2, 40, "shared", "x86", 4.99, deprecatedCpx()),
  type(23, "cpx21", "regular_purpose", 3, 4, 80, "shared", "x86", 8.99, deprecatedCpx()),
  type(24, "cpx31", "regular_purpose", 4, 8, 160, "shared", "x86", 15.99, deprecatedCpx()),
  type(25, "cpx41", "regular_purpose", 8, 16, 240, "shared", "x86", 29.49, deprecatedCpx()),
  type(26, "cpx51", "regular_purpose", 16, 32, 360, "shared", "x86", 64.49, deprecatedCpx()),
];

/** Included traffic per location: 20 TB in the EU, 1 TB in the US, 0.5 TB in Singapore (public price list). */
const INCLUDED_TRAFFIC: Record<string, number> = {
  "eu-central": 20 * 2 ** 40,
  "us-east": 2 ** 40,
  "us-west": 2 ** 40,
  "ap-southeast": 0.5 * 2 ** 40,
};
/** Price factor against the EU price and per-TB overage (net EUR), per network zone (approximate). */
const ZONE_PRICING: Record<string, { factor: number; perTb: number }> = {
  "eu-central": { factor: 1, perTb: 1 },
  "us-east": { factor: 1.2, perTb: 1 },
  "us-west": { factor: 1.2, perTb: 1 },
  "ap-southeast": { factor: 1.35, perTb: 7.4 },
};

/** Ten decimals, as the API prints prices; gross from the rounded net, so no float artefacts show. */
function money(net: number): { net: string; gross: string } {
  const rounded = Number(net.toFixed(10));
  return { net: rounded.toFixed(10), gross: (rounded * 1.19).toFixed(10) };
}

/** Prices of a type in each location it is offered in. Hourly = monthly / 672 (Hetzner's monthly cap is 672 h). */
export function prices(t: ServerTypeInfo): PricePerTime[] {
  return t.locations.map((l) => {
    const loc = LOCATIONS.find((x) => x.name === l.location);
    const zone = loc?.network_zone ?? "eu-central";
    const pricing = ZONE_PRICING[zone] ?? { factor: 1, perTb: 1 };
    const monthly = t.monthlyNet * pricing.factor;
    return {
      location: l.location,
      price_hourly: money(monthly / 672),
      price_monthly: money(monthly),
      included_traffic: INCLUDED_TRAFFIC[zone] ?? 2 ** 40,
      price_per_tb_traffic: money(pricing.perTb),
    };
  });
}

export interface SystemImageInfo {
  id: number;
  name: string;
  description: string;
  os_flavor: "ubuntu" | "debian" | "fedora" | "rocky" | "alma" | "centos" | "opensuse";
  os_version: string;
  architecture: Architecture;
  created: string;
  /** RFC 3339 time of deprecation, or null. */
  deprecated: string | null;
}

function images(
  name: string,
  description: string,
  flavor: SystemImageInfo["os_flavor"],
  version: string,
  x86Id: number,
  armId: number,
  created: string,
  deprecated: string | null = null,
): SystemImageInfo[] {
  return [
    {
      id: x86Id,
      name,
      description,
      os_flavor: flavor,
      os_version: version,
      architecture: "x86",
      created,
      deprecated,
    },
    {
      id: armId,
      name,
      description,
      os_flavor: flavor,
      os_version: version,
      architecture: "arm",
      created,
      deprecated,
    },
  ];
}

/** System images; every one is 5 GB of disk (`disk_size`) and has no `image_size`, as on Hetzner. */
export const SYSTEM_IMAGES: readonly SystemImageInfo[] = [
  ...images(
    "ubuntu-20.04",
    "Ubuntu 20.04",
    "ubuntu",
    "20.04",
    15512617,
    45557056,
    "2020-04-23T00:00:00Z",
    "2025-05-31T00:00:00Z",
  ),
  ...images("ubuntu-22.04", "Ubuntu 22.04", "ubuntu", "22.04", 67794396, 103908130, "2022-04-21T00:00:00Z"),
  ...images("ubuntu-24.04", "Ubuntu 24.04", "ubuntu", "24.04", 161547269, 161547270, "2024-04-25T00:00:00Z"),
  ...images("debian-12", "Debian 12", "debian", "12", 114690387, 114690389, "2023-06-13T00:00:00Z"),
  ...images("debian-13", "Debian 13", "debian", "13", 264030301, 264030302, "2025-08-12T00:00:00Z"),
  ...images("fedora-42", "Fedora 42", "fedora", "42", 230340331, 230340332, "2025-04-17T00:00:00Z"),
  ...images("rocky-9", "Rocky Linux 9", "rocky", "9", 76766499, 103908128, "2022-07-14T00:00:00Z"),
  ...images("rocky-10", "Rocky Linux 10", "rocky", "10", 243221650, 243221651, "2025-06-12T00:00:00Z"),
  ...images("alma-9", "Alma Linux 9", "alma", "9", 76766530, 103908129, "2022-07-14T00:00:00Z"),
];

/** disk_size of system images in GB. */
export const SYSTEM_IMAGE_DISK_GB = 5;

export function locationByName(name: string): LocationInfo | undefined {
  return LOCATIONS.find((l) => l.name === name);
}

/** Looks a location up by name or numeric id (the API accepts both). */
export function findLocation(idOrName: string | number): LocationInfo | undefined {
  const s = String(idOrName);
  return LOCATIONS.find((l) => l.name === s || String(l.id) === s);
}

export function findServerType(idOrName: string | number): ServerTypeInfo | undefined {
  const s = String(idOrName);
  return SERVER_TYPES.find((t) => t.name === s || String(t.id) === s);
}
