/**
 * The link step: early in boot no link is up, yet the metadata service (169.254.169.254) is only reachable over
 * one. If no link is up with an IPv4 address, bring the first Ethernet link up with a random IPv4 link-local
 * address for the duration of the fetch, then put it back as it was (address removed, link down again if it was).
 *
 * `decideLinkStep` is pure (the decision); the rest runs `ip` from iproute2.
 */
import { execFile } from "node:child_process";
import { randomInt } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { MetadataError } from "./errors.js";

const run = promisify(execFile);

export interface LinkState {
  index: number;
  name: string;
  up: boolean;
  loopback: boolean;
  ethernet: boolean;
  /** IPv4 addresses in CIDR form. */
  ipv4: string[];
}

export type LinkDecision =
  | { kind: "ready"; link: string } // a link is up with an IPv4 address: fetch as is
  | { kind: "bring-up"; link: string; wasUp: boolean; address: string }
  | { kind: "none" }; // no Ethernet link at all: nothing to do but try

export interface LinkOptions {
  /** The `ip` executable (default "ip" from PATH). */
  ipCommand?: string;
  /**
   * How long to wait for an Ethernet link to appear when there is none yet (early in boot the NIC's driver may
   * still be loading); default 0 = don't wait.
   */
  waitForLinkMs?: number;
  /** Called once if there is no Ethernet link yet and the step starts waiting for one. */
  onWaitForLink?: () => void;
}

/** Parses `ip -json addr show` output. */
export function parseIpAddr(json: string): LinkState[] {
  // Wire boundary: ip's JSON has no schema; only the fields read below are relied on.
  const raw = JSON.parse(json) as {
    ifindex: number;
    ifname: string;
    flags?: string[];
    link_type?: string;
    addr_info?: { family: string; local: string; prefixlen: number }[];
  }[];
  return raw.map((l) => ({
    index: l.ifindex,
    name: l.ifname,
    up: (l.flags ?? []).includes("UP"),
    loopback: l.link_type === "loopback" || (l.flags ?? []).includes("LOOPBACK"),
    ethernet: l.link_type === "ether",
    ipv4: (l.addr_info ?? []).filter((a) => a.family === "inet").map((a) => `${a.local}/${a.prefixlen}`),
  }));
}

/** A random address in 169.254.0.0/16, avoiding the .0 and .255 blocks and the metadata service's 169.254.169.x. */
export function randomLinkLocal(pick: (min: number, max: number) => number = randomInt): string {
  let third = pick(1, 254);
  if (third === 169) third = 170;
  return `169.254.${third}.${pick(1, 254)}/16`;
}

/** Decides what to do from the links' current state. */
export function decideLinkStep(links: LinkState[], address: string = randomLinkLocal()): LinkDecision {
  const ready = links.find((l) => !l.loopback && l.up && l.ipv4.length > 0);
  if (ready) return { kind: "ready", link: ready.name };
  const candidate = [...links].sort((a, b) => a.index - b.index).find((l) => !l.loopback && l.ethernet);
  if (!candidate) return { kind: "none" };
  return { kind: "bring-up", link: candidate.name, wasUp: candidate.up, address };
}

async function ip(options: LinkOptions, args: string[]): Promise<string> {
  const command = options.ipCommand ?? "ip";
  try {
    const { stdout } = await run(command, args, { timeout: 10_000 });
    return stdout;
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new MetadataError(
      "link_setup",
      `\`${command} ${args.join(" ")}\` failed: ${stderr || (err instanceof Error ? err.message : String(err))}`,
      { cause: err },
    );
  }
}

export async function readLinks(options: LinkOptions = {}): Promise<LinkState[]> {
  return parseIpAddr(await ip(options, ["-json", "addr", "show"]));
}

/** Applies a "bring-up" decision. Returns the function that undoes it (safe to call once). */
export async function bringUp(
  decision: Extract<LinkDecision, { kind: "bring-up" }>,
  options: LinkOptions = {},
): Promise<() => Promise<void>> {
  const { link, wasUp, address } = decision;
  const restore = async (): Promise<void> => {
    const errors: string[] = [];
    await ip(options, ["addr", "del", address, "dev", link]).catch((e: Error) => errors.push(e.message));
    if (!wasUp)
      await ip(options, ["link", "set", "dev", link, "down"]).catch((e: Error) => errors.push(e.message));
    if (errors.length > 0)
      throw new MetadataError("link_setup", `could not restore ${link}: ${errors.join("; ")}`);
  };
  if (!wasUp) await ip(options, ["link", "set", "dev", link, "up"]);
  try {
    await ip(options, ["addr", "add", address, "dev", link, "scope", "link"]);
  } catch (err) {
    if (!wasUp) await ip(options, ["link", "set", "dev", link, "down"]).catch(() => undefined);
    throw err;
  }
  return restore;
}

const LINK_POLL_MS = 250;
const MAX_LINK_POLLS = 2400;

/** Reads the links, polling until there is an Ethernet link or `waitForLinkMs` has passed. */
export async function decideWithWait(options: LinkOptions = {}): Promise<LinkDecision> {
  const deadline = Date.now() + (options.waitForLinkMs ?? 0);
  let decision = decideLinkStep(await readLinks(options));
  for (let poll = 1; decision.kind === "none" && poll <= MAX_LINK_POLLS; poll++) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    if (poll === 1) options.onWaitForLink?.();
    await sleep(Math.min(LINK_POLL_MS, left));
    decision = decideLinkStep(await readLinks(options));
  }
  return decision;
}

/**
 * Runs `fn` with a link able to reach a link-local service: brings one up if none is, and always restores it
 * afterwards (also when `fn` throws). Returns `fn`'s result and the decision taken.
 */
export async function withLinkLocal<T>(
  fn: () => Promise<T>,
  options: LinkOptions = {},
): Promise<{ value: T; decision: LinkDecision }> {
  const decision = await decideWithWait(options);
  if (decision.kind !== "bring-up") return { value: await fn(), decision };
  const restore = await bringUp(decision, options);
  let value: T;
  try {
    value = await fn();
  } catch (err) {
    await restore().catch(() => undefined);
    throw err;
  }
  await restore();
  return { value, decision };
}
