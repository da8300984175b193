/**
 * A misbehaving proxy in front of the emulator's API, on 127.0.0.1: per request it passes the answer on, loses it
 * (forwards the request, lets the emulator act, then breaks the connection: the client sees a reset), hangs (forwards,
 * never answers), or holds the request until the test lets it through. Tests point a client at `endpoint`.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

export type ProxyAction = "pass" | "lose" | "hang";

export interface ProxiedRequest {
  method: string;
  /** Below /v1, without the query, e.g. `/servers/42/actions/create_image`. */
  path: string;
}

export interface ApiProxy {
  /** e.g. http://127.0.0.1:PORT/v1 */
  endpoint: string;
  /** Requests whose answer was lost or held back, after the emulator answered them, in order. */
  swallowed: (ProxiedRequest & { status: number; body: string })[];
  close(): Promise<void>;
}

/**
 * `decide` says what to do with each request (it may return a promise: the request is held until it settles).
 * `onSwallowed` is called once the emulator has answered a request whose answer is lost or held back.
 */
export async function startApiProxy(
  upstream: string,
  decide: (req: ProxiedRequest) => ProxyAction | Promise<ProxyAction>,
  onSwallowed?: (req: ProxiedRequest & { status: number; body: string }) => void,
): Promise<ApiProxy> {
  const target = new URL(upstream);
  const sockets = new Set<Socket>();
  const swallowed: ApiProxy["swallowed"] = [];
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
    const url = new URL(req.url ?? "/", "http://proxy");
    const seen = { method: req.method ?? "GET", path: url.pathname.replace(/^\/v1/, "") };
    const action = await decide(seen);
    const headers: Record<string, string> = {};
    for (const name of ["authorization", "content-type", "accept"]) {
      const v = req.headers[name];
      if (typeof v === "string") headers[name] = v;
    }
    const answer = await fetch(`${target.origin}${url.pathname}${url.search}`, {
      method: seen.method,
      headers,
      ...(chunks.length > 0 ? { body: Buffer.concat(chunks) } : {}),
      signal: AbortSignal.timeout(30_000),
    });
    const body = await answer.text();
    if (action !== "pass") {
      swallowed.push({ ...seen, status: answer.status, body });
      onSwallowed?.({ ...seen, status: answer.status, body });
      if (action === "lose") req.socket.destroy();
      return;
    }
    const out: Record<string, string> = {};
    answer.headers.forEach((v, k) => {
      if (k === "content-type" || k === "x-correlation-id" || k.startsWith("ratelimit-")) out[k] = v;
    });
    res.writeHead(answer.status, out);
    res.end(body);
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(502, { "Content-Type": "text/plain" });
      res.end(`proxy: ${String(err)}`);
    });
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    swallowed,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
