/**
 * Release records: what a channel points at. A record names one NixOS system (a store path) and is signed with the
 * release key, so a host that trusts the key can tell a release from a forgery; its serial only grows, so a host can
 * refuse an old record replayed at it. Pure: building, canonical bytes, signing and checking.
 */
import type { PublicKey, SecretKey } from "./keys.js";

export const RECORD_FORMAT = "hetznix-release/1";

export type RecordKind = "release" | "rollback" | "promote";

export interface ReleaseRecord {
  format: typeof RECORD_FORMAT;
  channel: string;
  /** 1, 2, 3, ... per channel; a new record (also a rollback or a promotion) always takes the next one. */
  serial: number;
  kind: RecordKind;
  /** The system's toplevel store path. */
  storePath: string;
  /** The Nix system it is for, e.g. "x86_64-linux". */
  system: string;
  /** RFC 3339 time of publishing. */
  created: string;
  /** Where hosts fetch the closure (a Nix binary cache URL), when the publisher said. */
  substituter?: string;
  /** The flake reference it was built from, and the source revision, when known. */
  flake?: string;
  revision?: string;
  /** The record this one replaced (serial and store path), or null for the first. */
  previous: { serial: number; storePath: string } | null;
  /** rollback: the serial whose system this record brings back. */
  rollbackOf?: number;
  /** promote: where it came from. */
  promotedFrom?: { channel: string; serial: number };
  /** Name of the key that signed it. */
  keyName: string;
}

export interface SignedRecord extends ReleaseRecord {
  /** `keyName:base64(ed25519 signature of canonicalBytes(record))`. */
  signature: string;
}

/** A record that does not parse or check; `code` says which kind of refusal. */
export class RecordError extends Error {
  override readonly name = "RecordError";
  constructor(
    readonly code: "malformed" | "bad_signature" | "untrusted_key",
    message: string,
  ) {
    super(message);
  }
}

const STORE_PATH = /^\/nix\/store\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+$/;
const CHANNEL = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const SYSTEM = /^[a-z0-9_]+-[a-z0-9_]+$/;

export function isStorePath(path: string): boolean {
  return STORE_PATH.test(path);
}

export function checkChannelName(name: string): string | undefined {
  return CHANNEL.test(name)
    ? undefined
    : `channel "${name}" must be 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit`;
}

/** JSON with object keys sorted at every level: the bytes that are signed. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

function unsigned(record: ReleaseRecord | SignedRecord): ReleaseRecord {
  const { signature: _signature, ...rest } = record as SignedRecord;
  return rest;
}

export function signRecord(record: ReleaseRecord, key: SecretKey): SignedRecord {
  const body: ReleaseRecord = { ...unsigned(record), keyName: key.name };
  return { ...body, signature: key.sign(canonicalJson(body)) };
}

/** Parses a record's JSON text and checks its shape (not its signature). */
export function parseRecord(text: string, source: string): SignedRecord {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new RecordError("malformed", `${source} is not JSON (is it a hetznix release record?)`);
  }
  const r = data as Partial<SignedRecord>;
  const problems: string[] = [];
  if (typeof data !== "object" || data === null) problems.push("not an object");
  if (r.format !== RECORD_FORMAT) problems.push(`format is not ${RECORD_FORMAT}`);
  if (typeof r.channel !== "string" || checkChannelName(r.channel)) problems.push("bad channel");
  if (!Number.isSafeInteger(r.serial) || (r.serial as number) < 1) problems.push("bad serial");
  if (r.kind !== "release" && r.kind !== "rollback" && r.kind !== "promote") problems.push("bad kind");
  if (typeof r.storePath !== "string" || !isStorePath(r.storePath)) problems.push("bad store path");
  if (typeof r.system !== "string" || !SYSTEM.test(r.system)) problems.push("bad system");
  if (typeof r.created !== "string") problems.push("no creation time");
  if (typeof r.keyName !== "string") problems.push("no key name");
  if (typeof r.signature !== "string") problems.push("no signature");
  if (r.previous !== null && (typeof r.previous !== "object" || !Number.isSafeInteger(r.previous?.serial)))
    problems.push("bad previous");
  if (problems.length > 0)
    throw new RecordError("malformed", `${source} is not a valid release record: ${problems.join(", ")}`);
  return r as SignedRecord;
}

/** Checks the signature with the trusted keys; returns the key that signed it, or throws RecordError. */
export function verifyRecord(record: SignedRecord, trusted: PublicKey[], source: string): PublicKey {
  const key = trusted.find((k) => k.name === record.keyName);
  if (!key)
    throw new RecordError(
      "untrusted_key",
      `${source} is signed by key "${record.keyName}", which is not among the trusted keys (${trusted.map((k) => k.name).join(", ") || "none"})`,
    );
  if (!key.verify(canonicalJson(unsigned(record)), record.signature))
    throw new RecordError(
      "bad_signature",
      `${source}: the signature does not verify with key "${key.name}" (changed or forged)`,
    );
  return key;
}
