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

/** Generate a fresh ed25519 key pair in memory. */
export function generateKeyPair(comment = "hetznix"): SshKeyPair {
  const pair = ssh2.utils.generateKeyPairSync("ed25519", { comment });
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
