/**
 * The metadata agent reads bounded documents: a metadata service (or something in its place) answering with a huge
 * document is refused with a clear error as soon as the bound is passed, instead of reading it all into memory.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { MetadataError } from "../src/metadata/errors.js";
import { MAX_DOCUMENT_BYTES, fetchDocuments } from "../src/metadata/fetch.js";
import { startHttp, type TestHttpServer } from "./support/http.js";

const HUGE = 64 * 1024 * 1024;

describe("metadata: document size", { timeout: 120_000 }, () => {
  let http: TestHttpServer | undefined;
  /** Bytes the server managed to send, per path. */
  const sent = new Map<string, number>();

  before(async () => {
    http = await startHttp((req, res) => {
      const path = req.url ?? "/";
      if (path === "/announced/hetzner/v1/metadata") {
        // Says how big it is up front; sends it only if asked to.
        res.writeHead(200, { "Content-Length": String(HUGE) });
        return res.end(req.method === "HEAD" ? undefined : Buffer.alloc(0));
      }
      if (path !== "/streamed/hetzner/v1/metadata") {
        res.writeHead(404);
        return res.end();
      }
      // No Content-Length: the document streams until the client stops reading (at most HUGE bytes).
      res.writeHead(200, { "Content-Type": "text/yaml" });
      const chunk = Buffer.from("hostname: x\n".repeat(5000));
      let total = 0;
      const pump = () => {
        while (total < HUGE && !res.destroyed) {
          total += chunk.length;
          sent.set(path, total);
          if (!res.write(chunk)) return void res.once("drain", pump);
        }
        if (!res.destroyed) res.end();
      };
      pump();
    });
  });

  after(async () => {
    await http?.close();
  });

  for (const [what, prefix] of [
    ["announced by Content-Length", "announced"],
    ["streamed without a length", "streamed"],
  ] as const) {
    it(`a metadata document larger than the bound (${what}) is refused, not read whole`, async () => {
      await assert.rejects(
        fetchDocuments({
          baseUrl: `${http?.base}/${prefix}/hetzner/v1/`,
          timeoutMs: 20_000,
          withUserData: false,
        }),
        (err: unknown) => {
          assert.ok(err instanceof MetadataError, String(err));
          assert.equal(err.code, "too_large");
          assert.match(err.message, /metadata/);
          assert.match(err.message, new RegExp(`more than ${MAX_DOCUMENT_BYTES} bytes`));
          return true;
        },
      );
      const got = sent.get(`/${prefix}/hetzner/v1/metadata`) ?? 0;
      assert.ok(got < 16 * 1024 * 1024, `stopped reading early (the server sent ${got} bytes)`);
    });
  }
});
