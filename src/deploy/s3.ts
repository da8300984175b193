/**
 * S3-compatible object storage (Hetzner Object Storage, AWS S3, MinIO, ...) for release records and binary caches.
 * A location is `s3://BUCKET/PREFIX?endpoint=URL&region=NAME`; the endpoint defaults to AWS_ENDPOINT_URL_S3 or
 * AWS_ENDPOINT_URL, the region to AWS_REGION or us-east-1; credentials come from the SDK's usual sources
 * (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ...), never from the URL. Path-style addressing, and checksums only
 * where the operation requires them: many S3-compatible servers reject the SDK's newer default checksums.
 *
 * The SDK is loaded on first use, so commands that never touch S3 (the boot-time agent) do not pay for it.
 */
import { createReadStream } from "node:fs";
import type { S3Client } from "@aws-sdk/client-s3";
import { ReleaseError, type ReleaseErrorCode } from "./errors.js";

export interface S3Location {
  bucket: string;
  /** Key prefix without leading or trailing slash ("" for the bucket's root). */
  prefix: string;
  /** Endpoint URL; undefined: the SDK's AWS default. */
  endpoint?: string;
  region: string;
}

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
/** One PUT holds at most 5 GiB (S3's limit; multipart uploads are not used). */
const MAX_PUT = 5 * 1024 ** 3;
/** Files up to this size are sent from memory, so the SDK can retry them. */
const BUFFERED = 64 * 1024 * 1024;

/** Parses `s3://bucket/prefix?endpoint=...&region=...`; `what` names the flag in errors. */
export function parseS3Url(text: string, what: string, env: NodeJS.ProcessEnv = process.env): S3Location {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ReleaseError("invalid_argument", `${what} ${text} is not a URL (e.g. s3://bucket/prefix)`);
  }
  if (url.protocol !== "s3:")
    throw new ReleaseError("invalid_argument", `${what} ${text}: expected s3://bucket/prefix`);
  if (url.username || url.password)
    throw new ReleaseError(
      "invalid_argument",
      `${what}: never put credentials into the URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`,
    );
  const bucket = url.hostname;
  if (!BUCKET.test(bucket))
    throw new ReleaseError(
      "invalid_argument",
      `${what}: "${bucket}" is not a bucket name (3-63 lowercase letters, digits, '.' and '-')`,
    );
  let prefix: string;
  try {
    prefix = decodeURIComponent(url.pathname).replace(/^\/+|\/+$/g, "");
  } catch {
    throw new ReleaseError(
      "invalid_argument",
      `${what}: the prefix of ${text} is not valid percent-encoding`,
    );
  }
  if (prefix.split("/").some((p) => p === "" || p === "." || p === "..") && prefix !== "")
    throw new ReleaseError("invalid_argument", `${what}: the prefix "${prefix}" has empty, . or .. parts`);
  for (const key of url.searchParams.keys())
    if (key !== "endpoint" && key !== "region")
      throw new ReleaseError(
        "invalid_argument",
        `${what}: unknown parameter "${key}" (known: endpoint, region)`,
      );
  const endpoint =
    url.searchParams.get("endpoint") ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL ?? undefined;
  if (endpoint !== undefined && !/^https?:\/\/[^/?#]+/.test(endpoint))
    throw new ReleaseError(
      "invalid_argument",
      `${what}: the endpoint "${endpoint}" must be an http(s) URL, e.g. https://fsn1.your-objectstorage.com`,
    );
  const region = url.searchParams.get("region") ?? env.AWS_REGION ?? "us-east-1";
  return { bucket, prefix, ...(endpoint ? { endpoint } : {}), region };
}

/** `s3://bucket/prefix` (with the endpoint's host when one is set), for messages. */
export function describeS3(loc: S3Location): string {
  const where = `s3://${loc.bucket}${loc.prefix ? `/${loc.prefix}` : ""}`;
  if (!loc.endpoint) return where;
  try {
    return `${where} at ${new URL(loc.endpoint).host}`;
  } catch {
    return where;
  }
}

export type PutBody = { data: Buffer | string } | { file: string; size: number };

export interface PutOptions {
  contentType?: string;
  cacheControl?: string;
  /** Only if the object does not exist (`If-None-Match: *`). */
  ifNoneMatch?: boolean;
  /** Only if the object's ETag is still this (`If-Match`). */
  ifMatch?: string;
}

/** One bucket and prefix; keys are relative to the prefix. */
export interface S3Bucket {
  readonly location: S3Location;
  readonly description: string;
  get(key: string, signal?: AbortSignal): Promise<{ body: Buffer; etag: string } | undefined>;
  head(key: string, signal?: AbortSignal): Promise<{ etag: string; size: number } | undefined>;
  /** false when a condition (ifNoneMatch, ifMatch) did not hold. */
  put(key: string, body: PutBody, opts?: PutOptions, signal?: AbortSignal): Promise<boolean>;
  /** Keys under `sub` (relative to the prefix), bounded. */
  list(sub: string, signal?: AbortSignal): Promise<string[]>;
  close(): void;
}

interface SdkError {
  name?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

function statusOf(err: unknown): number | undefined {
  return (err as SdkError).$metadata?.httpStatusCode;
}

const MAX_LIST_PAGES = 10_000;

/** Opens the bucket (loads the SDK); `code` is the ReleaseError code for failures (location or cache). */
export async function openS3Bucket(loc: S3Location, code: ReleaseErrorCode): Promise<S3Bucket> {
  // The SDK warns on every run under Node 20 that its releases after January 2027 need Node 22; the version in
  // package-lock.json supports Node 20, so the warning is only noise for hetznix's users.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
  const sdk = await import("@aws-sdk/client-s3");
  const client: S3Client = new sdk.S3Client({
    region: loc.region,
    ...(loc.endpoint ? { endpoint: loc.endpoint } : {}),
    forcePathStyle: true,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  const description = describeS3(loc);
  const keyOf = (key: string) => (loc.prefix ? `${loc.prefix}/${key}` : key);
  const fail = (op: string, key: string, err: unknown): never => {
    if ((err as Error)?.name === "AbortError") throw err;
    const e = err as SdkError;
    const name = e.name ?? "Error";
    let hint = "";
    if (name === "CredentialsProviderError" || /credential/i.test(e.message ?? ""))
      hint = "; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY";
    else if (name === "NoSuchBucket") hint = "; create the bucket first";
    else if (statusOf(err) === 403) hint = "; check the credentials and the bucket's permissions";
    else if (!loc.endpoint && /ENOTFOUND|ECONNREFUSED|getaddrinfo/.test(e.message ?? ""))
      hint = "; is ?endpoint= or AWS_ENDPOINT_URL_S3 set?";
    throw new ReleaseError(
      code,
      `${op} s3://${loc.bucket}/${keyOf(key)} failed: ${name}: ${e.message ?? String(err)}${hint}`,
      { cause: err },
    );
  };
  const notFound = (err: unknown) => statusOf(err) === 404 && (err as SdkError).name !== "NoSuchBucket";

  return {
    location: loc,
    description,
    async get(key, signal) {
      try {
        const out = await client.send(new sdk.GetObjectCommand({ Bucket: loc.bucket, Key: keyOf(key) }), {
          ...(signal ? { abortSignal: signal } : {}),
        });
        const bytes = await out.Body?.transformToByteArray();
        return { body: Buffer.from(bytes ?? []), etag: out.ETag ?? "" };
      } catch (err) {
        if (notFound(err)) return undefined;
        return fail("GET", key, err);
      }
    },
    async head(key, signal) {
      try {
        const out = await client.send(new sdk.HeadObjectCommand({ Bucket: loc.bucket, Key: keyOf(key) }), {
          ...(signal ? { abortSignal: signal } : {}),
        });
        return { etag: out.ETag ?? "", size: out.ContentLength ?? 0 };
      } catch (err) {
        if (notFound(err)) return undefined;
        return fail("HEAD", key, err);
      }
    },
    async put(key, body, opts = {}, signal) {
      let payload: Buffer | string | NodeJS.ReadableStream;
      let length: number;
      if ("data" in body) {
        payload = body.data;
        length = Buffer.byteLength(body.data);
      } else {
        if (body.size > MAX_PUT)
          throw new ReleaseError(
            code,
            `${body.file} is ${body.size} bytes; one S3 upload holds at most 5 GiB (multipart uploads are not supported)`,
          );
        length = body.size;
        payload =
          body.size <= BUFFERED
            ? await import("node:fs/promises").then((fs) => fs.readFile(body.file))
            : createReadStream(body.file);
      }
      try {
        await client.send(
          new sdk.PutObjectCommand({
            Bucket: loc.bucket,
            Key: keyOf(key),
            Body: payload as Buffer,
            ContentLength: length,
            ...(opts.contentType ? { ContentType: opts.contentType } : {}),
            ...(opts.cacheControl ? { CacheControl: opts.cacheControl } : {}),
            ...(opts.ifNoneMatch ? { IfNoneMatch: "*" } : {}),
            ...(opts.ifMatch ? { IfMatch: opts.ifMatch } : {}),
          }),
          { ...(signal ? { abortSignal: signal } : {}) },
        );
        return true;
      } catch (err) {
        const status = statusOf(err);
        // 412: the condition failed; 409: a conditional write raced with another one (AWS answers so).
        if ((opts.ifNoneMatch || opts.ifMatch) && (status === 412 || status === 409)) return false;
        return fail("PUT", key, err);
      }
    },
    async list(sub, signal) {
      const keys: string[] = [];
      const full = keyOf(sub);
      let token: string | undefined;
      for (let page = 0; page < MAX_LIST_PAGES; page++) {
        let out;
        try {
          out = await client.send(
            new sdk.ListObjectsV2Command({
              Bucket: loc.bucket,
              Prefix: full,
              ...(token ? { ContinuationToken: token } : {}),
            }),
            { ...(signal ? { abortSignal: signal } : {}) },
          );
        } catch (err) {
          return fail("LIST", sub, err);
        }
        for (const o of out.Contents ?? [])
          if (o.Key) keys.push(loc.prefix ? o.Key.slice(loc.prefix.length + 1) : o.Key);
        if (!out.IsTruncated || !out.NextContinuationToken) return keys;
        token = out.NextContinuationToken;
      }
      throw new ReleaseError(code, `listing ${description}/${sub} did not end after ${MAX_LIST_PAGES} pages`);
    },
    close() {
      client.destroy();
    },
  };
}
