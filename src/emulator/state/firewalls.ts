/**
 * Firewalls: rules, and where they apply (servers, and label selectors matching servers). Rules are checked as the
 * API checks them and kept; the hosts do not filter packets (they share the machine's loopback), which is as far as
 * it matters to a client: what it configured reads back, applies and detaches as on Hetzner.
 */
import { isIP } from "node:net";
import { matchesSelector, parseLabelSelector, type LabelSelector } from "../../hcloud/labels.js";
import type { Labels } from "../../hcloud/schema.js";
import { checkLabels } from "./common.js";
import { ApiError, invalidInput, rejected, uniqueness, type FieldProblem } from "./errors.js";
import type { ActionRecord, FirewallRecord, FirewallRule, FirewallTarget, ServerRecord } from "./records.js";
import type { Scheduler } from "./scheduler.js";
import { isoNow, required, type Store } from "./store.js";

export interface FirewallFilter {
  selector?: LabelSelector | undefined;
  name?: string | null;
}

const PROTOCOLS = ["tcp", "udp", "icmp", "esp", "gre"] as const;

function cidrOk(v: string): boolean {
  const [addr = "", len, more] = v.split("/");
  if (more !== undefined || len === undefined || !/^\d{1,3}$/.test(len)) return false;
  const family = isIP(addr);
  return family !== 0 && Number(len) <= (family === 4 ? 32 : 128);
}

function portOk(port: string): boolean {
  if (port === "any") return true;
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(port);
  if (!m) return false;
  const a = Number(m[1]);
  const b = m[2] === undefined ? a : Number(m[2]);
  return a >= 1 && b <= 65535 && a <= b;
}

/** Checks rules as the API does; returns the problems (field names as the API reports them). */
export function ruleProblems(rules: FirewallRule[]): FieldProblem[] {
  const problems: FieldProblem[] = [];
  rules.forEach((r, i) => {
    const at = `rules[${i}]`;
    const bad = (field: string, message: string) =>
      problems.push({ name: `${at}.${field}`, messages: [message] });
    if (r.direction !== "in" && r.direction !== "out") bad("direction", "direction must be in or out");
    if (!(PROTOCOLS as readonly string[]).includes(r.protocol))
      bad("protocol", `protocol must be one of ${PROTOCOLS.join(", ")}`);
    const needsPort = r.protocol === "tcp" || r.protocol === "udp";
    if (needsPort && (r.port === null || !portOk(r.port)))
      bad("port", "port is required for tcp and udp: a port, a range like 80-85, or any");
    if (!needsPort && r.port !== null) bad("port", `port is not allowed for protocol ${r.protocol}`);
    const own = r.direction === "in" ? r.sourceIps : r.destinationIps;
    const other = r.direction === "in" ? r.destinationIps : r.sourceIps;
    const ownName = r.direction === "in" ? "source_ips" : "destination_ips";
    if (own.length === 0) bad(ownName, `${ownName} must not be empty for direction ${r.direction}`);
    if (other.length > 0)
      bad(
        r.direction === "in" ? "destination_ips" : "source_ips",
        `not allowed for direction ${r.direction}`,
      );
    for (const ip of [...r.sourceIps, ...r.destinationIps])
      if (!cidrOk(ip)) bad(ownName, `'${ip}' is not an address in CIDR notation`);
  });
  return problems;
}

export class Firewalls {
  constructor(
    private readonly store: Store,
    private readonly scheduler: Scheduler,
  ) {}

  list(filter: FirewallFilter = {}): FirewallRecord[] {
    return [...this.store.firewalls.values()].filter(
      (f) =>
        (filter.selector === undefined || matchesSelector(f.labels, filter.selector)) &&
        (filter.name == null || f.name === filter.name),
    );
  }

  get(id: number): FirewallRecord {
    return required(this.store.firewalls, id, "firewall");
  }

  /** Servers a label selector target currently matches. */
  selected(selector: string): ServerRecord[] {
    const parsed = parseLabelSelector(selector);
    if (!parsed.ok) return [];
    return [...this.store.servers.values()].filter((s) => matchesSelector(s.labels, parsed.selector));
  }

  /** Firewalls that apply to a server, directly or through a selector. */
  ofServer(s: ServerRecord): FirewallRecord[] {
    return [...this.store.firewalls.values()].filter((f) =>
      f.appliedTo.some((t) =>
        t.type === "server" ? t.server === s.id : this.selected(t.selector).some((x) => x.id === s.id),
      ),
    );
  }

  private checkName(name: string, self?: FirewallRecord): void {
    if (name === "") throw rejected("name", "name must not be empty");
    if ([...this.store.firewalls.values()].some((f) => f.name === name && f !== self))
      throw uniqueness("name", `firewall name '${name}' is already used`);
  }

  private checkTargets(f: FirewallRecord | undefined, targets: FirewallTarget[], adding: boolean): void {
    for (const t of targets) {
      const present = f?.appliedTo.some((x) => sameTarget(x, t)) ?? false;
      if (t.type === "server" && adding && !this.store.servers.has(t.server))
        throw new ApiError("firewall_resource_not_found", `server with ID '${t.server}' not found`);
      if (t.type === "label_selector" && !parseLabelSelector(t.selector).ok)
        throw rejected("label_selector.selector", `'${t.selector}' is not a valid label selector`);
      if (adding && present)
        throw new ApiError(
          f ? "firewall_already_applied" : "server_already_added",
          `firewall is already applied to ${describe(t)}`,
        );
      const server = t.type === "server" ? this.store.servers.get(t.server) : undefined;
      if (!adding && !present && server && f && this.ofServer(server).includes(f))
        throw new ApiError(
          "firewall_managed_by_label_selector",
          `firewall ${f.id} applies to server ${server.id} through a label selector; remove the selector instead`,
        );
      if (!adding && !present)
        throw new ApiError("firewall_resource_not_found", `firewall is not applied to ${describe(t)}`);
    }
  }

  private applyActions(f: FirewallRecord, targets: FirewallTarget[], command: string): ActionRecord[] {
    return targets.map((t) =>
      this.scheduler.newAction(
        command,
        [{ id: f.id, type: "firewall" }, ...(t.type === "server" ? [{ id: t.server, type: "server" }] : [])],
        this.scheduler.ms("firewallApply"),
      ),
    );
  }

  create(input: { name: string; labels: Labels; rules: FirewallRule[]; applyTo: FirewallTarget[] }): {
    firewall: FirewallRecord;
    actions: ActionRecord[];
  } {
    checkLabels(input.labels);
    const problems = ruleProblems(input.rules);
    if (problems.length > 0) throw invalidInput(problems);
    this.checkName(input.name);
    this.checkTargets(undefined, input.applyTo, true);
    const f: FirewallRecord = {
      id: this.store.nextId("firewall"),
      name: input.name,
      labels: { ...input.labels },
      created: isoNow(),
      rules: input.rules,
      appliedTo: [...input.applyTo],
    };
    this.store.firewalls.set(f.id, f);
    const actions = [
      ...(f.rules.length > 0
        ? [
            this.scheduler.newAction(
              "set_firewall_rules",
              [{ id: f.id, type: "firewall" }],
              this.scheduler.ms("firewallApply"),
            ),
          ]
        : []),
      ...this.applyActions(f, f.appliedTo, "apply_firewall"),
    ];
    this.store.save();
    return { firewall: f, actions };
  }

  update(id: number, u: { name?: string | undefined; labels?: Labels | undefined }): FirewallRecord {
    const f = this.get(id);
    if (u.labels !== undefined) checkLabels(u.labels);
    if (u.name !== undefined) this.checkName(u.name, f);
    if (u.name !== undefined) f.name = u.name;
    if (u.labels !== undefined) f.labels = { ...u.labels };
    this.store.save();
    return f;
  }

  delete(id: number): void {
    const f = this.get(id);
    if (f.appliedTo.length > 0)
      throw new ApiError(
        "resource_in_use",
        `firewall ${id} is still applied to resources; remove it from them first`,
      );
    this.store.firewalls.delete(id);
    this.store.save();
  }

  setRules(id: number, rules: FirewallRule[]): ActionRecord[] {
    const f = this.get(id);
    const problems = ruleProblems(rules);
    if (problems.length > 0) throw invalidInput(problems);
    f.rules = rules;
    const servers = [...this.store.servers.values()].filter((s) => this.ofServer(s).includes(f));
    const actions = [
      this.scheduler.newAction(
        "set_firewall_rules",
        [{ id: f.id, type: "firewall" }],
        this.scheduler.ms("firewallApply"),
      ),
      ...this.applyActions(
        f,
        servers.map((s) => ({ type: "server" as const, server: s.id })),
        "apply_firewall",
      ),
    ];
    this.store.save();
    return actions;
  }

  applyTo(id: number, targets: FirewallTarget[]): ActionRecord[] {
    const f = this.get(id);
    this.checkTargets(f, targets, true);
    f.appliedTo.push(...targets);
    const actions = this.applyActions(f, targets, "apply_firewall");
    this.store.save();
    return actions;
  }

  removeFrom(id: number, targets: FirewallTarget[]): ActionRecord[] {
    const f = this.get(id);
    this.checkTargets(f, targets, false);
    f.appliedTo = f.appliedTo.filter((x) => !targets.some((t) => sameTarget(x, t)));
    const actions = this.applyActions(f, targets, "remove_firewall");
    this.store.save();
    return actions;
  }

  /** Applies firewalls named at server create (`firewalls: [{firewall: id}]`); checked before the server exists. */
  checkForCreate(ids: number[]): FieldProblem[] {
    const missing = ids.filter((id) => !this.store.firewalls.has(id));
    return missing.length > 0
      ? [{ name: "firewalls", messages: [`firewall not found: ${missing.join(", ")}`] }]
      : [];
  }

  applyAtCreate(s: ServerRecord, ids: number[]): void {
    for (const id of ids) {
      const f = this.store.firewalls.get(id);
      if (f && !f.appliedTo.some((t) => t.type === "server" && t.server === s.id))
        f.appliedTo.push({ type: "server", server: s.id });
    }
  }

  serverDeleted(s: ServerRecord): void {
    for (const f of this.store.firewalls.values())
      f.appliedTo = f.appliedTo.filter((t) => !(t.type === "server" && t.server === s.id));
  }
}

function sameTarget(a: FirewallTarget, b: FirewallTarget): boolean {
  return a.type === "server"
    ? b.type === "server" && a.server === b.server
    : b.type === "label_selector" && a.selector === b.selector;
}

function describe(t: FirewallTarget): string {
  return t.type === "server" ? `server ${t.server}` : `label selector '${t.selector}'`;
}
