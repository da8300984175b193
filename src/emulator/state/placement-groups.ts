/**
 * Placement groups of type spread: each member runs on its own physical host. All emulated hosts share one machine,
 * so what a client can observe is modelled: membership, the limit of 10 servers per spread group (placement_error
 * beyond), and that adding or removing a server needs it powered off.
 */
import { matchesSelector, type LabelSelector } from "../../hcloud/labels.js";
import type { Labels } from "../../hcloud/schema.js";
import { checkLabels } from "./common.js";
import { ApiError, rejected, uniqueness } from "./errors.js";
import type { PlacementGroupRecord, ServerRecord } from "./records.js";
import { isoNow, required, type Store } from "./store.js";

export interface PlacementGroupFilter {
  selector?: LabelSelector | undefined;
  name?: string | null;
  type?: string | null;
}

/** Spread groups put each server on a different host; Hetzner allows 10 servers per group. */
export const SPREAD_LIMIT = 10;

export class PlacementGroups {
  constructor(private readonly store: Store) {}

  list(filter: PlacementGroupFilter = {}): PlacementGroupRecord[] {
    return [...this.store.placementGroups.values()].filter(
      (g) =>
        (filter.selector === undefined || matchesSelector(g.labels, filter.selector)) &&
        (filter.name == null || g.name === filter.name) &&
        (filter.type == null || g.type === filter.type),
    );
  }

  get(id: number): PlacementGroupRecord {
    return required(this.store.placementGroups, id, "placement group");
  }

  find(id: number | null): PlacementGroupRecord | undefined {
    return id === null ? undefined : this.store.placementGroups.get(id);
  }

  members(id: number): ServerRecord[] {
    return [...this.store.servers.values()].filter((s) => s.placementGroup === id);
  }

  private checkName(name: string, self?: PlacementGroupRecord): void {
    if (name === "") throw rejected("name", "name must not be empty");
    if ([...this.store.placementGroups.values()].some((g) => g.name === name && g !== self))
      throw uniqueness("name", `placement group name '${name}' is already used`);
  }

  create(input: { name: string; type: string; labels: Labels }): PlacementGroupRecord {
    checkLabels(input.labels);
    if (input.type !== "spread") throw rejected("type", "type must be spread");
    this.checkName(input.name);
    const g: PlacementGroupRecord = {
      id: this.store.nextId("placementGroup"),
      name: input.name,
      type: "spread",
      labels: { ...input.labels },
      created: isoNow(),
    };
    this.store.placementGroups.set(g.id, g);
    this.store.save();
    return g;
  }

  update(id: number, u: { name?: string | undefined; labels?: Labels | undefined }): PlacementGroupRecord {
    const g = this.get(id);
    if (u.labels !== undefined) checkLabels(u.labels);
    if (u.name !== undefined) this.checkName(u.name, g);
    if (u.name !== undefined) g.name = u.name;
    if (u.labels !== undefined) g.labels = { ...u.labels };
    this.store.save();
    return g;
  }

  delete(id: number): void {
    this.get(id);
    if (this.members(id).length > 0)
      throw new ApiError("resource_in_use", `placement group ${id} still has servers; remove them first`);
    this.store.placementGroups.delete(id);
    this.store.save();
  }

  /** A server may join a group when it exists and has room (at create, or by add_to_placement_group). */
  checkJoin(id: number, field: string): void {
    if (!this.store.placementGroups.has(id))
      throw rejected(field, `placement group with ID '${id}' not found`);
    if (this.members(id).length >= SPREAD_LIMIT)
      throw new ApiError(
        "placement_error",
        `placement group ${id} already spreads ${SPREAD_LIMIT} servers over different hosts`,
      );
  }

  add(s: ServerRecord, id: number): void {
    if (s.status !== "off")
      throw new ApiError(
        "server_not_stopped",
        `server ${s.id} must be powered off to join a placement group`,
      );
    if (s.placementGroup !== null)
      throw rejected("placement_group", `server ${s.id} is already in placement group ${s.placementGroup}`);
    this.checkJoin(id, "placement_group");
    s.placementGroup = id;
  }

  remove(s: ServerRecord): void {
    if (s.placementGroup === null)
      throw rejected("placement_group", `server ${s.id} is in no placement group`);
    s.placementGroup = null;
  }
}
