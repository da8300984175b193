/**
 * The agent, top to bottom: (1) make sure a link can reach the metadata service, (2) fetch the documents within
 * the timeout, (3) plan the files (pure), (4) write them and remove stale units, (5) set the live host name.
 */
import { isIP } from "node:net";
import { resolve } from "node:path";
import { parseMetadata, parsePrivateNetworks } from "./document.js";
import { MetadataError } from "./errors.js";
import { DEFAULT_METADATA_URL, fetchDocuments, type FetchOptions } from "./fetch.js";
import { findStaleUnits, setKernelHostname, writePlan, type WriteResult } from "./files.js";
import { withLinkLocal, type LinkDecision, type LinkOptions } from "./link.js";
import { planFiles, type Plan } from "./plan.js";

export const DEFAULT_TIMEOUT_MS = 60_000;

export interface AgentOptions {
  /** Default http://169.254.169.254/hetzner/v1/. */
  metadataUrl?: string;
  /** The target root; default "/". */
  root?: string;
  /** Total time for fetching, retries included; default 60 s. */
  timeoutMs?: number;
  /** Write user data to this path under the root; default: don't fetch or write user data. */
  userDataPath?: string | null;
  /**
   * "auto" (default): bring a link up only if the metadata URL's host is link-local (169.254.0.0/16);
   * "always": check links whatever the URL; "never": don't touch links.
   */
  linkSetup?: "auto" | "always" | "never";
  /** Write /etc/hostname and set the host name (default true). Off when the configuration sets the name. */
  hostname?: boolean;
  /** Also set the running kernel's host name; default: only when the root is "/". */
  setLiveHostname?: boolean;
  /** The `ip` executable for the link step. */
  ipCommand?: LinkOptions["ipCommand"];
  /** Called if the link step finds no Ethernet link yet and waits (within the timeout) for one to appear. */
  onWaitForLink?: LinkOptions["onWaitForLink"];
  onRetry?: FetchOptions["onRetry"];
}

export interface PlanResult {
  plan: Plan;
  /** Units the agent wrote earlier that would be removed (relative to the root). */
  stale: string[];
  link: LinkDecision | null;
  root: string;
}

export interface ApplyResult extends WriteResult {
  plan: Plan;
  link: LinkDecision | null;
  root: string;
  liveHostname: string | null;
}

function needsLinkStep(url: string, mode: AgentOptions["linkSetup"]): boolean {
  if (mode === "never") return false;
  if (mode === "always") return true;
  let host: string;
  try {
    host = new URL(url).hostname;
  } catch {
    throw new MetadataError("usage", `invalid metadata URL "${url}"`);
  }
  return isIP(host) === 4 && host.startsWith("169.254.");
}

/** Fetches the metadata and plans the files, without writing anything. */
export async function planFromService(options: AgentOptions = {}): Promise<PlanResult> {
  const metadataUrl = options.metadataUrl ?? DEFAULT_METADATA_URL;
  const root = resolve(options.root ?? "/");
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const userDataPath = options.userDataPath ?? null;
  const fetchAll = (budgetMs: number = timeoutMs) =>
    fetchDocuments({
      baseUrl: metadataUrl,
      timeoutMs: budgetMs,
      withUserData: userDataPath !== null,
      ...(options.onRetry ? { onRetry: options.onRetry } : {}),
    });
  let link: LinkDecision | null = null;
  let documents;
  if (needsLinkStep(metadataUrl, options.linkSetup)) {
    // Waiting for a link counts against the timeout: the fetch gets what is left of it.
    const started = Date.now();
    const linkOptions: LinkOptions = {
      waitForLinkMs: timeoutMs,
      ...(options.ipCommand ? { ipCommand: options.ipCommand } : {}),
      ...(options.onWaitForLink ? { onWaitForLink: options.onWaitForLink } : {}),
    };
    const outcome = await withLinkLocal(
      () => fetchAll(Math.max(1, timeoutMs - (Date.now() - started))),
      linkOptions,
    );
    documents = outcome.value;
    link = outcome.decision;
  } else {
    documents = await fetchAll();
  }
  const plan = planFiles({
    metadata: parseMetadata(documents.metadata),
    privateNetworks: parsePrivateNetworks(documents.privateNetworks),
    userData: documents.userData,
    userDataPath,
    hostname: options.hostname ?? true,
  });
  return { plan, stale: await findStaleUnits(root, plan), link, root };
}

/** `hetznix metadata apply`: fetch, plan, write, remove stale units, set the live host name. */
export async function applyMetadata(options: AgentOptions = {}): Promise<ApplyResult> {
  const { plan, link, root } = await planFromService(options);
  const result = await writePlan(root, plan);
  const live = options.setLiveHostname ?? root === "/";
  let liveHostname: string | null = null;
  if (live) {
    const hostname = plan.files.find((f) => f.kind === "hostname");
    if (hostname && !result.skipped.includes(hostname.path)) {
      liveHostname = hostname.content.toString().trim();
      await setKernelHostname(liveHostname);
    }
  }
  return { ...result, plan, link, root, liveHostname };
}
