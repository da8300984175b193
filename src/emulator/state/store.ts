/**
 * The emulator's records and their persistence: one map per resource, the id counters, `state.json` written
 * atomically after every change, and a lock so only one emulator uses a state directory at a time.
 */
import { randomBytes } from "node:crypto";
import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { notFound } from "./errors.js";
import type {
  ActionRecord,
  FirewallRecord,
  ImageRecord,
  NetworkRecord,
  PersistedState,
  PlacementGroupRecord,
  PrimaryIpRecord,
  ServerRecord,
  SshKeyRecord,
  VolumeRecord,
} from "./records.js";

/** A second emulator was pointed at a state directory in use. */
export class StateDirInUseError extends Error {
  override readonly name = "StateDirInUseError";
}

export type IdKind = keyof PersistedState["nextIds"];

export class Store {
  readonly servers = new Map<number, ServerRecord>();
  readonly images = new Map<number, ImageRecord>();
  readonly sshKeys = new Map<number, SshKeyRecord>();
  readonly actions = new Map<number, ActionRecord>();
  readonly firewalls = new Map<number, FirewallRecord>();
  readonly primaryIps = new Map<number, PrimaryIpRecord>();
  readonly networks = new Map<number, NetworkRecord>();
  readonly volumes = new Map<number, VolumeRecord>();
  readonly placementGroups = new Map<number, PlacementGroupRecord>();
  private nextIds: PersistedState["nextIds"] = {
    server: 60_000_001,
    image: 300_000_001,
    sshKey: 20_000_001,
    action: 500_000_001,
    ipv6Net: 1,
    firewall: 1_000_001,
    primaryIp: 70_000_001,
    network: 4_000_001,
    volume: 100_000_001,
    placementGroup: 800_001,
  };
  /** Set by close(): nothing is saved or scheduled afterwards. */
  closed = false;
  /** Notified after every save (for debugging/tests). */
  onChange: (() => void) | undefined;
  private locked = false;

  private constructor(readonly stateDir: string) {}

  get statePath(): string {
    return join(this.stateDir, "state.json");
  }

  private get lockPath(): string {
    return join(this.stateDir, "emulator.lock");
  }

  /**
   * Takes the state directory (creating it), reads what a previous run saved. Refuses a directory another live
   * emulator holds; a lock left by a crashed one is taken over.
   */
  static open(stateDir: string): { store: Store; saved: PersistedState | undefined } {
    const store = new Store(stateDir);
    mkdirSync(join(stateDir, "disks"), { recursive: true });
    store.lock();
    try {
      let saved: PersistedState | undefined;
      try {
        saved = JSON.parse(readFileSync(store.statePath, "utf8")) as PersistedState;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
      if (saved) store.nextIds = { ...store.nextIds, ...saved.nextIds };
      return { store, saved };
    } catch (err) {
      store.unlock();
      throw err;
    }
  }

  private lock(): void {
    const mine = `${process.pid} ${processStart(process.pid)}\n`;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fd = openSync(this.lockPath, "wx", 0o600);
        try {
          writeSync(fd, mine);
        } finally {
          closeSync(fd);
        }
        this.locked = true;
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
      let owner = "";
      try {
        owner = readFileSync(this.lockPath, "utf8");
      } catch {
        continue; // removed meanwhile: try again
      }
      const [pid, start] = owner.trim().split(" ");
      if (pid !== undefined && /^\d+$/.test(pid) && processStart(Number(pid)) === start && start !== "") {
        throw new StateDirInUseError(
          `the state directory ${this.stateDir} is in use by another emulator (pid ${pid}); stop that one, or give this one its own --state-dir`,
        );
      }
      // The owner is gone (crashed): take the directory over.
      rmSync(this.lockPath, { force: true });
    }
    throw new StateDirInUseError(`could not lock the state directory ${this.stateDir}`);
  }

  /** Releases the lock (idempotent; never throws: the directory may be gone). */
  unlock(): void {
    if (!this.locked) return;
    this.locked = false;
    try {
      rmSync(this.lockPath, { force: true });
    } catch {
      // The state directory vanished; nothing to release.
    }
  }

  nextId(kind: IdKind): number {
    return this.nextIds[kind]++;
  }

  /** Writes state.json atomically (temp file + rename). Throws when the directory is gone. */
  save(): void {
    if (this.closed) return;
    this.write();
    this.onChange?.();
  }

  /** The final save of close(): never throws (a vanished state directory must not keep the emulator from stopping). */
  trySave(): Error | undefined {
    try {
      this.write();
      return undefined;
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
  }

  private write(): void {
    const data: PersistedState = {
      version: 1,
      nextIds: this.nextIds,
      servers: [...this.servers.values()],
      images: [...this.images.values()].filter((i) => i.type !== "system"),
      sshKeys: [...this.sshKeys.values()],
      actions: [...this.actions.values()],
      firewalls: [...this.firewalls.values()],
      primaryIps: [...this.primaryIps.values()],
      networks: [...this.networks.values()],
      volumes: [...this.volumes.values()],
      placementGroups: [...this.placementGroups.values()],
    };
    const tmp = `${this.statePath}.${process.pid}.${randomBytes(3).toString("hex")}.tmp`;
    try {
      writeFileSync(tmp, JSON.stringify(data));
      renameSync(tmp, this.statePath);
    } catch (err) {
      rmSync(tmp, { force: true });
      throw err;
    }
  }
}

/** The record with this id, or a not_found error naming it (`what`, e.g. "SSH key"). */
export function required<T>(records: Map<number, T>, id: number, what: string): T {
  const record = records.get(id);
  if (!record) throw notFound(`${what} with ID '${id}'`);
  return record;
}

export function isoNow(ms = Date.now()): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** Start time of a process (field 22 of /proc/PID/stat), "" when it does not exist. */
export function processStart(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? "";
  } catch {
    return "";
  }
}
