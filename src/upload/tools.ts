/** Finding and running the local helper programs (zstd, xz, bzip2, pigz, qemu-img). */
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";
import { UploadError } from "./errors.js";
import type { Compression } from "./formats.js";

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

/** Decompressor program for `compression` on this machine, as [file, args]; gz without pigz falls back to gzip. */
export function localDecompressor(
  compression: Exclude<Compression, "none">,
  tools?: LocalTools,
): { file: string; args: string[] } {
  switch (compression) {
    case "gz": {
      const pigz = tool(tools, "pigz");
      return pigz ? { file: pigz, args: ["-dc"] } : { file: "gzip", args: ["-dc"] };
    }
    case "bz2": {
      const bzip2 = tool(tools, "bzip2");
      if (!bzip2) throw new UploadError("tool_failed", "bzip2 is needed to read a bzip2-compressed image");
      return { file: bzip2, args: ["-dc"] };
    }
    case "xz": {
      const xz = tool(tools, "xz");
      if (!xz) throw new UploadError("tool_failed", "xz is needed to read an xz-compressed image");
      return { file: xz, args: ["-dc", "-T0"] };
    }
    case "zstd": {
      const zstd = tool(tools, "zstd");
      if (!zstd) throw new UploadError("tool_failed", "zstd is needed to read a zstd-compressed image");
      return { file: zstd, args: ["-dc"] };
    }
  }
}
