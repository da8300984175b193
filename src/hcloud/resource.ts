/** What every resource module shares: the request function, paging, and lookup by id or name. */

import { HCloudError, isNotFound } from "./errors.js";
import type { Pagination } from "./schema.js";
import type { Handler, QueryParams, TransportRequest } from "./transport/types.js";

export interface RequestOptions {
  signal?: AbortSignal;
}

export interface ListOptions extends RequestOptions {
  /** Page number, from 1 (default 1). */
  page?: number;
  /** Items per page, at most 50 (default 25 on the server). */
  perPage?: number;
}

export interface Page<T> {
  items: T[];
  pagination: Pagination;
}

/** A resource by id (number, or a string of digits) or by name. */
export type Ref = number | string;

/** Upper bound of pages `all()` reads (50 per page: 500 000 items). */
export const MAX_PAGES = 10_000;

export function isIdRef(ref: Ref): ref is number | `${number}` {
  return typeof ref === "number" || /^[0-9]+$/.test(ref);
}

/** A list's items with the pagination the answer gave, or (when it gave none) as the only page. */
export function toPage<T>(items: T[], meta: { pagination?: Pagination } | undefined, page?: number): Page<T> {
  return {
    items,
    pagination: meta?.pagination ?? {
      page: page ?? 1,
      per_page: items.length,
      previous_page: null,
      next_page: null,
      last_page: page ?? 1,
      total_entries: items.length,
    },
  };
}

/** Sends one request through the transport chain and returns the parsed body. */
export async function call<T>(api: Handler, req: TransportRequest): Promise<T> {
  const res = await api(req);
  return res.body as T;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Sends one request and returns the answer's `key` member, which must be a list (`list`) or an object (`item`): an
 * answer without it is an `invalid_response` error naming the endpoint, never an empty list or undefined.
 */
export async function callFor<T>(
  api: Handler,
  req: TransportRequest,
  key: string,
  shape: "list" | "item",
): Promise<{ value: T; body: Record<string, unknown> }> {
  const res = await api(req);
  const body = res.body;
  const value = isRecord(body) ? body[key] : undefined;
  const ok = shape === "list" ? Array.isArray(value) : isRecord(value);
  if (!isRecord(body) || !ok) {
    const got = isRecord(body)
      ? `an object with ${Object.keys(body).slice(0, 5).join(", ") || "no members"}`
      : body === undefined
        ? "an empty body"
        : `a JSON ${Array.isArray(body) ? "array" : typeof body}`;
    throw new HCloudError({
      status: res.status,
      code: "invalid_response",
      message: `the answer has no ${shape === "list" ? "list" : "object"} \`${key}\` (got ${got}); check that the endpoint (--endpoint or HCLOUD_ENDPOINT) is the Hetzner Cloud API`,
      correlationId: res.headers.get("x-correlation-id") ?? undefined,
      method: req.method,
      path: req.path,
      headers: res.headers,
    });
  }
  return { value: value as T, body };
}

export abstract class ResourceClient<T, L extends ListOptions> {
  /**
   * @param api the transport chain
   * @param path collection path, e.g. `/servers`
   * @param plural body key of lists, e.g. `servers`
   * @param singular body key of one item, e.g. `server`
   */
  protected constructor(
    protected readonly api: Handler,
    protected readonly path: string,
    private readonly plural: string,
    private readonly singular: string,
  ) {}

  /** Query parameters of the resource's list filters (page and per_page are added by `list`). */
  protected abstract listQuery(opts: L): QueryParams;

  /** One page of the list. */
  async list(opts: L = {} as L): Promise<Page<T>> {
    const query: QueryParams = { ...this.listQuery(opts), page: opts.page, per_page: opts.perPage };
    const { value: items, body } = await callFor<T[]>(
      this.api,
      { method: "GET", path: this.path, query, signal: opts.signal },
      this.plural,
      "list",
    );
    return toPage(items, body.meta as { pagination?: Pagination } | undefined, opts.page);
  }

  /** Every item matching the filters, reading page after page (50 per page). */
  async all(opts: Omit<L, "page" | "perPage"> = {} as L): Promise<T[]> {
    const out: T[] = [];
    let page = 1;
    for (let n = 0; n < MAX_PAGES; n++) {
      const res = await this.list({ ...opts, page, perPage: 50 } as L);
      out.push(...res.items);
      const nextPage = res.pagination.next_page;
      if (nextPage === null || nextPage === undefined || res.items.length === 0 || nextPage <= page) break;
      page = nextPage;
    }
    return out;
  }

  /** The item with this id; throws HCloudError not_found when there is none. */
  async getById(id: number, opts: RequestOptions = {}): Promise<T> {
    const { value } = await callFor<T>(
      this.api,
      { method: "GET", path: `${this.path}/${id}`, signal: opts.signal },
      this.singular,
      "item",
    );
    return value;
  }

  /** PUT the item's new fields (labels replace the whole set); returns the item as it is now. */
  protected async updateById(id: number, req: object, opts: RequestOptions = {}): Promise<T> {
    const { value } = await callFor<T>(
      this.api,
      { method: "PUT", path: `${this.path}/${id}`, body: req, signal: opts.signal },
      this.singular,
      "item",
    );
    return value;
  }

  /** The item with this name, or undefined. */
  async getByName(name: string, opts: RequestOptions = {}): Promise<T | undefined> {
    const res = await this.list({ ...({ name } as unknown as L), signal: opts.signal });
    return res.items[0];
  }

  /** The item by id (number or digits) or name, or undefined when there is none. */
  async get(ref: Ref, opts: RequestOptions = {}): Promise<T | undefined> {
    if (!isIdRef(ref)) return this.getByName(ref, opts);
    try {
      return await this.getById(Number(ref), opts);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }
}
