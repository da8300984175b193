#!/usr/bin/env node
import { CommanderError } from "commander";
import { buildProgram, unknownCommand } from "./program.js";

/** Exit status of usage errors (unknown command or option, missing argument), as for UsageError. */
const USAGE = 2;

const program = buildProgram();
const unknown = unknownCommand(program, process.argv.slice(2));
if (unknown !== undefined) {
  process.stderr.write(`hetznix: unknown command '${unknown}' (run hetznix --help for the commands)\n`);
  process.exitCode = USAGE;
} else {
  program.parseAsync(process.argv).catch((err: unknown) => {
    // Commander has printed its message (or the help, or the version) already.
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : USAGE;
      return;
    }
    // Commands render their own errors; anything reaching here is unexpected. Never print secrets: errors from the
    // hcloud client never carry the token.
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`hetznix: ${message}\n`);
    process.exitCode = process.exitCode || 1;
  });
}
