import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  formatLabelSelector,
  matchesSelector,
  parseLabelSelector,
  validateLabelKey,
  validateLabels,
  validateLabelValue,
  type LabelSelector,
} from "../src/hcloud/labels.js";
import { isUploadError } from "../src/upload/errors.js";
import { checkUserLabels } from "../src/upload/identity.js";

function parse(text: string): LabelSelector {
  const r = parseLabelSelector(text);
  if (!r.ok) assert.fail(`expected ${JSON.stringify(text)} to parse, got: ${r.error}`);
  return r.selector;
}

function parseError(text: string): string {
  const r = parseLabelSelector(text);
  if (r.ok) assert.fail(`expected ${JSON.stringify(text)} to be rejected, got ${JSON.stringify(r.selector)}`);
  return r.error;
}

describe("label keys", () => {
  for (const key of ["a", "A1", "app", "my-app_v1.2", "example.com/role", "a.b-c.d/x", "x".repeat(63), "0"]) {
    it(`accepts ${JSON.stringify(key.length > 20 ? `${key.slice(0, 10)}…(${key.length})` : key)}`, () => {
      assert.deepEqual(validateLabelKey(key), []);
    });
  }

  const prefix253 = Array.from({ length: 4 }, () => "a".repeat(62)).join(".") + ".a";
  it("accepts a 253 character prefix", () => {
    assert.equal(prefix253.length, 253);
    assert.deepEqual(validateLabelKey(`${prefix253}/name`), []);
  });

  const bad: [string, RegExp][] = [
    ["", /empty/],
    ["-a", /start and end/],
    ["a-", /start and end/],
    ["a b", /letters, digits/],
    ["ä", /letters, digits/],
    ["x".repeat(64), /63/],
    ["/name", /prefix before/],
    ["example.com/", /name is empty/],
    ["Example.com/name", /DNS subdomain/],
    ["exa_mple.com/name", /DNS subdomain/],
    ["-example.com/name", /DNS subdomain/],
    ["a/b/c", /more than one/],
    [`${prefix253}a/name`, /253/],
    ["hetzner.cloud/thing", /reserved/],
  ];
  for (const [key, re] of bad) {
    it(`rejects ${JSON.stringify(key.length > 20 ? `${key.slice(0, 10)}…(${key.length})` : key)}`, () => {
      const problems = validateLabelKey(key);
      assert.ok(problems.length > 0, "expected problems");
      assert.ok(
        problems.some((p) => re.test(p)),
        `expected a problem matching ${re}, got ${JSON.stringify(problems)}`,
      );
    });
  }
});

describe("label values", () => {
  it("accepts empty, plain and 63 character values", () => {
    for (const v of ["", "x", "v1.2-rc_3", "Z".repeat(63)]) assert.deepEqual(validateLabelValue(v), [], v);
  });
  it("rejects a sha256 hex digest (64 characters), edge punctuation and other characters", () => {
    const digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert.equal(digest.length, 64);
    assert.match(validateLabelValue(digest).join(), /63/);
    for (const v of ["-x", "x.", "_", "a/b", "a b", "a=b", "é"])
      assert.ok(validateLabelValue(v).length > 0, v);
  });
});

describe("validateLabels", () => {
  it("returns nothing for valid labels", () => {
    assert.deepEqual(validateLabels({ app: "web", "example.com/tier": "", env: "prod-1" }), []);
  });
  it("returns one entry per problem, naming key and part", () => {
    const problems = validateLabels({ ok: "fine", "bad key": "v", good: "bad value", "-both": "-" });
    assert.deepEqual(
      problems.map((p) => [p.key, p.part]),
      [
        ["bad key", "key"],
        ["good", "value"],
        ["-both", "key"],
        ["-both", "value"],
      ],
    );
    for (const p of problems) assert.ok(p.message.length > 0);
  });
  it("rejects non-string values from untyped input", () => {
    const problems = validateLabels({ n: 5 } as unknown as Record<string, string>);
    assert.deepEqual(
      problems.map((p) => [p.key, p.part]),
      [["n", "value"]],
    );
  });
});

describe("parseLabelSelector", () => {
  it("parses every operator", () => {
    assert.deepEqual(parse("a=1,b==2,c!=3,d,!e,f in (x,y),g notin (z)").requirements, [
      { key: "a", operator: "equals", values: ["1"] },
      { key: "b", operator: "equals", values: ["2"] },
      { key: "c", operator: "notEquals", values: ["3"] },
      { key: "d", operator: "exists", values: [] },
      { key: "e", operator: "notExists", values: [] },
      { key: "f", operator: "in", values: ["x", "y"] },
      { key: "g", operator: "notIn", values: ["z"] },
    ]);
  });

  it("allows whitespace around tokens and prefixed keys", () => {
    assert.deepEqual(parse("  example.com/role = web ,  ! x ,  env in(a , b)  ").requirements, [
      { key: "example.com/role", operator: "equals", values: ["web"] },
      { key: "x", operator: "notExists", values: [] },
      { key: "env", operator: "in", values: ["a", "b"] },
    ]);
  });

  it("accepts an empty value and an empty selector", () => {
    assert.deepEqual(parse("k=").requirements, [{ key: "k", operator: "equals", values: [""] }]);
    assert.deepEqual(parse("").requirements, []);
    assert.deepEqual(parse("   ").requirements, []);
  });

  it("treats keys named like operators as keys", () => {
    assert.deepEqual(parse("in,notin=x").requirements, [
      { key: "in", operator: "exists", values: [] },
      { key: "notin", operator: "equals", values: ["x"] },
    ]);
  });

  const bad: [string, RegExp][] = [
    [",", /label key/],
    ["a=1,", /label key/],
    ["a,,b", /label key/],
    ["=1", /label key/],
    ["a=1=2", /','/],
    ["a!1", /'='/],
    ["a in b", /'\('/],
    ["a in (b", /'\)'/],
    ["a in ()", /value/],
    ["a in (b,)", /value/],
    ["a notin", /'\('/],
    ["a b", /operator/],
    ["a=b c", /','/],
    ["!", /label key/],
    ["!a=b", /','/],
    ["-a=1", /invalid key/],
    [`a=${"v".repeat(64)}`, /invalid value/],
    ["a in (-x)", /invalid value/],
    ["a=(b)", /','/],
  ];
  for (const [text, re] of bad) {
    it(`rejects ${JSON.stringify(text.length > 20 ? text.slice(0, 20) + "…" : text)}`, () => {
      const err = parseError(text);
      assert.match(err, /^label selector: /);
      assert.match(err, re);
    });
  }

  it("names the position of a syntax error", () => {
    assert.match(parseError("a=1,b c"), /position 7/);
  });

  it("formats back to text that parses to the same selector", () => {
    for (const text of ["a=1,b!=2,c,!d,e in (x,y),f notin (z)", "k=", "example.com/r==v"]) {
      const sel = parse(text);
      assert.deepEqual(parse(formatLabelSelector(sel)), sel);
    }
  });
});

describe("matchesSelector", () => {
  const labels = { app: "web", env: "prod", tier: "", "example.com/owner": "ops" };
  const cases: [string, boolean][] = [
    ["", true],
    ["app=web", true],
    ["app==web", true],
    ["app=db", false],
    ["missing=web", false],
    ["app!=db", true],
    ["app!=web", false],
    ["missing!=x", true],
    ["tier", true],
    ["tier=", true],
    ["tier!=", false],
    ["missing", false],
    ["!missing", true],
    ["!app", false],
    ["env in (prod,staging)", true],
    ["env in (dev,staging)", false],
    ["missing in (prod)", false],
    ["env notin (dev)", true],
    ["env notin (prod,dev)", false],
    ["missing notin (prod)", true],
    ["example.com/owner=ops", true],
    ["app=web,env=prod", true],
    ["app=web,env=dev", false],
    ["app=web,!env", false],
    ["app,env,tier,!missing,env in (prod),app notin (db)", true],
  ];
  for (const [text, expected] of cases) {
    it(`${JSON.stringify(text)} -> ${expected}`, () => {
      assert.equal(matchesSelector(labels, parse(text)), expected);
    });
  }

  it("does not see inherited object properties as labels", () => {
    assert.equal(matchesSelector({}, parse("toString")), false);
    assert.equal(matchesSelector({}, parse("!constructor")), true);
  });
});

describe("label problems as users read them", () => {
  it("say each part once: the upload's message names the key, the part and the rule, without stuttering", () => {
    const labels = { role: "bad value!", "a/b/c": "x", n: "v".repeat(64) };
    assert.throws(
      () => checkUserLabels(labels),
      (e: unknown) => {
        assert.ok(isUploadError(e, "invalid_label"));
        const text = (e as Error).message;
        assert.doesNotMatch(text, /\b(value value|key key|name name)\b/);
        assert.match(text, /role: value must start and end with a letter or digit/);
        assert.match(text, /a\/b\/c: key contains more than one '\/'/);
        assert.match(text, /n: value is longer than 63 characters/);
        return true;
      },
    );
  });
});
