/** Finding and running the local helper programs (zstd, xz, bzip2, pigz, qemu-img). */
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";

/** Absolute path of `name` on PATH, or undefined. `pathEnv` defaults to process.env.PATH. */
export function findExecutable(
  name: string,
  pathEnv: string | undefined = process.env["PATH"],
): string | undefined {
  for (const dir of (pathEnv ?? "").split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Which local programs to use. `false` means "act as if absent" (tests use it to exercise fallbacks); a string is
 * the program's path; undefined means "look it up on PATH".
 */
export interface LocalTools {
  zstd?: string | false;
  xz?: string | false;
  bzip2?: string | false;
  pigz?: string | false;
  qemuImg?: string | false;
}

export type ToolName = keyof LocalTools;

const BINARY: Record<ToolName, string> = {
  zstd: "zstd",
  xz: "xz",
  bzip2: "bzip2",
  pigz: "pigz",
  qemuImg: "qemu-img",
};

/** The path of a tool, honouring overrides; undefined when absent or disabled. */
export function tool(tools: LocalTools | undefined, name: ToolName): string | undefined {
  const override = tools?.[name];
  if (override === false) return undefined;
  if (typeof override === "string") return override;
  return findExecutable(BINARY[name]);
}
