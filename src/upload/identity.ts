/**
 * Labels: the content identity of snapshots (the run labels of temporary resources are in ../run/labels.ts). A sha256 hex digest (64
 * chars) does not fit a label value (63), so it is stored as two halves: `hetznix/sha256-a` (hex chars 0..31) and
 * `hetznix/sha256-b` (hex chars 32..63). Pure functions.
 */
import type { Labels } from "../hcloud/schema.js";
import { validateLabels } from "../hcloud/labels.js";
import { LABEL_PREFIX } from "../run/labels.js";
import { UploadError } from "./errors.js";

export {
  HEARTBEAT_LABEL,
  LABEL_PREFIX,
  RUN_LABEL,
  STARTED_LABEL,
  TEMPORARY_LABEL,
  newRunId,
  temporaryLabels,
  temporaryName,
} from "../run/labels.js";
export const SHA256_A_LABEL = "hetznix/sha256-a";
export const SHA256_B_LABEL = "hetznix/sha256-b";
export const SIZE_LABEL = "hetznix/size";
export const STORE_LABEL = "hetznix/nix-store";
export const MANAGED_LABEL = "hetznix/image";

export interface ContentIdentity {
  /** sha256 hex of the raw image. */
  sha256?: string;
  /** Raw size in bytes. */
  rawSize?: number;
  /** Nix store identity (see storeIdentity). */
  store?: string;
}

/** The labels describing a snapshot's content. */
export function contentLabels(id: ContentIdentity): Labels {
  const labels: Labels = { [MANAGED_LABEL]: "true" };
  if (id.sha256) {
    if (!/^[0-9a-f]{64}$/.test(id.sha256)) throw new Error(`not a sha256 hex digest: ${id.sha256}`);
    labels[SHA256_A_LABEL] = id.sha256.slice(0, 32);
    labels[SHA256_B_LABEL] = id.sha256.slice(32);
  }
  if (id.rawSize !== undefined) labels[SIZE_LABEL] = String(id.rawSize);
  if (id.store) labels[STORE_LABEL] = id.store;
  return labels;
}

/** The sha256 a snapshot's labels name, or undefined. */
export function sha256FromLabels(labels: Labels): string | undefined {
  const a = labels[SHA256_A_LABEL];
  const b = labels[SHA256_B_LABEL];
  if (!a || !b || !/^[0-9a-f]{32}$/.test(a) || !/^[0-9a-f]{32}$/.test(b)) return undefined;
  return a + b;
}

/** A label selector finding snapshots with this content: by store identity when given, else by sha256. */
export function identitySelector(id: ContentIdentity): string | undefined {
  if (id.sha256) {
    return `${SHA256_A_LABEL}=${id.sha256.slice(0, 32)},${SHA256_B_LABEL}=${id.sha256.slice(32)}`;
  }
  if (id.store) return `${STORE_LABEL}=${id.store}`;
  return undefined;
}

/** Parse `k=v,k2=v2` (a key without `=` gets the empty value). Throws invalid_label on malformed input. */
export function parseLabels(text: string | undefined): Labels {
  const labels: Labels = {};
  if (text === undefined || text.trim() === "") return labels;
  for (const part of text.split(",")) {
    const item = part.trim();
    if (item === "") continue;
    const eq = item.indexOf("=");
    const key = eq < 0 ? item : item.slice(0, eq).trim();
    const value = eq < 0 ? "" : item.slice(eq + 1).trim();
    if (key === "") throw new UploadError("invalid_label", `Label "${item}" has no key`);
    labels[key] = value;
  }
  return labels;
}

/** Throw invalid_label naming every problem (user labels must not use the hetznix/ prefix either). */
export function checkUserLabels(labels: Labels): void {
  const problems = validateLabels(labels).map((p) => `${p.key}: ${p.part} ${p.message}`);
  for (const key of Object.keys(labels)) {
    if (key.startsWith(`${LABEL_PREFIX}/`))
      problems.push(`${key}: the ${LABEL_PREFIX}/ prefix is reserved for hetznix`);
  }
  if (problems.length > 0) {
    throw new UploadError(
      "invalid_label",
      `Invalid labels (Hetzner label rules):\n  ${problems.join("\n  ")}`,
    );
  }
}
