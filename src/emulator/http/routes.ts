/**
 * The API routes below /v1: each parses its request, calls the state, renders the answer. One table, read top to
 * bottom like the API reference.
 */
import type {
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
import { ApiError, invalidField, notFound, unsupported } from "../state/errors.js";
import { Body, boolParam, enumList, labelSelector, paginate, sorter } from "./params.js";
import {
  ACTION_SORT,
  ACTION_STATUSES,
  SERVER_STATUSES,
  collectionActions,
  gone,
  id,
  ok,
  r,
  resourceActions,
  type Handler,
  type Route,
  type RouteContext,
  type RouteResult,
} from "./route-kit.js";
import { NETWORK_ROUTES } from "./routes-net.js";
import {
  renderAction,
  renderImage,
  renderLocation,
  renderServer,
  renderServerType,
  renderSshKey,
} from "./render.js";

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

const CREATE_SERVER_FIELDS = [
  "name",
  "server_type",
  "image",
  "location",
  "datacenter",
  "ssh_keys",
  "user_data",
  "start_after_create",
  "labels",
  "public_net",
  "networks",
  "volumes",
  "firewalls",
  "placement_group",
  "automount",
];

function createServer(ctx: RouteContext): RouteResult {
  const b = new Body(ctx.body);
  // Anything the emulator would not honour is refused, never dropped.
  const unknown = [
    ...b.unknown(CREATE_SERVER_FIELDS),
    ...(b.object("public_net")?.unknown(["enable_ipv4", "enable_ipv6", "ipv4", "ipv6"]) ?? []).map(
      (f) => `public_net.${f}`,
    ),
  ];
  if (unknown.length > 0)
    throw unsupported(`the field${unknown.length > 1 ? "s" : ""} '${unknown.join("', '")}'`);
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
  const primaryIpv4 = publicNet?.optionalInt("ipv4");
  const primaryIpv6 = publicNet?.optionalInt("ipv6");
  const networks = b.intList("networks");
  const volumes = b.intList("volumes");
  const firewalls = b.objectIdList("firewalls", "firewall");
  const placementGroup = b.optionalInt("placement_group");
  const automount = b.bool("automount");
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
    primaryIpv4,
    primaryIpv6,
    networks,
    firewalls,
    volumes,
    placementGroup: placementGroup ?? undefined,
    automount,
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
    } else if (command === "rebuild") {
      input.image = b.idOrName("image", true);
      input.userData = b.string("user_data");
    } else if (command === "change_dns_ptr") {
      input.ip = b.string("ip", true);
      input.dnsPtr = b.nullableString("dns_ptr");
    } else if (command === "enable_backup") {
      if (b.has("backup_window"))
        throw invalidField(
          "backup_window",
          "backup_window was removed from the API; Hetzner picks the window",
        );
    } else if (["attach_to_network", "detach_from_network", "change_alias_ips"].includes(command)) {
      input.network = b.int("network");
      if (command === "attach_to_network") input.ip = b.string("ip");
      if (command !== "detach_from_network") input.aliasIps = b.stringList("alias_ips");
      if (b.has("ip_range")) throw unsupported("choosing the subnet of an attachment by ip_range");
    } else if (command === "add_to_placement_group") {
      input.placementGroup = b.int("placement_group");
    }
    b.check();
    const res = ctx.state.serverActions.action(id(ctx), command, input);
    const body: Record<string, unknown> = { action: renderAction(ctx.state, res.action) };
    if (command === "enable_rescue" || command === "rebuild") body.root_password = res.rootPassword ?? null;
    if (res.image) body.image = renderImage(res.image);
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
  const cmp = sorter<(typeof SERVER_TYPES)[number]>(ctx.query, { id: (t) => t.id, name: (t) => t.name });
  let types = [...SERVER_TYPES];
  if (name !== null) types = types.filter((t) => t.name === name);
  types.sort(cmp ?? ((a, b) => a.id - b.id));
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
  "rebuild",
  "change_dns_ptr",
  "enable_backup",
  "disable_backup",
  "attach_to_network",
  "detach_from_network",
  "change_alias_ips",
  "add_to_placement_group",
  "remove_from_placement_group",
];

export const ROUTES: Route[] = [
  r("GET", "/servers", listServers),
  r("POST", "/servers", createServer),
  r("GET", "/servers/{id}", (ctx) => ok({ server: renderServer(ctx.state, ctx.state.servers.get(id(ctx))) })),
  r("PUT", "/servers/{id}", updateServer),
  r("DELETE", "/servers/{id}", (ctx) =>
    ok({ action: renderAction(ctx.state, ctx.state.servers.delete(id(ctx))) }),
  ),
  ...collectionActions("server"),
  ...resourceActions("server", (ctx) => ctx.state.servers.get(id(ctx))),
  ...SERVER_ACTIONS.map((c) => r("POST", `/servers/{id}/actions/${c}`, serverAction(c))),

  r("GET", "/images", listImages),
  r("GET", "/images/{id}", (ctx) => ok({ image: renderImage(ctx.state.images.get(id(ctx))) })),
  r("PUT", "/images/{id}", updateImage),
  r("DELETE", "/images/{id}", deleteImage),
  ...collectionActions("image"),
  ...resourceActions("image", (ctx) => ctx.state.images.get(id(ctx))),
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
  ...NETWORK_ROUTES,
];

/**
 * Parts of the Hetzner Cloud API the emulator does not model (yet). Requests to them answer 422 unsupported_error
 * ("the hetznix emulator does not support …"), never 404 not_found: no client may read them as "this resource does
 * not exist" (Terraform's provider drops a resource from its state on not_found).
 */
const UNMODELLED: { pattern: RegExp; what: string }[] = [
  { pattern: /^\/floating_ips(\/|$)/, what: "floating IPs" },
  { pattern: /^\/load_balancers(\/|$)/, what: "load balancers" },
  { pattern: /^\/load_balancer_types(\/|$)/, what: "load balancer types" },
  { pattern: /^\/certificates(\/|$)/, what: "certificates" },
  { pattern: /^\/isos(\/|$)/, what: "ISOs" },
  { pattern: /^\/zones(\/|$)/, what: "DNS zones" },
  { pattern: /^\/storage_boxes(\/|$)/, what: "storage boxes" },
  { pattern: /^\/storage_box_types(\/|$)/, what: "storage box types" },
  { pattern: /^\/pricing(\/|$)/, what: "pricing" },
  {
    pattern: /^\/servers\/\d+\/actions\/(attach_iso|detach_iso|change_type|request_console|reset_password)$/,
    what: "this server action",
  },
  { pattern: /^\/servers\/\d+\/metrics$/, what: "server metrics" },
];

/** What an API path the emulator does not model is, or undefined for paths that are not Hetzner's at all. */
export function unmodelled(path: string): string | undefined {
  const clean = path.replace(/\/+$/, "");
  return UNMODELLED.find((u) => u.pattern.test(clean))?.what;
}

/** The methods a path allows (with HEAD where GET is), empty for paths without routes. */
export function allowedMethods(path: string): string[] {
  const methods = ROUTES.filter((route) => route.pattern.test(path)).map((route) => route.method);
  if (methods.includes("GET")) methods.push("HEAD");
  return [...new Set(methods)];
}

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
