/**
 * A small manifest listing images to upload in parallel, in YAML or JSON:
 *
 *   images:
 *     - path: result-x86/nixos.img     # or url: https://...
 *       architecture: x86              # or server_type: cax11
 *       description: NixOS 25.11 x86
 *       labels: { role: web }
 *
 * Relative paths are resolved against the manifest's directory.
 */
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import type { Architecture, Labels } from "../hcloud/schema.js";
import { UploadError } from "./errors.js";
import { COMPRESSIONS, FORMATS, type Compression, type ImageFormat } from "./source.js";

export interface ManifestEntry {
  path?: string;
  url?: string;
  architecture?: Architecture;
  serverType?: string;
  location?: string;
  description?: string;
  labels?: Labels;
  compression?: Compression | "auto";
  format?: ImageFormat | "auto";
}

const KEYS = new Set([
  "path",
  "url",
  "architecture",
  "server_type",
  "location",
  "description",
  "labels",
  "compression",
  "format",
]);

function str(v: unknown, where: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string" || v === "")
    throw new UploadError("invalid_argument", `${where} must be a non-empty string`);
  return v;
}

/** Parse manifest text (YAML, which includes JSON). Pure apart from `baseDir` resolution. */
export function parseManifest(text: string, baseDir: string, where = "manifest"): ManifestEntry[] {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new UploadError("invalid_argument", `${where} is not valid YAML/JSON: ${(err as Error).message}`);
  }
  const list = Array.isArray(doc) ? doc : (doc as { images?: unknown } | null)?.images;
  if (!Array.isArray(list) || list.length === 0) {
    throw new UploadError("invalid_argument", `${where} must list images (a list, or "images:" with a list)`);
  }
  if (list.length > 32)
    throw new UploadError("invalid_argument", `${where} lists ${list.length} images; at most 32`);
  return list.map((raw, i) => {
    const at = `${where}: image ${i + 1}`;
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw new UploadError("invalid_argument", `${at} must be a mapping`);
    }
    const o = raw as Record<string, unknown>;
    for (const k of Object.keys(o))
      if (!KEYS.has(k)) throw new UploadError("invalid_argument", `${at}: unknown key ${k}`);
    const path = str(o["path"], `${at}: path`);
    const url = str(o["url"], `${at}: url`);
    if ((path === undefined) === (url === undefined)) {
      throw new UploadError("invalid_argument", `${at}: give exactly one of path and url`);
    }
    const architecture = str(o["architecture"], `${at}: architecture`);
    if (architecture !== undefined && architecture !== "x86" && architecture !== "arm") {
      throw new UploadError(
        "invalid_argument",
        `${at}: unknown architecture ${architecture}; use x86 or arm`,
      );
    }
    const serverType = str(o["server_type"], `${at}: server_type`);
    if (architecture === undefined && serverType === undefined) {
      throw new UploadError("invalid_argument", `${at}: give architecture or server_type`);
    }
    const compression = str(o["compression"], `${at}: compression`);
    if (
      compression !== undefined &&
      compression !== "auto" &&
      !COMPRESSIONS.includes(compression as Compression)
    ) {
      throw new UploadError("invalid_argument", `${at}: unknown compression ${compression}`);
    }
    const format = str(o["format"], `${at}: format`);
    if (format !== undefined && format !== "auto" && !FORMATS.includes(format as ImageFormat)) {
      throw new UploadError("invalid_argument", `${at}: unknown format ${format}`);
    }
    let labels: Labels | undefined;
    if (o["labels"] !== undefined) {
      const l = o["labels"];
      if (typeof l !== "object" || l === null || Array.isArray(l)) {
        throw new UploadError("invalid_argument", `${at}: labels must be a mapping`);
      }
      labels = Object.fromEntries(Object.entries(l).map(([k, v]) => [k, v === null ? "" : String(v)]));
    }
    const entry: ManifestEntry = {};
    if (path !== undefined) entry.path = resolve(baseDir, path);
    if (url !== undefined) entry.url = url;
    if (architecture !== undefined) entry.architecture = architecture as Architecture;
    if (serverType !== undefined) entry.serverType = serverType;
    const location = str(o["location"], `${at}: location`);
    if (location !== undefined) entry.location = location;
    const description = str(o["description"], `${at}: description`);
    if (description !== undefined) entry.description = description;
    if (labels) entry.labels = labels;
    if (compression !== undefined) entry.compression = compression as Compression | "auto";
    if (format !== undefined) entry.format = format as ImageFormat | "auto";
    return entry;
  });
}

export async function readManifest(path: string): Promise<ManifestEntry[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new UploadError(
      "source_unreadable",
      `Manifest ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
  return parseManifest(text, dirname(resolve(path)), path);
}
