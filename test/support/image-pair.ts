/**
 * A small realistic image pair for tests of the incremental upload (issue 16): two ext4 images (old.img, new.img)
 * made by `mke2fs -d` from two store-like trees, the second dropping 5% of the first's store paths and adding 10%
 * new ones, so most of the new image's blocks exist in the old one at another offset. The same generator as the
 * benchmark's (bench/pair.ts), at a size that builds in about a second. Needs mke2fs (e2fsprogs).
 */
import { blockStats, buildPair, type BlockStats, type ImagePair } from "../../bench/pair.js";

export type { BlockStats, ImagePair };
export { blockStats };

export interface SmallPairOptions {
  /** Size of each image in MiB (default 32; at least 8). */
  sizeMiB?: number;
  /** The generator's seed (default 2: 0.2% of the new image's blocks at the same offset, 85% elsewhere). */
  seed?: number;
}

/**
 * Build the pair into `dir` (created if missing; the caller removes it): `pair.old.path` and `pair.new.path` are
 * raw disk images of the same size, `pair.new` the "next version" of `pair.old`.
 */
export function makeImagePair(dir: string, opts: SmallPairOptions = {}): Promise<ImagePair> {
  return buildPair({ sizeBytes: (opts.sizeMiB ?? 32) * 1024 * 1024, seed: opts.seed ?? 2 }, dir);
}
