/**
 * Release records in an S3-compatible bucket (e.g. Hetzner Object Storage; hosts fetch the channel object over
 * HTTPS). History objects are written with a conditional PUT (`If-None-Match: *`) after a HEAD, and read back; the
 * channel object is replaced with `If-Match` on the ETag read before, after a HEAD that compares it. Servers that
 * honour conditional writes make both atomic; on servers that ignore them (s3rver does) it is check-then-put, and
 * two publishes to the same channel in the same instant can still collide.
 */
import { openS3Bucket, type S3Location } from "../s3.js";
import { channelKey, releaseKey, serialOfName, type ReleaseStore } from "./store.js";

export async function s3Store(loc: S3Location): Promise<ReleaseStore> {
  const bucket = await openS3Bucket(loc, "location");
  return {
    description: bucket.description,
    exclusiveCreate:
      "conditional PUT (If-None-Match: *) after a HEAD; check-then-put where the server ignores it",
    async listChannels(signal) {
      const keys = await bucket.list("channels/", signal);
      return keys
        .map((k) => k.slice("channels/".length))
        .filter((n) => !n.includes("/") && n.endsWith(".json"))
        .map((n) => n.slice(0, -5));
    },
    async readChannel(channel, signal) {
      const got = await bucket.get(channelKey(channel), signal);
      return got ? { text: got.body.toString("utf8"), version: got.etag } : undefined;
    },
    async listSerials(channel, signal) {
      const dir = `releases/${channel}/`;
      const keys = await bucket.list(dir, signal);
      return keys.map((k) => serialOfName(k.slice(dir.length))).filter((s): s is number => s !== undefined);
    },
    async readRelease(channel, serial, signal) {
      return (await bucket.get(releaseKey(channel, serial), signal))?.body.toString("utf8");
    },
    async createRelease(channel, serial, text, signal) {
      const key = releaseKey(channel, serial);
      if (await bucket.head(key, signal)) return false;
      const written = await bucket.put(
        key,
        { data: text },
        { contentType: "application/json", ifNoneMatch: true },
        signal,
      );
      if (!written) return false;
      // Where the condition is ignored, a publish that raced us may have replaced our object: only ours counts.
      return (await bucket.get(key, signal))?.body.toString("utf8") === text;
    },
    async replaceChannel(channel, text, expected, signal) {
      const key = channelKey(channel);
      const now = await bucket.head(key, signal);
      if ((now?.etag ?? undefined) !== expected) return false;
      return bucket.put(
        key,
        { data: text },
        {
          contentType: "application/json",
          // Hosts must see a new record at once, through any HTTP cache in front of the bucket.
          cacheControl: "no-cache",
          ...(expected === undefined ? { ifNoneMatch: true } : { ifMatch: expected }),
        },
        signal,
      );
    },
    async withLock(_channel, fn) {
      return fn();
    },
    close() {
      bucket.close();
    },
  };
}
