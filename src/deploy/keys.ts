/**
 * Nix signing keys, in Nix's own format (what `nix-store --generate-binary-cache-key` writes and `trusted-public-keys`
 * reads): the secret key is `NAME:base64(seed || public key)` (64 bytes), the public key `NAME:base64(public key)`
 * (32 bytes); both Ed25519. The same key signs the store paths in the binary cache (Nix checks those) and the
 * release records (hetznix checks those), so a host trusts one key for both.
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from "node:crypto";

/** A key that cannot be read or parsed; the message says which and how to fix it. */
export class KeyError extends Error {
  override readonly name = "KeyError";
}

const NAME = /^[A-Za-z0-9._+-]{1,128}$/;

export interface SecretKey {
  readonly name: string;
  /** The matching public key in Nix's format (`name:base64`). */
  readonly publicKey: string;
  /** Ed25519 signature of `data` as Nix writes signatures: `name:base64(signature)`. */
  sign(data: Buffer | string): string;
}

export interface PublicKey {
  readonly name: string;
  /** `name:base64(key)`. */
  readonly text: string;
  /** Does `signature` (`name:base64`) sign `data` with this key? A signature by another key name is false. */
  verify(data: Buffer | string, signature: string): boolean;
}

function splitKey(text: string, what: string): { name: string; bytes: Buffer } {
  const trimmed = text.trim();
  const colon = trimmed.indexOf(":");
  const name = colon > 0 ? trimmed.slice(0, colon) : "";
  const b64 = trimmed.slice(colon + 1);
  if (!NAME.test(name) || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64))
    throw new KeyError(
      `${what} must look like NAME:BASE64 (as nix-store --generate-binary-cache-key writes it)`,
    );
  return { name, bytes: Buffer.from(b64, "base64") };
}

/** Parses a Nix secret key (the text of the file). Never puts the key into an error message. */
export function parseSecretKey(text: string, source = "the signing key"): SecretKey {
  const { name, bytes } = splitKey(text, source);
  if (bytes.length !== 64)
    throw new KeyError(`${source} is not an Ed25519 Nix secret key (expected 64 bytes)`);
  const seed = bytes.subarray(0, 32);
  const pub = bytes.subarray(32);
  let key: KeyObject;
  try {
    key = createPrivateKey({
      key: { kty: "OKP", crv: "Ed25519", d: seed.toString("base64url"), x: pub.toString("base64url") },
      format: "jwk",
    });
  } catch {
    throw new KeyError(`${source} is not a valid Ed25519 key`);
  }
  // The public half stored in the file must be the seed's: a mismatch would make every signature fail to verify.
  const derived = Buffer.from(createPublicKey(key).export({ format: "jwk" }).x ?? "", "base64url");
  if (!derived.equals(pub)) throw new KeyError(`${source} is damaged (its public half does not match)`);
  const publicKey = `${name}:${pub.toString("base64")}`;
  return {
    name,
    publicKey,
    sign: (data) => `${name}:${sign(null, Buffer.from(data), key).toString("base64")}`,
  };
}

/** Parses a Nix public key (`name:base64`, 32 bytes). */
export function parsePublicKey(text: string, source = "the trusted key"): PublicKey {
  const { name, bytes } = splitKey(text, source);
  if (bytes.length !== 32)
    throw new KeyError(`${source} is not an Ed25519 Nix public key (expected 32 bytes)`);
  const key = createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: bytes.toString("base64url") },
    format: "jwk",
  });
  const textForm = `${name}:${bytes.toString("base64")}`;
  return {
    name,
    text: textForm,
    verify(data, signature) {
      const colon = signature.indexOf(":");
      if (colon <= 0 || signature.slice(0, colon) !== name) return false;
      const sig = Buffer.from(signature.slice(colon + 1), "base64");
      if (sig.length !== 64) return false;
      try {
        return verify(null, Buffer.from(data), key, sig);
      } catch {
        return false;
      }
    },
  };
}

/** A new key pair: the secret key's text (for a file of mode 0600) and the public key's. */
export function generateSigningKey(name: string): { secretKey: string; publicKey: string } {
  if (!NAME.test(name))
    throw new KeyError(
      `key name "${name}" must be letters, digits and . _ + - (e.g. releases.example.com-1)`,
    );
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const jwk = privateKey.export({ format: "jwk" });
  const seed = Buffer.from(jwk.d ?? "", "base64url");
  // `publicKey` is already a public KeyObject (createPublicKey only takes private or raw keys on Node 20).
  const pub = Buffer.from(publicKey.export({ format: "jwk" }).x ?? "", "base64url");
  return {
    secretKey: `${name}:${Buffer.concat([seed, pub]).toString("base64")}`,
    publicKey: `${name}:${pub.toString("base64")}`,
  };
}
