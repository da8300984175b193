/**
 * The upload, as numbered small steps. Every temporary resource is registered for cleanup the moment it exists;
 * cleanup runs in `finally` (success, error or abort) with its own AbortSignal.
 *
 *  1. inspect     open the file or URL, sniff compression and format, check labels
 *  2. prepare     in parallel: convert qcow2 / hash the raw image locally, and read the catalogue
 *  3. lookup      a snapshot with the same content and architecture exists: print it, stop (unless --force)
 *  4. plan        cheapest orderable server type whose disk holds the image, locations to try
 *  5. ssh-key     in-memory ed25519 key, registered with labels naming the run
 *  6. server      create (start_after_create=false), next location/type on 412 resource_unavailable
 *  7. rescue      enable rescue with the key            8. poweron
 *  9. connect     SSH as root, bounded retries          10. discard (blkdiscard)
 * 11. write       stream (compressed) or let the rescue system download; hash on both sides
 * 12. verify      sha256 of what is on /dev/sda equals the source's
 * 13. shutdown    ACPI shutdown, wait until off (hard power-off if it does not go off in time)
 * 14. snapshot    create_image with description and labels (content hash, size, user labels)
 * 15. cleanup     delete the server and the key
 *
 * With a base (--base, incremental/): after 3, step "base" chooses and checks it and the image's block hashes start;
 * the server is created from the base snapshot, and 10-12 become base-hash, delta, copy, send, verify
 * (incremental/write.ts), or a full write with the reason when the plan says so.
 */
import { basename, dirname } from "node:path";
import type { Architecture, Image, Labels } from "../hcloud/schema.js";
import { UploadError } from "./errors.js";
import { checkUserLabels, contentLabels, identitySelector, type ContentIdentity } from "./identity.js";
import { HashCache, sameStamp } from "./hash-cache.js";
import { planServer, type Plan } from "./plan.js";
import { runWithCleanup } from "../run/context.js";
import { RUN_LABEL } from "../run/labels.js";
import { countSameSize, lookupSnapshot } from "./same-content.js";
import { prepareFile, remember, takeStamp } from "./prepare-file.js";
import type { Compression, ImageFormat, ImageSource } from "./source.js";
import {
  UploadContext,
  bootRescue,
  createTemporaryKey,
  createTemporaryServer,
  fetchCatalogue,
  inspectSource,
  noteOddSize,
  planWrite,
  shutdownAndWait,
  startStream,
  writeAndVerify,
  type Catalogue,
  type CommonOptions,
  type ImageInput,
  type LocalImage,
  type UploadOutcome,
} from "./steps.js";
import type { LocalStream } from "./stream.js";
import { SERIES_LABEL, checkSeries, defaultSeries } from "./incremental/base.js";
import { startIncremental, type IncrementalStart } from "./incremental/start.js";
import { writeIncremental, type IncrementalReport } from "./incremental/write.js";
import { blockIndexBeside, keepBlockIndex, type BlockIndex } from "./incremental/block-index.js";
import { isNotFound } from "../hcloud/errors.js";

export type {
  CommonOptions,
  ImageInput,
  SshSettings,
  WaitSettings,
  WriteOutcome,
  WritePlan,
} from "./steps.js";
// The shared steps live in steps.ts; re-exported for callers that measure one step alone (bench/).
export { UploadContext, writeAndVerify } from "./steps.js";

const OPERATION = "upload";

export interface UploadOptions extends CommonOptions {
  image: ImageInput;
  architecture?: Architecture;
  serverType?: string;
  location?: string;
  description?: string;
  labels?: Labels;
  /** Upload even when a snapshot of the same content exists. */
  force?: boolean;
  /** Where the Nix store is (default /nix/store). */
  storeDir?: string;
  /** Use the store path as identity for files in the Nix store instead of hashing first (default true). */
  useStoreIdentity?: boolean;
  /**
   * Where the sha256 of image files is remembered by (device, inode, size, mtime, ctime) (default: a HashCache in
   * `$XDG_CACHE_HOME/hetznix`); false to neither read nor write it.
   */
  hashCache?: HashCache | false;
  /**
   * Where incremental uploads keep the block hashes of the images they hashed, by content (default: beside the hash
   * cache, see incremental/block-index.ts; none when hashCache is false); false to neither read nor write it.
   */
  blockIndex?: BlockIndex | false;
  /**
   * Incremental upload: write onto a server created from this snapshot and send only the blocks it does not hold.
   * "auto" (the newest snapshot of the series and architecture, else a full write), a snapshot id, a label selector,
   * or a snapshot's description. See incremental/base.ts.
   */
  base?: string;
  /** The image series (label hetznix/series; default from the file name, see incremental/base.ts). */
  series?: string;
}

export interface UploadResult extends UploadOutcome {
  imageId: number;
  /** True when an existing snapshot with the same content was found and nothing was created. */
  reused: boolean;
  description: string;
  architecture: Architecture;
  labels: Labels;
  /** sha256 of the raw image, when known. */
  sha256?: string;
  rawSize?: number;
  source: string;
  sourceCompression: Compression;
  sourceFormat: ImageFormat;
  /** How the data went over the wire, e.g. "zstd -3 -T0", "sent as is (xz)", "downloaded by the rescue system". */
  transfer?: string;
  /** Bytes read by the separate hash pass before anything was created (0 when hashed while streaming). */
  bytesHashed: number;
  serverType?: string;
  location?: string;
  /** With a base: what the incremental upload did, or null when it fell back to a full write (see `fallback`). */
  incremental?: IncrementalReport | null;
  /** Why an upload with a base wrote the whole image instead. */
  fallback?: string;
}

// ---- Upload ----

function describeImage(src: ImageSource): string {
  return src.kind === "file" ? basename(src.path) : new URL(src.url).pathname.split("/").pop() || src.url;
}

/** Upload one image as a snapshot; see the module comment for the steps. */
export async function uploadImage(opts: UploadOptions): Promise<UploadResult> {
  const sourceName = "path" in opts.image ? opts.image.path : opts.image.url;
  const ctx = new UploadContext(OPERATION, opts, sourceName);
  const userLabels = opts.labels ?? {};
  let early: LocalStream | undefined;
  const run = async (): Promise<UploadResult> => {
    // 1. inspect
    checkUserLabels(userLabels);
    if (opts.architecture !== undefined && opts.architecture !== "x86" && opts.architecture !== "arm") {
      throw new UploadError(
        "invalid_argument",
        `Unknown architecture ${String(opts.architecture)}; use x86 or arm`,
      );
    }
    const src = await inspectSource(ctx, opts.image, opts.storeDir);
    const series = opts.series !== undefined ? checkSeries(opts.series) : defaultSeries(describeImage(src));
    noteOddSize(ctx, src.rawSize);
    const storeId = src.kind === "file" && opts.useStoreIdentity !== false ? src.storeIdentity : undefined;
    const cache =
      src.kind === "file" && opts.hashCache !== false ? (opts.hashCache ?? new HashCache()) : undefined;
    const blockIndex =
      opts.blockIndex === false
        ? undefined
        : (opts.blockIndex ?? (cache ? blockIndexBeside(dirname(cache.file)) : undefined));
    // The stamp is taken before anything reads the file: a digest computed later is remembered under it only if the
    // file still has it then.
    const stamped = src.kind === "file" && cache ? await takeStamp(src) : undefined;
    const remembered =
      src.kind === "file" && cache && storeId === undefined ? await cache.lookup(src.realPath) : undefined;
    const known = {
      ...(remembered && stamped && sameStamp(remembered.stamp, stamped.stamp) ? { remembered } : {}),
      ...(cache ? { cache } : {}),
      ...(stamped ? { stamped } : {}),
    };
    // With a base, the image is hashed with its blocks while the server is created from the base (one read of the
    // file instead of two, and none before the server exists); a duplicate is then found by the lookup after writing.
    let hashFirst =
      src.kind === "file" &&
      !opts.force &&
      storeId === undefined &&
      !known.remembered &&
      opts.base === undefined;

    const makePlan = (catalogue: Catalogue, imageBytes: number | undefined) =>
      ctx.steps.run(
        "plan",
        async () =>
          planServer({
            ...(opts.architecture ? { architecture: opts.architecture } : {}),
            ...(opts.serverType ? { serverType: opts.serverType } : {}),
            ...(opts.location ? { location: opts.location } : {}),
            ...(imageBytes !== undefined ? { imageBytes } : {}),
            serverTypes: catalogue.serverTypes,
            locations: catalogue.locations,
          }),
        (p) =>
          `${p.architecture}; first choice ${p.candidates[0]?.serverType} in ${p.candidates[0]?.location}`,
      );
    const readCatalogue = () =>
      ctx.steps.run(
        "catalogue",
        () => fetchCatalogue(ctx),
        (c) => `${c.serverTypes.length} server types, ${c.locations.length} locations`,
      );
    const upfrontSize = src.rawSize;
    let prepared: LocalImage;
    let plan: Plan;
    let catalogue: Catalogue;
    /** True when no snapshot of this raw size exists: the content cannot be a duplicate. */
    let sizeRuledOut = false;

    if (src.kind === "file" && hashFirst && upfrontSize !== undefined) {
      // 2a. The raw size is known (uncompressed raw, qcow2): plan first (two cheap API calls; an impossible plan
      // stops here), then ask whether any snapshot of this size exists for the architecture. If none does, the
      // content cannot be a duplicate: skip the separate hash pass and hash while streaming instead, so reading the
      // image overlaps with creating and booting the server.
      catalogue = await readCatalogue();
      plan = await makePlan(catalogue, upfrontSize);
      const architecture = plan.architecture;
      const sameSize = await ctx.steps.run(
        "lookup",
        () => countSameSize(ctx, architecture, upfrontSize),
        (n) =>
          n === 0
            ? `no ${architecture} snapshot of ${upfrontSize} bytes: not a duplicate; hashing while streaming`
            : `${n} ${architecture} snapshot(s) of ${upfrontSize} bytes: hashing first`,
      );
      if (sameSize === 0) {
        hashFirst = false;
        sizeRuledOut = true;
      }
      prepared = await prepareFile(ctx, src, opts, hashFirst, known);
    } else {
      // 2b. Local work (hashing compressed data) in parallel with reading the catalogue.
      const planned = readCatalogue().then(async (catalogue) => ({
        catalogue,
        plan: upfrontSize !== undefined ? await makePlan(catalogue, upfrontSize) : undefined,
      }));
      const [prep, early0] = await Promise.all([
        src.kind === "file"
          ? prepareFile(ctx, src, opts, hashFirst, known)
          : Promise.resolve<LocalImage>({
              compression: src.compression,
              remoteFormat: src.format,
              ...(src.rawSize !== undefined ? { rawSize: src.rawSize } : {}),
            }),
        planned.catch((err: unknown) => {
          ctx.inner.abort(err);
          throw err;
        }),
      ]).catch((err: unknown) => {
        ctx.inner.abort(err);
        throw err;
      });
      prepared = prep;
      catalogue = early0.catalogue;
      const rawSize = prep.rawSize ?? src.rawSize ?? (src.kind === "file" ? src.fileSize : src.contentLength);
      plan = early0.plan ?? (await makePlan(early0.catalogue, rawSize));
    }
    const architecture = plan.architecture;

    // 3. lookup
    const preIdentity: ContentIdentity = {
      ...(prepared.sha256 ? { sha256: prepared.sha256 } : {}),
      ...(storeId ? { store: storeId } : {}),
    };
    if (sizeRuledOut) {
      // Done above.
    } else if (!opts.force && identitySelector(preIdentity)) {
      const existing = await ctx.steps.run(
        "lookup",
        () => lookupSnapshot(ctx, architecture, preIdentity),
        (i) => (i ? `found snapshot ${i.id}` : "no snapshot with this content yet"),
      );
      if (existing) {
        return reusedResult(ctx, existing, src, prepared);
      }
    } else {
      ctx.steps.skip("lookup", opts.force ? "--force" : "content hash known only after writing");
    }

    const writePlan = planWrite(ctx, src, prepared);
    const path = writePlan.path;
    // With a base: choose it, plan a disk for both, start the image's block hashes.
    let incr: IncrementalStart | undefined;
    let fallback: string | undefined;
    if (opts.base !== undefined) {
      const rawSize = prepared.rawSize ?? src.rawSize;
      const started = await startIncremental(ctx, {
        spec: opts.base,
        architecture,
        series,
        file:
          path !== undefined && prepared.compression === "none" && prepared.remoteFormat === "raw" && rawSize
            ? { path, rawSize }
            : {
                missing: "an incremental upload needs the image as an uncompressed raw (or qcow2) file here",
              },
        replan: (bytes) => makePlan(catalogue, bytes),
      });
      if ("fallback" in started) {
        fallback = started.fallback;
        ctx.steps.note(`not incremental: ${fallback}; writing the whole image`);
      } else incr = started;
    }
    // Start reading and compressing now, so it overlaps with the server's creation and boot.
    if (path !== undefined && !incr) early = startStream(ctx, { ...writePlan, path });

    // 5-8. key, server, rescue, power on
    const key = await createTemporaryKey(ctx, "upload");
    const { server, candidate } = await createTemporaryServer(
      ctx,
      incr?.plan ?? plan,
      key.id,
      incr?.base.image.id,
    ).catch(async (err: unknown) => {
      if (incr && isNotFound(err)) await incr.target.stillThere?.();
      throw err;
    });
    const booted = await bootRescue(ctx, server.id, key.id);

    // 9-12. connect, discard, write, verify (incremental: base-hash, delta, copy, send, verify)
    const firstStream = early;
    early = undefined;
    let incremental: IncrementalReport | undefined;
    const incrementalWrite =
      incr && path !== undefined
        ? await writeIncremental(
            ctx,
            booted,
            key.pair,
            { ...writePlan, path },
            incr.target,
            incr.hashes,
            blockIndex,
          )
        : undefined;
    if (incrementalWrite && "fallback" in incrementalWrite) {
      fallback = incrementalWrite.fallback;
      ctx.steps.note(`not incremental: ${fallback}; writing the whole image`);
    }
    const written =
      incrementalWrite && "written" in incrementalWrite
        ? incrementalWrite.written
        : await writeAndVerify(ctx, booted, key.pair, writePlan, firstStream);
    if (incrementalWrite && "report" in incrementalWrite) incremental = incrementalWrite.report;
    const baseOutcome =
      opts.base !== undefined ? { incremental: incremental ?? null, ...(fallback ? { fallback } : {}) } : {};
    noteOddSize(ctx, written.rawSize);

    if (prepared.sha256 !== undefined && written.sha256 !== prepared.sha256) {
      throw new UploadError(
        "verification_failed",
        `The disk holds an image hashing to ${written.sha256}, but the source was known to hash to ${prepared.sha256}`,
      );
    }
    if (src.kind === "file" && prepared.sha256 === undefined) {
      await remember(cache, src, stamped, { sha256: written.sha256, rawSize: written.rawSize });
    }
    if (incr && blockIndex) await keepBlockIndex(blockIndex, incr.hashes, written.sha256);
    const identity: ContentIdentity = {
      sha256: written.sha256,
      rawSize: written.rawSize,
      ...(storeId ? { store: storeId } : {}),
    };
    const writtenImage: LocalImage = { ...prepared, sha256: written.sha256, rawSize: written.rawSize };
    // Look again before snapshotting, whatever was found before writing: the hash may be known only now (URL, qcow2
    // converted remotely, a store path seen for the first time), and another run of the same content may have made
    // (or be making) its snapshot meanwhile. Such a snapshot is waited for and answered with (same-content.ts).
    const lookAgain = async (when: string) => {
      if (opts.force) return undefined;
      return ctx.steps.run(
        "lookup",
        () => lookupSnapshot(ctx, architecture, identity),
        (i) =>
          i ? `found snapshot ${i.id} ${when}; not creating another` : "no snapshot with this content yet",
      );
    };
    const found = await lookAgain("after writing");
    if (found) return reusedResult(ctx, found, src, writtenImage, written.transfer);

    // 13. shutdown
    await shutdownAndWait(ctx, server.id);
    const foundLater = await lookAgain("while shutting down");
    if (foundLater) return reusedResult(ctx, foundLater, src, writtenImage, written.transfer);

    // 14. snapshot (labelled with the run, so a cleanup finds it even when create_image's answer is lost)
    const labels: Labels = {
      ...userLabels,
      ...contentLabels(identity),
      [SERIES_LABEL]: series,
      [RUN_LABEL]: ctx.runId,
    };
    const description =
      opts.description ?? `hetznix ${describeImage(src)} sha256:${written.sha256.slice(0, 12)}`;
    const made = await ctx.steps.run(
      "snapshot",
      async () => {
        const created = await ctx.client.servers.createImage(
          server.id,
          { type: "snapshot", description, labels },
          { signal: ctx.signal },
        );
        const id = created.image.id;
        ctx.known.images.add(id);
        const unregister = ctx.registry.add(ctx.imageResource(id));
        await ctx.wait([created.action], ctx.waits.snapshotTimeoutMs);
        // A concurrent run of the same content may have made one too: the lowest id stays (same-content.ts).
        // Ours is kept only when it is that one; otherwise cleanup deletes it.
        const winner = opts.force ? undefined : await lookupSnapshot(ctx, architecture, identity);
        if (winner && winner.id !== id) {
          ctx.steps.note(
            `snapshot ${winner.id} of the same content was made by another run first; answering with it and deleting this run's ${id}`,
          );
          return { image: winner, own: false };
        }
        unregister();
        return { image: await ctx.client.images.getById(id, { signal: ctx.signal }), own: true };
      },
      (r) => (r.own ? `image ${r.image.id}` : `image ${r.image.id} (made by another run)`),
    );
    if (!made.own) return reusedResult(ctx, made.image, src, writtenImage, written.transfer);
    const image = made.image;
    return {
      imageId: image.id,
      reused: false,
      description: image.description,
      architecture,
      labels: image.labels,
      sha256: written.sha256,
      rawSize: written.rawSize,
      source: sourceName,
      sourceCompression: src.compression,
      sourceFormat: src.format,
      transfer: written.transfer,
      bytesHashed: ctx.bytesHashed,
      serverType: candidate.serverType,
      location: candidate.location,
      ...baseOutcome,
      ...ctx.outcome(),
    };
  };
  return runWithCleanup(ctx, run, () => early?.destroy());
}

function reusedResult(
  ctx: UploadContext,
  existing: Image,
  src: ImageSource,
  prepared: LocalImage,
  transfer?: string,
): UploadResult {
  return {
    imageId: existing.id,
    reused: true,
    description: existing.description,
    architecture: existing.architecture,
    labels: existing.labels,
    ...(prepared.sha256 ? { sha256: prepared.sha256 } : {}),
    ...(prepared.rawSize !== undefined ? { rawSize: prepared.rawSize } : {}),
    source: src.kind === "file" ? src.path : src.url,
    sourceCompression: src.compression,
    sourceFormat: src.format,
    ...(transfer ? { transfer } : {}),
    bytesHashed: ctx.bytesHashed,
    ...ctx.outcome(),
  };
}

/** Upload several images in parallel (each with its own run, key and server). Settles every upload. */
export async function uploadImages(list: UploadOptions[]): Promise<PromiseSettledResult<UploadResult>[]> {
  return Promise.allSettled(list.map((o) => uploadImage(o)));
}
