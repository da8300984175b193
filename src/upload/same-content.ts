/**
 * Snapshots with the same content: the one place that decides which existing snapshot an upload answers with. The
 * lookups before and after writing and the settling of a race between concurrent runs all go through
 * `findSameContent` (what counts as the same content) and `lookupSnapshot` (which one, once it is final).
 *
 * Concurrent runs of the same content converge on one snapshot by one deterministic rule: among the snapshots of
 * this content and architecture that are available or being created, the one with the LOWEST id wins.
 * - A run that finds the winner still being created, or made by a run that is still going, waits for it (bounded by
 *   the snapshot timeout) instead of making its own.
 * - A run that made a snapshot in a race and finds an older one (a lower id) answers with the older one and leaves
 *   its own to cleanup, which deletes it (the later one goes).
 * - The winner is answered with only once it is final: available, and its run (label hetznix/run) has no temporary
 *   server or key with a fresh heartbeat left, i.e. that run has finished (or was killed) and will not delete it on a
 *   failure or Ctrl-C of its own. If the winner disappears meanwhile, the rule is applied again to what is left, so
 *   no finished work is lost; if waiting times out, the run keeps (or makes) its own.
 */
import { isNotFound } from "../hcloud/errors.js";
import type { Architecture, Image } from "../hcloud/schema.js";
import { DEFAULT_HEARTBEAT_MS } from "../run/context.js";
import { RUN_LABEL, lastSignOfLife } from "../run/labels.js";
import { pause } from "../util/time.js";
import { SIZE_LABEL, identitySelector, type ContentIdentity } from "./identity.js";
import type { UploadContext } from "./steps.js";

/** Snapshots of this content and architecture, available or being created, lowest id first. */
export async function findSameContent(
  ctx: UploadContext,
  architecture: Architecture,
  identity: ContentIdentity,
): Promise<Image[]> {
  const labelSelector = identitySelector(identity);
  if (!labelSelector) return [];
  const images = await ctx.client.images.all({
    type: "snapshot",
    architecture,
    labelSelector,
    signal: ctx.signal,
  });
  return images
    .filter((i) => i.architecture === architecture && (i.status === "available" || i.status === "creating"))
    .sort((a, b) => a.id - b.id);
}

/**
 * Waiting for another run's snapshot polls this many times less often than the run polls its own actions (a
 * snapshot takes minutes; the API budget is 3600 requests an hour).
 */
const OTHERS_POLL_FACTOR = 5;

/**
 * Is the run `runId` still going: does it still have a temporary server or SSH key whose heartbeat is fresh? A run
 * killed outright leaves them behind, but its heartbeat goes stale: after two heartbeat intervals (and a minute) it
 * counts as ended, and its snapshot as final.
 */
async function runStillGoing(ctx: UploadContext, runId: string): Promise<boolean> {
  const labelSelector = `${RUN_LABEL}=${runId}`;
  const [servers, keys] = await Promise.all([
    ctx.client.servers.all({ labelSelector, signal: ctx.signal }),
    ctx.client.sshKeys.all({ labelSelector, signal: ctx.signal }),
  ]);
  const staleAfterS = (2 * (ctx.opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS)) / 1000 + 60;
  const nowS = Date.now() / 1000;
  return [...servers, ...keys].some((r) => {
    const seen = lastSignOfLife(r.labels);
    return seen !== undefined && nowS - seen < staleAfterS;
  });
}

type Finality = { image: Image } | "gone" | "timeout";

/** Waits until `image` is final (see the module comment), until `deadline`; ends with the run's signal. */
async function untilFinal(ctx: UploadContext, image: Image, deadline: number): Promise<Finality> {
  const interval = ctx.waits.pollIntervalMs * OTHERS_POLL_FACTOR;
  const maxPolls = Math.ceil(Math.max(0, deadline - Date.now()) / Math.max(1, interval)) + 2;
  let current = image;
  let told = false;
  for (let poll = 0; poll < maxPolls; poll++) {
    const run = current.labels[RUN_LABEL];
    const others = run !== undefined && run !== ctx.runId;
    if (current.status === "available") {
      if (!others || !(await runStillGoing(ctx, run))) return { image: current };
    } else if (current.status !== "creating") {
      return "gone";
    }
    if (!told && others) {
      told = true;
      ctx.steps.note(
        current.status === "creating"
          ? `snapshot ${current.id} of the same content is being created by run ${run}; waiting for it instead of making another`
          : `snapshot ${current.id} of the same content was made by run ${run}, which is still finishing; waiting for it to end`,
      );
    }
    if (Date.now() >= deadline) return "timeout";
    await pause(interval, ctx.signal);
    if (ctx.signal.aborted) throw ctx.aborted();
    try {
      current = await ctx.client.images.getById(image.id, { signal: ctx.signal });
    } catch (err) {
      if (isNotFound(err)) return "gone";
      throw err;
    }
  }
  return "timeout";
}

/**
 * The snapshot this content resolves to by the rule of the module comment, once it is final; undefined when there is
 * none, or when waiting for one took longer than the snapshot timeout (the run then keeps or makes its own).
 */
export async function lookupSnapshot(
  ctx: UploadContext,
  architecture: Architecture,
  identity: ContentIdentity,
): Promise<Image | undefined> {
  const deadline = Date.now() + ctx.waits.snapshotTimeoutMs;
  // Each round ends with a winner, or with the winner gone (its run removed it); a few rounds are plenty.
  for (let round = 0; round < 20; round++) {
    const winner = (await findSameContent(ctx, architecture, identity))[0];
    if (!winner) return undefined;
    const final = await untilFinal(ctx, winner, deadline);
    if (final === "timeout") return undefined;
    if (final !== "gone") return final.image;
  }
  return undefined;
}

/**
 * How many snapshots of this architecture carry hetznix's size label with this raw size. None means the content
 * cannot have a snapshot yet, so hashing can wait until streaming (the lookup after writing still runs).
 */
export async function countSameSize(
  ctx: UploadContext,
  architecture: Architecture,
  rawSize: number,
): Promise<number> {
  const images = await ctx.client.images.all({
    type: "snapshot",
    architecture,
    labelSelector: `${SIZE_LABEL}=${rawSize}`,
    signal: ctx.signal,
  });
  return images.filter((i) => i.architecture === architecture).length;
}
