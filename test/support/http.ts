/** A small HTTP server of a test on 127.0.0.1 (images served by URL, misbehaving on purpose). */
import { createServer, type RequestListener } from "node:http";
import type { AddressInfo } from "node:net";

export interface TestHttpServer {
  /** e.g. http://127.0.0.1:PORT */
  base: string;
  /** Stops listening and drops open connections (a trickling answer included). */
  close(): Promise<void>;
}

export async function startHttp(handler: RequestListener): Promise<TestHttpServer> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
