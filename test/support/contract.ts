/**
 * An OpenAPI contract checker built from the Hetzner Cloud API document (test/contract/hcloud.json, vendored from
 * ../shared/hcloud-openapi). It validates
 * - responses: status and JSON body against the operation's response schema (objects are closed: a field the
 *   document does not name is a violation, so the emulator cannot drift into inventing fields);
 * - requests: JSON body against the operation's request schema, query parameter names and values against the
 *   operation's parameters.
 *
 * The document predates changes Hetzner made in 2026; those deltas are applied in ONE place, patchForCurrentApi().
 * Use `checker.exchange(e)` as the emulator's onExchange hook and `checker.request(...)` for a client's requests;
 * `checker.violations` collects every problem (tests assert it is empty).
 */
import { readFileSync } from "node:fs";
import { Ajv, type ValidateFunction } from "ajv";
import addFormatsModule from "ajv-formats";
import type { Exchange } from "../../src/emulator/index.js";

type Json = Record<string, unknown>;

const DOC_PATH = new URL("../contract/hcloud.json", import.meta.url);

/**
 * The documented deltas between the vendored OpenAPI copy (2026-02) and the current API (see
 * ../shared/docs/hetzner-facts.md and test/contract/SOURCE.md):
 * 1. `server.datacenter` was removed on 2026-07-01: dropped from the server schema (properties and required), so an
 *    emulator answer that still carries it is a violation.
 * 2. The `datacenter` create parameter was removed the same day: dropped from create_server_request.
 * 3. `server_types[].locations[]` carries `available` and `recommended` (booleans), and deprecation is per location.
 * 4. Not a 2026 change but the document being stricter than the API: create_server_request types `ssh_keys` items,
 *    `server_type`, `image` and `location` as strings ("ID or name"), while Hetzner's own clients send integer ids
 *    (python3-hcloud's `id_or_name`, hcloud-cli's rebuild). Requests may use either; the same for rebuild's `image`.
 * 5. Primary IPs lost `datacenter` on the same day as servers (the document marks it deprecated "removed after 1 July
 *    2026"): dropped from the primary_ip schemas (answers) and from create_primary_ip_request.
 * (`/datacenters` answering 410 needs no patch: the document's 4xx answer is the error schema.)
 */
function patchForCurrentApi(doc: Json): void {
  const schemas = (doc.components as Json).schemas as Record<string, Json>;
  const server = schemas.server as Json;
  delete (server.properties as Json).datacenter;
  server.required = (server.required as string[]).filter((r) => r !== "datacenter");
  const create = schemas.create_server_request as Json;
  const createProps = create.properties as Json;
  delete createProps.datacenter;
  const idOrName = { anyOf: [{ type: "string" }, { type: "integer" }] };
  for (const f of ["server_type", "image", "location"]) createProps[f] = idOrName;
  (createProps.ssh_keys as Json).items = idOrName;
  ((schemas.rebuild_server_from_image_request as Json).properties as Json).image = idOrName;
  // Primary IPs are inlined in several responses: drop `datacenter` wherever a PrimaryIP object appears.
  const dropDatacenter = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(dropDatacenter);
    if (typeof node !== "object" || node === null) return;
    const o = node as Json;
    if (o.title === "PrimaryIP" || o.title === "PrimaryIPCreateRequest") {
      delete (o.properties as Json).datacenter;
      if (Array.isArray(o.required)) o.required = (o.required as string[]).filter((r) => r !== "datacenter");
    }
    Object.values(o).forEach(dropDatacenter);
  };
  dropDatacenter(doc);
  const item = schemas.server_type_location as Json;
  (item.properties as Json).available = { type: "boolean" };
  (item.properties as Json).recommended = { type: "boolean" };
  item.required = [...(item.required as string[]), "available", "recommended"];
}

/** OpenAPI 3.0 -> JSON Schema for ajv: `nullable` becomes an anyOf with null; objects are closed when asked. */
function toJsonSchema(node: unknown, closeObjects: boolean): unknown {
  if (Array.isArray(node)) return node.map((n) => toJsonSchema(n, closeObjects));
  if (typeof node !== "object" || node === null) return node;
  const src = node as Json;
  const out: Json = {};
  for (const [k, v] of Object.entries(src)) {
    if (k === "example" || k === "examples" || k === "deprecated" || k === "nullable") continue;
    if (k === "properties") {
      out[k] = Object.fromEntries(
        Object.entries(v as Json).map(([pk, pv]) => [pk, toJsonSchema(pv, closeObjects)]),
      );
    } else out[k] = toJsonSchema(v, closeObjects);
  }
  if (closeObjects && out.properties !== undefined && out.additionalProperties === undefined)
    out.additionalProperties = false;
  if (src.nullable === true) {
    if (out.enum) out.enum = [...(out.enum as unknown[]), null];
    return { anyOf: [{ type: "null" }, out] };
  }
  return out;
}

interface Operation {
  template: string;
  method: string;
  parameters: Json[];
  requestSchema: string | undefined;
  responses: Record<string, string | null>;
}

export interface Violation {
  where: string;
  problem: string;
}

export class ContractChecker {
  readonly violations: Violation[] = [];
  /** Operations seen, e.g. "GET /servers/{id}" -> count (for coverage assertions). */
  readonly seen = new Map<string, number>();
  private readonly operations: Operation[] = [];
  private readonly ajv: Ajv;
  private readonly validators = new Map<string, ValidateFunction>();

  /**
   * @param tolerate query parameters to accept although the document does not list them, per operation, e.g.
   *   {"GET /actions": ["page", "per_page"]}; each use must say why where it is passed.
   */
  constructor(private readonly tolerate: Record<string, string[]> = {}) {
    const doc = JSON.parse(readFileSync(DOC_PATH, "utf8")) as Json;
    patchForCurrentApi(doc);
    this.ajv = new Ajv({ strict: false, allErrors: true, validateFormats: true });
    const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;
    addFormats(this.ajv);
    for (const f of ["int32", "int64", "double", "float", "decimal"]) this.ajv.addFormat(f, true);
    // Responses are checked closed (no undocumented fields); requests open as the API accepts them.
    this.ajv.addSchema(toJsonSchema(doc, true) as Json, "closed");
    this.ajv.addSchema(toJsonSchema(doc, false) as Json, "open");
    const paths = doc.paths as Record<string, Record<string, Json>>;
    for (const [template, item] of Object.entries(paths)) {
      for (const [method, op] of Object.entries(item)) {
        if (!["get", "post", "put", "delete"].includes(method)) continue;
        const ptr = `#/paths/${template.replaceAll("~", "~0").replaceAll("/", "~1")}/${method}`;
        const body = (op.requestBody as Json | undefined)?.content as Json | undefined;
        const responses: Record<string, string | null> = {};
        for (const [code, r] of Object.entries(op.responses as Record<string, Json>)) {
          const content = (r.content as Json | undefined)?.["application/json"];
          responses[code.toLowerCase()] = content
            ? `${ptr}/responses/${code}/content/application~1json/schema`
            : null;
        }
        this.operations.push({
          template,
          method: method.toUpperCase(),
          parameters: (op.parameters as Json[] | undefined) ?? [],
          requestSchema: body?.["application/json"]
            ? `${ptr}/requestBody/content/application~1json/schema`
            : undefined,
          responses,
        });
      }
    }
  }

  private validator(kind: "closed" | "open", pointer: string): ValidateFunction {
    const key = `${kind}${pointer}`;
    let v = this.validators.get(key);
    if (!v) {
      v = this.ajv.compile({ $ref: `${kind}${pointer}` });
      this.validators.set(key, v);
    }
    return v;
  }

  /** The operation for a concrete path: literal segments beat {params} (e.g. /servers/actions vs /servers/{id}). */
  operation(method: string, path: string): Operation | undefined {
    const segs = path.replace(/\/+$/, "").split("/");
    let best: { op: Operation; score: number } | undefined;
    for (const op of this.operations) {
      if (op.method !== method) continue;
      const t = op.template.split("/");
      if (t.length !== segs.length) continue;
      let score = 0;
      let ok = true;
      for (let i = 0; i < t.length; i++) {
        const ts = t[i] ?? "";
        if (ts.startsWith("{")) continue;
        if (ts !== segs[i]) {
          ok = false;
          break;
        }
        score++;
      }
      if (ok && (!best || score > best.score)) best = { op, score };
    }
    return best?.op;
  }

  private add(where: string, problem: string): void {
    this.violations.push({ where, problem });
  }

  private errors(v: ValidateFunction): string {
    return (v.errors ?? [])
      .slice(0, 5)
      .map((e) => `${e.instancePath || "/"} ${e.message ?? ""} ${JSON.stringify(e.params)}`)
      .join("; ");
  }

  /** Checks a request a client sends (body and query). */
  request(method: string, path: string, query: Iterable<[string, string]>, body: unknown): void {
    const where = `${method} ${path}`;
    const op = this.operation(method, path);
    if (!op) return this.add(where, "no such operation in the API document");
    for (const [name, value] of query) {
      const p = op.parameters.find((x) => x.in === "query" && x.name === name);
      if (!p) {
        if (this.tolerate[`${op.method} ${op.template}`]?.includes(name)) continue;
        this.add(where, `query parameter '${name}' is not documented`);
        continue;
      }
      const schema = (p.schema ?? {}) as Json;
      const itemSchema = (schema.type === "array" ? schema.items : schema) as Json;
      const t = itemSchema.type;
      if (t === "integer" && !/^-?\d+$/.test(value))
        this.add(where, `query ${name}=${value} is not an integer`);
      if (t === "boolean" && value !== "true" && value !== "false")
        this.add(where, `query ${name}=${value} is not a boolean`);
      const en = itemSchema.enum as unknown[] | undefined;
      if (en && !en.includes(value)) this.add(where, `query ${name}=${value} is not one of ${en.join(", ")}`);
    }
    const empty = typeof body === "object" && body !== null && Object.keys(body).length === 0;
    if (body !== undefined && body !== null) {
      // hcloud-go sends `{}` to actions without parameters (detach, unassign, ...); the API accepts it.
      if (!op.requestSchema && empty) return;
      if (!op.requestSchema) return this.add(where, "operation takes no request body");
      const v = this.validator("open", op.requestSchema);
      if (!v(body)) this.add(where, `request body: ${this.errors(v)}`);
    } else if (op.requestSchema && ["POST", "PUT"].includes(method)) {
      // Action calls without parameters are sent without a body by clients; the API accepts that.
    }
  }

  /** Checks one response of the API. */
  response(
    method: string,
    path: string,
    status: number,
    body: unknown,
    headers?: Record<string, string>,
  ): void {
    const where = `${method} ${path} -> ${status}`;
    const op = this.operation(method, path);
    if (!op) {
      // Paths the API does not have: only the error shape can be checked.
      if (status < 400) this.add(where, "success answer for a path not in the API document");
      this.checkError(where, body);
      return;
    }
    this.seen.set(`${op.method} ${op.template}`, (this.seen.get(`${op.method} ${op.template}`) ?? 0) + 1);
    if (headers && !headers["x-correlation-id"]) this.add(where, "no X-Correlation-Id header");
    const key = String(status);
    const family = `${key[0]}xx`;
    const ref = key in op.responses ? op.responses[key] : op.responses[family];
    if (ref === undefined) return this.add(where, `status ${status} is not documented for this operation`);
    if (ref === null) {
      if (body !== undefined) this.add(where, "body sent where the document has none");
      return;
    }
    const v = this.validator("closed", ref);
    if (!v(body)) this.add(where, `response body: ${this.errors(v)}`);
  }

  private checkError(where: string, body: unknown): void {
    const v = this.validator("closed", "#/components/schemas/error_response");
    if (!v(body)) this.add(where, `error body: ${this.errors(v)}`);
  }

  /** Shape of the emulator's onExchange hook. */
  exchange = (e: Exchange): void => {
    if (e.status < 400) this.request(e.method, e.path, e.query.entries(), e.requestBody);
    this.response(e.method, e.path, e.status, e.responseBody, e.responseHeaders);
  };

  /** Readable summary for assertion messages. */
  report(limit = 20): string {
    return this.violations
      .slice(0, limit)
      .map((v) => `${v.where}: ${v.problem}`)
      .join("\n");
  }
}
