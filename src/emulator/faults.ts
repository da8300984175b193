/**
 * Fault injection: failing API calls, locations out of capacity, SSH sessions that drop. Set from the command line
 * (`--fault`, see parseFault) or at run time through the admin endpoint (POST /_emulator/faults).
 */
import { STATUS_BY_CODE } from "./state/errors.js";
import type { FaultView } from "./state/power.js";

export interface FaultSpec {
  /** The next `count` calls matching method + path pattern fail with `code` (status from the code table). */
  kind: "http";
  /** HTTP method, or "*" for any. */
  method: string;
  /** Path pattern below /v1, `*` matches one segment, `**` the rest; e.g. "/servers/*\/actions/poweron". */
  path: string;
  code: string;
  count: number;
  message?: string;
}

export interface CapacityFault {
  kind: "capacity";
  location: string;
  serverType: string;
}

export interface SshDropFault {
  kind: "ssh_drop";
  /** Server id, or undefined for every server (current and future hosts). */
  serverId?: number;
  afterBytes: number;
}

export type Fault = FaultSpec | CapacityFault | SshDropFault;

export interface ActiveFault {
  id: number;
  fault: Fault;
  /** For http faults: how many more calls fail. */
  remaining?: number;
}

/** Matches a request path against a pattern: `*` = one segment, `**` = any rest (including nothing). */
export function pathMatches(pattern: string, path: string): boolean {
  const p = pattern.replace(/\/+$/, "").split("/");
  const s = path.replace(/\/+$/, "").split("/");
  for (let i = 0; i < p.length; i++) {
    const seg = p[i];
    if (seg === "**") return true;
    if (i >= s.length) return false;
    if (seg !== "*" && seg !== s[i]) return false;
  }
  return p.length === s.length;
}

export class Faults implements FaultView {
  private nextId = 1;
  private readonly list: ActiveFault[] = [];
  /** Called when an ssh_drop fault is added, so running hosts pick it up. */
  onSshDropChange: (() => void) | undefined;

  constructor(initial: Fault[] = []) {
    for (const f of initial) this.add(f);
  }

  add(fault: Fault): ActiveFault {
    const checked = validateFault(fault);
    const active: ActiveFault = { id: this.nextId++, fault: checked };
    if (checked.kind === "http") active.remaining = checked.count;
    this.list.push(active);
    if (checked.kind === "ssh_drop") this.onSshDropChange?.();
    return active;
  }

  remove(id: number): boolean {
    const i = this.list.findIndex((f) => f.id === id);
    if (i < 0) return false;
    const [removed] = this.list.splice(i, 1);
    if (removed?.fault.kind === "ssh_drop") this.onSshDropChange?.();
    return true;
  }

  clear(): void {
    const hadDrop = this.list.some((f) => f.fault.kind === "ssh_drop");
    this.list.length = 0;
    if (hadDrop) this.onSshDropChange?.();
  }

  all(): ActiveFault[] {
    return this.list.map((f) => ({ ...f }));
  }

  /** Consumes one failure for this call if an http fault matches it. */
  takeHttp(method: string, path: string): FaultSpec | undefined {
    for (const active of this.list) {
      const f = active.fault;
      if (f.kind !== "http") continue;
      if (f.method !== "*" && f.method.toUpperCase() !== method.toUpperCase()) continue;
      if (!pathMatches(f.path, path)) continue;
      active.remaining = (active.remaining ?? 0) - 1;
      if (active.remaining <= 0) this.list.splice(this.list.indexOf(active), 1);
      return f;
    }
    return undefined;
  }

  outOfCapacity(location: string, serverType: string): boolean {
    return this.list.some(
      (a) =>
        a.fault.kind === "capacity" && a.fault.location === location && a.fault.serverType === serverType,
    );
  }

  /** Byte budget of SSH sessions to a server, or undefined when no fault applies (the smallest one wins). */
  sshDropAfter(serverId: number): number | undefined {
    let best: number | undefined;
    for (const a of this.list) {
      const f = a.fault;
      if (f.kind !== "ssh_drop") continue;
      if (f.serverId !== undefined && f.serverId !== serverId) continue;
      best = best === undefined ? f.afterBytes : Math.min(best, f.afterBytes);
    }
    return best;
  }
}

export class FaultSyntaxError extends Error {
  override readonly name = "FaultSyntaxError";
}

function positiveInt(value: unknown, what: string, allowZero = false): number {
  const n = typeof value === "string" ? Number(value) : value;
  if (typeof n !== "number" || !Number.isInteger(n) || n < (allowZero ? 0 : 1))
    throw new FaultSyntaxError(`${what} must be a ${allowZero ? "non-negative" : "positive"} integer`);
  return n;
}

/** Checks a fault object (from JSON or code) and returns a clean copy. */
export function validateFault(input: unknown): Fault {
  if (typeof input !== "object" || input === null) throw new FaultSyntaxError("fault must be an object");
  const f = input as Record<string, unknown>;
  switch (f.kind) {
    case "http": {
      if (typeof f.method !== "string" || f.method === "") throw new FaultSyntaxError("method is required");
      if (typeof f.path !== "string" || !f.path.startsWith("/"))
        throw new FaultSyntaxError("path must start with /");
      if (typeof f.code !== "string" || !(f.code in STATUS_BY_CODE))
        throw new FaultSyntaxError(`code must be one of: ${Object.keys(STATUS_BY_CODE).join(", ")}`);
      const spec: FaultSpec = {
        kind: "http",
        method: f.method.toUpperCase(),
        path: f.path,
        code: f.code,
        count: f.count === undefined ? 1 : positiveInt(f.count, "count"),
      };
      if (typeof f.message === "string") spec.message = f.message;
      return spec;
    }
    case "capacity": {
      const serverType = f.serverType ?? f.server_type;
      if (typeof f.location !== "string" || typeof serverType !== "string")
        throw new FaultSyntaxError("capacity fault needs location and server_type");
      const c: CapacityFault = { kind: "capacity", location: f.location, serverType };
      return c;
    }
    case "ssh_drop": {
      const after = f.afterBytes ?? f.after_bytes;
      const serverId = f.serverId ?? f.server_id;
      const d: SshDropFault = { kind: "ssh_drop", afterBytes: positiveInt(after, "after_bytes", true) };
      if (serverId !== undefined && serverId !== null) d.serverId = positiveInt(serverId, "server_id");
      return d;
    }
    default:
      throw new FaultSyntaxError("kind must be http, capacity or ssh_drop");
  }
}

/**
 * Parses the `--fault` command line form:
 * - `http:METHOD:PATH:CODE[:COUNT]`, e.g. `http:POST:/servers/*\/actions/poweron:server_error:2`;
 * - `capacity:LOCATION:SERVER_TYPE`, e.g. `capacity:fsn1:cx23`;
 * - `ssh_drop:BYTES[:SERVER_ID]`, e.g. `ssh_drop:1000000`.
 */
export function parseFault(text: string): Fault {
  const parts = text.split(":");
  const kind = parts[0];
  if (kind === "http") {
    const [, method, path, code, count] = parts;
    if (parts.length < 4 || parts.length > 5) throw new FaultSyntaxError(`bad http fault '${text}'`);
    return validateFault({ kind, method, path, code, count: count ?? 1 });
  }
  if (kind === "capacity") {
    if (parts.length !== 3) throw new FaultSyntaxError(`bad capacity fault '${text}'`);
    return validateFault({ kind, location: parts[1], serverType: parts[2] });
  }
  if (kind === "ssh_drop") {
    if (parts.length < 2 || parts.length > 3) throw new FaultSyntaxError(`bad ssh_drop fault '${text}'`);
    return validateFault({ kind, afterBytes: parts[1], serverId: parts[2] });
  }
  throw new FaultSyntaxError(`unknown fault kind in '${text}' (http, capacity, ssh_drop)`);
}

/** JSON form of a fault for the admin endpoint (snake_case like the rest of the API). */
export function renderFault(a: ActiveFault): Record<string, unknown> {
  const f = a.fault;
  switch (f.kind) {
    case "http":
      return {
        id: a.id,
        kind: f.kind,
        method: f.method,
        path: f.path,
        code: f.code,
        remaining: a.remaining ?? 0,
      };
    case "capacity":
      return { id: a.id, kind: f.kind, location: f.location, server_type: f.serverType };
    case "ssh_drop":
      return { id: a.id, kind: f.kind, server_id: f.serverId ?? null, after_bytes: f.afterBytes };
  }
}
