/**
 * Starts an emulator for a test: its own temp state directory, a fast clock, rescue hosts off unless given, and a
 * small fetch wrapper. Call `close()` in after()/finally: it stops the emulator and removes the state directory.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startEmulator, type EmulatorOptions, type RunningEmulator } from "../../src/emulator/index.js";

export interface ApiAnswer<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  body: T;
}

export interface TestEmulator {
  emulator: RunningEmulator;
  stateDir: string;
  token: string;
  /** Calls the API with the emulator's token (or `token` when given, e.g. a wrong one). */
  api<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
    options?: { token?: string | null },
  ): Promise<ApiAnswer<T>>;
  /** Polls until `check` returns a value (not undefined), at most `timeoutMs`. */
  waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs?: number): Promise<T>;
  /** Waits until every given action is no longer running; returns them. */
  waitActions(ids: number[], timeoutMs?: number): Promise<{ id: number; status: string; command: string }[]>;
  close(): Promise<void>;
}

export type TestEmulatorOptions = Partial<Omit<EmulatorOptions, "token" | "stateDir">> & {
  /** Reuse a state directory (persistence tests); it is then not removed by close(). */
  stateDir?: string;
  ipPrefix: string;
};

export async function startTestEmulator(options: TestEmulatorOptions): Promise<TestEmulator> {
  const ownDir = options.stateDir === undefined;
  const stateDir = options.stateDir ?? mkdtempSync(join(tmpdir(), "hetznix-emu-test-"));
  // A per-run random token: never a real one.
  const token = `test-${Math.random().toString(36).slice(2)}`;
  let emulator: RunningEmulator;
  try {
    emulator = await startEmulator({ speed: 100, ...options, token, stateDir });
  } catch (err) {
    if (ownDir) rmSync(stateDir, { recursive: true, force: true });
    throw err;
  }

  const api: TestEmulator["api"] = async (method, path, body, opts) => {
    const headers: Record<string, string> = {};
    const tok = opts?.token === undefined ? token : opts.token;
    if (tok !== null) headers.Authorization = `Bearer ${tok}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(`${emulator.endpoint}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: (text ? JSON.parse(text) : undefined) as never };
  };

  const waitFor: TestEmulator["waitFor"] = async (what, check, timeoutMs = 10_000) => {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 10_000; i++) {
      const v = await check();
      if (v !== undefined) return v;
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`timed out waiting for ${what}`);
  };

  const waitActions: TestEmulator["waitActions"] = (ids, timeoutMs) =>
    waitFor(
      `actions ${ids.join(",")}`,
      async () => {
        const q = ids.map((i) => `id=${i}`).join("&");
        const r = await api<{ actions: { id: number; status: string; command: string }[] }>(
          "GET",
          `/actions?${q}`,
        );
        if (r.status !== 200) throw new Error(`GET /actions answered ${r.status}`);
        return r.body.actions.every((a) => a.status !== "running") ? r.body.actions : undefined;
      },
      timeoutMs,
    );

  return {
    emulator,
    stateDir,
    token,
    api,
    waitFor,
    waitActions,
    async close() {
      try {
        await emulator.stop();
      } finally {
        if (ownDir) rmSync(stateDir, { recursive: true, force: true });
      }
    },
  };
}

/** A syntactically valid ed25519 public key line with a random key (no private key exists for it). */
export function randomPublicKey(comment = "test"): string {
  const type = Buffer.from("ssh-ed25519");
  const blob = Buffer.alloc(4 + type.length + 4 + 32);
  blob.writeUInt32BE(type.length, 0);
  type.copy(blob, 4);
  blob.writeUInt32BE(32, 4 + type.length);
  for (let i = 0; i < 32; i++) blob[8 + type.length + i] = Math.floor(Math.random() * 256);
  return `ssh-ed25519 ${blob.toString("base64")} ${comment}`;
}
