/**
 * A real HTTP server on 127.0.0.1 answering with scripted, Hetzner-shaped replies. Used by the hcloud client tests
 * for transport behaviours (retries, timeouts, connection resets) that the emulator is not asked to produce.
 */

import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

export interface SeenRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  body: unknown;
  headers: IncomingHttpHeaders;
}

export type Reply =
  | { status: number; body?: unknown; headers?: Record<string, string> }
  /** Answer with this text as is (not JSON-encoded), e.g. a proxy's HTML page or a JSON body cut short. */
  | { status: number; raw: string; headers?: Record<string, string> }
  /** Destroy the connection without answering (the client sees a reset). */
  | { reset: true }
  /** Never answer (the client's timeout must fire); the socket is closed when the server stops. */
  | { hang: true };

export type Script = (req: SeenRequest, index: number) => Reply | Promise<Reply>;

export interface ScriptedServer {
  /** e.g. http://127.0.0.1:PORT/v1 */
  endpoint: string;
  requests: SeenRequest[];
  close(): Promise<void>;
}

export function errorReply(status: number, code: string, message = code, details: unknown = null): Reply {
  return {
    status,
    body: { error: { code, message, details } },
    headers: { "X-Correlation-Id": `corr-${code}` },
  };
}

export async function startScripted(script: Script): Promise<ScriptedServer> {
  const requests: SeenRequest[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://127.0.0.1");
      const text = Buffer.concat(chunks).toString("utf8");
      const seen: SeenRequest = {
        method: req.method ?? "GET",
        path: url.pathname.replace(/^\/v1/, ""),
        query: url.searchParams,
        body: text.length > 0 ? (JSON.parse(text) as unknown) : undefined,
        headers: req.headers,
      };
      requests.push(seen);
      Promise.resolve(script(seen, requests.length - 1)).then(
        (reply) => {
          if ("reset" in reply) {
            req.socket.destroy();
            return;
          }
          if ("hang" in reply) return;
          if ("raw" in reply) {
            res.writeHead(reply.status, { "Content-Type": "text/html", ...reply.headers });
            res.end(reply.raw);
            return;
          }
          const body = reply.body === undefined ? "" : JSON.stringify(reply.body);
          res.writeHead(reply.status, {
            ...(body ? { "Content-Type": "application/json" } : {}),
            ...reply.headers,
          });
          res.end(body);
        },
        (err: unknown) => {
          res.writeHead(500, { "Content-Type": "text/plain" });
          res.end(`script failed: ${String(err)}`);
        },
      );
    });
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}/v1`,
    requests,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A Hetzner-shaped list body for one page of `items`. */
export function pageOf<T>(key: string, all: T[], query: URLSearchParams): Record<string, unknown> {
  const perPage = Math.min(50, Number(query.get("per_page") ?? 25));
  const page = Number(query.get("page") ?? 1);
  const last = Math.max(1, Math.ceil(all.length / perPage));
  return {
    [key]: all.slice((page - 1) * perPage, page * perPage),
    meta: {
      pagination: {
        page,
        per_page: perPage,
        previous_page: page > 1 ? page - 1 : null,
        next_page: page < last ? page + 1 : null,
        last_page: last,
        total_entries: all.length,
      },
    },
  };
}
