/**
 * Nix binary cache metadata (`HASH.narinfo`) and its signatures, as Nix writes and checks them: a signature is
 * Ed25519 over the fingerprint `1;STOREPATH;NARHASH;NARSIZE;REF,REF,...` (NARHASH as `sha256:` + Nix base32,
 * references as full store paths). Pure.
 */
import type { PublicKey } from "./keys.js";

export interface NarInfo {
  storePath: string;
  /** Where the (compressed) NAR is, relative to the cache root, e.g. `nar/HASH.nar.zst`. */
  url: string;
  compression: string;
  narHash: string;
  narSize: number;
  /** Base names (`HASH-name`) of the paths it references. */
  references: string[];
  /** `keyname:base64` signatures. */
  sigs: string[];
  /** Set for content-addressed paths. */
  ca?: string;
}

const STORE_DIR = "/nix/store";
const BASE32 = "0123456789abcdfghijklmnpqrsvwxyz";

/** The 32-character hash part of a store path or base name. */
export function storePathHash(path: string): string {
  const base = path.startsWith(`${STORE_DIR}/`) ? path.slice(STORE_DIR.length + 1) : path;
  return base.slice(0, 32);
}

/** Nix's base32 (its own alphabet, least significant bits first). */
export function nixBase32(bytes: Buffer): string {
  const len = Math.ceil((bytes.length * 8) / 5);
  let out = "";
  for (let n = len - 1; n >= 0; n--) {
    const b = n * 5;
    const i = Math.floor(b / 8);
    const j = b % 8;
    const lo = (bytes[i] ?? 0) >> j;
    const hi = i + 1 < bytes.length ? (bytes[i + 1] ?? 0) << (8 - j) : 0;
    out += BASE32[(lo | hi) & 0x1f];
  }
  return out;
}

/** `sha256:` + Nix base32, from the forms Nix writes (base32, base16, base64, SRI); undefined if none fits. */
export function normaliseNarHash(text: string): string | undefined {
  const sri = /^sha256-([A-Za-z0-9+/]{43}=)$/.exec(text);
  const plain = /^sha256:(.+)$/.exec(text);
  const body = sri ? sri[1] : plain?.[1];
  if (body === undefined) return undefined;
  if (/^[0-9a-df-np-sv-z]{52}$/.test(body)) return `sha256:${body}`;
  let bytes: Buffer | undefined;
  if (/^[0-9a-f]{64}$/.test(body)) bytes = Buffer.from(body, "hex");
  else if (/^[A-Za-z0-9+/]{43}=$/.test(body)) bytes = Buffer.from(body, "base64");
  return bytes?.length === 32 ? `sha256:${nixBase32(bytes)}` : undefined;
}

/** Parses a narinfo; throws an Error naming `source` when a required field is missing. */
export function parseNarInfo(text: string, source: string): NarInfo {
  const fields = new Map<string, string>();
  const sigs: string[] = [];
  for (const line of text.split("\n")) {
    const colon = line.indexOf(": ");
    if (colon <= 0) continue;
    const key = line.slice(0, colon);
    const value = line.slice(colon + 2).trim();
    if (key === "Sig") sigs.push(value);
    else if (!fields.has(key)) fields.set(key, value);
  }
  const storePath = fields.get("StorePath");
  const url = fields.get("URL");
  const narHash = fields.get("NarHash");
  const narSize = Number(fields.get("NarSize"));
  if (!storePath?.startsWith(`${STORE_DIR}/`) || !url || !narHash || !Number.isSafeInteger(narSize))
    throw new Error(`${source} is not a valid narinfo (StorePath, URL, NarHash or NarSize missing)`);
  const refs = fields.get("References") ?? "";
  const ca = fields.get("CA");
  return {
    storePath,
    url,
    compression: fields.get("Compression") ?? "bzip2",
    narHash,
    narSize,
    references: refs === "" ? [] : refs.split(" ").filter((r) => r !== ""),
    sigs,
    ...(ca ? { ca } : {}),
  };
}

/** What Nix signs for a path; undefined when the NAR hash is in no form Nix uses. */
export function narInfoFingerprint(info: NarInfo): string | undefined {
  const hash = normaliseNarHash(info.narHash);
  if (!hash) return undefined;
  const refs = info.references.map((r) => `${STORE_DIR}/${r}`).join(",");
  return `1;${info.storePath};${hash};${info.narSize};${refs}`;
}

/** Does the narinfo carry a valid signature by `key`? */
export function signedBy(info: NarInfo, key: PublicKey): boolean {
  const fingerprint = narInfoFingerprint(info);
  return fingerprint !== undefined && info.sigs.some((s) => key.verify(fingerprint, s));
}
