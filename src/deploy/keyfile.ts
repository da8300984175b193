/**
 * The signing key on disk: `hetznix release keygen` writes a Nix secret key file (mode 0600, created, never
 * replaced) and its public key next to it; publish, rollback and promote read it back. The secret key is never
 * printed, logged or put into an error message.
 */
import { constants } from "node:fs";
import { open, readFile, rm, stat } from "node:fs/promises";
import { resolve } from "node:path";
import { KeyError, generateSigningKey, parseSecretKey, type SecretKey } from "./keys.js";
import { ReleaseError } from "./errors.js";

export interface SigningKeyFile {
  /** Absolute path (what `nix copy ?secret-key=` is given). */
  path: string;
  key: SecretKey;
  /** Set when the file is readable by others: say it, and how to fix it. */
  warning?: string;
}

/** Reads and parses a Nix secret key file. */
export async function readSigningKeyFile(file: string): Promise<SigningKeyFile> {
  const path = resolve(file);
  let text: string;
  let mode: number;
  try {
    mode = (await stat(path)).mode;
    text = await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : code;
    throw new ReleaseError(
      "key",
      `cannot read the signing key ${path} (${why}); make one with: hetznix release keygen --name NAME --out ${path}`,
    );
  }
  let key: SecretKey;
  try {
    key = parseSecretKey(text, `the signing key ${path}`);
  } catch (err) {
    throw new ReleaseError(
      "key",
      err instanceof KeyError ? err.message : `the signing key ${path} is invalid`,
    );
  }
  const others = mode & 0o077;
  return {
    path,
    key,
    ...(others
      ? {
          warning: `the signing key ${path} is readable by others (mode ${(mode & 0o777).toString(8).padStart(4, "0")}); run: chmod 600 ${path}`,
        }
      : {}),
  };
}

export interface KeygenResult {
  name: string;
  secretKeyFile: string;
  publicKeyFile: string;
  publicKey: string;
}

/**
 * Makes a key pair: the secret key in `out` (mode 0600, never replaces a file) and the public key in `out.pub`
 * (mode 0644). The public key is returned; the secret key is not.
 */
export async function writeSigningKeyFiles(name: string, out: string): Promise<KeygenResult> {
  let pair: { secretKey: string; publicKey: string };
  try {
    pair = generateSigningKey(name);
  } catch (err) {
    if (err instanceof KeyError) throw new ReleaseError("invalid_argument", err.message);
    throw err;
  }
  const secretKeyFile = resolve(out);
  const publicKeyFile = `${secretKeyFile}.pub`;
  const create = async (path: string, text: string, mode: number) => {
    let handle;
    try {
      handle = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new ReleaseError(
        code === "EEXIST" ? "invalid_argument" : "key",
        code === "EEXIST"
          ? `${path} exists; keygen never replaces a key: choose another --out, or remove the old file first`
          : `cannot create ${path} (${code})`,
      );
    }
    try {
      await handle.chmod(mode); // the umask may have taken bits away; never more than asked
      await handle.writeFile(`${text}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
  };
  await create(secretKeyFile, pair.secretKey, 0o600);
  try {
    await create(publicKeyFile, pair.publicKey, 0o644);
  } catch (err) {
    await rm(secretKeyFile, { force: true });
    throw err;
  }
  return { name, secretKeyFile, publicKeyFile, publicKey: pair.publicKey };
}
