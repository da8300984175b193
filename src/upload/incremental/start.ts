/**
 * Before the temporary server exists: whether this upload can be incremental (step "base": the base chosen and
 * checked; the source a raw file on this machine; a server type whose disk holds both), and the image's block hashes
 * started in the background, so they are ready by the time the server has hashed the base.
 */
import type { Architecture } from "../../hcloud/schema.js";
import { isUploadError } from "../errors.js";
import { sha256FromLabels } from "../identity.js";
import { DISK_GB_MIN_BYTES, type Plan } from "../plan.js";
import type { UploadContext } from "../context.js";
import { checkBaseExists, chooseBase, type Base } from "./base.js";
import { hashImageBlocks, type ImageHashes } from "./hashes.js";
import type { IncrementalTarget } from "./write.js";

export interface IncrementalStart {
  base: Base;
  /** The base as the data phase sees it. */
  target: IncrementalTarget;
  /** The server plan for a disk holding the image and the base. */
  plan: Plan;
  /** The image's block hashes (computing in the background; awaited by the data phase). */
  hashes: Promise<ImageHashes>;
}

export interface StartInput {
  spec: string;
  architecture: Architecture;
  series: string;
  /** The raw, uncompressed image file on this machine, or why there is none. */
  file: { path: string; rawSize: number } | { missing: string };
  /** Plan a server whose disk holds `bytes`. */
  replan: (bytes: number) => Promise<Plan>;
}

export async function startIncremental(
  ctx: UploadContext,
  input: StartInput,
): Promise<IncrementalStart | { fallback: string }> {
  const choice = await ctx.steps.run(
    "base",
    () => chooseBase(ctx, input.spec, input.architecture, input.series),
    (c) =>
      "fallback" in c
        ? `none: ${c.fallback}`
        : `snapshot ${c.base.image.id} (${c.base.image.description}), ${c.base.bytes} bytes`,
  );
  if ("fallback" in choice) return choice;
  const base = choice.base;
  if ("missing" in input.file) return { fallback: input.file.missing };
  const file = input.file;
  let plan: Plan;
  try {
    plan = await input.replan(Math.max(file.rawSize, base.bytes, base.image.disk_size * DISK_GB_MIN_BYTES));
  } catch (err) {
    if (isUploadError(err, "image_too_large"))
      return { fallback: `no server type has a disk for both the image and the base (${err.message})` };
    throw err;
  }
  const target: IncrementalTarget = {
    id: base.image.id,
    name: base.image.description || `snapshot ${base.image.id}`,
    bytes: () => base.bytes,
    clearTo: base.bytes,
    stillThere: () => checkBaseExists(ctx, base),
  };
  const sha256 = sha256FromLabels(base.image.labels);
  if (sha256) target.sha256 = sha256;
  return { base, target, plan, hashes: startBlockHashes(ctx, file) };
}

/** Step "hash" in the background: the image's sha256 and block hashes (awaited by the data phase). */
export function startBlockHashes(
  ctx: UploadContext,
  file: { path: string; rawSize: number },
): Promise<ImageHashes> {
  const hashes = ctx.steps.run(
    "hash",
    () =>
      hashImageBlocks(file.path, {
        signal: ctx.signal,
        onProgress: (n) => ctx.steps.data("hash", n, 0, file.rawSize),
      }),
    (h) => `sha256 ${h.sha256.slice(0, 16)}... and ${h.blocks.length / 8} block hashes of ${h.rawSize} bytes`,
  );
  hashes.catch(() => undefined);
  return hashes;
}
