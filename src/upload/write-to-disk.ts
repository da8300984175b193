/**
 * `hetznix write-to-disk`: write an image onto an existing server's disk through the rescue system, verify it, then
 * leave the server powered off (or power it on with `start`). Only the temporary SSH key is created and removed.
 */
import { isNotFound } from "../hcloud/errors.js";
import type { Server } from "../hcloud/schema.js";
import { defaultCodec, type CodecSpec } from "./compress.js";
import { convertQcow2ToRaw } from "./convert.js";
import { CleanupIncompleteError, UploadError, abortError, type Leftover } from "./errors.js";
import type { StepTiming } from "./events.js";
import { DISK_GB_MIN_BYTES } from "./plan.js";
import {
  RunContext,
  bootRescue,
  createTemporaryKey,
  shutdownAndWait,
  writeAndVerify,
  type CommonOptions,
  type ImageInput,
  type WritePlan,
} from "./steps.js";
import {
  openFileSource,
  openUrlSource,
  type Compression,
  type ImageFormat,
  type ImageSource,
} from "./source.js";
import { tool } from "./tools.js";

export interface WriteToDiskOptions extends CommonOptions {
  /** Server id or name. */
  server: number | string;
  image: ImageInput;
  /** Power the server on afterwards (default: leave it off). */
  start?: boolean;
}

export interface WriteToDiskResult {
  serverId: number;
  serverName: string;
  sha256: string;
  rawSize: number;
  source: string;
  sourceCompression: Compression;
  sourceFormat: ImageFormat;
  transfer: string;
  bytesRead: number;
  bytesSent: number;
  /** Whether the server was powered on afterwards. */
  started: boolean;
  runId: string;
  steps: StepTiming[];
  durationMs: number;
  leftovers: Leftover[];
}

async function findServer(ctx: RunContext, ref: number | string): Promise<Server> {
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
  const ctx = new RunContext(opts, sourceName);
  const t0 = Date.now();
  let outcome: WriteToDiskResult | undefined;
  let failure: unknown;
  try {
    const srcOpts = {
      ...(opts.compression ? { compression: opts.compression } : {}),
      ...(opts.format ? { format: opts.format } : {}),
      ...(opts.tools ? { tools: opts.tools } : {}),
      signal: ctx.signal,
    };
    const input = opts.image;
    const [src, server] = await Promise.all([
      ctx.steps.run<ImageSource>("inspect", () =>
        "path" in input ? openFileSource(input.path, srcOpts) : openUrlSource(input.url, srcOpts),
      ),
      ctx.steps.run(
        "server",
        () => findServer(ctx, opts.server),
        (s) => `${s.name} (${s.id}), ${s.status}`,
      ),
    ]);
    const diskBytes = server.primary_disk_size * DISK_GB_MIN_BYTES;
    const knownRaw = src.rawSize;
    if (knownRaw !== undefined && knownRaw > diskBytes) {
      throw new UploadError(
        "image_too_large",
        `The image is ${knownRaw} bytes, larger than server ${server.name}'s ${server.primary_disk_size} GB disk`,
      );
    }
    const codec: CodecSpec = opts.codec ?? { codec: defaultCodec(opts.tools) };
    const wp: WritePlan = {
      compression: src.compression,
      remoteFormat: src.format,
      codec,
      ...(src.format === "qcow2" ? { virtualSize: src.qcow2VirtualSize } : {}),
    };
    if (src.kind === "url") {
      wp.url = src.url;
      if (src.contentLength !== undefined) wp.downloadBytes = src.contentLength;
      if (src.format === "qcow2" && src.contentLength !== undefined) wp.expectedBytes = src.contentLength;
      if (src.format === "raw" && src.compression === "none" && src.contentLength !== undefined)
        wp.expectedBytes = src.contentLength;
    } else {
      wp.path = src.realPath;
      const qemuImg = src.format === "qcow2" ? tool(opts.tools, "qemuImg") : undefined;
      if (src.format === "qcow2" && qemuImg) {
        const converted = await ctx.steps.run("convert", () =>
          convertQcow2ToRaw(qemuImg, src.realPath, {
            ...(opts.tmpDir ? { dir: opts.tmpDir } : {}),
            signal: ctx.signal,
          }),
        );
        ctx.registry.add({
          kind: "file",
          name: converted.rawPath,
          removeHint: `rm ${converted.rawPath}`,
          remove: () => converted.remove(),
        });
        wp.path = converted.rawPath;
        wp.compression = "none";
        wp.remoteFormat = "raw";
        delete wp.virtualSize;
        wp.expectedBytes = src.qcow2VirtualSize;
      } else if (src.format === "qcow2") {
        wp.expectedBytes = src.fileSize;
      } else if (src.compression === "none") {
        wp.expectedBytes = src.fileSize;
      }
    }
    const key = await createTemporaryKey(ctx, "write");
    const running = server.status !== "off";
    const booted = await bootRescue(ctx, server.id, key.id, running);
    const written = await writeAndVerify(ctx, booted, key.pair, wp, undefined);
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
    outcome = {
      serverId: server.id,
      serverName: server.name,
      sha256: written.sha256,
      rawSize: written.rawSize,
      source: sourceName,
      sourceCompression: src.compression,
      sourceFormat: src.format,
      transfer: written.transfer,
      bytesRead: ctx.bytesRead,
      bytesSent: ctx.bytesSent,
      started: opts.start === true,
      runId: ctx.runId,
      steps: ctx.steps.timings,
      durationMs: 0,
      leftovers: [],
    };
    return outcome;
  } catch (err) {
    failure = opts.signal?.aborted ? abortError(opts.signal, "write-to-disk") : err;
    throw failure;
  } finally {
    if (!ctx.inner.signal.aborted) ctx.inner.abort(new Error("run finished"));
    const report = await ctx.cleanup();
    if (outcome) {
      outcome.leftovers = report.leftovers;
      outcome.durationMs = Date.now() - t0;
      outcome.steps = ctx.steps.timings;
    } else if (report.leftovers.length > 0) {
      // eslint-disable-next-line no-unsafe-finally
      throw new CleanupIncompleteError(failure, report.leftovers);
    }
  }
}
