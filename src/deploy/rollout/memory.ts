/**
 * What hetznix remembers between deploys, in the user's state directory ($XDG_STATE_HOME/hetznix, else
 * ~/.local/state/hetznix): the SSH host key of each server first seen (trust on first use; a changed key is refused),
 * and the last outcome per server per channel (for --only-failed). Public facts only: no secrets.
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import type { ServerOutcome } from "./plan.js";

export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_STATE_HOME || join(env.HOME || homedir(), ".local", "state"), "hetznix");
}

async function readJson<T>(path: string, fallback: T): Promise<T> {
  try {
    return JSON.parse(await readFile(path, "utf8")) as T;
  } catch {
    return fallback;
  }
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(value, null, 2) + "\n", { mode: 0o600 });
  await rename(tmp, path);
}

export interface KnownHost {
  name: string;
  ip: string;
  /** `SHA256:...` of its host key. */
  fingerprint: string;
  firstSeen: string;
}

/** hetznix's own known-hosts file: server id -> host key. */
export class KnownHosts {
  private constructor(
    readonly path: string,
    private readonly entries: Record<string, KnownHost>,
  ) {}

  static async load(path: string): Promise<KnownHosts> {
    return new KnownHosts(path, await readJson<Record<string, KnownHost>>(path, {}));
  }

  get(serverId: number): KnownHost | undefined {
    return this.entries[String(serverId)];
  }

  set(serverId: number, entry: KnownHost): void {
    this.entries[String(serverId)] = entry;
  }

  save(): Promise<void> {
    return writeJson(this.path, this.entries);
  }
}

export interface Remembered {
  name: string;
  outcome: ServerOutcome;
  serial?: number;
  storePath?: string;
  at: string;
}

/** The last outcome per server, per channel. */
export class DeployMemory {
  private constructor(
    readonly path: string,
    private readonly byChannel: Record<string, Record<string, Remembered>>,
  ) {}

  static async load(path: string): Promise<DeployMemory> {
    return new DeployMemory(path, await readJson<Record<string, Record<string, Remembered>>>(path, {}));
  }

  lastOutcomes(channel: string): Map<number, ServerOutcome> {
    return new Map(Object.entries(this.byChannel[channel] ?? {}).map(([id, r]) => [Number(id), r.outcome]));
  }

  remember(channel: string, serverId: number, entry: Remembered): void {
    (this.byChannel[channel] ??= {})[String(serverId)] = entry;
  }

  save(): Promise<void> {
    return writeJson(this.path, this.byChannel);
  }
}
