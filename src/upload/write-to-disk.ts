/**
 * `hetznix write-to-disk`: write an image onto an existing server's disk through the rescue system, verify it, then
 * leave the server powered off (or power it on with `start`). Only the temporary SSH key is created and removed.
 */
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
} from "./steps.js";

const OPERATION = "write-to-disk";

export interface WriteToDiskOptions extends CommonOptions {
  /** Server id or name. */
  server: number | string;
  image: ImageInput;
  /** Power the server on afterwards (default: leave it off). */
  start?: boolean;
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
    const key = await createTemporaryKey(ctx, "write");
    const running = server.status !== "off";
    const booted = await bootRescue(ctx, server.id, key.id, running);
    const written = await writeAndVerify(ctx, booted, key.pair, wp, undefined);
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
      ...ctx.outcome(),
    };
  });
}
