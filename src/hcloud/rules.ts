/**
 * Hetzner's pure rules, shared by the client (to check input before sending it) and the emulator (to answer as the
 * API does): server host names, the user data limit, public key lines and their MD5 fingerprint. Label rules and
 * selectors live beside this in labels.ts.
 */
import { createHash } from "node:crypto";

/** Hostname rules (RFC 1123): dot-separated labels of letters, digits and '-', not starting or ending with '-'. */
const HOSTNAME_LABEL = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** What is wrong with a server name (empty when nothing is). */
export function hostnameProblems(name: string): string[] {
  if (name.length === 0) return ["name must not be empty"];
  if (name.length > 253) return ["name must be at most 253 characters"];
  if (!name.split(".").every((l) => HOSTNAME_LABEL.test(l)))
    return ["name must be a valid hostname (RFC 1123): letters, digits, '-' and '.'"];
  return [];
}

/** user_data limit: 32 KiB (hetzner-facts.md). */
export const USER_DATA_MAX_BYTES = 32 * 1024;

/** Key types the API accepts for SSH keys. */
export const SSH_KEY_TYPES: ReadonlySet<string> = new Set([
  "ssh-ed25519",
  "ssh-rsa",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "sk-ssh-ed25519@openssh.com",
  "sk-ecdsa-sha2-nistp256@openssh.com",
]);

/** Parses an OpenSSH public key line; returns the key type and blob, or what is wrong with it. */
export function parsePublicKey(line: string): { type: string; blob: Buffer } | { error: string } {
  const parts = line.trim().split(/\s+/);
  const [type, data] = parts;
  if (type === undefined || data === undefined || type === "")
    return { error: "public key must be '<type> <base64> [comment]'" };
  if (!SSH_KEY_TYPES.has(type)) return { error: `unsupported key type '${type}'` };
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(data)) return { error: "public key data is not base64" };
  const blob = Buffer.from(data, "base64");
  if (blob.length < 4) return { error: "public key data is too short" };
  const len = blob.readUInt32BE(0);
  if (len + 4 > blob.length || blob.subarray(4, 4 + len).toString("latin1") !== type)
    return { error: "public key data does not match its type" };
  return { type, blob };
}

/** Hetzner's fingerprint of a key blob: MD5, as colon-separated lowercase hex. */
export function md5Fingerprint(blob: Buffer): string {
  return (createHash("md5").update(blob).digest("hex").match(/../g) ?? []).join(":");
}

/** The MD5 fingerprint Hetzner shows for a public key line (`aa:bb:...`), or undefined for a malformed line. */
export function publicKeyFingerprint(publicKey: string): string | undefined {
  const blob = publicKey.trim().split(/\s+/)[1];
  if (!blob || !/^[A-Za-z0-9+/]+=*$/.test(blob)) return undefined;
  return md5Fingerprint(Buffer.from(blob, "base64"));
}
