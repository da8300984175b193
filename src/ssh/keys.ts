/**
 * In-memory ed25519 key pairs for talking to rescue systems. Nothing here touches the disk, and the private key is
 * kept out of JSON output and `util.inspect` so it cannot end up in logs by accident.
 */
import { createHash } from "node:crypto";
import { inspect } from "node:util";
import ssh2 from "ssh2";

export interface SshKeyPair {
  /** One OpenSSH public key line: `ssh-ed25519 AAAA... comment`. */
  readonly publicKey: string;
  /** OpenSSH private key (PEM-like text), usable as ssh2's `privateKey`. Not enumerable, never printed. */
  readonly privateKey: string;
  /** `SHA256:...` fingerprint of the public key, as `ssh-keygen -l` prints it. */
  readonly fingerprint: string;
}

/** True when `publicKey` is an OpenSSH ed25519 line whose blob holds the 11-byte type name and a 32-byte key. */
export function isWellFormedEd25519(publicKey: string): boolean {
  const b64 = publicKey.trim().split(/\s+/)[1];
  if (!b64) return false;
  const blob = Buffer.from(b64, "base64");
  return blob.length === 51 && blob.readUInt32BE(0) === 11 && blob.readUInt32BE(15) === 32;
}

/** Most pairs are generated at the first try; see generateKeyPair. */
const MAX_GENERATION_TRIES = 32;

/**
 * Generate a fresh ed25519 key pair in memory.
 *
 * ssh2's generator sometimes (about 1 in 200) yields a public key of 31 bytes, a leading zero byte lost, which no
 * sshd accepts; such pairs are discarded and generated again (bounded).
 */
export function generateKeyPair(comment = "hetznix"): SshKeyPair {
  let pair = ssh2.utils.generateKeyPairSync("ed25519", { comment });
  for (let i = 1; i < MAX_GENERATION_TRIES && !isWellFormedEd25519(pair.public); i++) {
    pair = ssh2.utils.generateKeyPairSync("ed25519", { comment });
  }
  if (!isWellFormedEd25519(pair.public)) throw new Error("could not generate a well-formed ed25519 key pair");
  const publicKey = pair.public.trim();
  const keys = { publicKey, fingerprint: fingerprintOf(publicKey) };
  Object.defineProperty(keys, "privateKey", { value: pair.private, enumerable: false });
  Object.defineProperty(keys, inspect.custom, {
    value: () => `SshKeyPair { publicKey: ${JSON.stringify(publicKey)}, privateKey: [redacted] }`,
    enumerable: false,
  });
  return Object.freeze(keys) as SshKeyPair;
}

/** `SHA256:<base64 without padding>` of an OpenSSH public key line or of a raw key blob. */
export function fingerprintOf(key: string | Buffer): string {
  let blob: Buffer;
  if (typeof key === "string") {
    const b64 = key.trim().split(/\s+/)[1];
    if (b64 === undefined) throw new Error("not an OpenSSH public key line");
    blob = Buffer.from(b64, "base64");
  } else {
    blob = key;
  }
  return "SHA256:" + createHash("sha256").update(blob).digest("base64").replace(/=+$/, "");
}
