/** Release stores: where a LOCATION (a directory, `file:///dir`, or `s3://bucket/prefix`) keeps its records. */
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ReleaseError } from "../errors.js";
import { parseS3Url, type S3Location } from "../s3.js";
import { directoryStore } from "./directory.js";
import { s3Store } from "./s3.js";
import type { ReleaseStore } from "./store.js";

export type Location = { kind: "directory"; path: string } | { kind: "s3"; s3: S3Location };

/**
 * A directory path, `file:///dir` or `s3://bucket/prefix?endpoint=...&region=...`. `what` names the flag in errors.
 */
export function parseLocation(text: string, what: string, env: NodeJS.ProcessEnv = process.env): Location {
  const t = text.trim();
  if (t === "")
    throw new ReleaseError("invalid_argument", `${what} is empty: give a directory or s3://bucket/prefix`);
  if (t.startsWith("s3://")) return { kind: "s3", s3: parseS3Url(t, what, env) };
  if (t.startsWith("file:")) {
    let path: string;
    try {
      path = fileURLToPath(t);
    } catch {
      throw new ReleaseError(
        "invalid_argument",
        `${what} ${t}: a file URL must look like file:///absolute/dir`,
      );
    }
    return { kind: "directory", path };
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(t))
    throw new ReleaseError(
      "invalid_argument",
      `${what} ${t}: use a directory, file:///dir or s3://bucket/prefix (hosts read it over HTTP(S); hetznix writes it directly)`,
    );
  return { kind: "directory", path: resolve(t) };
}

export async function openReleaseStore(location: Location): Promise<ReleaseStore> {
  return location.kind === "s3" ? s3Store(location.s3) : directoryStore(location.path);
}

export { appendRecord, historySerials, readCurrent, readRelease, type AppendOutcome } from "./history.js";
export { channelKey, releaseKey, type ReleaseStore, type ChannelObject } from "./store.js";
