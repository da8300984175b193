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

/** What the top-level help promises, each phrase only when its command is registered. */
const PROMISES: readonly (readonly [command: string, phrase: string])[] = [
  ["upload", "upload disk images as snapshots"],
  ["write-to-disk", "write them onto servers' disks"],
  ["deploy", "deploy releases"],
  ["emulator", "emulate the API locally"],
];

export function buildProgram(): Command {
  const program = new Command();
  program
    .name("hetznix")
    .version(packageVersion(), "-V, --version")
    .showHelpAfterError("(run with --help for usage)")
    .configureHelp({ sortSubcommands: false })
    // Parse errors become a CommanderError for main.ts (exit status 2) instead of exiting with 1; the commands,
    // registered after this, inherit it.
    .exitOverride();
  for (const register of commands) register(program);
  const registered = new Set(program.commands.map((c) => c.name()));
  const promised = PROMISES.filter(([command]) => registered.has(command)).map(([, phrase]) => phrase);
  program.description(`NixOS on Hetzner Cloud: ${promised.join(", ")}`);
  return program;
}

/**
 * The command word of `args` (argv without node and the script) when it names no command of `program`, e.g. `release`
 * in `hetznix release publish --help` or `hetznix help release`; undefined otherwise (a known command, an option, or
 * nothing). Commander would print the top-level help for it and succeed.
 */
export function unknownCommand(program: Command, args: readonly string[]): string | undefined {
  const word = args[0] === "help" ? args[1] : args[0];
  if (word === undefined || word.startsWith("-")) return undefined;
  const known = new Set(program.commands.flatMap((c) => [c.name(), ...c.aliases()]));
  return known.has(word) ? undefined : word;
}
