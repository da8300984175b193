/** The directory of one apply under the run directory, named by its nonce. */
import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";

/** A new nonce for an apply: 128 random bits, hex. */
export function newNonce(): string {
  return randomBytes(16).toString("hex");
}

/** Makes the directory of one apply (exclusive: a nonce is used once). */
export async function makeApplyDir(runDir: string, nonce: string): Promise<string> {
  if (!/^[0-9a-f]{16,64}$/.test(nonce)) throw new Error("the nonce must be 16 to 64 lowercase hex digits");
  await mkdir(runDir, { recursive: true, mode: 0o700 });
  const dir = join(runDir, nonce);
  await mkdir(dir, { mode: 0o700 });
  return dir;
}
