/**
 * Release records in a directory (served as it is by any static HTTP server). History objects are created with a
 * hard link from a complete temporary file (atomic, and fails if the name exists); the channel object is replaced
 * by an atomic rename. A lock file per channel serialises publishers on the same machine or shared file system.
 */
import { createHash, randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { link, mkdir, open, readFile, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { hostname } from "node:os";
import { sleep } from "../../util/time.js";
import { ReleaseError } from "../errors.js";
import { channelKey, releaseKey, serialOfName, type ChannelObject, type ReleaseStore } from "./store.js";

/** A lock older than this is left over from a killed publish (the locked section takes milliseconds). */
const STALE_LOCK_MS = 60_000;
const LOCK_POLL_MS = 50;
const LOCK_WAIT_MS = 120_000;

function ioError(err: unknown, what: string): ReleaseError {
  const code = (err as NodeJS.ErrnoException).code ?? String(err);
  return new ReleaseError("location", `cannot ${what} (${code})`, { cause: err });
}

function hashOf(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw ioError(err, `read ${path}`);
  }
}

/** Writes `text` to a new temporary file next to `path` (flushed to disk); returns its name. */
async function writeTemp(path: string, text: string): Promise<string> {
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  const tmp = join(dirname(path), `.tmp-${randomBytes(6).toString("hex")}`);
  const handle = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return tmp;
}

export function directoryStore(root: string): ReleaseStore {
  const path = (key: string) => join(root, key);
  return {
    description: root,
    exclusiveCreate: "hard link of a complete file (fails if the name exists)",
    async listChannels() {
      let names: string[];
      try {
        names = await readdir(path("channels"));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
        throw ioError(err, `list ${path("channels")}`);
      }
      return names.filter((n) => n.endsWith(".json") && !n.startsWith(".")).map((n) => n.slice(0, -5));
    },
    async readChannel(channel) {
      const text = await readOptional(path(channelKey(channel)));
      return text === undefined ? undefined : ({ text, version: hashOf(text) } satisfies ChannelObject);
    },
    async listSerials(channel) {
      try {
        const names = await readdir(path(`releases/${channel}`));
        return names.map(serialOfName).filter((s): s is number => s !== undefined);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
        throw ioError(err, `list ${path(`releases/${channel}`)}`);
      }
    },
    async readRelease(channel, serial) {
      return readOptional(path(releaseKey(channel, serial)));
    },
    async createRelease(channel, serial, text) {
      const final = path(releaseKey(channel, serial));
      let tmp: string | undefined;
      try {
        tmp = await writeTemp(final, text);
        await link(tmp, final);
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
        throw ioError(err, `write ${final}`);
      } finally {
        if (tmp) await rm(tmp, { force: true });
      }
    },
    async replaceChannel(channel, text, expected) {
      const final = path(channelKey(channel));
      const current = await readOptional(final);
      if ((current === undefined ? undefined : hashOf(current)) !== expected) return false;
      let tmp: string | undefined;
      try {
        tmp = await writeTemp(final, text);
        await rename(tmp, final);
        tmp = undefined;
        return true;
      } catch (err) {
        throw ioError(err, `write ${final}`);
      } finally {
        if (tmp) await rm(tmp, { force: true });
      }
    },
    async withLock(channel, fn, signal) {
      const lock = path(`channels/.${channel}.lock`);
      try {
        await mkdir(dirname(lock), { recursive: true, mode: 0o755 });
      } catch (err) {
        throw ioError(err, `create ${dirname(lock)}`);
      }
      const deadline = Date.now() + LOCK_WAIT_MS;
      for (;;) {
        try {
          const handle = await open(lock, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
          await handle.writeFile(`${process.pid}@${hostname()} ${new Date().toISOString()}\n`);
          await handle.close();
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw ioError(err, `create ${lock}`);
        }
        const age = await stat(lock).then(
          (s) => Date.now() - s.mtimeMs,
          () => 0,
        );
        if (age > STALE_LOCK_MS) {
          await rm(lock, { force: true });
          continue;
        }
        if (Date.now() > deadline)
          throw new ReleaseError(
            "conflict",
            `${lock} has been held for ${Math.round(age / 1000)} s by another publish; if none runs, remove it`,
          );
        await sleep(LOCK_POLL_MS, signal);
      }
      try {
        return await fn();
      } finally {
        await rm(lock, { force: true });
      }
    },
    close() {},
  };
}
