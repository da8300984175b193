/** Converting a qcow2 image to a raw (sparse) file on the client with qemu-img, so no rescue RAM-disk limit applies. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UploadError, throwIfAborted, abortError } from "./errors.js";
import { spawnStage } from "./proc.js";

export interface ConvertedImage {
  /** The raw file (sparse where the qcow2 had no data). */
  rawPath: string;
  /** Remove the temporary directory (idempotent). */
  remove(): Promise<void>;
}

/** `qemu-img convert -f qcow2 -O raw` into a new temporary directory under `dir` (default os.tmpdir()). */
export async function convertQcow2ToRaw(
  qemuImg: string,
  qcow2Path: string,
  opts: { dir?: string; signal?: AbortSignal } = {},
): Promise<ConvertedImage> {
  throwIfAborted(opts.signal, "upload");
  const dir = await mkdtemp(join(opts.dir ?? tmpdir(), "hetznix-qcow2-"));
  const remove = async () => {
    await rm(dir, { recursive: true, force: true });
  };
  const rawPath = join(dir, "image.raw");
  const check = spawnStage(qemuImg, ["check", "-q", "-f", "qcow2", qcow2Path], "qemu-img check");
  check.child.stdin.end();
  check.child.stdout.resume();
  try {
    await check.done;
  } catch (err) {
    await remove();
    throw new UploadError(
      "corrupt_source",
      `${qcow2Path}: the qcow2 image is corrupt or truncated: ${(err as Error).message}`,
    );
  }
  const stage = spawnStage(
    qemuImg,
    ["convert", "-f", "qcow2", "-O", "raw", qcow2Path, rawPath],
    "qemu-img convert",
  );
  stage.child.stdin.end();
  stage.child.stdout.resume();
  const onAbort = () => stage.kill();
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    await stage.done;
  } catch (err) {
    await remove();
    if (opts.signal?.aborted) throw abortError(opts.signal, "upload");
    throw new UploadError(
      "corrupt_source",
      `${qcow2Path}: converting the qcow2 image to raw failed: ${(err as Error).message}`,
    );
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
  }
  return { rawPath, remove };
}
