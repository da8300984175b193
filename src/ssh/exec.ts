/**
 * Run one command over an SSH connection, streaming stdin to it and its output back, with backpressure both ways.
 * Only the last lines of each output stream are kept (for error messages); nothing is buffered whole.
 */
import type { Readable } from "node:stream";
import type { Client, ClientChannel } from "ssh2";
import type { SshConnection } from "./connect.js";

export interface ExecProgress {
  /** Bytes of stdin handed to the SSH channel so far. */
  stdinBytes: number;
  stdoutBytes: number;
  stderrBytes: number;
}

export interface ExecOptions {
  /** Sent as the command's stdin, then EOF. Without it the command gets EOF at once. A stream is consumed (and
   * destroyed if the command ends before reading all of it). */
  stdin?: Readable | Buffer | string;
  /** Output chunks as they arrive. Returning a promise pauses the stream until it settles (backpressure). */
  onStdout?: (chunk: Buffer) => void | Promise<void>;
  onStderr?: (chunk: Buffer) => void | Promise<void>;
  /** Called after each chunk of stdin is handed to the channel and each output chunk. */
  onProgress?: (progress: Readonly<ExecProgress>) => void;
  signal?: AbortSignal;
  /** How much of each output stream to keep for results and errors (default 20 lines, 4096 bytes). */
  tailLines?: number;
  tailBytes?: number;
}

export interface ExecResult extends ExecProgress {
  command: string;
  /** Exit status, or null when the command was killed by a signal. */
  exitCode: number | null;
  /** Signal name (e.g. "KILL") when the command was killed by one. */
  signal: string | null;
  /** Last lines of stdout / stderr. */
  stdoutTail: string;
  stderrTail: string;
}

export type ExecErrorKind = "exit-status" | "connection-lost" | "aborted" | "stdin-failed" | "channel-failed";

export class ExecError extends Error {
  constructor(
    readonly kind: ExecErrorKind,
    message: string,
    readonly result: ExecResult,
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "ExecError";
  }
  get command(): string {
    return this.result.command;
  }
  get exitCode(): number | null {
    return this.result.exitCode;
  }
}

/** Run `command`; resolves with its exit status whatever it is, rejects only when no status could be had. */
export function exec(
  conn: SshConnection | Client,
  command: string,
  opts: ExecOptions = {},
): Promise<ExecResult> {
  const client: Client = "client" in conn ? conn.client : conn;
  const maxLines = opts.tailLines ?? 20;
  const stdoutTail = new Tail(opts.tailBytes ?? 4096);
  const stderrTail = new Tail(opts.tailBytes ?? 4096);
  const progress: ExecProgress = { stdinBytes: 0, stdoutBytes: 0, stderrBytes: 0 };
  let exitCode: number | null = null;
  let exitSignal: string | null = null;
  let gotExit = false;

  const result = (): ExecResult => ({
    command,
    exitCode,
    signal: exitSignal,
    stdoutTail: stdoutTail.text(maxLines),
    stderrTail: stderrTail.text(maxLines),
    ...progress,
  });

  return new Promise<ExecResult>((resolve, reject) => {
    let settled = false;
    let channel: ClientChannel | undefined;
    let clientError: Error | undefined;
    const stdinStream = opts.stdin !== undefined && !isBytes(opts.stdin) ? opts.stdin : undefined;

    const cleanup = (): void => {
      settled = true;
      opts.signal?.removeEventListener("abort", onAbort);
      client.off("error", onClientError);
      client.off("close", onClientClose);
      if (stdinStream !== undefined && channel !== undefined) {
        stdinStream.unpipe(channel);
        if (!stdinStream.readableEnded) stdinStream.destroy();
      }
    };
    const fail = (kind: ExecErrorKind, message: string, cause?: unknown): void => {
      if (settled) return;
      cleanup();
      channel?.close();
      reject(new ExecError(kind, withTails(message, result()), result(), cause));
    };
    const onAbort = (): void => {
      channel?.signal("KILL");
      fail("aborted", `aborted: ${shortCommand(command)}`, opts.signal?.reason);
    };
    const onClientError = (err: Error): void => {
      clientError = err;
    };
    const onClientClose = (): void => {
      // Give the channel's own close (with its exit status, if any) a turn first.
      setImmediate(() =>
        fail(
          "connection-lost",
          `SSH connection lost while running ${shortCommand(command)}${clientError ? `: ${clientError.message}` : ""}`,
          clientError,
        ),
      );
    };

    if (opts.signal?.aborted) {
      fail("aborted", `aborted: ${shortCommand(command)}`, opts.signal.reason);
      return;
    }
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    client.on("error", onClientError);
    client.once("close", onClientClose);

    try {
      client.exec(command, (err, ch) => {
        if (err) {
          fail("channel-failed", `cannot start ${shortCommand(command)}: ${err.message}`, err);
          return;
        }
        channel = ch;
        if (settled) {
          ch.close();
          return;
        }
        consume(ch, stdoutTail, "stdoutBytes", opts.onStdout);
        consume(ch.stderr, stderrTail, "stderrBytes", opts.onStderr);
        ch.on("exit", (code: number | null, signalName?: string) => {
          gotExit = true;
          exitCode = typeof code === "number" ? code : null;
          exitSignal = typeof signalName === "string" ? signalName.replace(/^SIG/, "") : null;
        });
        ch.on("error", (e: Error) => {
          clientError ??= e;
        });
        ch.once("close", () => {
          if (settled) return;
          if (!gotExit) {
            fail(
              "connection-lost",
              `${shortCommand(command)} ended without an exit status (SSH connection lost?)` +
                (clientError ? `: ${clientError.message}` : ""),
              clientError,
            );
            return;
          }
          cleanup();
          resolve(result());
        });
        sendStdin(ch);
      });
    } catch (err) {
      fail("channel-failed", `cannot start ${shortCommand(command)}: ${String(err)}`, err);
    }

    function consume(
      stream: Readable,
      tail: Tail,
      counter: "stdoutBytes" | "stderrBytes",
      cb: ((chunk: Buffer) => void | Promise<void>) | undefined,
    ): void {
      stream.on("data", (chunk: Buffer) => {
        progress[counter] += chunk.length;
        tail.push(chunk);
        opts.onProgress?.(progress);
        const pending = cb?.(chunk);
        if (pending instanceof Promise) {
          stream.pause();
          pending.then(
            () => stream.resume(),
            (e: unknown) => fail("channel-failed", `output handler failed: ${String(e)}`, e),
          );
        }
      });
    }

    function sendStdin(ch: ClientChannel): void {
      const input = opts.stdin;
      if (input === undefined) {
        ch.end();
        return;
      }
      if (isBytes(input)) {
        const buf = typeof input === "string" ? Buffer.from(input) : input;
        progress.stdinBytes += buf.length;
        ch.end(buf);
        opts.onProgress?.(progress);
        return;
      }
      input.on("data", (chunk: Buffer | string) => {
        progress.stdinBytes += typeof chunk === "string" ? Buffer.byteLength(chunk) : chunk.length;
        opts.onProgress?.(progress);
      });
      input.once("error", (e) =>
        fail("stdin-failed", `reading stdin for ${shortCommand(command)} failed: ${e.message}`, e),
      );
      // The remote side may stop reading (command exited); writes to a closed channel are not errors for us.
      ch.on("error", () => undefined);
      input.pipe(ch);
    }
  });
}

/** Like exec, but a non-zero exit status (or a signal) is an ExecError showing the command and its last output. */
export async function execOrThrow(
  conn: SshConnection | Client,
  command: string,
  opts: ExecOptions = {},
): Promise<ExecResult> {
  const res = await exec(conn, command, opts);
  if (res.exitCode !== 0) {
    const status =
      res.exitCode === null
        ? `was killed by signal ${res.signal ?? "?"}`
        : `exited with status ${res.exitCode}`;
    throw new ExecError("exit-status", withTails(`${shortCommand(command)} ${status}`, res), res);
  }
  return res;
}

function withTails(message: string, r: ExecResult): string {
  let out = message;
  if (r.stderrTail !== "") out += `\n--- last lines of stderr ---\n${r.stderrTail}`;
  if (r.stdoutTail !== "") out += `\n--- last lines of stdout ---\n${r.stdoutTail}`;
  return out;
}

function shortCommand(command: string): string {
  const oneLine = command.replace(/\s+/g, " ").trim();
  return "`" + (oneLine.length > 300 ? oneLine.slice(0, 297) + "..." : oneLine) + "`";
}

function isBytes(x: unknown): x is Buffer | string {
  return typeof x === "string" || Buffer.isBuffer(x);
}

/** Keeps the last `max` bytes of a stream, copying at most 2*max per chunk. */
class Tail {
  private buf = Buffer.alloc(0);
  constructor(private readonly max: number) {}
  push(chunk: Buffer): void {
    if (chunk.length >= this.max) {
      this.buf = Buffer.from(chunk.subarray(chunk.length - this.max));
      return;
    }
    this.buf = Buffer.concat([this.buf, chunk]);
    if (this.buf.length > 2 * this.max) this.buf = Buffer.from(this.buf.subarray(this.buf.length - this.max));
  }
  text(maxLines: number): string {
    const bytes = this.buf.length > this.max ? this.buf.subarray(this.buf.length - this.max) : this.buf;
    const lines = bytes.toString("utf8").replace(/\n$/, "").split("\n");
    return lines.slice(-maxLines).join("\n");
  }
}
