/**
 * A static HTTP server over a directory, on loopback: what serves a file:// binary cache and a releases directory
 * to Nix and to hosts in tests. GET and HEAD of regular files below `root`; 404 for anything else.
 */
import { createReadStream } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join, sep } from "node:path";

const TYPES: Record<string, string> = {
  ".json": "application/json",
  ".narinfo": "text/x-nix-narinfo",
};

export async function startStaticServer(
  root: string,
  host = "127.0.0.1",
): Promise<{ url: string; close(): Promise<void> }> {
  const base = await realpath(root);
  const server = createServer((req, res) => {
    void (async () => {
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.writeHead(405, { allow: "GET, HEAD" }).end();
        return;
      }
      let path: string;
      try {
        path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
      } catch {
        res.writeHead(400).end();
        return;
      }
      const file = join(base, path);
      const real = await realpath(file).catch(() => undefined);
      const info = real ? await stat(real).catch(() => undefined) : undefined;
      if (!real || !info?.isFile() || !(real === base || real.startsWith(base + sep))) {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
        return;
      }
      const ext = /\.[a-z]+$/.exec(real)?.[0] ?? "";
      res.writeHead(200, {
        "content-type": TYPES[ext] ?? "application/octet-stream",
        "content-length": info.size,
        "cache-control": "no-cache",
      });
      if (req.method === "HEAD") {
        res.end();
        return;
      }
      const stream = createReadStream(real);
      stream.on("error", () => res.destroy());
      stream.pipe(res);
    })().catch(() => res.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
