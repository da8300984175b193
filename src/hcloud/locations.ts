/** Locations (read only). */

import { ResourceClient, type ListOptions } from "./resource.js";
import type { Location } from "./schema.js";
import type { Handler } from "./transport/types.js";

export interface LocationListOptions extends ListOptions {
  name?: string;
  sort?: string | string[];
}

export class LocationsClient extends ResourceClient<Location, LocationListOptions> {
  constructor(api: Handler) {
    super(api, "/locations", "locations", "location");
  }

  protected listQuery(o: LocationListOptions) {
    return { name: o.name, sort: o.sort };
  }
}
