/** What every route module shares: the context, results, the route table's entries, action lists of a resource. */
import type { Action } from "../../hcloud/schema.js";
import type { EmulatorState } from "../state/index.js";
import { ApiError, invalidField, notFound } from "../state/errors.js";
import { enumList, paginate, sorter } from "./params.js";
import { renderAction } from "./render.js";

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

export const SERVER_STATUSES = [
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
export const ACTION_STATUSES = ["running", "success", "error"] as const;
export const ACTION_SORT: Record<string, (a: Action) => string | number | null> = {
  id: (a) => a.id,
  command: (a) => a.command,
  status: (a) => a.status,
  started: (a) => a.started,
  finished: (a) => a.finished,
};

export function ok(body: unknown, status = 200): RouteResult {
  return { status, body };
}

/** 410 for endpoints Hetzner removed (facts: /datacenters answers 410 since 2026-10-01). */
export function gone(what: string): Handler {
  return () => {
    throw new ApiError("deprecated_api_endpoint", `the ${what} endpoint has been removed`, {
      announcement: "https://docs.hetzner.cloud/changelog",
    });
  };
}

export function id(ctx: RouteContext, i = 0): number {
  const v = ctx.params[i];
  if (v === undefined) throw new Error("route without id");
  return v;
}

export function listActions(ctx: RouteContext, type: string, resourceId: number): RouteResult {
  const statuses = enumList(ctx.query, "status", ACTION_STATUSES);
  const cmp = sorter(ctx.query, ACTION_SORT);
  let actions = ctx.state.actionsOf(type, resourceId).map((a) => renderAction(ctx.state, a));
  if (statuses.length > 0) actions = actions.filter((a) => statuses.includes(a.status));
  actions.sort(cmp ?? ((a, b) => a.id - b.id));
  const { items, meta } = paginate(ctx.query, actions);
  return ok({ actions: items, meta });
}

export function actionOf(ctx: RouteContext, type: string): RouteResult {
  const resourceId = id(ctx, 0);
  const actionId = id(ctx, 1);
  const a = ctx.state.findAction(actionId);
  if (!a || !a.resources.some((r) => r.type === type && r.id === resourceId))
    throw notFound(`action with ID '${actionId}'`);
  return ok({ action: renderAction(ctx.state, a) });
}

const ID = "(\\d+)";
export function r(method: string, path: string, handler: Handler): Route {
  return { method, pattern: new RegExp(`^${path.replaceAll("{id}", ID)}/?$`), handler };
}

/**
 * `GET /{collection}/actions?id=...` and `GET /{collection}/actions/{id}`: actions of that resource type, by id
 * (like GET /actions, which needs ids since listing all actions was removed).
 */
export function collectionActions(type: string): Route[] {
  const base = `/${type}s`;
  return [
    r("GET", `${base}/actions`, (ctx) => {
      const raw = ctx.query.getAll("id").flatMap((v) => v.split(","));
      if (raw.length === 0)
        throw new ApiError(
          "invalid_input",
          "listing all actions was removed; pass one or more id parameters",
          {
            fields: [{ name: "id", messages: ["is required"] }],
          },
        );
      if (!raw.every((v) => /^\d+$/.test(v))) throw invalidField("id", "id must be an integer");
      const found = [...new Set(raw.map(Number))]
        .map((i) => ctx.state.findAction(i))
        .filter((a) => a !== undefined && a.resources.some((x) => x.type === type));
      const statuses = enumList(ctx.query, "status", ACTION_STATUSES);
      const cmp = sorter(ctx.query, ACTION_SORT);
      let actions = found.map((a) => renderAction(ctx.state, a as NonNullable<typeof a>));
      if (statuses.length > 0) actions = actions.filter((a) => statuses.includes(a.status));
      actions.sort(cmp ?? ((a, b) => a.id - b.id));
      const { items, meta } = paginate(ctx.query, actions);
      return ok({ actions: items, meta });
    }),
    r("GET", `${base}/actions/{id}`, (ctx) => {
      const a = ctx.state.findAction(id(ctx));
      if (!a || !a.resources.some((x) => x.type === type)) throw notFound(`action with ID '${id(ctx)}'`);
      return ok({ action: renderAction(ctx.state, a) });
    }),
  ];
}

/** `GET /{collection}/{id}/actions` and `.../actions/{id}` of one resource (checked to exist first). */
export function resourceActions(type: string, exists: (ctx: RouteContext) => unknown): Route[] {
  const base = `/${type}s/{id}/actions`;
  return [
    r("GET", base, (ctx) => {
      exists(ctx);
      return listActions(ctx, type, id(ctx));
    }),
    r("GET", `${base}/{id}`, (ctx) => actionOf(ctx, type)),
  ];
}
