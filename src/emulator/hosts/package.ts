/**
 * hetznix itself, as hosts need it: the metadata agent run at a system host's boot (on the machine, against the
 * mounted disk) and the `hetznix` command inside hosts (the emulator's own package, bound read-only at /opt/hetznix,
 * as the NixOS module puts hetznix on a real server).
 */
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { basename, join, relative, sep } from "node:path";
import { selfCommand } from "../../util/self.js";

export interface HetznixPackage {
  /** The package root on the machine (holds package.json). */
  dir: string;
  /** What is bound into hosts under /opt/hetznix. */
  entries: string[];
  /** Runs the CLI on the machine: [node, ...loader, main]. */
  command: string[];
  /** The same inside a host (paths under /opt/hetznix); undefined when the package cannot be bound there. */
  hostCommand: string[] | undefined;
}

const IN_HOST = "/opt/hetznix";

const cached = new Map<string, HetznixPackage | null>();

/**
 * Finds the running hetznix package (from source with tsx, or built). With `code: "dist"`, its built JavaScript
 * (dist/, `npm run build`), which starts much faster. Undefined when it cannot be found.
 */
export function hetznixPackage(code: "running" | "dist" = "running"): HetznixPackage | undefined {
  if (!cached.has(code)) cached.set(code, find(code) ?? null);
  return cached.get(code) ?? undefined;
}

function find(code: "running" | "dist"): HetznixPackage | undefined {
  const self = selfCommand({ code });
  if (!self) return undefined;
  const dir = self.packageDir;
  try {
    const manifest = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: string };
    if (manifest.name !== "hetznix") return undefined;
  } catch {
    return undefined;
  }
  const entries = ["package.json", basename(self.codeDir), "node_modules"].filter((e) =>
    existsSync(join(dir, e)),
  );
  if (existsSync(join(dir, "tsconfig.json"))) entries.push("tsconfig.json");
  // node_modules may be a link (a worktree sharing another checkout's, a pnpm store): what lies in its real
  // directory is inside too, since binding node_modules binds where the link points.
  const modules = join(dir, "node_modules");
  const realModules = existsSync(modules) ? realpathSync(modules) : modules;
  const inside = (p: string): string | undefined => {
    const under = (base: string, at: string) => {
      const rel = relative(base, p);
      return rel.startsWith("..") || rel.startsWith(sep) ? undefined : `${at}/${rel.split(sep).join("/")}`;
    };
    return under(dir, IN_HOST) ?? under(realModules, `${IN_HOST}/node_modules`);
  };
  const hostLoader = self.loader === undefined ? undefined : inside(self.loader);
  const hostMain = inside(self.main);
  const nodeVisible = process.execPath.startsWith("/usr/");
  const hostCommand =
    hostMain !== undefined && (self.loader === undefined || hostLoader !== undefined) && nodeVisible
      ? [process.execPath, ...(hostLoader ? ["--import", hostLoader] : []), hostMain]
      : undefined;
  return { dir, entries, command: self.argv, hostCommand };
}
