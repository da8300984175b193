/**
 * TCP proxy in front of a rescue host's sshd: it is what listens on <ip>:22. It counts bytes in each direction and
 * can drop connections after a number of bytes (fault injection). Chunks are forwarded as they come, never copied,
 * with backpressure in both directions.
 */
import net from "node:net";

export interface ProxyOptions {
  listenHost: string;
  listenPort: number;
  targetHost: string;
  targetPort: number;
  /** Read at every chunk: drop a connection once it carried this many bytes in one direction. */
  dropAfterBytes: () => number | undefined;
}

export interface Proxy {
  /** Client -> sshd bytes, all connections. */
  readonly bytesIn: number;
  /** sshd -> client bytes, all connections. */
  readonly bytesOut: number;
  /** Connections dropped by fault injection so far. */
  readonly dropped: number;
  /** Stop listening and cut every open connection. Idempotent. */
  close(): Promise<void>;
}

export async function startProxy(opts: ProxyOptions): Promise<Proxy> {
  const sockets = new Set<net.Socket>();
  const totals = { bytesIn: 0, bytesOut: 0, dropped: 0 };

  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    const upstream = net.connect({
      host: opts.targetHost,
      port: opts.targetPort,
      allowHalfOpen: true,
      noDelay: true,
    });
    sockets.add(client);
    sockets.add(upstream);
    const used = { in: 0, out: 0 };
    let dropped = false;

    const drop = (): void => {
      if (dropped) return;
      dropped = true;
      totals.dropped += 1;
      client.resetAndDestroy();
      upstream.destroy();
    };

    const forward = (from: net.Socket, to: net.Socket, dir: "in" | "out"): void => {
      from.on("data", (chunk: Buffer) => {
        if (dropped) return;
        const limit = opts.dropAfterBytes();
        let data = chunk;
        let cut = false;
        if (limit !== undefined && used[dir] + data.length >= limit) {
          data = data.subarray(0, Math.max(0, limit - used[dir]));
          cut = true;
        }
        used[dir] += data.length;
        if (dir === "in") totals.bytesIn += data.length;
        else totals.bytesOut += data.length;
        if (cut) {
          if (data.length > 0) to.write(data);
          drop();
          return;
        }
        if (!to.write(data)) {
          from.pause();
          to.once("drain", () => from.resume());
        }
      });
      from.on("end", () => {
        if (!to.destroyed) to.end();
      });
    };

    forward(client, upstream, "in");
    forward(upstream, client, "out");

    const finish = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", finish);
    upstream.on("error", finish);
    client.on("close", finish);
    upstream.on("close", finish);
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: opts.listenHost, port: opts.listenPort, exclusive: true }, () => {
      server.off("error", reject);
      resolve();
    });
  });

  let closing: Promise<void> | undefined;
  return {
    get bytesIn() {
      return totals.bytesIn;
    },
    get bytesOut() {
      return totals.bytesOut;
    },
    get dropped() {
      return totals.dropped;
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
        sockets.clear();
      });
      return closing;
    },
  };
}
