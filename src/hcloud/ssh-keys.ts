/** SSH keys: create (with recovery by fingerprint/name), list, get, delete. */

import { publicKeyFingerprint } from "./rules.js";
import { call, ResourceClient, type ListOptions, type RequestOptions } from "./resource.js";
import type { CreateSshKeyRequest, Labels, SshKey, UpdateSshKeyRequest } from "./schema.js";
import type { Handler } from "./transport/types.js";

export interface SshKeyListOptions extends ListOptions {
  name?: string;
  fingerprint?: string;
  labelSelector?: string;
  sort?: string | string[];
}

export interface CreateSshKeyOptions {
  name: string;
  /** OpenSSH public key line (`ssh-ed25519 AAAA... comment`). */
  publicKey: string;
  labels?: Labels;
}

/** Type and key material of a public key line, without the comment. */
function keyMaterial(publicKey: string): string {
  return publicKey.trim().split(/\s+/).slice(0, 2).join(" ");
}

export class SshKeysClient extends ResourceClient<SshKey, SshKeyListOptions> {
  constructor(api: Handler) {
    super(api, "/ssh_keys", "ssh_keys", "ssh_key");
  }

  protected listQuery(o: SshKeyListOptions) {
    return { name: o.name, fingerprint: o.fingerprint, label_selector: o.labelSelector, sort: o.sort };
  }

  /** The key with this fingerprint (`aa:bb:...`), or undefined. */
  async getByFingerprint(fingerprint: string, opts: RequestOptions = {}): Promise<SshKey | undefined> {
    const res = await this.list({ fingerprint, signal: opts.signal });
    return res.items[0];
  }

  /**
   * Registers a public key. When the answer is lost (connection reset, timeout, 502, 504) the client looks for a
   * key with the same fingerprint and name and same key material: found means created, not found means retried.
   */
  async create(req: CreateSshKeyOptions, opts: RequestOptions = {}): Promise<SshKey> {
    const body: CreateSshKeyRequest = { name: req.name, public_key: req.publicKey, labels: req.labels };
    const r = await call<{ ssh_key: SshKey }>(this.api, {
      method: "POST",
      path: "/ssh_keys",
      body,
      signal: opts.signal,
      recover: async (signal) => {
        const fp = publicKeyFingerprint(req.publicKey);
        const candidate =
          (fp !== undefined ? await this.getByFingerprint(fp, { signal }) : undefined) ??
          (await this.getByName(req.name, { signal }));
        if (!candidate) return undefined;
        if (candidate.name !== req.name || keyMaterial(candidate.public_key) !== keyMaterial(req.publicKey))
          return undefined;
        return { ssh_key: candidate };
      },
    });
    return r.ssh_key;
  }

  /** Updates name and/or labels (labels replace the whole set). */
  update(id: number, req: UpdateSshKeyRequest, opts: RequestOptions = {}): Promise<SshKey> {
    return this.updateById(id, req, opts);
  }

  async delete(id: number, opts: RequestOptions = {}): Promise<void> {
    await call<unknown>(this.api, { method: "DELETE", path: `/ssh_keys/${id}`, signal: opts.signal });
  }
}
