/**
 * The emulator's HTTP front: one node:http listener serving
 * - the API under /v1 (bearer token, rate limit, X-Correlation-Id, fault injection, JSON errors);
 * - the metadata service of each server under /metadata/{server_id}/hetzner/v1/ (no authentication, like
 *   169.254.169.254 inside a server);
 * - the admin endpoints under /_emulator (same token): GET state, GET/POST/DELETE faults.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Exchange } from "../types.js";
import { FaultSyntaxError, renderFault, type Faults } from "../faults.js";
import { renderMetadata, type MetadataInfo } from "../metadata.js";
import { locationByName } from "../state/catalog.js";
import { ApiError, unsupported } from "../state/errors.js";
import type { EmulatorState } from "../state/index.js";
import type { RateLimiter } from "./ratelimit.js";
import { allowedMethods, match, unmodelled } from "./routes.js";

export interface AppOptions {
  state: EmulatorState;
  token: string;
  faults: Faults;
  limiter: RateLimiter;
  onExchange?: ((exchange: Exchange) => void) | undefined;
}

const MAX_BODY_BYTES = 1024 * 1024;

function correlationId(): string {
  return randomBytes(8).toString("hex");
}

function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(.+)$/i.exec(header ?? "");
  if (!m?.[1]) return false;
  const given = Buffer.from(m[1].trim());
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new ApiError("json_error", "request body too large");
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function parseJson(text: string): unknown {
  if (text.trim() === "") return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new ApiError("json_error", "request body is not valid JSON");
  }
}

function errorBody(err: ApiError): unknown {
  return { error: { code: err.code, message: err.message, details: err.details } };
}

function send(res: ServerResponse, status: number, headers: Record<string, string>, body: unknown): void {
  const text = body === undefined ? "" : JSON.stringify(body);
  const h: Record<string, string> = { ...headers };
  if (body !== undefined) h["Content-Type"] = "application/json";
  h["Content-Length"] = String(Buffer.byteLength(text));
  res.writeHead(status, h);
  res.end(text);
}

/** The metadata info of one server for helper-4's renderer. */
export function metadataInfo(state: EmulatorState, serverId: number): MetadataInfo | undefined {
  const s = state.servers.find(serverId);
  if (!s) return undefined;
  const loc = locationByName(s.location);
  return {
    id: s.id,
    hostname: s.name,
    publicIpv4: s.ipv4,
    ipv6Network: s.ipv6,
    macAddress: s.macAddress,
    publicKeys: [...s.publicKeys],
    userData: s.userData,
    availabilityZone: loc?.availabilityZone ?? s.location,
    region: loc?.network_zone ?? "",
    privateNetworks: state.networks.metadataOf(s),
  };
}

export function createRequestHandler(
  options: AppOptions,
): (req: IncomingMessage, res: ServerResponse) => void {
  const { state, token, faults, limiter } = options;

  async function api(req: IncomingMessage, res: ServerResponse, path: string, url: URL): Promise<void> {
    const asked = (req.method ?? "GET").toUpperCase();
    // HEAD is GET without the body; OPTIONS says which methods a path allows (no token needed, like a preflight).
    const method = asked === "HEAD" ? "GET" : asked;
    if (asked === "OPTIONS") {
      req.resume();
      const allow = allowedMethods(path);
      const headers = { "X-Correlation-Id": correlationId(), Allow: [...allow, "OPTIONS"].join(", ") };
      return send(res, allow.length > 0 ? 204 : 404, headers, undefined);
    }
    const headers: Record<string, string> = { "X-Correlation-Id": correlationId() };
    let requestBody: unknown;
    let status = 500;
    let body: unknown;
    try {
      const text = await readBody(req);
      if (!tokenMatches(req.headers.authorization, token))
        throw new ApiError("unauthorized", "unable to authenticate");
      const allowed = limiter.take();
      Object.assign(headers, limiter.headers());
      if (!allowed) throw new ApiError("rate_limit_exceeded", "limit of requests per hour reached");
      requestBody = parseJson(text);
      const injected = faults.takeHttp(method, path);
      if (injected) throw new ApiError(injected.code, injected.message ?? `injected fault: ${injected.code}`);
      const found = match(method, path);
      const notModelled = found === undefined || "allowed" in found ? unmodelled(path) : undefined;
      if (notModelled) throw unsupported(`${notModelled} (${method} ${path})`);
      if (!found) throw new ApiError("not_found", `no such endpoint: ${path}`);
      if ("allowed" in found) {
        headers.Allow = [...allowedMethods(path), "OPTIONS"].join(", ");
        throw new ApiError("method_not_allowed", `method ${method} is not allowed on ${path}`);
      }
      const result = await found.route.handler({
        state,
        params: found.params,
        query: url.searchParams,
        body: requestBody,
      });
      status = result.status;
      body = result.body;
    } catch (err) {
      const apiErr =
        err instanceof ApiError
          ? err
          : new ApiError(
              "server_error",
              `internal error: ${err instanceof Error ? err.message : String(err)}`,
            );
      status = apiErr.status;
      body = errorBody(apiErr);
    }
    if (!("RateLimit-Limit" in headers)) Object.assign(headers, limiter.headers());
    if (asked === "HEAD") {
      const text = body === undefined ? "" : JSON.stringify(body);
      res.writeHead(status, {
        ...headers,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        "Content-Length": String(Buffer.byteLength(text)),
      });
      res.end();
    } else send(res, status, headers, body);
    if (options.onExchange) {
      const responseHeaders = Object.fromEntries(
        Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]),
      );
      try {
        options.onExchange({
          method,
          path,
          query: url.searchParams,
          requestBody,
          status,
          responseBody: body,
          responseHeaders,
        });
      } catch {
        // A hook must not break the emulator; tests collect problems themselves.
      }
    }
  }

  async function admin(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const method = (req.method ?? "GET").toUpperCase();
    const headers = { "X-Correlation-Id": correlationId() };
    try {
      const text = await readBody(req);
      if (!tokenMatches(req.headers.authorization, token))
        throw new ApiError("unauthorized", "unable to authenticate");
      if (path === "/state" && method === "GET") return send(res, 200, headers, { state: state.debugView() });
      if (path === "/faults" && method === "GET")
        return send(res, 200, headers, { faults: faults.all().map(renderFault) });
      if (path === "/faults" && method === "POST") {
        try {
          const added = faults.add(parseJson(text) as never);
          return send(res, 201, headers, { fault: renderFault(added) });
        } catch (err) {
          if (err instanceof FaultSyntaxError) throw new ApiError("invalid_input", err.message);
          throw err;
        }
      }
      if (path === "/faults" && method === "DELETE") {
        faults.clear();
        return send(res, 204, headers, undefined);
      }
      const m = /^\/faults\/(\d+)$/.exec(path);
      if (m && method === "DELETE") {
        if (!faults.remove(Number(m[1]))) throw new ApiError("not_found", "fault not found");
        return send(res, 204, headers, undefined);
      }
      throw new ApiError("not_found", `no such admin endpoint: ${method} ${path}`);
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError("server_error", String(err));
      send(res, e.status, headers, errorBody(e));
    }
  }

  function metadata(req: IncomingMessage, res: ServerResponse, path: string): void {
    req.resume();
    const m = /^\/metadata\/(\d+)\/hetzner\/v1\/(.*)$/.exec(path);
    const info = m ? metadataInfo(state, Number(m[1])) : undefined;
    if (!m || !info || req.method !== "GET") {
      res.writeHead(404, { "Content-Type": "text/plain; charset=utf-8" });
      res.end("not found\n");
      return;
    }
    const out = renderMetadata(info, m[2] ?? "");
    res.writeHead(out.status, {
      "Content-Type": out.contentType,
      "Content-Length": Buffer.byteLength(out.body),
    });
    res.end(out.body);
  }

  return (req, res) => {
    const url = new URL(req.url ?? "/", "http://emulator.invalid");
    const path = url.pathname;
    let p: Promise<void> | void;
    if (path === "/v1" || path.startsWith("/v1/")) p = api(req, res, path.slice(3) || "/", url);
    else if (path.startsWith("/metadata/")) p = metadata(req, res, path);
    else if (path === "/_emulator" || path.startsWith("/_emulator/"))
      p = admin(req, res, path.slice(10) || "/");
    else {
      req.resume();
      p = send(
        res,
        404,
        { "X-Correlation-Id": correlationId() },
        {
          error: { code: "not_found", message: "not found; the API is under /v1", details: null },
        },
      );
    }
    if (p) p.catch(() => res.destroy());
  };
}
