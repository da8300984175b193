/**
 * How to run hetznix's own CLI again from inside hetznix (a detached worker, the metadata agent of an emulated
 * host): node, the TypeScript loader when running from source, and the CLI's entry point.
 */
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export interface SelfCommand {
  /** The package root (holds package.json). */
  packageDir: string;
  /** `src` or `dist`. */
  codeDir: string;
  /** node, then `--import LOADER` when running from source, then the CLI's main file. */
  argv: string[];
  /** The TypeScript loader's file (running from source), else undefined. */
  loader: string | undefined;
  main: string;
}

/**
 * The command that runs this hetznix's CLI, or undefined when it cannot be found. `code: "dist"` asks for the built
 * JavaScript (dist/, from `npm run build`) even when running from source: it starts several times faster than the
 * TypeScript loader.
 */
export function selfCommand(opts: { code?: "running" | "dist" } = {}): SelfCommand | undefined {
  const self = fileURLToPath(import.meta.url);
  let codeDir = resolve(dirname(self), ".."); // src/ or dist/
  const packageDir = dirname(codeDir);
  if (!existsSync(join(packageDir, "package.json"))) return undefined;
  let fromSource = self.endsWith(".ts");
  if (opts.code === "dist" && fromSource) {
    codeDir = join(packageDir, "dist");
    fromSource = false;
  }
  const main = join(codeDir, "cli", fromSource ? "main.ts" : "main.js");
  if (!existsSync(main)) return undefined;
  let loader: string | undefined;
  if (fromSource) {
    try {
      loader = fileURLToPath(import.meta.resolve("tsx"));
    } catch {
      return undefined;
    }
  }
  return {
    packageDir,
    codeDir,
    argv: [process.execPath, ...(loader ? ["--import", loader] : []), main],
    loader,
    main,
  };
}
