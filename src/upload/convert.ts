/**
 * Converting a qcow2 image to a raw (sparse) file on the client with qemu-img, so no rescue RAM-disk limit applies.
 *
 * Nothing of a conversion can outlive the process, however it ends (an error, Ctrl-C, SIGTERM, or killed outright):
 * - the raw file has no name: it is created in a private temporary directory, opened, and unlinked with the directory
 *   at once; qemu-img writes it through the descriptor it inherits, this process reads it through its own
 *   (`/proc/PID/fd/N`), and the kernel frees it when the last descriptor closes;
 * - qemu-img runs under `setpriv --pdeathsig KILL` (when setpriv is installed), so it dies with this process; an abort
 *   kills it at once.
 */
import { open, mkdtemp, rm, type FileHandle } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UploadError, throwIfAborted, abortError } from "./errors.js";
import { spawnStage, type SpawnedStage } from "./proc.js";
import { qcow2Hazard, unsafeQcow2Error } from "./source.js";
import { findExecutable } from "./tools.js";

export interface ConvertedImage {
  /** Where this process reads the raw file (sparse where the qcow2 had no data): `/proc/PID/fd/N`. */
  rawPath: string;
  /** Close the raw file, which frees it (idempotent). */
  remove(): Promise<void>;
}

/** Bytes of the qcow2 header read to check it again right before converting (the backing file name fits). */
const HEADER_BYTES = 4096;

/**
 * Run `qemu-img ARGS` with the raw file as its descriptor 3, dying with this process when setpriv can arrange it, and
 * killed when `signal` aborts.
 */
function qemuImgStage(qemuImg: string, args: string[], label: string, raw?: FileHandle): SpawnedStage {
  const setpriv = findExecutable("setpriv");
  const [file, argv] = setpriv ? [setpriv, ["--pdeathsig", "KILL", "--", qemuImg, ...args]] : [qemuImg, args];
  const stage = spawnStage(file, argv, label, raw ? [raw.fd] : []);
  stage.child.stdin.end();
  stage.child.stdout.resume();
  return stage;
}

async function runStage(stage: SpawnedStage, signal: AbortSignal | undefined): Promise<void> {
  const onAbort = () => stage.kill();
  if (signal?.aborted) stage.kill();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    await stage.done;
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

/** `qemu-img convert -f qcow2 -O raw` into a file without a name (see the module comment) under `dir`. */
export async function convertQcow2ToRaw(
  qemuImg: string,
  qcow2Path: string,
  opts: { dir?: string; signal?: AbortSignal; virtualSize: number },
): Promise<ConvertedImage> {
  throwIfAborted(opts.signal, "upload");
  // Checked again here, not only when the file was inspected: it may have been replaced since.
  const header = await open(qcow2Path, "r");
  try {
    const buf = Buffer.alloc(HEADER_BYTES);
    const { bytesRead } = await header.read(buf, 0, HEADER_BYTES, 0);
    const hazard = qcow2Hazard(buf.subarray(0, bytesRead));
    if (hazard) throw unsafeQcow2Error(qcow2Path, hazard);
  } finally {
    await header.close();
  }

  const check = qemuImgStage(qemuImg, ["check", "-q", "-f", "qcow2", qcow2Path], "qemu-img check");
  try {
    await runStage(check, opts.signal);
  } catch (err) {
    throwIfAborted(opts.signal, "upload");
    throw new UploadError(
      "corrupt_source",
      `${qcow2Path}: the qcow2 image is corrupt or truncated: ${(err as Error).message}`,
    );
  }
  throwIfAborted(opts.signal, "upload");

  const dir = await mkdtemp(join(opts.dir ?? tmpdir(), "hetznix-qcow2-"));
  let raw: FileHandle;
  try {
    raw = await open(join(dir, "image.raw"), "w+", 0o600);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  let closed = false;
  const remove = async () => {
    if (closed) return;
    closed = true;
    await raw.close();
  };
  try {
    // qemu-img -n writes into the existing file, which must already have the image's size (sparse: costs nothing);
    // --target-is-zero skips writing the zeros a new file already reads as.
    await raw.truncate(opts.virtualSize);
    const stage = qemuImgStage(
      qemuImg,
      ["convert", "-n", "--target-is-zero", "-f", "qcow2", "-O", "raw", qcow2Path, "/proc/self/fd/3"],
      "qemu-img convert",
      raw,
    );
    await runStage(stage, opts.signal);
  } catch (err) {
    await remove();
    if (opts.signal?.aborted) throw abortError(opts.signal, "upload");
    throw new UploadError(
      "corrupt_source",
      `${qcow2Path}: converting the qcow2 image to raw failed: ${(err as Error).message}`,
    );
  }
  return { rawPath: `/proc/${process.pid}/fd/${raw.fd}`, remove };
}
