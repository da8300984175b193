import type { Command } from "commander";
import { register as metadata } from "./metadata.js";
import { register as emulator } from "./emulator.js";
import { register as upload } from "./upload.js";
import { register as writeToDisk } from "./write-to-disk.js";
import { register as cleanup } from "./cleanup.js";
import { register as apply } from "./apply.js";
import { register as deploy } from "./deploy.js";
import { register as release } from "./release.js";

/** Each command module exports `register(program)`; the order here is the order in `hetznix --help`. */
export const commands: ((program: Command) => void)[] = [
  upload,
  writeToDisk,
  cleanup,
  deploy,
  apply,
  release,
  metadata,
  emulator,
];
