/**
 * Writing planned files under a root: each written atomically (temporary file in the same directory, then
 * rename), left untouched when already identical; and removing units the agent wrote earlier that the metadata no
 * longer calls for, recognised by name prefix AND header line, so nobody else's files are ever removed.
 */
import { lstat, open, readFile, readdir, rename, rm, mkdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { MetadataError } from "./errors.js";
import { NETWORK_DIR, UNIT_HEADER, isAgentUnitName, type Plan, type PlannedFile } from "./plan.js";

export interface WriteResult {
  /** Paths relative to the root. */
  written: string[];
  unchanged: string[];
  removed: string[];
  /** Planned files left alone because a symlink stands there (e.g. /etc/hostname managed by NixOS). */
  skipped: string[];
}

function failure(action: string, path: string, err: unknown): MetadataError {
  const reason = err instanceof Error ? err.message : String(err);
  return new MetadataError("write", `could not ${action} ${path}: ${reason}`, { cause: err });
}

async function sameFile(path: string, content: Buffer, mode: number): Promise<boolean> {
  try {
    const [current, info] = await Promise.all([readFile(path), stat(path)]);
    return (info.mode & 0o777) === mode && current.equals(content);
  } catch {
    return false;
  }
}

async function writeAtomically(path: string, content: Buffer, mode: number): Promise<void> {
  const temporary = `${path}.hetznix-${process.pid}.tmp`;
  try {
    const handle = await open(temporary, "w", mode);
    try {
      await handle.writeFile(content);
      await handle.chmod(mode); // the umask may have narrowed the mode given to open
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, path);
  } catch (err) {
    await rm(temporary, { force: true });
    throw err;
  }
}

async function isSymlink(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Writes one planned file. A symlink in its place is never replaced: someone else manages that file. */
async function writePlanned(root: string, file: PlannedFile): Promise<"written" | "unchanged" | "skipped"> {
  const path = join(root, file.path);
  const content = typeof file.content === "string" ? Buffer.from(file.content, "utf8") : file.content;
  if (await isSymlink(path)) return "skipped";
  if (await sameFile(path, content, file.mode)) return "unchanged";
  try {
    const dir = join(path, "..");
    await mkdir(dir, { recursive: true, mode: 0o755 });
    await writeAtomically(path, content, file.mode);
  } catch (err) {
    throw failure("write", path, err);
  }
  return "written";
}

/** Units in NETWORK_DIR that the agent wrote (prefix + header) and the plan does not list. Relative paths. */
export async function findStaleUnits(root: string, plan: Plan): Promise<string[]> {
  const dir = join(root, NETWORK_DIR);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const planned = new Set(plan.files.map((f) => f.path));
  const stale: string[] = [];
  for (const name of names.sort()) {
    const relative = `${NETWORK_DIR}/${name}`;
    if (!isAgentUnitName(name) || planned.has(relative)) continue;
    let firstLine: string;
    try {
      firstLine = (await readFile(join(dir, name), "utf8")).split("\n", 1)[0] ?? "";
    } catch {
      continue;
    }
    if (firstLine === UNIT_HEADER) stale.push(relative);
  }
  return stale;
}

/** Writes every planned file and removes stale units. Files are written before stale ones are removed. */
export async function writePlan(root: string, plan: Plan): Promise<WriteResult> {
  const result: WriteResult = { written: [], unchanged: [], removed: [], skipped: [] };
  for (const file of plan.files) result[await writePlanned(root, file)].push(file.path);
  for (const relative of await findStaleUnits(root, plan)) {
    try {
      await rm(join(root, relative), { force: true });
    } catch (err) {
      throw failure("remove", join(root, relative), err);
    }
    result.removed.push(relative);
  }
  return result;
}

/** Sets the running system's host name (only meaningful with root "/"). */
export async function setKernelHostname(hostname: string): Promise<void> {
  try {
    const handle = await open("/proc/sys/kernel/hostname", "w");
    try {
      await handle.writeFile(hostname);
    } finally {
      await handle.close();
    }
  } catch (err) {
    throw failure("set the host name via", "/proc/sys/kernel/hostname", err);
  }
}
