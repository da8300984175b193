/**
 * The steps on the Hetzner side shared by upload and write-to-disk, each registering every temporary resource the
 * moment it exists: the catalogue, the temporary key and server, booting the rescue system, connecting to it (while
 * watching that the server still exists), and shutting down.
 */
import { isHCloudError, isNotFound } from "../hcloud/errors.js";
import type { Architecture, Server } from "../hcloud/schema.js";
import { connect, generateKeyPair, type SshConnection, type SshKeyPair } from "../ssh/index.js";
import { throwIfAborted } from "../run/errors.js";
import { temporaryName } from "../run/labels.js";
import { serverResource, sshKeyResource } from "../run/resources.js";
import { pause } from "../util/time.js";
import { UploadError } from "./errors.js";
import type { Candidate, Plan } from "./plan.js";
import type { UploadContext, Catalogue } from "./context.js";

/** System images preferred as the (never booted) base of the temporary server. */
const BASE_IMAGE_PREFERENCE = ["debian-12", "ubuntu-24.04", "debian-13", "ubuntu-22.04"];

export async function fetchCatalogue(ctx: UploadContext): Promise<Catalogue> {
  const [serverTypes, locations] = await Promise.all([
    ctx.client.serverTypes.all({ signal: ctx.signal }),
    ctx.client.locations.all({ signal: ctx.signal }),
  ]);
  return { serverTypes, locations };
}

/** An OpenSSH ed25519 public key line whose key blob is well formed (type string + 32-byte key). */
export async function createTemporaryKey(
  ctx: UploadContext,
  kind: "upload" | "write",
): Promise<{ pair: SshKeyPair; id: number }> {
  return ctx.steps.run(
    "ssh-key",
    async () => {
      const pair = generateKeyPair(`hetznix-${ctx.runId}`);
      const name = temporaryName(ctx.runId, kind);
      ctx.createdSomething = true;
      const key = await ctx.client.sshKeys.create(
        { name, publicKey: pair.publicKey, labels: ctx.labels },
        { signal: ctx.signal },
      );
      ctx.known.sshKeys.add(key.id);
      ctx.registry.add(sshKeyResource(ctx.client, key.id, key.name));
      return { pair, id: key.id };
    },
    (r) => `key ${r.id}`,
  );
}

async function pickBaseImage(ctx: UploadContext, architecture: Architecture): Promise<string | number> {
  const images = await ctx.client.images.all({ type: "system", architecture, signal: ctx.signal });
  for (const name of BASE_IMAGE_PREFERENCE) {
    const found = images.find((i) => i.name === name && !i.deprecated);
    if (found) return found.id;
  }
  const any = images.find((i) => !i.deprecated) ?? images[0];
  if (!any)
    throw new UploadError(
      "no_capacity",
      `No ${architecture} system image to create the temporary server from`,
    );
  return any.id;
}

/**
 * Create the temporary server, trying the planned pairs in order on 412 resource_unavailable. From `image` when given
 * (an incremental upload's base snapshot), else from a system image (never booted: the rescue system is).
 */
export async function createTemporaryServer(
  ctx: UploadContext,
  plan: Plan,
  keyId: number,
  image?: number,
): Promise<{ server: Server; candidate: Candidate }> {
  return ctx.steps.run(
    "server",
    async () => {
      const baseImage = image ?? (await pickBaseImage(ctx, plan.architecture));
      const tried: string[] = [];
      for (const candidate of plan.candidates) {
        throwIfAborted(ctx.signal, ctx.operation);
        const name = temporaryName(ctx.runId, "upload");
        let created;
        try {
          ctx.createdSomething = true;
          created = await ctx.client.servers.create(
            {
              name,
              server_type: candidate.serverType,
              image: baseImage,
              location: candidate.location,
              ssh_keys: [keyId],
              start_after_create: false,
              labels: ctx.labels,
              public_net: { enable_ipv4: true, enable_ipv6: false },
            },
            { signal: ctx.signal },
          );
        } catch (err) {
          if (isHCloudError(err, "resource_unavailable")) {
            tried.push(`${candidate.serverType} in ${candidate.location}`);
            ctx.steps.note(
              `${candidate.serverType} in ${candidate.location} is out of capacity; trying the next`,
            );
            continue;
          }
          throw err;
        }
        ctx.known.servers.add(created.server.id);
        ctx.registry.add(serverResource(ctx.client, created.server.id, created.server.name));
        const actions = [...(created.action ? [created.action] : []), ...created.nextActions];
        if (actions.length > 0) await ctx.wait(actions);
        return { server: created.server, candidate };
      }
      throw new UploadError(
        "no_capacity",
        `No capacity for a temporary ${plan.architecture} server; tried ${tried.join(", ")}`,
      );
    },
    (r) =>
      `${r.candidate.serverType} in ${r.candidate.location} (server ${r.server.id}${image !== undefined ? `, from snapshot ${image}` : ""})`,
  );
}

export async function bootRescue(
  ctx: UploadContext,
  serverId: number,
  keyId: number,
  alreadyRunning = false,
) {
  await ctx.steps.run("rescue", async () => {
    const r = await ctx.client.servers.enableRescue(
      serverId,
      { type: "linux64", ssh_keys: [keyId] },
      { signal: ctx.signal },
    );
    await ctx.wait([r.action]);
  });
  return ctx.steps.run(
    "poweron",
    async () => {
      const action = alreadyRunning
        ? await ctx.client.servers.reset(serverId, { signal: ctx.signal })
        : await ctx.client.servers.poweron(serverId, { signal: ctx.signal });
      await ctx.wait([action]);
      return ctx.client.servers.getById(serverId, { signal: ctx.signal });
    },
    alreadyRunning ? "reset into rescue" : undefined,
  );
}

/** The error of a server that disappeared under the run. */
function serverDeleted(ctx: UploadContext, server: Server): UploadError {
  return new UploadError(
    "server_deleted",
    `Server ${server.name} (${server.id}) was deleted while the ${ctx.operation} was using it (by someone else, or by \`hetznix cleanup\` with a short --older-than); nothing was written to a snapshot`,
  );
}

/** Throws server_deleted when the server no longer exists (or is being deleted). */
export async function checkServerExists(ctx: UploadContext, server: Server): Promise<void> {
  try {
    const now = await ctx.client.servers.getById(server.id, { signal: ctx.signal });
    if (now.status === "deleting") throw serverDeleted(ctx, server);
  } catch (err) {
    if (isNotFound(err)) throw serverDeleted(ctx, server);
    throw err;
  }
}

/**
 * Watches, while SSH connection attempts go on, that the server still exists (every few polls); aborts the returned
 * signal with a server_deleted error as soon as it does not, so a deleted server does not cost minutes of retries.
 */
function watchServer(ctx: UploadContext, server: Server): { signal: AbortSignal; stop(): void } {
  const gone = new AbortController();
  const stop = new AbortController();
  const both = AbortSignal.any([stop.signal, ctx.signal]);
  const interval = ctx.waits.pollIntervalMs * 5;
  void (async () => {
    for (let i = 0; i < 1_000_000 && !both.aborted; i++) {
      await pause(interval, both);
      if (both.aborted) return;
      try {
        await checkServerExists(ctx, server);
      } catch (err) {
        if (err instanceof UploadError && err.code === "server_deleted") gone.abort(err);
        // Other errors (the API briefly unreachable): SSH attempts go on; checked again next time.
      }
      if (gone.signal.aborted) return;
    }
  })();
  return {
    signal: AbortSignal.any([gone.signal, ctx.signal]),
    stop: () => stop.abort(),
  };
}

export async function connectRescue(
  ctx: UploadContext,
  server: Server,
  pair: SshKeyPair,
): Promise<SshConnection> {
  const host = server.public_net.ipv4?.ip;
  if (!host)
    throw new UploadError(
      "invalid_argument",
      `Server ${server.id} has no public IPv4 address to reach its rescue system`,
    );
  const ssh = ctx.opts.ssh ?? {};
  const watch = watchServer(ctx, server);
  return ctx.steps.run(
    "connect",
    () =>
      connect({
        host,
        port: ssh.port ?? 22,
        username: "root",
        privateKey: pair.privateKey,
        maxAttempts: ssh.maxAttempts ?? 100,
        maxTotalMs: ssh.maxTotalMs ?? 180_000,
        signal: watch.signal,
        onAttempt: (a) => {
          if (a.attempt % 10 === 0) {
            ctx.steps.note(
              `SSH to ${host} not ready after ${a.attempt - 1} attempts (${Math.round(a.elapsedMs / 1000)} s): ${a.lastError?.message ?? "no answer"}`,
            );
          }
        },
      })
        .catch((err: unknown) => {
          if (ctx.signal.aborted) throw ctx.aborted();
          if (watch.signal.aborted) throw watch.signal.reason;
          throw err;
        })
        .finally(() => watch.stop()),
    (c) => `${host} after ${c.attempts} attempt(s)`,
  );
}

export async function shutdownAndWait(ctx: UploadContext, serverId: number): Promise<void> {
  await ctx.steps.run("shutdown", async () => {
    const action = await ctx.client.servers.shutdown(serverId, { signal: ctx.signal });
    await ctx.wait([action]);
    try {
      await ctx.client.servers.waitForStatus(serverId, "off", {
        signal: ctx.signal,
        timeoutMs: ctx.waits.shutdownTimeoutMs,
        intervalMs: ctx.waits.pollIntervalMs,
      });
      return;
    } catch (err) {
      if (ctx.signal.aborted) throw ctx.aborted();
      ctx.steps.note(
        `server ${serverId} did not power off within ${ctx.waits.shutdownTimeoutMs} ms; cutting power (${(err as Error).message})`,
      );
    }
    const off = await ctx.client.servers.poweroff(serverId, { signal: ctx.signal });
    await ctx.wait([off]);
    await ctx.client.servers.waitForStatus(serverId, "off", {
      signal: ctx.signal,
      timeoutMs: ctx.waits.shutdownTimeoutMs,
      intervalMs: ctx.waits.pollIntervalMs,
    });
  });
}
