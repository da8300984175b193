/** The agent's `--timeout`: the project's one duration grammar (src/util/time.ts), errors as MetadataError. */
import { DurationSyntaxError, formatDuration, parseDuration as parse } from "../util/time.js";
import { MetadataError } from "./errors.js";

/** Parses "500ms", "30s", "2m", "1h" or a bare number of seconds ("45") into milliseconds (more than zero). */
export function parseDuration(text: string): number {
  try {
    return parse(text);
  } catch (err) {
    if (err instanceof DurationSyntaxError) throw new MetadataError("usage", err.message);
    throw err;
  }
}

export { formatDuration };
