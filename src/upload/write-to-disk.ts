/**
 * `hetznix write-to-disk`: write an image onto an existing server's disk through the rescue system, verify it, then
 * leave the server powered off (or power it on with `start`). Only the temporary SSH key is created and removed.
 */
import { stat } from "node:fs/promises";
import { isNotFound } from "../hcloud/errors.js";
import { runWithCleanup } from "../run/context.js";
import type { Server } from "../hcloud/schema.js";
import { UploadError } from "./errors.js";
import { DISK_GB_MIN_BYTES } from "./plan.js";
import type { Compression, ImageFormat } from "./source.js";
import {
  UploadContext,
  bootRescue,
  convertLocally,
  createTemporaryKey,
  inspectSource,
  noteOddSize,
  planWrite,
  shutdownAndWait,
  writeAndVerify,
  type CommonOptions,
  type ImageInput,
  type LocalImage,
  type UploadOutcome,
  type WriteOutcome,
} from "./steps.js";
import { startBlockHashes } from "./incremental/start.js";
import { writeIncremental, type IncrementalReport, type IncrementalTarget } from "./incremental/write.js";
import { DELTA_BLOCK } from "./incremental/plan.js";

const OPERATION = "write-to-disk";

export interface WriteToDiskOptions extends CommonOptions {
  /** Server id or name. */
  server: number | string;
  image: ImageInput;
  /** Power the server on afterwards (default: leave it off). */
  start?: boolean;
  /**
   * Incremental: the server's current disk is the base. Its first twice the image's size (or all of it) is hashed in
   * the rescue system, and only blocks it does not hold are sent (see incremental/); else a full write, saying why.
   */
  base?: boolean;
}

export interface WriteToDiskResult extends UploadOutcome {
  serverId: number;
  serverName: string;
  sha256: string;
  rawSize: number;
  source: string;
  sourceCompression: Compression;
  sourceFormat: ImageFormat;
  transfer: string;
  /** Whether the server was powered on afterwards. */
  started: boolean;
  /** With `base`: what the incremental write did, or null when it fell back to a full write (see `fallback`). */
  incremental?: IncrementalReport | null;
  fallback?: string;
}

async function findServer(ctx: UploadContext, ref: number | string): Promise<Server> {
  const text = String(ref);
  let server: Server | undefined;
  try {
    server = await ctx.client.servers.get(ref, { signal: ctx.signal });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (!server)
    throw new UploadError("unknown_server", `No server ${/^\d+$/.test(text) ? "with id" : "named"} ${text}`);
  return server;
}

export async function writeToDisk(opts: WriteToDiskOptions): Promise<WriteToDiskResult> {
  const sourceName = "path" in opts.image ? opts.image.path : opts.image.url;
  const ctx = new UploadContext(OPERATION, opts, sourceName);
  return runWithCleanup(ctx, async () => {
    const [src, server] = await Promise.all([
      inspectSource(ctx, opts.image),
      ctx.steps.run(
        "server",
        () => findServer(ctx, opts.server),
        (s) => `${s.name} (${s.id}), ${s.status}`,
      ),
    ]);
    noteOddSize(ctx, src.rawSize);
    const diskBytes = server.primary_disk_size * DISK_GB_MIN_BYTES;
    const knownRaw = src.rawSize;
    if (knownRaw !== undefined && knownRaw > diskBytes) {
      throw new UploadError(
        "image_too_large",
        `The image is ${knownRaw} bytes, larger than server ${server.name}'s ${server.primary_disk_size} GB disk`,
      );
    }
    // A qcow2 file is converted here when qemu-img is installed, else in the rescue system.
    const converted =
      src.kind === "file" && src.format === "qcow2" ? await convertLocally(ctx, src) : undefined;
    const local: LocalImage = converted
      ? { path: converted, compression: "none", remoteFormat: "raw" }
      : {
          ...(src.kind === "file" ? { path: src.realPath } : {}),
          compression: src.compression,
          remoteFormat: src.format,
        };
    if (local.remoteFormat === "raw" && src.rawSize !== undefined) local.rawSize = src.rawSize;
    const wp = planWrite(ctx, src, local);
    let fallback: string | undefined;
    const file =
      opts.base && local.path !== undefined && local.compression === "none" && local.remoteFormat === "raw"
        ? { path: local.path, rawSize: (await stat(local.path)).size }
        : undefined;
    if (opts.base && !file) {
      fallback = "an incremental write needs the image as an uncompressed raw (or qcow2) file here";
      ctx.steps.note(`not incremental: ${fallback}; writing the whole image`);
    }
    const hashes = file ? startBlockHashes(ctx, file) : undefined;
    const key = await createTemporaryKey(ctx, "write");
    const running = server.status !== "off";
    const booted = await bootRescue(ctx, server.id, key.id, running);
    let incremental: IncrementalReport | undefined;
    let wrote: WriteOutcome | undefined;
    if (file && hashes) {
      const target: IncrementalTarget = {
        id: server.id,
        name: `disk of server ${server.name}`,
        bytes: (disk) => Math.min(disk, Math.ceil((2 * file.rawSize) / DELTA_BLOCK) * DELTA_BLOCK),
        clearTo: 0,
        discardRest: true,
      };
      const r = await writeIncremental(ctx, booted, key.pair, { ...wp, path: file.path }, target, hashes);
      if ("fallback" in r) {
        fallback = r.fallback;
        ctx.steps.note(`not incremental: ${fallback}; writing the whole image`);
      } else incremental = r.report;
      if ("written" in r) wrote = r.written;
    }
    const written = wrote ?? (await writeAndVerify(ctx, booted, key.pair, wp, undefined));
    noteOddSize(ctx, written.rawSize);
    await shutdownAndWait(ctx, server.id);
    if (opts.start) {
      await ctx.steps.run(
        "poweron",
        async () => {
          const action = await ctx.client.servers.poweron(server.id, { signal: ctx.signal });
          await ctx.wait([action]);
        },
        "booting the new disk",
      );
    }
    return {
      serverId: server.id,
      serverName: server.name,
      sha256: written.sha256,
      rawSize: written.rawSize,
      source: sourceName,
      sourceCompression: src.compression,
      sourceFormat: src.format,
      transfer: written.transfer,
      started: opts.start === true,
      ...(opts.base ? { incremental: incremental ?? null, ...(fallback ? { fallback } : {}) } : {}),
      ...ctx.outcome(),
    };
  });
}
