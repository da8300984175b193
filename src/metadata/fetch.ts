/**
 * Reading the metadata service over HTTP, retrying until a deadline. Early in boot the service (or the route to
 * it) may not answer yet, so network errors and 5xx answers are retried with a capped backoff; a 4xx is final.
 */
import { sleep } from "../util/time.js";
import { MetadataError } from "./errors.js";
import { formatDuration } from "./duration.js";

export const DEFAULT_METADATA_URL = "http://169.254.169.254/hetzner/v1/";

export interface FetchedDocuments {
  metadata: string;
  privateNetworks: string;
  /** Null unless asked for. */
  userData: Buffer | null;
}

export interface FetchOptions {
  /** Base URL ending in /hetzner/v1/ (a missing trailing slash is added). */
  baseUrl: string;
  timeoutMs: number;
  withUserData: boolean;
  /** Called before each retry, e.g. to log progress. */
  onRetry?: (info: { url: string; attempt: number; error: string }) => void;
}

/**
 * The most a document may be. Hetzner's metadata is a few KiB and user data at most 32 KiB; anything near this bound
 * is not a metadata service's answer, and reading it whole would only cost memory.
 */
export const MAX_DOCUMENT_BYTES = 1024 * 1024;

/** At most this many attempts per document, whatever the timeout, so the loop is bounded in count as well. */
const MAX_ATTEMPTS = 1000;
const PER_REQUEST_MS = 5000;

class Retryable extends Error {}

function base(url: string): string {
  return url.endsWith("/") ? url : `${url}/`;
}

async function getOnce(url: string, timeoutMs: number): Promise<Buffer | null> {
  let response: Response;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: "error" });
  } catch (err) {
    const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : "";
    throw new Retryable(`${err instanceof Error ? err.message : String(err)}${cause}`);
  }
  if (response.ok) return readBounded(url, response);
  await response.body?.cancel().catch(() => undefined);
  if (response.status === 404) return null;
  if (response.status >= 500 || response.status === 429) throw new Retryable(`HTTP ${response.status}`);
  throw new MetadataError("http_status", `metadata service answered ${url} with HTTP ${response.status}`);
}

function tooLarge(url: string, detail: string): MetadataError {
  return new MetadataError(
    "too_large",
    `metadata service answered ${url} with more than ${MAX_DOCUMENT_BYTES} bytes (${detail}); Hetzner's documents are a few KiB: check the metadata URL`,
  );
}

/** The body, refused as soon as it is known to pass MAX_DOCUMENT_BYTES (announced, or while reading). */
async function readBounded(url: string, response: Response): Promise<Buffer> {
  const announced = response.headers.get("content-length");
  if (announced !== null && /^\d+$/.test(announced) && Number(announced) > MAX_DOCUMENT_BYTES) {
    await response.body?.cancel().catch(() => undefined);
    throw tooLarge(url, `Content-Length: ${announced}`);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  const reader = response.body?.getReader();
  if (!reader) return Buffer.alloc(0);
  try {
    for (;;) {
      const next = await reader.read().catch((err: unknown) => {
        throw new Retryable(`reading the answer failed: ${err instanceof Error ? err.message : String(err)}`);
      });
      if (next.done) break;
      total += next.value.length;
      if (total > MAX_DOCUMENT_BYTES) throw tooLarge(url, "and still sending");
      chunks.push(Buffer.from(next.value));
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return Buffer.concat(chunks);
}

/** GET with retries until `deadline` (ms since epoch). Returns null for 404. */
export async function getWithRetry(
  url: string,
  deadline: number,
  totalMs: number,
  onRetry?: FetchOptions["onRetry"],
): Promise<Buffer | null> {
  let delay = 100;
  let lastError = "no attempt made";
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    try {
      return await getOnce(url, Math.min(remaining, PER_REQUEST_MS));
    } catch (err) {
      if (!(err instanceof Retryable)) throw err;
      lastError = err.message;
    }
    const left = deadline - Date.now();
    if (left <= 0 || attempt === MAX_ATTEMPTS) break;
    onRetry?.({ url, attempt, error: lastError });
    await sleep(Math.min(delay, left));
    delay = Math.min(delay * 2, 2000);
  }
  throw new MetadataError(
    "unreachable",
    `metadata service at ${url} did not answer within ${formatDuration(totalMs)} (last error: ${lastError})`,
  );
}

/** Fetches `metadata`, `metadata/private-networks` and, if asked, `userdata`, all within one timeout. */
export async function fetchDocuments(options: FetchOptions): Promise<FetchedDocuments> {
  const root = base(options.baseUrl);
  const deadline = Date.now() + options.timeoutMs;
  const get = (path: string): Promise<Buffer | null> =>
    getWithRetry(new URL(path, root).toString(), deadline, options.timeoutMs, options.onRetry);
  const metadata = await get("metadata");
  if (metadata === null) {
    throw new MetadataError("http_status", `metadata service answered ${root}metadata with HTTP 404`);
  }
  // A service without the private-networks path (404) is taken as "no private networks".
  const privateNetworks = (await get("metadata/private-networks")) ?? Buffer.alloc(0);
  const userData = options.withUserData ? ((await get("userdata")) ?? Buffer.alloc(0)) : null;
  return { metadata: metadata.toString("utf8"), privateNetworks: privateNetworks.toString("utf8"), userData };
}
