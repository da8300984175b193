/**
 * Label rules and label selectors, as the Hetzner Cloud API applies them (Kubernetes rules). Pure functions, shared
 * by the client and the emulator.
 */

export interface LabelProblem {
  key: string;
  /** Which part is wrong. */
  part: "key" | "value";
  /** What is wrong with that part, to follow its name ("key prefix ...", "value must ..."): never repeats it. */
  message: string;
}

/** Label keys under this prefix are reserved by Hetzner. */
export const RESERVED_LABEL_PREFIX = "hetzner.cloud/";

const NAME_RE = /^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$/;
const DNS_LABEL_RE = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

/** Problems with one label key (empty when the key is valid). */
export function validateLabelKey(key: string): string[] {
  const problems: string[] = [];
  const slash = key.indexOf("/");
  let name = key;
  if (slash >= 0) {
    const prefix = key.slice(0, slash);
    name = key.slice(slash + 1);
    if (prefix.length === 0) problems.push("prefix before '/' is empty");
    else if (prefix.length > 253) problems.push("prefix is longer than 253 characters");
    else if (!prefix.split(".").every((part) => DNS_LABEL_RE.test(part)))
      problems.push("prefix must be a DNS subdomain (lowercase letters, digits, '-' and '.')");
    if (`${prefix}/` === RESERVED_LABEL_PREFIX) problems.push(`prefix ${RESERVED_LABEL_PREFIX} is reserved`);
    if (name.includes("/")) problems.push("contains more than one '/'");
  }
  if (name.length === 0) problems.push("name is empty");
  else if (name.length > 63) problems.push("name is longer than 63 characters");
  else if (!name.includes("/") && !NAME_RE.test(name))
    problems.push(
      "name must start and end with a letter or digit and contain only letters, digits, '-', '_', '.'",
    );
  return problems;
}

/** Problems with one label value (empty when the value is valid; the empty string is valid). */
export function validateLabelValue(value: string): string[] {
  if (value.length === 0) return [];
  if (value.length > 63) return ["is longer than 63 characters"];
  if (!NAME_RE.test(value))
    return ["must start and end with a letter or digit and contain only letters, digits, '-', '_', '.'"];
  return [];
}

/** Every problem of a label set; empty when all labels are valid. */
export function validateLabels(labels: Record<string, unknown>): LabelProblem[] {
  const problems: LabelProblem[] = [];
  for (const [key, value] of Object.entries(labels)) {
    for (const message of validateLabelKey(key)) problems.push({ key, part: "key", message });
    if (typeof value !== "string") {
      problems.push({ key, part: "value", message: "must be a string" });
      continue;
    }
    for (const message of validateLabelValue(value)) problems.push({ key, part: "value", message });
  }
  return problems;
}

// ---- Selectors ----

export type LabelOperator = "equals" | "notEquals" | "exists" | "notExists" | "in" | "notIn";

export interface LabelRequirement {
  key: string;
  operator: LabelOperator;
  /** One value for equals/notEquals, one or more for in/notIn, none for exists/notExists. */
  values: string[];
}

/** A parsed selector: every requirement must hold (comma = AND). No requirements matches everything. */
export interface LabelSelector {
  requirements: LabelRequirement[];
}

export type ParseSelectorResult = { ok: true; selector: LabelSelector } | { ok: false; error: string };

const SPECIAL = new Set([",", "(", ")", "=", "!"]);

function isWordChar(c: string | undefined): boolean {
  return c !== undefined && !SPECIAL.has(c) && !/\s/.test(c);
}

class SelectorSyntaxError extends Error {}

class Scanner {
  pos = 0;
  constructor(readonly text: string) {}
  skipSpace(): void {
    while (this.pos < this.text.length && /\s/.test(this.text[this.pos] ?? "")) this.pos++;
  }
  peek(): string | undefined {
    return this.text[this.pos];
  }
  atEnd(): boolean {
    return this.pos >= this.text.length;
  }
  word(): string {
    const start = this.pos;
    while (isWordChar(this.text[this.pos])) this.pos++;
    return this.text.slice(start, this.pos);
  }
  fail(what: string): never {
    const found = this.atEnd() ? "end of selector" : `'${this.text[this.pos]}'`;
    throw new SelectorSyntaxError(`${what}, found ${found} at position ${this.pos + 1}`);
  }
  expect(c: string): void {
    this.skipSpace();
    if (this.peek() !== c) this.fail(`expected '${c}'`);
    this.pos++;
  }
}

function checkKey(key: string, s: Scanner): void {
  if (key.length === 0) s.fail("expected a label key");
  const problems = validateLabelKey(key).filter((p) => !p.includes("reserved"));
  if (problems.length > 0) throw new SelectorSyntaxError(`invalid key '${key}': ${problems.join("; ")}`);
}

function checkValue(value: string): void {
  const problems = validateLabelValue(value);
  if (problems.length > 0) throw new SelectorSyntaxError(`invalid value '${value}': ${problems.join("; ")}`);
}

function parseRequirement(s: Scanner): LabelRequirement {
  s.skipSpace();
  if (s.peek() === "!") {
    s.pos++;
    s.skipSpace();
    const key = s.word();
    checkKey(key, s);
    return { key, operator: "notExists", values: [] };
  }
  const key = s.word();
  checkKey(key, s);
  s.skipSpace();
  const c = s.peek();
  if (c === undefined || c === ",") return { key, operator: "exists", values: [] };
  if (c === "=" || c === "!") {
    let operator: LabelOperator = "equals";
    if (c === "!") {
      s.pos++;
      if (s.peek() !== "=") s.fail("expected '=' after '!'");
      operator = "notEquals";
    } else if (s.text[s.pos + 1] === "=") {
      s.pos++;
    }
    s.pos++;
    s.skipSpace();
    const value = s.word();
    checkValue(value);
    return { key, operator, values: [value] };
  }
  const opStart = s.pos;
  const op = s.word();
  if (op !== "in" && op !== "notin") {
    s.pos = opStart;
    s.fail(`expected an operator (=, ==, !=, in, notin) after '${key}'`);
  }
  s.expect("(");
  const values: string[] = [];
  for (let i = 0; i <= s.text.length; i++) {
    s.skipSpace();
    const value = s.word();
    if (value.length === 0) s.fail("expected a value");
    checkValue(value);
    values.push(value);
    s.skipSpace();
    if (s.peek() === ",") {
      s.pos++;
      continue;
    }
    break;
  }
  s.expect(")");
  return { key, operator: op === "in" ? "in" : "notIn", values };
}

/** Parses a label selector (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, joined by commas). */
export function parseLabelSelector(text: string): ParseSelectorResult {
  const s = new Scanner(text);
  const requirements: LabelRequirement[] = [];
  try {
    s.skipSpace();
    if (s.atEnd()) return { ok: true, selector: { requirements } };
    for (let i = 0; i <= text.length; i++) {
      requirements.push(parseRequirement(s));
      s.skipSpace();
      if (s.atEnd()) break;
      if (s.peek() !== ",") s.fail("expected ',' or end of selector");
      s.pos++;
    }
    return { ok: true, selector: { requirements } };
  } catch (err) {
    if (err instanceof SelectorSyntaxError) return { ok: false, error: `label selector: ${err.message}` };
    throw err;
  }
}

/** True when the labels satisfy every requirement of the selector. */
export function matchesSelector(labels: Record<string, string>, selector: LabelSelector): boolean {
  return selector.requirements.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    const value = has ? labels[r.key] : undefined;
    switch (r.operator) {
      case "exists":
        return has;
      case "notExists":
        return !has;
      case "equals":
        return has && value === r.values[0];
      case "notEquals":
        return !(has && value === r.values[0]);
      case "in":
        return has && r.values.includes(value ?? "");
      case "notIn":
        return !(has && r.values.includes(value ?? ""));
    }
  });
}

/** Renders a selector back to its text form (canonical: `=`, no spaces except around in/notin). */
export function formatLabelSelector(selector: LabelSelector): string {
  return selector.requirements
    .map((r) => {
      switch (r.operator) {
        case "exists":
          return r.key;
        case "notExists":
          return `!${r.key}`;
        case "equals":
          return `${r.key}=${r.values[0] ?? ""}`;
        case "notEquals":
          return `${r.key}!=${r.values[0] ?? ""}`;
        case "in":
          return `${r.key} in (${r.values.join(",")})`;
        case "notIn":
          return `${r.key} notin (${r.values.join(",")})`;
      }
    })
    .join(",");
}
