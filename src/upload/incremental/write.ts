/**
 * The data phase of an incremental upload, on a temporary server created from the base snapshot and booted into
 * rescue (nothing is discarded: the disk holds the base):
 *
 *   base-hash  the rescue system hashes the base's 4 KiB blocks (hashes.ts) while this machine hashes the image's
 *   delta      the block plan (plan.ts); a plan that would send as much as a full write falls back to one
 *   copy       one SSH command: the copy list first, run in place by perl (script.ts) ...
 *   send       ... then the extent stream in disk order (D new blocks, K blocks in place), gaps zeroed, the rest of
 *              the base after the image zeroed, everything read back behind the writer
 *   verify     the disk's sha256 over the image's size equals the image's
 */
import type { Server } from "../../hcloud/schema.js";
import type { SshConnection, SshKeyPair } from "../../ssh/index.js";
import { UploadError, isUploadError } from "../errors.js";
import { EXIT_BAD_STREAM, EXIT_SIZE_MISMATCH, WRITTEN_MARK, extentWriteScript } from "../rescue.js";
import { startLocalStream, type LocalStream } from "../stream.js";
import type { UploadContext } from "../context.js";
import { checkServerExists, connectRescue } from "../server-steps.js";
import { ConnectionLostError } from "../../run/remote.js";
import type { WriteOutcome, WritePlan } from "../writers.js";
import type { BlockIndex } from "./block-index.js";
import { DeltaFramer } from "./framer.js";
import { HashCollector, baseHashScript, probeScript, type ImageHashes } from "./hashes.js";
import { DELTA_BLOCK, planDelta, type DeltaPlan } from "./plan.js";
import { COPIED_MARK } from "./script.js";

/** What an incremental upload did (the JSON outcome's `incremental`). */
export interface IncrementalReport {
  base: { id: number; name: string };
  blockBytes: number;
  blocks: { kept: number; copied: number; sent: number; zero: number };
  copyRuns: number;
  /** Copy runs taken out of copy cycles, and the blocks of them staged through scratch space (not sent). */
  cyclesBroken: number;
  staged: number;
  /** Raw bytes the plan sends as data (new blocks and a partial last block). */
  bytesPlanned: number;
  /** Bytes that went over SSH for the data phase (compressed stream, copy list and frames). */
  bytesSent: number;
  /** Bytes of base block hashes received from the rescue system (gzip'ed). */
  bytesReceived: number;
  /** Where the base's block hashes came from: the local block index of its content, or hashing in the rescue system. */
  baseHashes: "index" | "rescue";
}

export type IncrementalWrite =
  | { written: WriteOutcome; report: IncrementalReport }
  /** Nothing was written to the disk: a full write follows. */
  | { fallback: string };

/** What the server's disk holds before the write, and what to do with the rest of the disk after the image. */
export interface IncrementalTarget {
  /** The base as the outcome names it: the snapshot, or the server whose disk is the base. */
  id: number;
  name: string;
  /** Bytes of the disk to hash and match blocks from, given the disk's size. */
  bytes(diskBytes: number): number;
  /** After the image: zero the disk up to this many bytes (a snapshot must hold no stale data). */
  clearTo: number;
  /** After the image: discard the rest of the disk (write-to-disk, as its full write does). */
  discardRest?: boolean;
  /** Throws when the base went away (checked just before the disk is changed). */
  stillThere?: () => Promise<void>;
  /** The sha256 of the base's content when known (its labels): its block index may be kept here (block-index.ts). */
  sha256?: string;
}

/** Raw bytes a plan sends as data. */
export function plannedBytes(plan: DeltaPlan, rawSize: number): number {
  return plan.counts.sent * DELTA_BLOCK + (rawSize - plan.blocks * DELTA_BLOCK);
}

/**
 * The incremental data phase (see the module comment). A dropped SSH connection is not retried as such (the copies
 * may have changed the disk already): it ends in a fallback, and the caller writes the whole image on a new one.
 */
export async function writeIncremental(
  ctx: UploadContext,
  server: Server,
  pair: SshKeyPair,
  wp: WritePlan & { path: string },
  base: IncrementalTarget,
  localHashes: Promise<ImageHashes>,
  index?: BlockIndex,
): Promise<IncrementalWrite> {
  let conn: SshConnection | undefined;
  try {
    const open = await connectRescue(ctx, server, pair);
    conn = open;
    const probe = await ctx.runScript(open, probeScript(), "probing the rescue system", {
      signal: ctx.signal,
    });
    if (probe["perl"] !== "yes")
      return { fallback: "the rescue system has no perl with Digest::MD5 to hash and copy blocks" };
    const diskBytes = Number(probe["disk-bytes"]);
    const baseBytes = base.bytes(diskBytes);
    const baseBlocks = Math.floor(baseBytes / DELTA_BLOCK);
    if (!(diskBytes >= baseBytes))
      return {
        fallback: `the server's disk (${probe["disk-bytes"]} bytes) is smaller than the base (${baseBytes})`,
      };
    const indexed = index && base.sha256 ? await index.load(base.sha256, baseBlocks) : undefined;
    if (indexed)
      ctx.steps.skip("base-hash", `${baseBlocks} block hashes from the local block index of the base`);
    const baseHashes = indexed
      ? { hashes: indexed, received: 0 }
      : await ctx.steps.run(
          "base-hash",
          () => hashBase(ctx, open, baseBlocks),
          () => `${baseBlocks} blocks of 4 KiB (${baseBytes} bytes) hashed with perl in the rescue system`,
        );
    const local = await localHashes;
    // Room past the image and the base, for copies taken out of cycles.
    const scratchStart = Math.ceil(Math.max(local.rawSize, baseBytes, base.clearTo) / DELTA_BLOCK);
    const diskBlocks = Math.floor(diskBytes / DELTA_BLOCK);
    const scratch = { start: scratchStart, count: Math.max(0, diskBlocks - scratchStart) };
    const plan = await ctx.steps.run(
      "delta",
      async () => planDelta(local.blocks, baseHashes.hashes, scratch),
      (p) =>
        `kept ${p.counts.kept}, copied ${p.counts.copied} in ${p.copies.length} run(s), new ${p.counts.sent}, zero ${p.counts.zero} blocks; ${plannedBytes(p, local.rawSize)} of ${local.dataBytes} data bytes to send${p.cyclesBroken ? ` (${p.cyclesBroken} run(s) taken out of copy cycles, ${p.staged} blocks staged in scratch space)` : ""}`,
    );
    const planned = plannedBytes(plan, local.rawSize);
    if (local.dataBytes > 0 && planned >= local.dataBytes) {
      return {
        fallback: `the base shares too little with the image: the plan would send ${planned} bytes, a full write ${local.dataBytes}`,
      };
    }
    // The last moment the base matters as a snapshot: a base deleted by now is reported, though the disk holds it.
    await base.stillThere?.();
    let written: Awaited<ReturnType<typeof copyAndSend>>;
    try {
      written = await copyAndSend(ctx, open, wp, base, plan, local);
    } catch (err) {
      // Planned from an index that does not match the disk: the whole image goes again (the full write discards the
      // disk first), and the index is not used again.
      if (!indexed || !base.sha256 || !isUploadError(err, "verification_failed") || ctx.signal.aborted)
        throw err;
      await index?.drop(base.sha256);
      return {
        fallback: `the write planned from the local block index of the base did not verify (the index does not match the base's disk; dropped)`,
      };
    }
    const report: IncrementalReport = {
      base: { id: base.id, name: base.name },
      blockBytes: DELTA_BLOCK,
      blocks: { ...plan.counts },
      copyRuns: plan.copies.length,
      cyclesBroken: plan.cyclesBroken,
      staged: plan.staged,
      bytesPlanned: planned,
      bytesSent: written.sent,
      bytesReceived: baseHashes.received,
      baseHashes: indexed ? "index" : "rescue",
    };
    return { written: written.outcome, report };
  } catch (err) {
    if (!(err instanceof ConnectionLostError) || ctx.signal.aborted) throw err;
    await checkServerExists(ctx, server);
    return { fallback: `${err.message}; the incremental write cannot be resumed` };
  } finally {
    await conn?.close().catch(() => undefined);
  }
}

async function hashBase(
  ctx: UploadContext,
  conn: SshConnection,
  blocks: number,
): Promise<{ hashes: Buffer; received: number }> {
  let received = 0;
  const total = blocks * DELTA_BLOCK;
  let last = 0;
  const collector = new HashCollector((n) => {
    const now = Date.now();
    if (now - last < 200) return;
    last = now;
    ctx.steps.data("base-hash", n * DELTA_BLOCK, 0, total);
  });
  try {
    await ctx.runScript(conn, baseHashScript(blocks), "hashing the base's blocks", {
      signal: ctx.signal,
      onStdout: (chunk) => {
        received += chunk.length;
        collector.write(chunk);
      },
    });
    return { hashes: await collector.finish(blocks), received };
  } catch (err) {
    collector.destroy();
    throw err;
  }
}

async function copyAndSend(
  ctx: UploadContext,
  conn: SshConnection,
  wp: WritePlan & { path: string },
  base: IncrementalTarget,
  plan: DeltaPlan,
  local: ImageHashes,
): Promise<{ outcome: WriteOutcome; sent: number }> {
  const stream: LocalStream = startLocalStream({
    path: wp.path,
    fileCompression: "none",
    codec: wp.codec,
    hash: false,
    framer: new DeltaFramer(plan, local.rawSize),
    ...(ctx.opts.tools ? { tools: ctx.opts.tools } : {}),
  });
  const script = extentWriteScript({
    compression: stream.wireCompression,
    expectedBytes: local.rawSize,
    incremental: {
      clearTo: base.clearTo,
      ...(base.discardRest ? { discardRest: true } : {}),
      ...(plan.scratch
        ? { scratch: { offset: plan.scratch.start * DELTA_BLOCK, length: plan.scratch.count * DELTA_BLOCK } }
        : {}),
    },
  });
  const sentBefore = ctx.bytesSent;
  const readBefore = ctx.bytesRead;
  let sent = 0;
  let copied: () => void = () => undefined;
  let writtenMark: () => void = () => undefined;
  const copyDone = new Promise<void>((resolve) => (copied = resolve));
  const sendDone = new Promise<void>((resolve) => (writtenMark = resolve));
  let stdout = "";
  let lastEmit = 0;
  const remote = ctx.runScript(conn, script, "writing the image onto the base", {
    stdin: stream.output,
    signal: ctx.signal,
    exitCodes: { [EXIT_SIZE_MISMATCH]: "corrupt_source", [EXIT_BAD_STREAM]: "remote_command_failed" },
    onProgress: (p) => {
      sent = p.stdinBytes;
      ctx.bytesSent = sentBefore + sent;
      ctx.bytesRead = readBefore + stream.bytesRead();
      const now = Date.now();
      if (now - lastEmit < 200) return;
      lastEmit = now;
      ctx.steps.data("send", ctx.bytesRead - readBefore, sent, local.rawSize);
    },
    onStdout: (chunk) => {
      if (stdout.length < 4096) stdout += chunk.toString("latin1");
      if (stdout.includes(COPIED_MARK)) copied();
      if (stdout.includes(WRITTEN_MARK)) writtenMark();
    },
  });
  remote.catch(() => undefined);
  const settle = async (until: Promise<void>) => {
    try {
      await Promise.race([until, remote]);
    } catch (err) {
      stream.destroy();
      throw err;
    }
  };
  try {
    await ctx.steps.run(
      "copy",
      () => settle(copyDone),
      `${plan.counts.copied} blocks in ${plan.copies.length} run(s), in place`,
    );
    const outcome = await ctx.steps.run(
      "send",
      async (): Promise<WriteOutcome> => {
        await settle(sendDone);
        await stream.finish();
        ctx.bytesRead = readBefore + stream.bytesRead();
        ctx.steps.data("send", local.rawSize, sent, local.rawSize);
        const stats = stream.extentStats();
        return {
          sha256: local.sha256,
          rawSize: local.rawSize,
          transfer: `${stream.description}, incremental`,
          dataBytes: stats?.dataBytes ?? 0,
        };
      },
      (r) =>
        `${r.dataBytes ?? 0} bytes of new blocks in ${stream.extentStats()?.extents ?? 0} run(s), ${sent} bytes sent`,
    );
    await ctx.steps.run(
      "verify",
      async () => {
        const r = await remote;
        ctx.bytesSent = sentBefore + sent;
        if (Number(r["disk-bytes"]) !== local.rawSize || r["disk-sha256"] !== local.sha256) {
          throw new UploadError(
            "verification_failed",
            `After the incremental write the disk's first ${r["disk-bytes"] ?? "?"} bytes hash to ${r["disk-sha256"] ?? "(nothing)"}, the image (${local.rawSize} bytes) to ${local.sha256}. A block hash collision between base and image can cause this; nothing was snapshotted: run again without --base`,
          );
        }
      },
      `sha256 ${local.sha256.slice(0, 16)}... matches (read back behind the writer)`,
    );
    return { outcome, sent };
  } finally {
    stream.destroy();
    await remote.catch(() => undefined);
  }
}
