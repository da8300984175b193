/** Server types (read only). */

import { ResourceClient, type ListOptions } from "./resource.js";
import type { ServerType } from "./schema.js";
import type { Handler } from "./transport/types.js";

export interface ServerTypeListOptions extends ListOptions {
  name?: string;
}

export class ServerTypesClient extends ResourceClient<ServerType, ServerTypeListOptions> {
  constructor(api: Handler) {
    super(api, "/server_types", "server_types", "server_type");
  }

  protected listQuery(o: ServerTypeListOptions) {
    return { name: o.name };
  }
}
