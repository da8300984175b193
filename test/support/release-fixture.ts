/**
 * Releases for the apply and deploy tests, made directly (the publishing side has its own tests): a release key, a
 * file:// binary cache filled and signed by Nix, channel records signed with the key, served over HTTP on loopback.
 */
import { execFile } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { generateSigningKey, parseSecretKey } from "../../src/deploy/keys.js";
import { signRecord, type ReleaseRecord, type SignedRecord } from "../../src/deploy/record.js";
import { startStaticServer } from "./static-server.js";

const run = promisify(execFile);

export interface ReleaseFixture {
  url: string;
  /** The trusted key (public `name:base64`) and its secret key file. */
  publicKey: string;
  secretKeyFile: string;
  /** The channel record's URL (`channels/NAME.json`). */
  channelUrl(channel?: string): string;
  cacheUrl: string;
  /** Copies a store path's closure into the cache, signed by the trusted key (or `secretKeyFile`). */
  cache(storePath: string, secretKeyFile?: string): Promise<void>;
  /** Points `channel` (default prod) at `storePath` with the next serial; history in releases/CHANNEL-SERIAL.json. */
  release(storePath: string, extra?: Partial<ReleaseRecord>): Promise<SignedRecord>;
  close(): Promise<void>;
}

export async function startReleaseFixture(
  dir: string,
  keyName = "hetznix-test-releases-1",
): Promise<ReleaseFixture> {
  const pub = join(dir, "pub");
  await mkdir(join(pub, "channels"), { recursive: true });
  await mkdir(join(pub, "releases"), { recursive: true });
  const key = generateSigningKey(keyName);
  const secretKeyFile = join(dir, `${keyName}.sk`);
  await writeFile(secretKeyFile, key.secretKey, { mode: 0o600 });
  const server = await startStaticServer(pub);
  const serials = new Map<string, number>();
  return {
    url: server.url,
    publicKey: key.publicKey,
    secretKeyFile,
    cacheUrl: `${server.url}/cache`,
    channelUrl: (channel = "prod") => `${server.url}/channels/${channel}.json`,
    async cache(storePath, skFile = secretKeyFile) {
      await run("nix", [
        "--extra-experimental-features",
        "nix-command",
        "copy",
        "--to",
        `file://${join(pub, "cache")}?secret-key=${skFile}&compression=xz`,
        storePath,
      ]);
    },
    async release(storePath, extra = {}) {
      const channel = extra.channel ?? "prod";
      const serial = (serials.get(channel) ?? 0) + 1;
      serials.set(channel, serial);
      const record = signRecord(
        {
          format: "hetznix-release/1",
          channel,
          serial,
          kind: "release",
          storePath,
          system: "x86_64-linux",
          created: new Date().toISOString(),
          previous: null,
          keyName: "",
          ...extra,
        },
        parseSecretKey(key.secretKey),
      );
      const text = JSON.stringify(record, null, 2);
      await writeFile(join(pub, "releases", `${channel}-${record.serial}.json`), text);
      await writeFile(join(pub, "channels", `${channel}.json`), text);
      return record;
    },
    close: () => server.close(),
  };
}
