/**
 * Choosing and checking the base of an incremental upload, and the image series that `--base auto` matches on.
 *
 * A series is a label, `hetznix/series`, on every snapshot hetznix makes. It defaults to the image file's name
 * without its directory, a leading Nix store hash (`<32 chars>-`), its extensions (.raw .img .qcow2 .zst .gz .xz .bz2)
 * and every `-`-separated part that starts with a digit (versions, dates: `nixos-image-25.05.1234-x86_64-linux.raw`
 * gives `nixos-image-x86_64-linux`), cut to Hetzner's label rules; `--series` overrides it. `--base auto` picks the
 * newest available snapshot with labels `hetznix/image=true`, `hetznix/series=<series>` and `hetznix/size`, of the
 * upload's architecture.
 */
import { basename } from "node:path";
import { isNotFound } from "../../hcloud/errors.js";
import type { Architecture, Image } from "../../hcloud/schema.js";
import { UploadError } from "../errors.js";
import { MANAGED_LABEL, SIZE_LABEL } from "../identity.js";
import type { UploadContext } from "../context.js";

export const SERIES_LABEL = "hetznix/series";

/** The default series of an image file or URL path (see the module comment). */
export function defaultSeries(fileName: string): string {
  let name = basename(fileName);
  name = name.replace(/^[0-9a-df-np-sv-z]{32}-/, "");
  for (let i = 0; i < 4; i++) name = name.replace(/\.(raw|img|qcow2|zst|zstd|gz|xz|bz2)$/i, "");
  const parts = name.split("-").filter((p) => p !== "" && !/^[0-9]/.test(p));
  return seriesLabelValue(parts.join("-")) || "image";
}

/** A label value from free text: allowed characters only, at most 63, alphanumeric at both ends. */
export function seriesLabelValue(text: string): string {
  return text
    .replace(/[^A-Za-z0-9._-]+/g, "-")
    .slice(0, 63)
    .replace(/^[^A-Za-z0-9]+/, "")
    .replace(/[^A-Za-z0-9]+$/, "");
}

/** Check a series given by the user (--series): it must be a label value already. */
export function checkSeries(series: string): string {
  if (series === "" || seriesLabelValue(series) !== series) {
    throw new UploadError(
      "invalid_label",
      `--series ${JSON.stringify(series)} is not a valid label value (at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)`,
    );
  }
  return series;
}

/** A snapshot usable as the base. */
export interface Base {
  image: Image;
  /** Bytes of image content on its disk (its hetznix/size label). */
  bytes: number;
}

export type BaseChoice = { base: Base } | { fallback: string };

const FIX =
  "name a snapshot hetznix uploaded (hetznix/image=true) with --base, use --base auto, or omit --base";

function invalid(message: string): UploadError {
  return new UploadError("invalid_base", `${message}; ${FIX}`);
}

/** Check an explicitly named base. */
function checkNamed(image: Image, named: string, architecture: Architecture): Base {
  const what = `The base ${JSON.stringify(named)} (image ${image.id})`;
  if (image.type !== "snapshot" && image.type !== "backup")
    throw invalid(`${what} is a ${image.type} image, not a snapshot`);
  if (image.architecture !== architecture)
    throw invalid(`${what} is an ${image.architecture} snapshot; this upload is for ${architecture}`);
  if (image.labels[MANAGED_LABEL] !== "true")
    throw invalid(`${what} was not made by hetznix (it has no label ${MANAGED_LABEL}=true)`);
  if (image.status !== "available") throw invalid(`${what} is ${image.status}, not available`);
  const bytes = Number(image.labels[SIZE_LABEL]);
  if (!Number.isSafeInteger(bytes) || bytes <= 0)
    throw invalid(`${what} has no valid ${SIZE_LABEL} label (how many bytes of it are image)`);
  return { image, bytes };
}

function newest(images: Image[]): Image | undefined {
  return [...images].sort((a, b) => Date.parse(b.created) - Date.parse(a.created) || b.id - a.id)[0];
}

/**
 * The base for `spec`: "auto" (newest of the series, or a fallback when there is none), a snapshot id, a label
 * selector (contains `=` or starts with `!`: the newest match), or a snapshot's description. Throws invalid_base for
 * a named base that cannot be used.
 */
export async function chooseBase(
  ctx: UploadContext,
  spec: string,
  architecture: Architecture,
  series: string,
): Promise<BaseChoice> {
  const signal = ctx.signal;
  if (spec === "auto") {
    const found = await ctx.client.images.all({
      type: "snapshot",
      architecture,
      labelSelector: `${MANAGED_LABEL}=true,${SERIES_LABEL}=${series},${SIZE_LABEL}`,
      signal,
    });
    const image = newest(found.filter((i) => i.status === "available" && i.architecture === architecture));
    if (!image) return { fallback: `no ${architecture} snapshot of series ${series} to start from` };
    const bytes = Number(image.labels[SIZE_LABEL]);
    if (!Number.isSafeInteger(bytes) || bytes <= 0)
      return { fallback: `snapshot ${image.id} has no valid ${SIZE_LABEL} label` };
    return { base: { image, bytes } };
  }
  if (/^[0-9]+$/.test(spec)) {
    try {
      return {
        base: checkNamed(await ctx.client.images.getById(Number(spec), { signal }), spec, architecture),
      };
    } catch (err) {
      if (isNotFound(err)) throw invalid(`There is no image ${spec}`);
      throw err;
    }
  }
  if (spec.includes("=") || spec.startsWith("!")) {
    const found = await ctx.client.images.all({ type: "snapshot", labelSelector: spec, signal });
    const image = newest(found);
    if (!image) throw invalid(`No snapshot matches the label selector ${JSON.stringify(spec)}`);
    return { base: checkNamed(image, spec, architecture) };
  }
  const snapshots = await ctx.client.images.all({ type: "snapshot", signal });
  const image = newest(snapshots.filter((i) => i.description === spec));
  if (image) return { base: checkNamed(image, spec, architecture) };
  const system = await ctx.client.images.all({ name: spec, signal });
  if (system[0]) return { base: checkNamed(system[0], spec, architecture) };
  throw invalid(`No snapshot has the id, description or labels ${JSON.stringify(spec)}`);
}

/** The base still exists (it may be deleted while the run goes on): throws invalid_base when it does not. */
export async function checkBaseExists(ctx: UploadContext, base: Base): Promise<void> {
  try {
    await ctx.client.images.getById(base.image.id, { signal: ctx.signal });
  } catch (err) {
    if (isNotFound(err))
      throw new UploadError(
        "invalid_base",
        `The base snapshot ${base.image.id} was deleted during the upload; nothing was snapshotted. Run again (with --base auto or another base)`,
      );
    throw err;
  }
}
