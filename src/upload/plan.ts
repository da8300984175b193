/**
 * Planning the temporary server: which server type in which location, chosen from the live catalogue (never
 * hard-coded). Pure functions.
 */
import type { Architecture, Location, ServerType } from "../hcloud/schema.js";
import { UploadError } from "./errors.js";

/** Bytes per "GB" of a server disk, counted low (Hetzner's GB is at least this), so the check never overfills. */
export const DISK_GB_MIN_BYTES = 1_000_000_000;

/** Locations tried after the preferred one, when prices tie (the EU first: cheapest types live there). */
export const DEFAULT_LOCATION_ORDER: readonly string[] = ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"];

/** Upper bound on create attempts (each on a different server type/location pair). */
export const MAX_CANDIDATES = 12;

export interface PlanInput {
  /** Required unless serverType is given. */
  architecture?: Architecture;
  /** A server type name (or id as digits); its architecture wins (and must agree with `architecture` if both). */
  serverType?: string;
  /** Preferred location: tried first. */
  location?: string;
  /** Raw image size in bytes, when known (the disk must hold it). */
  imageBytes?: number;
  serverTypes: readonly ServerType[];
  locations: readonly Location[];
}

export interface Candidate {
  serverType: string;
  location: string;
  architecture: Architecture;
  diskGb: number;
  /** Gross hourly price in the location (Infinity when the catalogue gives none). */
  priceHourly: number;
}

export interface Plan {
  architecture: Architecture;
  /** Pairs to try in order; on 412 resource_unavailable try the next. Never empty. */
  candidates: Candidate[];
}

function price(type: ServerType, location: string): number {
  const p = type.prices.find((x) => x.location === location);
  const v = p ? Number.parseFloat(p.price_hourly.gross) : Number.NaN;
  return Number.isFinite(v) ? v : Number.POSITIVE_INFINITY;
}

function orderable(type: ServerType, location: string, explicit: boolean): boolean {
  const entry = type.locations.find((l) => l.name === location);
  if (!entry) return false;
  if (entry.available === false) return false;
  if (explicit) return true;
  if (entry.available === undefined && entry.deprecation) return false;
  if (type.deprecated === true) return false;
  return true;
}

function formatGb(bytes: number): string {
  return `${(bytes / 1e9).toFixed(bytes < 10e9 ? 2 : 1)} GB`;
}

/** Choose the server types and locations to try, cheapest first. Throws UploadError for impossible requests. */
export function planServer(input: PlanInput): Plan {
  const known = new Set(input.locations.map((l) => l.name));
  if (input.location !== undefined && !known.has(input.location)) {
    throw new UploadError(
      "invalid_argument",
      `Unknown location ${input.location}; known: ${[...known].sort().join(", ")}`,
    );
  }
  let types: ServerType[];
  let architecture: Architecture;
  const explicit = input.serverType !== undefined;
  if (input.serverType !== undefined) {
    const wanted = input.serverType.toLowerCase();
    const type = input.serverTypes.find((t) => t.name.toLowerCase() === wanted || String(t.id) === wanted);
    if (!type) {
      const names = input.serverTypes
        .filter((t) => !input.architecture || t.architecture === input.architecture)
        .map((t) => t.name)
        .sort();
      throw new UploadError(
        "unknown_server_type",
        `Unknown server type ${input.serverType}; the catalogue has: ${names.join(", ")}`,
      );
    }
    if (input.architecture && input.architecture !== type.architecture) {
      throw new UploadError(
        "invalid_argument",
        `Server type ${type.name} is ${type.architecture}, but --architecture ${input.architecture} was given`,
      );
    }
    architecture = type.architecture;
    types = [type];
  } else {
    if (!input.architecture) {
      throw new UploadError(
        "invalid_argument",
        "Give the image's architecture (x86 or arm) or a server type",
      );
    }
    architecture = input.architecture;
    types = input.serverTypes.filter((t) => t.architecture === architecture);
  }
  const size = input.imageBytes ?? 0;
  const pairs: Candidate[] = [];
  let largestDisk = 0;
  for (const type of types) {
    for (const loc of type.locations) {
      if (!known.has(loc.name) || !orderable(type, loc.name, explicit)) continue;
      largestDisk = Math.max(largestDisk, type.disk);
      if (type.disk * DISK_GB_MIN_BYTES < size) continue;
      pairs.push({
        serverType: type.name,
        location: loc.name,
        architecture,
        diskGb: type.disk,
        priceHourly: price(type, loc.name),
      });
    }
  }
  if (pairs.length === 0) {
    if (largestDisk > 0) {
      throw new UploadError(
        "image_too_large",
        `The image is ${formatGb(size)}, larger than the largest ${architecture} disk available (${largestDisk} GB${explicit ? ` on ${types[0]?.name}` : ""})`,
      );
    }
    throw new UploadError(
      "no_capacity",
      explicit
        ? `Server type ${types[0]?.name} is not orderable in any location${input.location ? "" : ""}`
        : `No ${architecture} server type is orderable in any location`,
    );
  }
  const rank = (loc: string) => {
    if (loc === input.location) return -1;
    const i = DEFAULT_LOCATION_ORDER.indexOf(loc);
    return i < 0 ? DEFAULT_LOCATION_ORDER.length : i;
  };
  pairs.sort(
    (a, b) =>
      Number(b.location === input.location) - Number(a.location === input.location) ||
      a.priceHourly - b.priceHourly ||
      rank(a.location) - rank(b.location) ||
      a.diskGb - b.diskGb ||
      a.serverType.localeCompare(b.serverType) ||
      a.location.localeCompare(b.location),
  );
  return { architecture, candidates: pairs.slice(0, MAX_CANDIDATES) };
}
