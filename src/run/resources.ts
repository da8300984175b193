/**
 * The registry of a run's temporary resources. Each resource is registered the moment it exists, and removed by
 * `cleanup()`, newest first, with its own AbortSignal (so a second Ctrl-C can stop cleanup and say what is left).
 */
import type { HCloudClient } from "../hcloud/client.js";
import { isNotFound } from "../hcloud/errors.js";
import { pause } from "../util/time.js";
import { abortError, type Leftover } from "./errors.js";
import { RUN_LABEL } from "./labels.js";

export interface Registered {
  kind: Leftover["kind"];
  id?: number;
  name: string;
  removeHint: string;
  remove: (signal: AbortSignal) => Promise<void>;
}

export interface CleanupReport {
  removed: { kind: Leftover["kind"]; id?: number; name: string }[];
  leftovers: Leftover[];
}

/** How long cleanup waits for a server's delete action (it is deleted regardless; this is for reporting). */
const DELETE_WAIT_MS = 300_000;

export class ResourceRegistry {
  private readonly items: Registered[] = [];

  /** Register; returns a function that unregisters (when the resource became permanent or was removed). */
  add(item: Registered): () => void {
    this.items.push(item);
    return () => {
      const i = this.items.indexOf(item);
      if (i >= 0) this.items.splice(i, 1);
    };
  }

  get size(): number {
    return this.items.length;
  }

  /** Remove everything, newest first; each removal is tried up to 3 times. Never throws. */
  async cleanup(signal: AbortSignal): Promise<CleanupReport> {
    const report: CleanupReport = { removed: [], leftovers: [] };
    while (this.items.length > 0) {
      const item = this.items.pop() as Registered;
      const entry = { kind: item.kind, ...(item.id !== undefined ? { id: item.id } : {}), name: item.name };
      if (signal.aborted) {
        report.leftovers.push({ ...entry, removeHint: item.removeHint, reason: "cleanup was interrupted" });
        continue;
      }
      let lastError: unknown;
      let ok = false;
      for (let attempt = 1; attempt <= 3 && !signal.aborted; attempt++) {
        try {
          await item.remove(signal);
          ok = true;
          break;
        } catch (err) {
          if (isNotFound(err)) {
            ok = true;
            break;
          }
          lastError = err;
          if (attempt < 3) await pause(500 * attempt, signal);
        }
      }
      if (ok) report.removed.push(entry);
      else {
        const reason = signal.aborted
          ? "cleanup was interrupted"
          : `removing it failed: ${lastError instanceof Error ? lastError.message : String(lastError)}`;
        report.leftovers.push({ ...entry, removeHint: item.removeHint, reason });
      }
    }
    return report;
  }
}

/** Registration for a temporary server: delete it and wait (bounded) for the deletion to finish. */
export function serverResource(client: HCloudClient, id: number, name: string): Registered {
  return {
    kind: "server",
    id,
    name,
    removeHint: `hcloud server delete ${id}`,
    remove: async (signal) => {
      const action = await client.servers.delete(id, { signal });
      await client.waitForActions([action], { signal, timeoutMs: DELETE_WAIT_MS });
    },
  };
}

export function sshKeyResource(client: HCloudClient, id: number, name: string): Registered {
  return {
    kind: "ssh_key",
    id,
    name,
    removeHint: `hcloud ssh-key delete ${id}`,
    remove: async (signal) => {
      await client.sshKeys.delete(id, { signal });
    },
  };
}

/** How cleanup waits for a snapshot still being created before deleting it. */
export interface ImageWait {
  /** Delay between status polls. */
  pollIntervalMs: number;
  /** Give up waiting after this long (counted from the first removal attempt). */
  timeoutMs: number;
  /** Called once when cleanup starts waiting (e.g. a note saying so, and that a second Ctrl-C stops it). */
  onWait?: (message: string) => void;
}

/**
 * Registration for a snapshot this run made: deleted, but only once it is no longer `creating` (the API refuses to
 * delete it before, with 423 locked). The wait is bounded and ends with the cleanup signal (a second Ctrl-C), which
 * leaves the snapshot as a leftover with the command that removes it.
 */
export function imageResource(client: HCloudClient, id: number, name: string, wait: ImageWait): Registered {
  let deadline: number | undefined;
  let told = false;
  return {
    kind: "image",
    id,
    name,
    removeHint: `hcloud image delete ${id}`,
    remove: async (signal) => {
      deadline ??= Date.now() + wait.timeoutMs;
      const polls = Math.ceil(wait.timeoutMs / Math.max(1, wait.pollIntervalMs)) + 1;
      for (let poll = 0; poll <= polls; poll++) {
        const image = await client.images.getById(id, { signal });
        if (image.status !== "creating") break;
        if (!told) {
          told = true;
          wait.onWait?.(
            `snapshot ${id} is still being created; waiting for it to finish before deleting it (Ctrl-C again to stop waiting and leave it)`,
          );
        }
        if (Date.now() >= deadline)
          throw new Error(
            `snapshot ${id} was still being created after ${Math.round(wait.timeoutMs / 1000)} s`,
          );
        await pause(wait.pollIntervalMs, signal);
        if (signal.aborted) throw abortError(signal, "cleanup");
      }
      await client.images.delete(id, { signal });
    },
  };
}

/** What a run knows it made (the straggler search skips these): temporary servers and keys, kept snapshots. */
export interface KnownResources {
  servers: Set<number>;
  sshKeys: Set<number>;
  images: Set<number>;
}

/**
 * Safety net after the registry ran: find servers, keys and snapshots still carrying this run's label (e.g. created
 * by a request whose answer was lost, like a create_image whose answer never came) and register them for removal.
 * Registered last, they are removed first: a snapshot before the server it is made from.
 */
export async function registerStragglers(
  client: HCloudClient,
  registry: ResourceRegistry,
  runId: string,
  known: KnownResources,
  signal: AbortSignal,
  imageWait: ImageWait,
): Promise<void> {
  const labelSelector = `${RUN_LABEL}=${runId}`;
  const [servers, keys, images] = await Promise.all([
    client.servers.all({ labelSelector, signal }),
    client.sshKeys.all({ labelSelector, signal }),
    client.images.all({ type: "snapshot", labelSelector, signal }),
  ]);
  for (const k of keys) if (!known.sshKeys.has(k.id)) registry.add(sshKeyResource(client, k.id, k.name));
  for (const s of servers) if (!known.servers.has(s.id)) registry.add(serverResource(client, s.id, s.name));
  for (const i of images)
    if (!known.images.has(i.id)) registry.add(imageResource(client, i.id, `snapshot ${i.id}`, imageWait));
}
