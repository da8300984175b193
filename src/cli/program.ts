import { readFileSync } from "node:fs";
import { Command } from "commander";
import { commands } from "./commands/index.js";

function packageVersion(): string {
  const url = new URL("../../package.json", import.meta.url);
  try {
    return (JSON.parse(readFileSync(url, "utf8")) as { version: string }).version;
  } catch {
    // dist/cli/program.js sits one level deeper than src/cli/program.ts relative to package.json
    const alt = new URL("../../../package.json", import.meta.url);
    return (JSON.parse(readFileSync(alt, "utf8")) as { version: string }).version;
  }
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name("hetznix")
    .description(
      "NixOS on Hetzner Cloud: upload disk images as snapshots, deploy releases, emulate the API locally",
    )
    .version(packageVersion(), "-V, --version")
    .showHelpAfterError("(run with --help for usage)")
    .configureHelp({ sortSubcommands: false });
  for (const register of commands) register(program);
  return program;
}
