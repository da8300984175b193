/**
 * Link shaping for the benchmark: an htb qdisc on `lo` whose classes carry only the traffic to and from one
 * loopback address (the rescue host's), at a fixed rate, in both directions. Everything else on `lo` is unclassified
 * and passes unshaped (htb `default 0`). netem is not available on these kernels, so no delay is added.
 *
 * The qdisc uses a handle of its own (7e57:) so the start-of-run sweep removes a previous run's leftovers and never
 * anything else. `installCleanupHandlers` removes it on SIGINT/SIGTERM too.
 */
import { spawn } from "node:child_process";
import { createServer, connect } from "node:net";

const DEV = "lo";
const HANDLE = "7e57";
const UP = `${HANDLE}:10`;
const DOWN = `${HANDLE}:20`;

export interface ClassCounters {
  bytes: number;
  packets: number;
}

export interface LinkCounters {
  /** Towards the shaped address (client -> server). */
  up: ClassCounters;
  /** From the shaped address (server -> client). */
  down: ClassCounters;
}

export interface ShapeSpec {
  /** A 127.0.0.0/8 address or network, e.g. "127.77.3.2" or "127.77.3.0/24". */
  target: string;
  /** Only this TCP port of the target (e.g. 22); all ports when undefined. */
  port?: number;
  rateMbit: number;
}

export interface Shaping extends ShapeSpec {
  counters(): Promise<LinkCounters>;
  remove(): Promise<void>;
}

function tc(args: string[], allowFail = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("tc", args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0 || allowFail) resolve(out);
      else reject(new Error(`tc ${args.join(" ")} exited with ${code}: ${err.trim()}`));
    });
  });
}

/** Remove our qdisc from `lo` if a previous run left it (only ours: matched by handle). */
export async function sweepShaping(): Promise<boolean> {
  const out = await tc(["qdisc", "show", "dev", DEV]);
  if (!new RegExp(`qdisc htb ${HANDLE}: root`).test(out)) return false;
  await tc(["qdisc", "del", "dev", DEV, "root", "handle", `${HANDLE}:`, "htb"]);
  return true;
}

let active: Shaping | undefined;

/**
 * Shape traffic to and from `spec.target` (and port) on lo to `spec.rateMbit` in each direction. One shaping at a
 * time: a new one replaces the previous.
 */
export async function shapeLoopback(spec: ShapeSpec): Promise<Shaping> {
  const { rateMbit, port } = spec;
  const m = /^127\.\d+\.\d+\.\d+(?:\/(\d+))?$/.exec(spec.target);
  if (!m || (m[1] !== undefined && Number(m[1]) < 8)) {
    throw new Error(`refusing to shape ${spec.target}: not inside 127.0.0.0/8`);
  }
  const cidr = m[1] === undefined ? `${spec.target}/32` : spec.target;
  if (active) await active.remove();
  await sweepShaping();
  const rate = `${rateMbit}mbit`;
  // Loopback packets are up to 64 KiB (GSO), so burst and quantum must exceed that; the leaf queue is kept short
  // (50 ms at the link rate, at least 1 MiB) so the link does not grow an unrealistic buffer.
  const burst = `${Math.max(256, Math.round((rateMbit * 1e6) / 8 / 1000 / 50))}k`;
  const leafLimit = String(Math.max(1 << 20, Math.round((rateMbit * 1e6 * 0.05) / 8)));
  let removed = false;
  const remove = async (): Promise<void> => {
    if (removed) return;
    removed = true;
    if (active === shaping) active = undefined;
    await tc(["qdisc", "del", "dev", DEV, "root", "handle", `${HANDLE}:`, "htb"], true);
  };
  const shaping: Shaping = {
    ...spec,
    counters: () => readCounters(),
    remove,
  };
  active = shaping;
  try {
    await tc(["qdisc", "add", "dev", DEV, "root", "handle", `${HANDLE}:`, "htb", "default", "0"]);
    for (const [classid, leaf, dir] of [
      [UP, "7e58:", "dst"],
      [DOWN, "7e59:", "src"],
    ] as const) {
      await tc([
        "class",
        "add",
        "dev",
        DEV,
        "parent",
        `${HANDLE}:`,
        "classid",
        classid,
        "htb",
        "rate",
        rate,
        "ceil",
        rate,
        "burst",
        burst,
        "cburst",
        burst,
        "quantum",
        "200000",
      ]);
      await tc(["qdisc", "add", "dev", DEV, "parent", classid, "handle", leaf, "bfifo", "limit", leafLimit]);
      await tc([
        "filter",
        "add",
        "dev",
        DEV,
        "parent",
        `${HANDLE}:`,
        "protocol",
        "ip",
        "prio",
        dir === "dst" ? "1" : "2",
        "u32",
        "match",
        "ip",
        dir,
        cidr,
        ...(port === undefined
          ? []
          : ["match", "ip", dir === "dst" ? "dport" : "sport", String(port), "0xffff"]),
        "flowid",
        classid,
      ]);
    }
  } catch (err) {
    await remove();
    throw err;
  }
  return shaping;
}

/** Remove the active shaping, if any (for signal handlers and finally blocks). */
export async function removeActiveShaping(): Promise<void> {
  if (active) await active.remove();
}

async function readCounters(): Promise<LinkCounters> {
  const out = await tc(["-s", "class", "show", "dev", DEV]);
  const read = (classid: string): ClassCounters => {
    const m = new RegExp(`class htb ${classid} [^\\n]*\\n\\s*Sent (\\d+) bytes (\\d+) pkt`).exec(out);
    return m ? { bytes: Number(m[1]), packets: Number(m[2]) } : { bytes: 0, packets: 0 };
  };
  return { up: read(UP), down: read(DOWN) };
}

/**
 * Check that shaping works: push `bytes` through a local TCP socket pair towards `ip` and return the achieved
 * rate in Mbit/s (payload only). Bounded by `timeoutMs`.
 */
export async function measureLoopbackRate(ip: string, bytes: number, timeoutMs = 60_000): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, ip, resolve);
  });
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("no server address");
  try {
    return await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`rate check to ${ip} timed out`)), timeoutMs);
      let received = 0;
      let started = 0n;
      server.on("connection", (sock) => {
        sock.on("data", (c: Buffer) => {
          received += c.length;
          if (received >= bytes) {
            clearTimeout(timer);
            const seconds = Number(process.hrtime.bigint() - started) / 1e9;
            sock.destroy();
            resolve((received * 8) / seconds / 1e6);
          }
        });
        sock.on("error", () => undefined);
      });
      const client = connect(address.port, ip, () => {
        started = process.hrtime.bigint();
        const chunk = Buffer.alloc(1 << 20, 0x5a);
        let sent = 0;
        const pump = (): void => {
          while (sent < bytes) {
            sent += chunk.length;
            if (!client.write(chunk)) {
              client.once("drain", pump);
              return;
            }
          }
          client.end();
        };
        pump();
      });
      client.on("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  } finally {
    server.close();
  }
}
