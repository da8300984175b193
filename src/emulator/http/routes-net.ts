/**
 * API routes of firewalls, primary IPs, networks, volumes and placement groups: parse, call the state, render.
 */
import type { FirewallRule, FirewallTarget } from "../state/index.js";
import { invalidInput, rejected, unsupported, type FieldProblem } from "../state/errors.js";
import { Body, enumList, labelSelector, paginate, sorter } from "./params.js";
import { renderAction } from "./render.js";
import {
  renderFirewall,
  renderNetwork,
  renderPlacementGroup,
  renderPrimaryIp,
  renderVolume,
} from "./render-resources.js";
import {
  collectionActions,
  id,
  ok,
  r,
  resourceActions,
  type Route,
  type RouteContext,
  type RouteResult,
} from "./route-kit.js";

type Named = { id: number; name: string; created: string };

/** A list answer: label selector and name filters done by the state, then sort and pages. */
function listed<T extends Named>(
  ctx: RouteContext,
  key: string,
  items: T[],
  render: (x: T) => unknown,
): RouteResult {
  const cmp = sorter<T>(ctx.query, { id: (x) => x.id, name: (x) => x.name, created: (x) => x.created });
  items.sort(cmp ?? ((a, b) => a.id - b.id));
  const { items: page, meta } = paginate(ctx.query, items);
  return ok({ [key]: page.map(render), meta });
}

function actions(ctx: RouteContext, list: Parameters<typeof renderAction>[1][]): RouteResult {
  return ok({ actions: list.map((a) => renderAction(ctx.state, a)) }, 201);
}

function action(ctx: RouteContext, a: Parameters<typeof renderAction>[1]): RouteResult {
  return ok({ action: renderAction(ctx.state, a) }, 201);
}

/** The body of PUT on these resources: name and labels (labels: null refused). */
function nameAndLabels(ctx: RouteContext) {
  const b = new Body(ctx.body);
  const name = b.string("name");
  const labels = b.labels();
  return { b, name, labels };
}

/** The body of change_protection: {delete}. */
function deleteProtection(ctx: RouteContext): boolean | undefined {
  const b = new Body(ctx.body);
  const del = b.bool("delete");
  b.check();
  return del;
}

/** Refuses body fields the emulator would otherwise ignore (nothing is silently dropped). */
function refuseUnknown(b: Body, known: string[]): void {
  const extra = b.unknown(known);
  if (extra.length > 0) throw unsupported(`the field${extra.length > 1 ? "s" : ""} '${extra.join("', '")}'`);
}

// ---- Firewalls ----

function rules(b: Body): FirewallRule[] {
  const items = b.objects("rules") ?? [];
  const problems: FieldProblem[] = [];
  const out = items.map((rb, i) => {
    const rule: FirewallRule = {
      direction: rb.string("direction", true) as FirewallRule["direction"],
      protocol: rb.string("protocol", true) as FirewallRule["protocol"],
      port: rb.nullableString("port") ?? null,
      sourceIps: rb.stringList("source_ips") ?? [],
      destinationIps: rb.stringList("destination_ips") ?? [],
      description: rb.nullableString("description") ?? null,
    };
    for (const p of rb.issues) problems.push({ name: `rules[${i}].${p.name}`, messages: p.messages });
    return rule;
  });
  if (problems.length > 0) throw invalidInput(problems);
  return out;
}

function targets(b: Body, name: string): FirewallTarget[] {
  return (b.objects(name) ?? []).map((t) => {
    const type = t.string("type", true);
    if (type === "server") {
      const server = t.object("server");
      const sid = server?.int("id");
      if (sid === undefined || server?.issues.length)
        throw rejected(`${name}.server.id`, "server.id is required");
      return { type: "server", server: sid };
    }
    if (type === "label_selector") {
      const selector = t.object("label_selector")?.string("selector");
      if (selector === undefined)
        throw rejected(`${name}.label_selector.selector`, "label_selector.selector is required");
      return { type: "label_selector", selector };
    }
    throw rejected(`${name}.type`, "type must be server or label_selector");
  });
}

function createFirewall(ctx: RouteContext): RouteResult {
  const b = new Body(ctx.body);
  refuseUnknown(b, ["name", "labels", "rules", "apply_to"]);
  const name = b.string("name", true);
  const labels = b.labels();
  const parsedRules = rules(b);
  const applyTo = targets(b, "apply_to");
  b.check();
  const res = ctx.state.firewalls.create({ name, labels: labels ?? {}, rules: parsedRules, applyTo });
  return ok(
    {
      firewall: renderFirewall(ctx.state, res.firewall),
      actions: res.actions.map((a) => renderAction(ctx.state, a)),
    },
    201,
  );
}

const FIREWALL_ROUTES: Route[] = [
  r("GET", "/firewalls", (ctx) =>
    listed(
      ctx,
      "firewalls",
      ctx.state.firewalls.list({ selector: labelSelector(ctx.query), name: ctx.query.get("name") }),
      (f) => renderFirewall(ctx.state, f),
    ),
  ),
  r("POST", "/firewalls", createFirewall),
  ...collectionActions("firewall"),
  r("GET", "/firewalls/{id}", (ctx) =>
    ok({ firewall: renderFirewall(ctx.state, ctx.state.firewalls.get(id(ctx))) }),
  ),
  r("PUT", "/firewalls/{id}", (ctx) => {
    const { b, name, labels } = nameAndLabels(ctx);
    b.check();
    return ok({ firewall: renderFirewall(ctx.state, ctx.state.firewalls.update(id(ctx), { name, labels })) });
  }),
  r("DELETE", "/firewalls/{id}", (ctx) => {
    ctx.state.firewalls.delete(id(ctx));
    return { status: 204 };
  }),
  ...resourceActions("firewall", (ctx) => ctx.state.firewalls.get(id(ctx))),
  r("POST", "/firewalls/{id}/actions/set_rules", (ctx) => {
    const b = new Body(ctx.body);
    const parsed = rules(b);
    if (!b.has("rules")) throw rejected("rules", "rules is required");
    return actions(ctx, ctx.state.firewalls.setRules(id(ctx), parsed));
  }),
  r("POST", "/firewalls/{id}/actions/apply_to_resources", (ctx) =>
    actions(ctx, ctx.state.firewalls.applyTo(id(ctx), targets(new Body(ctx.body), "apply_to"))),
  ),
  r("POST", "/firewalls/{id}/actions/remove_from_resources", (ctx) =>
    actions(ctx, ctx.state.firewalls.removeFrom(id(ctx), targets(new Body(ctx.body), "remove_from"))),
  ),
];

// ---- Primary IPs ----

const PRIMARY_IP_ROUTES: Route[] = [
  r("GET", "/primary_ips", (ctx) =>
    listed(
      ctx,
      "primary_ips",
      ctx.state.primaryIps.list({
        selector: labelSelector(ctx.query),
        name: ctx.query.get("name"),
        ip: ctx.query.get("ip"),
      }),
      renderPrimaryIp,
    ),
  ),
  r("POST", "/primary_ips", (ctx) => {
    const b = new Body(ctx.body);
    refuseUnknown(b, [
      "name",
      "type",
      "assignee_type",
      "assignee_id",
      "location",
      "datacenter",
      "auto_delete",
      "labels",
    ]);
    const name = b.string("name", true);
    const type = b.string("type", true);
    const assigneeType = b.string("assignee_type", true);
    const assigneeId = b.optionalInt("assignee_id");
    const location = b.idOrName("location");
    const autoDelete = b.bool("auto_delete");
    const labels = b.labels();
    const extra: FieldProblem[] = [];
    if (type !== "ipv4" && type !== "ipv6")
      extra.push({ name: "type", messages: ["type must be ipv4 or ipv6"] });
    if (assigneeType !== "server")
      extra.push({ name: "assignee_type", messages: ["assignee_type must be server"] });
    // `datacenter` was removed on 2026-07-01 (as for servers): rejected, use location.
    if (b.has("datacenter"))
      extra.push({ name: "datacenter", messages: ["datacenter has been removed; use location instead"] });
    b.check(extra);
    const res = ctx.state.primaryIps.create({
      name,
      type: type as "ipv4" | "ipv6",
      assigneeId: assigneeId ?? undefined,
      location,
      autoDelete: autoDelete ?? false,
      labels: labels ?? {},
    });
    // The document's `action` is optional, not nullable: absent when nothing was assigned.
    const body: Record<string, unknown> = { primary_ip: renderPrimaryIp(res.primaryIp) };
    if (res.action) body.action = renderAction(ctx.state, res.action);
    return ok(body, 201);
  }),
  ...collectionActions("primary_ip"),
  r("GET", "/primary_ips/{id}", (ctx) =>
    ok({ primary_ip: renderPrimaryIp(ctx.state.primaryIps.get(id(ctx))) }),
  ),
  r("PUT", "/primary_ips/{id}", (ctx) => {
    const { b, name, labels } = nameAndLabels(ctx);
    const autoDelete = b.bool("auto_delete");
    b.check();
    return ok({
      primary_ip: renderPrimaryIp(ctx.state.primaryIps.update(id(ctx), { name, labels, autoDelete })),
    });
  }),
  r("DELETE", "/primary_ips/{id}", (ctx) => {
    ctx.state.primaryIps.delete(id(ctx));
    return { status: 204 };
  }),
  ...resourceActions("primary_ip", (ctx) => ctx.state.primaryIps.get(id(ctx))),
  r("POST", "/primary_ips/{id}/actions/assign", (ctx) => {
    const b = new Body(ctx.body);
    const assignee = b.int("assignee_id");
    const type = b.string("assignee_type", true);
    b.check(type === "server" ? [] : [{ name: "assignee_type", messages: ["assignee_type must be server"] }]);
    return action(ctx, ctx.state.primaryIps.assign(id(ctx), assignee));
  }),
  r("POST", "/primary_ips/{id}/actions/unassign", (ctx) =>
    action(ctx, ctx.state.primaryIps.unassign(id(ctx))),
  ),
  r("POST", "/primary_ips/{id}/actions/change_dns_ptr", (ctx) => {
    const b = new Body(ctx.body);
    const ip = b.string("ip", true);
    const dnsPtr = b.nullableString("dns_ptr");
    b.check();
    return action(ctx, ctx.state.primaryIps.changeDnsPtr(id(ctx), ip, dnsPtr ?? null));
  }),
  r("POST", "/primary_ips/{id}/actions/change_protection", (ctx) =>
    action(ctx, ctx.state.primaryIps.changeProtection(id(ctx), deleteProtection(ctx))),
  ),
];

// ---- Networks ----

function subnetInput(b: Body) {
  const type = b.string("type", true);
  const ipRange = b.string("ip_range");
  const networkZone = b.string("network_zone", true);
  const vswitchId = b.optionalInt("vswitch_id") ?? undefined;
  b.check();
  return { type, ipRange, networkZone, vswitchId };
}

function routeInput(b: Body) {
  const destination = b.string("destination", true);
  const gateway = b.string("gateway", true);
  b.check();
  return { destination, gateway };
}

const NETWORK_ROUTES_ONLY: Route[] = [
  r("GET", "/networks", (ctx) =>
    listed(
      ctx,
      "networks",
      ctx.state.networks.list({ selector: labelSelector(ctx.query), name: ctx.query.get("name") }),
      (n) => renderNetwork(ctx.state, n),
    ),
  ),
  r("POST", "/networks", (ctx) => {
    const b = new Body(ctx.body);
    refuseUnknown(b, ["name", "ip_range", "labels", "subnets", "routes", "expose_routes_to_vswitch"]);
    const name = b.string("name", true);
    const ipRange = b.string("ip_range", true);
    const labels = b.labels();
    const subnets = (b.objects("subnets") ?? []).map(subnetInput);
    const routes = (b.objects("routes") ?? []).map(routeInput);
    const expose = b.bool("expose_routes_to_vswitch");
    b.check();
    const n = ctx.state.networks.create({
      name,
      ipRange,
      labels: labels ?? {},
      subnets,
      routes,
      exposeRoutesToVswitch: expose ?? false,
    });
    return ok({ network: renderNetwork(ctx.state, n) }, 201);
  }),
  ...collectionActions("network"),
  r("GET", "/networks/{id}", (ctx) =>
    ok({ network: renderNetwork(ctx.state, ctx.state.networks.get(id(ctx))) }),
  ),
  r("PUT", "/networks/{id}", (ctx) => {
    const { b, name, labels } = nameAndLabels(ctx);
    const expose = b.bool("expose_routes_to_vswitch");
    b.check();
    const n = ctx.state.networks.update(id(ctx), { name, labels, exposeRoutesToVswitch: expose });
    return ok({ network: renderNetwork(ctx.state, n) });
  }),
  r("DELETE", "/networks/{id}", (ctx) => {
    ctx.state.networks.delete(id(ctx));
    return { status: 204 };
  }),
  ...resourceActions("network", (ctx) => ctx.state.networks.get(id(ctx))),
  r("POST", "/networks/{id}/actions/add_subnet", (ctx) =>
    action(ctx, ctx.state.networks.addSubnet(id(ctx), subnetInput(new Body(ctx.body)))),
  ),
  r("POST", "/networks/{id}/actions/delete_subnet", (ctx) => {
    const b = new Body(ctx.body);
    const ipRange = b.string("ip_range", true);
    b.check();
    return action(ctx, ctx.state.networks.deleteSubnet(id(ctx), ipRange));
  }),
  r("POST", "/networks/{id}/actions/add_route", (ctx) =>
    action(ctx, ctx.state.networks.addRoute(id(ctx), routeInput(new Body(ctx.body)))),
  ),
  r("POST", "/networks/{id}/actions/delete_route", (ctx) =>
    action(ctx, ctx.state.networks.deleteRoute(id(ctx), routeInput(new Body(ctx.body)))),
  ),
  r("POST", "/networks/{id}/actions/change_ip_range", (ctx) => {
    const b = new Body(ctx.body);
    const ipRange = b.string("ip_range", true);
    b.check();
    return action(ctx, ctx.state.networks.changeIpRange(id(ctx), ipRange));
  }),
  r("POST", "/networks/{id}/actions/change_protection", (ctx) =>
    action(ctx, ctx.state.networks.changeProtection(id(ctx), deleteProtection(ctx))),
  ),
];

// ---- Volumes ----

const VOLUME_ROUTES: Route[] = [
  r("GET", "/volumes", (ctx) =>
    listed(
      ctx,
      "volumes",
      ctx.state.volumes.list({
        selector: labelSelector(ctx.query),
        name: ctx.query.get("name"),
        statuses: enumList(ctx.query, "status", ["available", "creating"]),
      }),
      renderVolume,
    ),
  ),
  r("POST", "/volumes", (ctx) => {
    const b = new Body(ctx.body);
    refuseUnknown(b, ["name", "size", "location", "server", "automount", "format", "labels"]);
    const name = b.string("name", true);
    const size = b.int("size");
    const location = b.idOrName("location");
    const server = b.optionalInt("server") ?? undefined;
    const automount = b.bool("automount");
    const format = b.string("format");
    const labels = b.labels();
    b.check();
    const res = ctx.state.volumes.create({
      name,
      size,
      location,
      server,
      automount,
      format,
      labels: labels ?? {},
    });
    return ok(
      {
        volume: renderVolume(res.volume),
        action: renderAction(ctx.state, res.action),
        next_actions: res.nextActions.map((a) => renderAction(ctx.state, a)),
      },
      201,
    );
  }),
  ...collectionActions("volume"),
  r("GET", "/volumes/{id}", (ctx) => ok({ volume: renderVolume(ctx.state.volumes.get(id(ctx))) })),
  r("PUT", "/volumes/{id}", (ctx) => {
    const { b, name, labels } = nameAndLabels(ctx);
    b.check();
    return ok({ volume: renderVolume(ctx.state.volumes.update(id(ctx), { name, labels })) });
  }),
  r("DELETE", "/volumes/{id}", async (ctx) => {
    await ctx.state.volumes.delete(id(ctx));
    return { status: 204 };
  }),
  ...resourceActions("volume", (ctx) => ctx.state.volumes.get(id(ctx))),
  r("POST", "/volumes/{id}/actions/attach", (ctx) => {
    const b = new Body(ctx.body);
    const server = b.int("server");
    const automount = b.bool("automount");
    b.check();
    return action(ctx, ctx.state.volumes.attach(id(ctx), server, automount));
  }),
  r("POST", "/volumes/{id}/actions/detach", (ctx) => action(ctx, ctx.state.volumes.detach(id(ctx)))),
  r("POST", "/volumes/{id}/actions/resize", (ctx) => {
    const b = new Body(ctx.body);
    const size = b.int("size");
    b.check();
    return action(ctx, ctx.state.volumes.resize(id(ctx), size));
  }),
  r("POST", "/volumes/{id}/actions/change_protection", (ctx) =>
    action(ctx, ctx.state.volumes.changeProtection(id(ctx), deleteProtection(ctx))),
  ),
];

// ---- Placement groups ----

const PLACEMENT_GROUP_ROUTES: Route[] = [
  r("GET", "/placement_groups", (ctx) =>
    listed(
      ctx,
      "placement_groups",
      ctx.state.placementGroups.list({
        selector: labelSelector(ctx.query),
        name: ctx.query.get("name"),
        type: ctx.query.get("type"),
      }),
      (g) => renderPlacementGroup(ctx.state, g),
    ),
  ),
  r("POST", "/placement_groups", (ctx) => {
    const b = new Body(ctx.body);
    refuseUnknown(b, ["name", "type", "labels"]);
    const name = b.string("name", true);
    const type = b.string("type", true);
    const labels = b.labels();
    b.check();
    const g = ctx.state.placementGroups.create({ name, type, labels: labels ?? {} });
    return ok({ placement_group: renderPlacementGroup(ctx.state, g), action: null }, 201);
  }),
  r("GET", "/placement_groups/{id}", (ctx) =>
    ok({ placement_group: renderPlacementGroup(ctx.state, ctx.state.placementGroups.get(id(ctx))) }),
  ),
  r("PUT", "/placement_groups/{id}", (ctx) => {
    const { b, name, labels } = nameAndLabels(ctx);
    b.check();
    const g = ctx.state.placementGroups.update(id(ctx), { name, labels });
    return ok({ placement_group: renderPlacementGroup(ctx.state, g) });
  }),
  r("DELETE", "/placement_groups/{id}", (ctx) => {
    ctx.state.placementGroups.delete(id(ctx));
    return { status: 204 };
  }),
];

export const NETWORK_ROUTES: Route[] = [
  ...FIREWALL_ROUTES,
  ...PRIMARY_IP_ROUTES,
  ...NETWORK_ROUTES_ONLY,
  ...VOLUME_ROUTES,
  ...PLACEMENT_GROUP_ROUTES,
];
