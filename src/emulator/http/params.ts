/**
 * Request parsing: query parameters (pagination, sort, filters, label selectors) and JSON bodies, with the API's
 * invalid_input answers (details.fields) for anything malformed.
 */
import { parseLabelSelector, type LabelSelector } from "../../hcloud/labels.js";
import type { Labels } from "../../hcloud/schema.js";
import { ApiError, invalidField, invalidInput, type FieldProblem } from "../state/errors.js";
import { pagination } from "./render.js";

export const DEFAULT_PER_PAGE = 25;
export const MAX_PER_PAGE = 50;

function positiveInt(query: URLSearchParams, name: string, fallback: number): number {
  const raw = query.get(name);
  if (raw === null || raw === "") return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < 1) throw invalidField(name, `${name} must be a positive integer`);
  return Number(raw);
}

/** Applies page/per_page (default 25, at most 50 as documented) and returns the page plus meta.pagination. */
export function paginate<T>(
  query: URLSearchParams,
  items: T[],
): { items: T[]; meta: { pagination: ReturnType<typeof pagination> } } {
  const page = positiveInt(query, "page", 1);
  const perPage = Math.min(MAX_PER_PAGE, positiveInt(query, "per_page", DEFAULT_PER_PAGE));
  const start = (page - 1) * perPage;
  return {
    items: items.slice(start, start + perPage),
    meta: { pagination: pagination(page, perPage, items.length) },
  };
}

/** `sort` parameters, e.g. ["name:desc", "id"], against the allowed fields. Returns a comparator or undefined. */
export function sorter<T>(
  query: URLSearchParams,
  fields: Record<string, (x: T) => string | number | null>,
): ((a: T, b: T) => number) | undefined {
  const specs = query
    .getAll("sort")
    .flatMap((s) => s.split(","))
    .filter((s) => s !== "");
  if (specs.length === 0) return undefined;
  const keys: { get: (x: T) => string | number | null; dir: number }[] = [];
  for (const spec of specs) {
    const [field = "", dir = "asc", more] = spec.split(":");
    const get = fields[field];
    if (!get || (dir !== "asc" && dir !== "desc") || more !== undefined)
      throw invalidField(
        "sort",
        `sort must be one of ${Object.keys(fields)
          .flatMap((f) => [f, `${f}:asc`, `${f}:desc`])
          .join(", ")}`,
      );
    keys.push({ get, dir: dir === "desc" ? -1 : 1 });
  }
  return (a, b) => {
    for (const k of keys) {
      const x = k.get(a);
      const y = k.get(b);
      if (x === y) continue;
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : 1) * k.dir;
    }
    return 0;
  };
}

export function labelSelector(query: URLSearchParams): LabelSelector | undefined {
  const text = query.get("label_selector");
  if (text === null) return undefined;
  const parsed = parseLabelSelector(text);
  if (!parsed.ok) throw invalidField("label_selector", parsed.error);
  return parsed.selector;
}

/** A repeatable enum query parameter (e.g. status=running&status=off); values are checked. */
export function enumList(query: URLSearchParams, name: string, allowed: readonly string[]): string[] {
  const values = query
    .getAll(name)
    .flatMap((v) => v.split(","))
    .filter((v) => v !== "");
  const bad = values.filter((v) => !allowed.includes(v));
  if (bad.length > 0) throw invalidField(name, `${name} must be one of ${allowed.join(", ")}`);
  return values;
}

export function boolParam(query: URLSearchParams, name: string): boolean | undefined {
  const raw = query.get(name);
  if (raw === null) return undefined;
  // Lenient like the API: Python's requests sends True/False for Python booleans.
  if (["true", "True", "TRUE", "1", "t"].includes(raw)) return true;
  if (["false", "False", "FALSE", "0", "f"].includes(raw)) return false;
  throw invalidField(name, `${name} must be true or false`);
}

/** Reads typed fields of a JSON body, collecting every problem into one invalid_input answer. */
export class Body {
  private readonly problems: FieldProblem[] = [];
  private readonly obj: Record<string, unknown>;

  constructor(raw: unknown) {
    if (raw === undefined || raw === null) this.obj = {};
    else if (typeof raw === "object" && !Array.isArray(raw)) this.obj = raw as Record<string, unknown>;
    else throw new ApiError("json_error", "request body must be a JSON object");
  }

  has(name: string): boolean {
    return this.obj[name] !== undefined;
  }

  raw(name: string): unknown {
    return this.obj[name];
  }

  private fail(name: string, message: string): undefined {
    this.problems.push({ name, messages: [message] });
    return undefined;
  }

  string(name: string, required: true): string;
  string(name: string, required?: false): string | undefined;
  string(name: string, required = false): string | undefined {
    const v = this.obj[name];
    if (v === undefined || v === null) return required ? (this.fail(name, "is required") ?? "") : undefined;
    if (typeof v !== "string") return this.fail(name, "must be a string");
    return v;
  }

  /** A string or an integer (ids and names are both accepted), returned as a string. */
  idOrName(name: string, required: true): string;
  idOrName(name: string, required?: false): string | undefined;
  idOrName(name: string, required = false): string | undefined {
    const v = this.obj[name];
    if (v === undefined || v === null) return required ? (this.fail(name, "is required") ?? "") : undefined;
    if (typeof v === "string" && v !== "") return v;
    if (typeof v === "number" && Number.isInteger(v)) return String(v);
    return this.fail(name, "must be an ID or a name");
  }

  bool(name: string): boolean | undefined {
    const v = this.obj[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "boolean") return this.fail(name, "must be a boolean");
    return v;
  }

  labels(name = "labels"): Labels | undefined {
    const v = this.obj[name];
    if (v === undefined) return undefined;
    // null is refused, not read as "unchanged" (the API's labels are an object; {} clears them).
    if (v === null)
      return this.fail(name, "must be an object of strings, not null (send {} to remove all labels)");
    if (typeof v !== "object" || Array.isArray(v)) return this.fail(name, "must be an object of strings");
    for (const value of Object.values(v as Record<string, unknown>))
      if (typeof value !== "string") return this.fail(name, "label values must be strings");
    return v as Labels;
  }

  idOrNameList(name: string): string[] {
    const v = this.obj[name];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) return this.fail(name, "must be a list") ?? [];
    const out: string[] = [];
    for (const item of v) {
      if (typeof item === "string" && item !== "") out.push(item);
      else if (typeof item === "number" && Number.isInteger(item)) out.push(String(item));
      else return this.fail(name, "must be a list of IDs or names") ?? [];
    }
    return out;
  }

  intList(name: string): number[] {
    const v = this.obj[name];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v) || !v.every((x) => typeof x === "number" && Number.isInteger(x)))
      return this.fail(name, "must be a list of integers") ?? [];
    return v as number[];
  }

  /** A required integer (an id). */
  int(name: string): number {
    const v = this.obj[name];
    if (v === undefined || v === null) return this.fail(name, "is required") ?? 0;
    if (typeof v !== "number" || !Number.isInteger(v)) return this.fail(name, "must be an integer") ?? 0;
    return v;
  }

  /** An optional integer; null stays null (e.g. public_net.ipv4: null = no primary IP named). */
  optionalInt(name: string): number | null | undefined {
    const v = this.obj[name];
    if (v === undefined || v === null) return v as null | undefined;
    if (typeof v !== "number" || !Number.isInteger(v)) return this.fail(name, "must be an integer");
    return v;
  }

  /** An optional string that may be null (e.g. dns_ptr: null resets). */
  nullableString(name: string): string | null | undefined {
    const v = this.obj[name];
    if (v === undefined || v === null) return v as null | undefined;
    if (typeof v !== "string") return this.fail(name, "must be a string or null");
    return v;
  }

  stringList(name: string): string[] | undefined {
    const v = this.obj[name];
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v) || !v.every((x) => typeof x === "string"))
      return this.fail(name, "must be a list of strings");
    return v as string[];
  }

  /** A list of objects each naming an id in `key`, e.g. firewalls: [{firewall: 7}]. */
  objectIdList(name: string, key: string): number[] {
    const v = this.obj[name];
    if (v === undefined || v === null) return [];
    const ok =
      Array.isArray(v) &&
      v.every(
        (x) => typeof x === "object" && x !== null && Number.isInteger((x as Record<string, unknown>)[key]),
      );
    if (!ok) return this.fail(name, `must be a list of {"${key}": ID}`) ?? [];
    return (v as Record<string, number>[]).map((x) => x[key] as number);
  }

  /** A list of objects (each a Body). */
  objects(name: string): Body[] | undefined {
    const v = this.obj[name];
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v) || !v.every((x) => typeof x === "object" && x !== null && !Array.isArray(x)))
      return this.fail(name, "must be a list of objects");
    return v.map((x) => new Body(x));
  }

  /** Names of fields given but not in `known` (what the emulator would otherwise drop silently). */
  unknown(known: string[]): string[] {
    return Object.keys(this.obj).filter((k) => !known.includes(k));
  }

  /** Problems collected so far (for nested bodies, reported under the parent's name). */
  get issues(): FieldProblem[] {
    return [...this.problems];
  }

  object(name: string): Body | undefined {
    const v = this.obj[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "object" || Array.isArray(v)) return this.fail(name, "must be an object");
    return new Body(v);
  }

  /** Throws invalid_input when any field was malformed. */
  check(extra: FieldProblem[] = []): void {
    const all = [...this.problems, ...extra];
    if (all.length > 0) throw invalidInput(all);
  }
}
