/** Pure parts of the emulator: fault specs, path patterns, hostname and key rules, rate limit refill, pagination. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Faults, FaultSyntaxError, parseFault, pathMatches } from "../src/emulator/faults.js";
import { RateLimiter } from "../src/emulator/http/ratelimit.js";
import { pagination } from "../src/emulator/http/render.js";
import { hostnameProblems, parsePublicKey } from "../src/hcloud/rules.js";
import { randomPublicKey } from "./support/emulator.js";

describe("emulator faults", () => {
  it("parses the --fault forms", () => {
    assert.deepEqual(parseFault("http:post:/servers/*/actions/poweron:server_error:2"), {
      kind: "http",
      method: "POST",
      path: "/servers/*/actions/poweron",
      code: "server_error",
      count: 2,
    });
    assert.deepEqual(parseFault("capacity:fsn1:cx23"), {
      kind: "capacity",
      location: "fsn1",
      serverType: "cx23",
    });
    assert.deepEqual(parseFault("ssh_drop:1000:42"), { kind: "ssh_drop", afterBytes: 1000, serverId: 42 });
    for (const bad of ["http:GET:/x", "http:GET:x:server_error", "capacity:fsn1", "ssh_drop:-1", "nope:1"])
      assert.throws(() => parseFault(bad), FaultSyntaxError, bad);
  });

  it("matches paths with * and ** and consumes http faults", () => {
    assert.ok(pathMatches("/servers/*/actions/poweron", "/servers/42/actions/poweron"));
    assert.ok(!pathMatches("/servers/*", "/servers/42/actions"));
    assert.ok(pathMatches("/servers/**", "/servers/42/actions/reset"));
    assert.ok(pathMatches("/servers", "/servers/"));
    const f = new Faults([parseFault("http:GET:/images:unavailable:2")]);
    assert.equal(f.takeHttp("POST", "/images"), undefined);
    assert.equal(f.takeHttp("GET", "/images")?.code, "unavailable");
    assert.equal(f.takeHttp("GET", "/images")?.code, "unavailable");
    assert.equal(f.takeHttp("GET", "/images"), undefined);
    assert.deepEqual(f.all(), []);
  });

  it("picks the smallest SSH drop budget that applies to a server", () => {
    const f = new Faults([parseFault("ssh_drop:5000"), parseFault("ssh_drop:100:7")]);
    assert.equal(f.sshDropAfter(7), 100);
    assert.equal(f.sshDropAfter(8), 5000);
    f.clear();
    assert.equal(f.sshDropAfter(7), undefined);
  });
});

describe("emulator rules", () => {
  it("applies RFC 1123 hostname rules to server names", () => {
    for (const ok of ["a", "web-1", "node.example.com", "A1", "x".repeat(63)])
      assert.deepEqual(hostnameProblems(ok), []);
    for (const bad of ["", "-a", "a-", "a_b", "a..b", "x".repeat(64), "ä"])
      assert.ok(hostnameProblems(bad).length > 0, bad);
  });

  it("parses OpenSSH public keys and rejects malformed ones", () => {
    const good = parsePublicKey(randomPublicKey());
    assert.ok("blob" in good && good.type === "ssh-ed25519");
    const mismatch = randomPublicKey().replace("ssh-ed25519", "ssh-rsa");
    for (const bad of ["", "ssh-ed25519", "ssh-dss AAAA", "ssh-ed25519 !!!", mismatch])
      assert.ok("error" in parsePublicKey(bad), bad);
  });

  it("refills the rate limit budget gradually and reports when it is full again", () => {
    let now = 1_000_000;
    const r = new RateLimiter(3, 1, () => now);
    assert.ok(r.take() && r.take() && r.take());
    assert.equal(r.take(), false);
    assert.equal(r.headers()["RateLimit-Remaining"], "0");
    assert.equal(r.headers()["RateLimit-Reset"], String(Math.ceil((now + 3000) / 1000)));
    now += 1500;
    assert.equal(r.headers()["RateLimit-Remaining"], "1");
    assert.ok(r.take());
    assert.equal(r.take(), false);
  });

  it("computes pagination meta", () => {
    assert.deepEqual(pagination(1, 25, 0), {
      page: 1,
      per_page: 25,
      previous_page: null,
      next_page: null,
      last_page: 1,
      total_entries: 0,
    });
    assert.deepEqual(pagination(2, 10, 31), {
      page: 2,
      per_page: 10,
      previous_page: 1,
      next_page: 3,
      last_page: 4,
      total_entries: 31,
    });
  });
});
