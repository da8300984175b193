import type { Command } from "commander";

/** Each command module exports `register(program)`; the order here is the order in `hetznix --help`. */
export const commands: ((program: Command) => void)[] = [];
