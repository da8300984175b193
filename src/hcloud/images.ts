/** Images: list with filters, get, update description/labels, delete. */

import { call, ResourceClient, type ListOptions, type RequestOptions } from "./resource.js";
import type { Architecture, Image, ImageStatus, ImageType, UpdateImageRequest } from "./schema.js";
import type { Handler } from "./transport/types.js";

export interface ImageListOptions extends ListOptions {
  type?: ImageType | ImageType[];
  architecture?: Architecture;
  status?: ImageStatus | ImageStatus[];
  labelSelector?: string;
  /** e.g. `created:desc`; several sort keys may be given. */
  sort?: string | string[];
  name?: string;
  boundTo?: number;
  includeDeprecated?: boolean;
}

export class ImagesClient extends ResourceClient<Image, ImageListOptions> {
  constructor(api: Handler) {
    super(api, "/images", "images", "image");
  }

  protected listQuery(o: ImageListOptions) {
    return {
      type: o.type,
      architecture: o.architecture,
      status: o.status,
      label_selector: o.labelSelector,
      sort: o.sort,
      name: o.name,
      bound_to: o.boundTo,
      include_deprecated: o.includeDeprecated,
    };
  }

  /**
   * The image with this name (only system and app images have names). The same name exists once per architecture:
   * pass `architecture` to pick one (default x86).
   */
  override async getByName(
    name: string,
    opts: RequestOptions & { architecture?: Architecture } = {},
  ): Promise<Image | undefined> {
    const res = await this.list({ name, architecture: opts.architecture ?? "x86", signal: opts.signal });
    return res.items[0];
  }

  /** Updates description and/or labels (labels replace the whole set). */
  update(id: number, req: UpdateImageRequest, opts: RequestOptions = {}): Promise<Image> {
    return this.updateById(id, req, opts);
  }

  /** Deletes a snapshot or backup. */
  async delete(id: number, opts: RequestOptions = {}): Promise<void> {
    await call<unknown>(this.api, { method: "DELETE", path: `/images/${id}`, signal: opts.signal });
  }
}
