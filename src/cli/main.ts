#!/usr/bin/env node
import { buildProgram } from "./program.js";

buildProgram()
  .parseAsync(process.argv)
  .catch((err: unknown) => {
    // Commands render their own errors; anything reaching here is unexpected. Never print secrets: errors from the
    // hcloud client never carry the token.
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`hetznix: ${message}\n`);
    process.exitCode = process.exitCode || 1;
  });
