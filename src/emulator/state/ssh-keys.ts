/** SSH keys: their rules (name and fingerprint unique, key lines parsed as the API does) and list filters. */
import { matchesSelector, type LabelSelector } from "../../hcloud/labels.js";
import { md5Fingerprint, parsePublicKey } from "../../hcloud/rules.js";
import type { Labels } from "../../hcloud/schema.js";
import { checkLabels, labelProblems } from "./common.js";
import { invalidField, invalidInput, uniqueness, type FieldProblem } from "./errors.js";
import type { SshKeyRecord } from "./records.js";
import { isoNow, required, type Store } from "./store.js";

export interface SshKeyFilter {
  selector?: LabelSelector | undefined;
  name?: string | null;
  fingerprint?: string | null;
}

export class SshKeys {
  constructor(private readonly store: Store) {}

  list(filter: SshKeyFilter = {}): SshKeyRecord[] {
    return [...this.store.sshKeys.values()].filter(
      (k) =>
        (filter.selector === undefined || matchesSelector(k.labels, filter.selector)) &&
        (filter.name == null || k.name === filter.name) &&
        (filter.fingerprint == null || k.fingerprint === filter.fingerprint),
    );
  }

  get(id: number): SshKeyRecord {
    return required(this.store.sshKeys, id, "SSH key");
  }

  /** Keys named by id or name; invalid_input in `field` naming the ones that do not exist. */
  resolve(refs: string[], field: string): SshKeyRecord[] {
    const keys: SshKeyRecord[] = [];
    const missing: string[] = [];
    const all = [...this.store.sshKeys.values()];
    for (const ref of refs) {
      const k = all.find((x) => String(x.id) === String(ref) || x.name === String(ref));
      if (k) keys.push(k);
      else missing.push(String(ref));
    }
    if (missing.length > 0) throw invalidField(field, `SSH key not found: ${missing.join(", ")}`);
    return keys;
  }

  create(input: { name: string; publicKey: string; labels: Labels }): SshKeyRecord {
    const problems: FieldProblem[] = [];
    if (input.name.length === 0) problems.push({ name: "name", messages: ["name must not be empty"] });
    const parsed = parsePublicKey(input.publicKey);
    if ("error" in parsed) problems.push({ name: "public_key", messages: [parsed.error] });
    problems.push(...labelProblems(input.labels));
    if (problems.length > 0 || "error" in parsed) throw invalidInput(problems);
    const fingerprint = md5Fingerprint(parsed.blob);
    const all = [...this.store.sshKeys.values()];
    if (all.some((k) => k.name === input.name))
      throw uniqueness("name", `SSH key name '${input.name}' is already used`);
    if (all.some((k) => k.fingerprint === fingerprint))
      throw uniqueness("public_key", "SSH key with the same fingerprint already exists");
    const key: SshKeyRecord = {
      id: this.store.nextId("sshKey"),
      name: input.name,
      fingerprint,
      publicKey: input.publicKey.trim(),
      labels: { ...input.labels },
      created: isoNow(),
    };
    this.store.sshKeys.set(key.id, key);
    this.store.save();
    return key;
  }

  update(id: number, update: { name?: string | undefined; labels?: Labels | undefined }): SshKeyRecord {
    const key = this.get(id);
    if (update.labels !== undefined) checkLabels(update.labels);
    if (update.name !== undefined && update.name !== key.name) {
      if (update.name.length === 0) throw invalidField("name", "name must not be empty");
      if ([...this.store.sshKeys.values()].some((k) => k.name === update.name))
        throw uniqueness("name", `SSH key name '${update.name}' is already used`);
      key.name = update.name;
    }
    if (update.labels !== undefined) key.labels = { ...update.labels };
    this.store.save();
    return key;
  }

  delete(id: number): void {
    this.get(id);
    this.store.sshKeys.delete(id);
    this.store.save();
  }
}
