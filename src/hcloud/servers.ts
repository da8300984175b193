/** Servers: list, get, create (with recovery by name), delete, power and rescue actions, create_image. */

import { HCloudWaitTimeoutError } from "./errors.js";
import {
  call,
  callFor,
  ResourceClient,
  toPage,
  type ListOptions,
  type Page,
  type RequestOptions,
} from "./resource.js";
import type {
  Action,
  CreateImageRequest,
  CreateServerRequest,
  CreateServerResponse,
  EnableRescueRequest,
  Image,
  Pagination,
  Server,
  ServerStatus,
  UpdateServerRequest,
} from "./schema.js";
import { sleep as realSleep, type Handler, type SleepFn } from "./transport/types.js";

export interface ServerListOptions extends ListOptions {
  name?: string;
  labelSelector?: string;
  status?: ServerStatus | ServerStatus[];
  sort?: string | string[];
}

export interface ServerActionListOptions extends ListOptions {
  status?: Action["status"] | Action["status"][];
  /** e.g. `id:desc`, `started:asc`. */
  sort?: string | string[];
}

export interface CreateServerResult {
  server: Server;
  /**
   * The create_server action. When the answer was lost and the server was found by name instead, it is looked up in
   * the server's actions (null if that lookup failed).
   */
  action: Action | null;
  nextActions: Action[];
  rootPassword: string | null;
  /** True when the answer was lost (timeout, reset, 502/504) and the server was found by its name. */
  recovered: boolean;
}

export interface EnableRescueResult {
  action: Action;
  rootPassword: string | null;
}

export interface CreateImageResult {
  image: Image;
  action: Action;
}

export interface WaitForStatusOptions extends RequestOptions {
  /** Give up after this long (default 10 minutes). */
  timeoutMs?: number;
  /** Delay between polls (default 1000 ms). */
  intervalMs?: number;
  sleep?: SleepFn;
}

export type ServerActionName = "poweron" | "poweroff" | "shutdown" | "reboot" | "reset" | "disable_rescue";

export class ServersClient extends ResourceClient<Server, ServerListOptions> {
  constructor(api: Handler) {
    super(api, "/servers", "servers", "server");
  }

  protected listQuery(o: ServerListOptions) {
    return { name: o.name, label_selector: o.labelSelector, status: o.status, sort: o.sort };
  }

  /**
   * Creates a server. When the answer is lost (connection reset, timeout, 502, 504) the client looks the server up
   * by name: found means created (`recovered: true`, actions looked up from the server's action list), not found
   * means the request is retried.
   */
  async create(req: CreateServerRequest, opts: RequestOptions = {}): Promise<CreateServerResult> {
    const body = await this.api({
      method: "POST",
      path: "/servers",
      body: req,
      signal: opts.signal,
      recover: async (signal) => {
        const server = await this.getByName(req.name, { signal });
        if (!server) return undefined;
        // Find the create_server action (and a start_server after it) so callers can still wait for them.
        const actions = await this.listActions(server.id, { sort: "id:asc", perPage: 50, signal }).then(
          (page) => page.items,
          () => [] as Action[],
        );
        const create = actions.find((a) => a.command === "create_server");
        const found: CreateServerResponse = {
          server,
          action: (create ?? null) as Action,
          next_actions: create ? actions.filter((a) => a.id > create.id && a.command === "start_server") : [],
          root_password: null,
        };
        return found;
      },
    });
    const r = body.body as CreateServerResponse;
    return {
      server: r.server,
      action: r.action ?? null,
      nextActions: r.next_actions ?? [],
      rootPassword: r.root_password ?? null,
      recovered: body.recovered === true,
    };
  }

  /** One page of the server's actions (newest last with sort `id:asc`). */
  async listActions(id: number, opts: ServerActionListOptions = {}): Promise<Page<Action>> {
    const { value, body } = await callFor<Action[]>(
      this.api,
      {
        method: "GET",
        path: `/servers/${id}/actions`,
        query: { status: opts.status, sort: opts.sort, page: opts.page, per_page: opts.perPage },
        signal: opts.signal,
      },
      "actions",
      "list",
    );
    return toPage(value, body.meta as { pagination?: Pagination } | undefined, opts.page);
  }

  /** Updates name and/or labels (labels replace the whole set). */
  update(id: number, req: UpdateServerRequest, opts: RequestOptions = {}): Promise<Server> {
    return this.updateById(id, req, opts);
  }

  /** Deletes a server; returns the delete_server action. */
  async delete(id: number, opts: RequestOptions = {}): Promise<Action> {
    const { value } = await callFor<Action>(
      this.api,
      { method: "DELETE", path: `/servers/${id}`, signal: opts.signal },
      "action",
      "item",
    );
    return value;
  }

  private async action(
    id: number,
    name: ServerActionName,
    idempotent: boolean,
    opts: RequestOptions,
  ): Promise<Action> {
    const { value } = await callFor<Action>(
      this.api,
      { method: "POST", path: `/servers/${id}/actions/${name}`, signal: opts.signal, idempotent },
      "action",
      "item",
    );
    return value;
  }

  /** Powers on (safe to repeat: retried after unclear failures). */
  poweron(id: number, opts: RequestOptions = {}): Promise<Action> {
    return this.action(id, "poweron", true, opts);
  }
  /** Cuts power (safe to repeat: retried after unclear failures). */
  poweroff(id: number, opts: RequestOptions = {}): Promise<Action> {
    return this.action(id, "poweroff", true, opts);
  }
  /** Sends an ACPI shutdown request: the action succeeding does not mean the server is off (see waitForStatus). */
  shutdown(id: number, opts: RequestOptions = {}): Promise<Action> {
    return this.action(id, "shutdown", false, opts);
  }
  reboot(id: number, opts: RequestOptions = {}): Promise<Action> {
    return this.action(id, "reboot", false, opts);
  }
  reset(id: number, opts: RequestOptions = {}): Promise<Action> {
    return this.action(id, "reset", false, opts);
  }
  disableRescue(id: number, opts: RequestOptions = {}): Promise<Action> {
    return this.action(id, "disable_rescue", false, opts);
  }

  /** Enables the rescue system for the next boot (does not reboot). */
  async enableRescue(
    id: number,
    req: EnableRescueRequest = {},
    opts: RequestOptions = {},
  ): Promise<EnableRescueResult> {
    const r = await call<{ action: Action; root_password: string | null }>(this.api, {
      method: "POST",
      path: `/servers/${id}/actions/enable_rescue`,
      body: { type: "linux64", ...req },
      signal: opts.signal,
    });
    return { action: r.action, rootPassword: r.root_password ?? null };
  }

  /** Creates a snapshot (default) or backup image of the server's disk. */
  async createImage(
    id: number,
    req: CreateImageRequest = {},
    opts: RequestOptions = {},
  ): Promise<CreateImageResult> {
    const { value: image, body } = await callFor<Image>(
      this.api,
      { method: "POST", path: `/servers/${id}/actions/create_image`, body: req, signal: opts.signal },
      "image",
      "item",
    );
    return { image, action: body.action as Action };
  }

  /** Polls the server until its status is one of `statuses`; returns it. Throws HCloudWaitTimeoutError on timeout. */
  async waitForStatus(
    id: number,
    statuses: ServerStatus | ServerStatus[],
    opts: WaitForStatusOptions = {},
  ): Promise<Server> {
    const wanted = Array.isArray(statuses) ? statuses : [statuses];
    const timeoutMs = opts.timeoutMs ?? 600_000;
    const intervalMs = opts.intervalMs ?? 1000;
    const sleep = opts.sleep ?? realSleep;
    const deadline = Date.now() + timeoutMs;
    const maxPolls = Math.ceil(timeoutMs / Math.max(1, intervalMs)) + 1;
    for (let poll = 0; poll < maxPolls; poll++) {
      const server = await this.getById(id, { signal: opts.signal });
      if (wanted.includes(server.status)) return server;
      if (Date.now() + intervalMs > deadline) break;
      await sleep(intervalMs, opts.signal);
    }
    throw new HCloudWaitTimeoutError(
      timeoutMs,
      [],
      `server ${id} not ${wanted.join("/")} after ${timeoutMs} ms`,
    );
  }
}
