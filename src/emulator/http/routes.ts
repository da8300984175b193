/**
 * The API routes below /v1: each parses its request, calls the state, renders the answer. One table, read top to
 * bottom like the API reference.
 */
import type { Action } from "../../hcloud/schema.js";
import type {
  EmulatorState,
  ImageRecord,
  ServerActionCommand,
  ServerActionInput,
  ServerRecord,
  SshKeyRecord,
} from "../state/index.js";
import {
  LOCATIONS,
  SERVER_TYPES,
  findLocation,
  findServerType,
  type LocationInfo,
} from "../state/catalog.js";
import { ApiError, invalidField, notFound } from "../state/errors.js";
import { Body, boolParam, enumList, labelSelector, paginate, sorter } from "./params.js";
import {
  renderAction,
  renderImage,
  renderLocation,
  renderServer,
  renderServerType,
  renderSshKey,
} from "./render.js";

export interface RouteContext {
  state: EmulatorState;
  /** Captured path parameters (ids), in order. */
  params: number[];
  query: URLSearchParams;
  body: unknown;
}

export interface RouteResult {
  status: number;
  /** undefined = no body (204). */
  body?: unknown;
}

export type Handler = (ctx: RouteContext) => RouteResult | Promise<RouteResult>;

export interface Route {
  method: string;
  pattern: RegExp;
  handler: Handler;
}

const SERVER_STATUSES = [
  "initializing",
  "starting",
  "running",
  "stopping",
  "off",
  "deleting",
  "migrating",
  "rebuilding",
  "unknown",
] as const;
const ACTION_STATUSES = ["running", "success", "error"] as const;
const ACTION_SORT: Record<string, (a: Action) => string | number | null> = {
  id: (a) => a.id,
  command: (a) => a.command,
  status: (a) => a.status,
  started: (a) => a.started,
  finished: (a) => a.finished,
};

function ok(body: unknown, status = 200): RouteResult {
  return { status, body };
}

/** 410 for endpoints Hetzner removed (facts: /datacenters answers 410 since 2026-10-01). */
function gone(what: string): Handler {
  return () => {
    throw new ApiError("deprecated_api_endpoint", `the ${what} endpoint has been removed`, {
      announcement: "https://docs.hetzner.cloud/changelog",
    });
  };
}

function id(ctx: RouteContext, i = 0): number {
  const v = ctx.params[i];
  if (v === undefined) throw new Error("route without id");
  return v;
}

function listActions(ctx: RouteContext, type: string, resourceId: number): RouteResult {
  const statuses = enumList(ctx.query, "status", ACTION_STATUSES);
  const cmp = sorter(ctx.query, ACTION_SORT);
  let actions = ctx.state.actionsOf(type, resourceId).map((a) => renderAction(ctx.state, a));
  if (statuses.length > 0) actions = actions.filter((a) => statuses.includes(a.status));
  actions.sort(cmp ?? ((a, b) => a.id - b.id));
  const { items, meta } = paginate(ctx.query, actions);
  return ok({ actions: items, meta });
}

function actionOf(ctx: RouteContext, type: string): RouteResult {
  const resourceId = id(ctx, 0);
  const actionId = id(ctx, 1);
  const a = ctx.state.findAction(actionId);
  if (!a || !a.resources.some((r) => r.type === type && r.id === resourceId))
    throw notFound(`action with ID '${actionId}'`);
  return ok({ action: renderAction(ctx.state, a) });
}

// ---- Servers ----

function listServers(ctx: RouteContext): RouteResult {
  const { state, query } = ctx;
  const selector = labelSelector(query);
  const statuses = enumList(query, "status", SERVER_STATUSES);
  const name = query.get("name");
  const cmp = sorter<ServerRecord>(query, {
    id: (s) => s.id,
    name: (s) => s.name,
    created: (s) => s.created,
  });
  const servers = state.servers.list({ selector, statuses, name });
  servers.sort(cmp ?? ((a, b) => a.id - b.id));
  const { items, meta } = paginate(query, servers);
  return ok({ servers: items.map((s) => renderServer(state, s)), meta });
}

function createServer(ctx: RouteContext): RouteResult {
  const b = new Body(ctx.body);
  const name = b.string("name", true);
  const serverType = b.idOrName("server_type", true);
  const image = b.idOrName("image", true);
  const location = b.idOrName("location");
  const sshKeys = b.idOrNameList("ssh_keys");
  const userData = b.string("user_data");
  const start = b.bool("start_after_create");
  const labels = b.labels();
  const publicNet = b.object("public_net");
  const enableIpv4 = publicNet?.bool("enable_ipv4");
  const enableIpv6 = publicNet?.bool("enable_ipv6");
  const networks = b.intList("networks");
  const volumes = b.intList("volumes");
  const firewalls = b.raw("firewalls");
  const extra = [];
  // `datacenter` was removed from the API on 2026-07-01 (facts); the current API rejects it.
  if (b.has("datacenter"))
    extra.push({ name: "datacenter", messages: ["datacenter has been removed; use location instead"] });
  publicNet?.check();
  b.check(extra);
  const result = ctx.state.servers.create({
    name,
    serverType,
    image,
    location,
    sshKeys,
    userData,
    startAfterCreate: start ?? true,
    labels: labels ?? {},
    enableIpv4: enableIpv4 ?? true,
    enableIpv6: enableIpv6 ?? true,
    networks,
    firewalls: Array.isArray(firewalls)
      ? firewalls.map((f) => Number((f as { firewall?: unknown }).firewall))
      : [],
    volumes,
  });
  return ok(
    {
      server: renderServer(ctx.state, result.server),
      action: renderAction(ctx.state, result.action),
      next_actions: result.nextActions.map((a) => renderAction(ctx.state, a)),
      root_password: result.rootPassword,
    },
    201,
  );
}

function updateServer(ctx: RouteContext): RouteResult {
  const b = new Body(ctx.body);
  const name = b.string("name");
  const labels = b.labels();
  b.check();
  const s = ctx.state.servers.update(id(ctx), { name, labels });
  return ok({ server: renderServer(ctx.state, s) });
}

function serverAction(command: ServerActionCommand): Handler {
  return (ctx) => {
    const b = new Body(ctx.body);
    const input: ServerActionInput = {};
    if (command === "enable_rescue") {
      input.rescueType = b.string("type");
      input.rescueSshKeys = b.intList("ssh_keys");
    } else if (command === "create_image") {
      const type = b.string("type");
      if (type !== undefined && type !== "snapshot" && type !== "backup")
        throw invalidField("type", "type must be snapshot or backup");
      input.imageType = type;
      input.description = b.string("description");
      input.labels = b.labels();
    } else if (command === "change_protection") {
      input.protectDelete = b.bool("delete");
      input.protectRebuild = b.bool("rebuild");
    }
    b.check();
    const r = ctx.state.servers.action(id(ctx), command, input);
    const body: Record<string, unknown> = { action: renderAction(ctx.state, r.action) };
    if (command === "enable_rescue") body.root_password = r.rootPassword;
    if (r.image) body.image = renderImage(r.image);
    return ok(body, 201);
  };
}

// ---- Images ----

function listImages(ctx: RouteContext): RouteResult {
  const { state, query } = ctx;
  const selector = labelSelector(query);
  const types = enumList(query, "type", ["system", "app", "snapshot", "backup"]);
  const statuses = enumList(query, "status", ["available", "creating", "unavailable"]);
  const arch = query.get("architecture");
  if (arch !== null && arch !== "x86" && arch !== "arm")
    throw invalidField("architecture", "architecture must be x86 or arm");
  const boundTo = query.getAll("bound_to").flatMap((v) => v.split(","));
  const includeDeprecated = boolParam(query, "include_deprecated") ?? false;
  const name = query.get("name");
  const cmp = sorter<ImageRecord>(query, { id: (i) => i.id, name: (i) => i.name, created: (i) => i.created });
  const images = state.images.list({
    selector,
    types,
    statuses,
    architecture: arch,
    boundTo,
    includeDeprecated,
    name,
  });
  images.sort(cmp ?? ((a, b) => a.id - b.id));
  const { items, meta } = paginate(query, images);
  return ok({ images: items.map(renderImage), meta });
}

function updateImage(ctx: RouteContext): RouteResult {
  const b = new Body(ctx.body);
  const description = b.string("description");
  const type = b.string("type");
  const labels = b.labels();
  b.check();
  return ok({ image: renderImage(ctx.state.images.update(id(ctx), { description, type, labels })) });
}

async function deleteImage(ctx: RouteContext): Promise<RouteResult> {
  await ctx.state.images.delete(id(ctx));
  return { status: 204 };
}

function changeImageProtection(ctx: RouteContext): RouteResult {
  const b = new Body(ctx.body);
  const del = b.bool("delete");
  b.check();
  return ok({ action: renderAction(ctx.state, ctx.state.images.changeProtection(id(ctx), del)) }, 201);
}

// ---- SSH keys ----

function listSshKeys(ctx: RouteContext): RouteResult {
  const { state, query } = ctx;
  const selector = labelSelector(query);
  const name = query.get("name");
  const fingerprint = query.get("fingerprint");
  const cmp = sorter<SshKeyRecord>(query, { id: (k) => k.id, name: (k) => k.name });
  const keys = state.sshKeys.list({ selector, name, fingerprint });
  keys.sort(cmp ?? ((a, b) => a.id - b.id));
  const { items, meta } = paginate(query, keys);
  return ok({ ssh_keys: items.map(renderSshKey), meta });
}

function createSshKey(ctx: RouteContext): RouteResult {
  const b = new Body(ctx.body);
  const name = b.string("name", true);
  const publicKey = b.string("public_key", true);
  const labels = b.labels();
  b.check();
  return ok(
    { ssh_key: renderSshKey(ctx.state.sshKeys.create({ name, publicKey, labels: labels ?? {} })) },
    201,
  );
}

function updateSshKey(ctx: RouteContext): RouteResult {
  const b = new Body(ctx.body);
  const name = b.string("name");
  const labels = b.labels();
  b.check();
  return ok({ ssh_key: renderSshKey(ctx.state.sshKeys.update(id(ctx), { name, labels })) });
}

// ---- Actions ----

/**
 * GET /actions needs `id`: listing every action of the project was deprecated in July 2023 and removed on
 * 2025-01-30 (OpenAPI description of this operation; facts). Without ids we answer invalid_input naming the
 * missing parameter, the documented way the API rejects a request it cannot serve (422, per the code table).
 */
function getActions(ctx: RouteContext): RouteResult {
  const raw = ctx.query.getAll("id").flatMap((v) => v.split(","));
  if (raw.length === 0)
    throw new ApiError("invalid_input", "listing all actions was removed; pass one or more id parameters", {
      fields: [{ name: "id", messages: ["is required"] }],
    });
  if (!raw.every((v) => /^\d+$/.test(v))) throw invalidField("id", "id must be an integer");
  const ids = [...new Set(raw.map(Number))];
  const found = ids.map((i) => ctx.state.findAction(i)).filter((a) => a !== undefined);
  const statuses = enumList(ctx.query, "status", ACTION_STATUSES);
  const cmp = sorter(ctx.query, ACTION_SORT);
  let actions = found.map((a) => renderAction(ctx.state, a));
  if (statuses.length > 0) actions = actions.filter((a) => statuses.includes(a.status));
  actions.sort(cmp ?? ((a, b) => a.id - b.id));
  // The document's get_multiple_actions_response has no `meta`: every requested action comes back in one answer.
  return ok({ actions });
}

// ---- Catalogue ----

function listServerTypes(ctx: RouteContext): RouteResult {
  const name = ctx.query.get("name");
  let types = [...SERVER_TYPES];
  if (name !== null) types = types.filter((t) => t.name === name);
  types.sort((a, b) => a.id - b.id);
  const { items, meta } = paginate(ctx.query, types);
  return ok({ server_types: items.map(renderServerType), meta });
}

function listLocations(ctx: RouteContext): RouteResult {
  const name = ctx.query.get("name");
  const cmp = sorter<LocationInfo>(ctx.query, { id: (l) => l.id, name: (l) => l.name });
  let locations = [...LOCATIONS];
  if (name !== null) locations = locations.filter((l) => l.name === name);
  locations.sort(cmp ?? ((a, b) => a.id - b.id));
  const { items, meta } = paginate(ctx.query, locations);
  return ok({ locations: items.map(renderLocation), meta });
}

const ID = "(\\d+)";
function r(method: string, path: string, handler: Handler): Route {
  return { method, pattern: new RegExp(`^${path.replaceAll("{id}", ID)}/?$`), handler };
}

const SERVER_ACTIONS: ServerActionCommand[] = [
  "poweron",
  "poweroff",
  "shutdown",
  "reboot",
  "reset",
  "enable_rescue",
  "disable_rescue",
  "create_image",
  "change_protection",
];

export const ROUTES: Route[] = [
  r("GET", "/servers", listServers),
  r("POST", "/servers", createServer),
  r("GET", "/servers/{id}", (ctx) => ok({ server: renderServer(ctx.state, ctx.state.servers.get(id(ctx))) })),
  r("PUT", "/servers/{id}", updateServer),
  r("DELETE", "/servers/{id}", (ctx) =>
    ok({ action: renderAction(ctx.state, ctx.state.servers.delete(id(ctx))) }),
  ),
  r("GET", "/servers/{id}/actions", (ctx) => {
    ctx.state.servers.get(id(ctx));
    return listActions(ctx, "server", id(ctx));
  }),
  r("GET", "/servers/{id}/actions/{id}", (ctx) => actionOf(ctx, "server")),
  ...SERVER_ACTIONS.map((c) => r("POST", `/servers/{id}/actions/${c}`, serverAction(c))),

  r("GET", "/images", listImages),
  r("GET", "/images/{id}", (ctx) => ok({ image: renderImage(ctx.state.images.get(id(ctx))) })),
  r("PUT", "/images/{id}", updateImage),
  r("DELETE", "/images/{id}", deleteImage),
  r("GET", "/images/{id}/actions", (ctx) => {
    ctx.state.images.get(id(ctx));
    return listActions(ctx, "image", id(ctx));
  }),
  r("GET", "/images/{id}/actions/{id}", (ctx) => actionOf(ctx, "image")),
  r("POST", "/images/{id}/actions/change_protection", changeImageProtection),

  r("GET", "/ssh_keys", listSshKeys),
  r("POST", "/ssh_keys", createSshKey),
  r("GET", "/ssh_keys/{id}", (ctx) => ok({ ssh_key: renderSshKey(ctx.state.sshKeys.get(id(ctx))) })),
  r("PUT", "/ssh_keys/{id}", updateSshKey),
  r("DELETE", "/ssh_keys/{id}", (ctx) => {
    ctx.state.sshKeys.delete(id(ctx));
    return { status: 204 };
  }),

  r("GET", "/actions", getActions),
  r("GET", "/actions/{id}", (ctx) => ok({ action: renderAction(ctx.state, ctx.state.getAction(id(ctx))) })),

  r("GET", "/server_types", listServerTypes),
  r("GET", "/server_types/{id}", (ctx) => {
    const t = findServerType(id(ctx));
    if (!t) throw notFound(`server type with ID '${id(ctx)}'`);
    return ok({ server_type: renderServerType(t) });
  }),
  r("GET", "/locations", listLocations),
  r("GET", "/locations/{id}", (ctx) => {
    const l = findLocation(id(ctx));
    if (!l || String(l.id) !== String(id(ctx))) throw notFound(`location with ID '${id(ctx)}'`);
    return ok({ location: renderLocation(l) });
  }),
  r("GET", "/datacenters", gone("datacenters")),
  r("GET", "/datacenters/{id}", gone("datacenters")),
];

/** Finds the route for a request: the handler and captured ids, or which methods the path allows. */
export function match(
  method: string,
  path: string,
): { route: Route; params: number[] } | { allowed: string[] } | undefined {
  const allowed: string[] = [];
  for (const route of ROUTES) {
    const m = route.pattern.exec(path);
    if (!m) continue;
    if (route.method === method) return { route, params: m.slice(1).map(Number) };
    allowed.push(route.method);
  }
  return allowed.length > 0 ? { allowed } : undefined;
}
