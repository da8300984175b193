/**
 * What gets published: a NixOS system toplevel, given as a store path or built from a flake (like nixos-rebuild:
 * `REF#NAME` is `REF#nixosConfigurations."NAME".config.system.build.toplevel`; a fragment with a dot is taken as a
 * full attribute path). Its system comes from the toplevel's `system` file, its revision from the flake's metadata,
 * else the caller, else the CI environment.
 */
import { readFile, realpath, stat } from "node:fs/promises";
import { ReleaseError } from "./errors.js";
import { isStorePath } from "./record.js";
import { runNixTool } from "./nix.js";

export interface FlakeTarget {
  /** The flake reference without the fragment. */
  flake: string;
  /** The attribute path that is built. */
  attribute: string;
  /** What the record says it was built from: REF#FRAGMENT as given. */
  display: string;
}

export function parseFlakeTarget(ref: string): FlakeTarget {
  const hash = ref.indexOf("#");
  const flake = hash < 0 ? ref : ref.slice(0, hash);
  const fragment = hash < 0 ? "" : ref.slice(hash + 1);
  if (flake === "" || fragment === "")
    throw new ReleaseError(
      "invalid_argument",
      `--flake ${ref}: give the flake and the configuration, e.g. --flake .#web (nixosConfigurations.web)`,
    );
  if (/\s/.test(ref))
    throw new ReleaseError("invalid_argument", `--flake ${JSON.stringify(ref)} has white space`);
  const attribute = fragment.includes(".")
    ? fragment
    : `nixosConfigurations.${JSON.stringify(fragment)}.config.system.build.toplevel`;
  return { flake, attribute, display: ref };
}

/** A `nix` command's output; a failure is a ReleaseError (code nix) whose message starts with `what`. */
export async function nixRun(
  args: string[],
  what: string,
  signal?: AbortSignal,
): Promise<{ stdout: string; stderr: string }> {
  try {
    return await runNixTool("nix", args, { ...(signal ? { signal } : {}) });
  } catch (err) {
    if (signal?.aborted) throw err;
    throw new ReleaseError("nix", `${what}: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    });
  }
}

/** `nix build` of the target; returns the store path of its `out`. */
export async function buildFlake(target: FlakeTarget, signal?: AbortSignal): Promise<string> {
  const installable = `${target.flake}#${target.attribute}`;
  const { stdout: out } = await nixRun(
    ["build", "--no-link", "--json", installable],
    `building ${installable}`,
    signal,
  );
  let path: unknown;
  try {
    path = (JSON.parse(out) as { outputs?: Record<string, string> }[])[0]?.outputs?.out;
  } catch {
    path = undefined;
  }
  if (typeof path !== "string" || !isStorePath(path))
    throw new ReleaseError("nix", `nix build ${installable} printed no store path: ${out.slice(0, 200)}`);
  return path;
}

/** The flake's source revision (a clean git checkout has one), or undefined. */
export async function flakeRevision(flake: string, signal?: AbortSignal): Promise<string | undefined> {
  const { stdout: out } = await nixRun(
    ["flake", "metadata", "--json", flake],
    `reading the metadata of ${flake}`,
    signal,
  );
  try {
    const rev = (JSON.parse(out) as { revision?: unknown }).revision;
    return typeof rev === "string" && /^[0-9a-f]{7,64}$/.test(rev) ? rev : undefined;
  } catch {
    return undefined;
  }
}

/** The revision CI systems put into the environment (GitHub Actions, GitLab CI), or undefined. */
export function ciRevision(env: NodeJS.ProcessEnv): string | undefined {
  for (const name of ["GITHUB_SHA", "CI_COMMIT_SHA"]) {
    const v = env[name]?.trim();
    if (v && /^[0-9a-f]{7,64}$/i.test(v)) return v.toLowerCase();
  }
  return undefined;
}

export interface Toplevel {
  storePath: string;
  system: string;
}

const SYSTEM = /^[a-z0-9_]+-[a-z0-9_]+$/;

/**
 * Checks that `path` (a store path, or a link to one such as ./result) is a NixOS toplevel in this machine's store
 * and reads its system (the `system` file NixOS writes; `systemFlag` when it has none).
 */
export async function inspectToplevel(path: string, systemFlag?: string): Promise<Toplevel> {
  let storePath: string;
  try {
    storePath = await realpath(path);
  } catch {
    throw new ReleaseError(
      isStorePath(path) ? "not_toplevel" : "invalid_argument",
      isStorePath(path)
        ? `${path} is not in this machine's Nix store; build it here first, or publish with --flake`
        : `--store-path ${path} does not exist (give a /nix/store path or a link to one, such as ./result)`,
    );
  }
  if (!isStorePath(storePath))
    throw new ReleaseError(
      "invalid_argument",
      `--store-path ${path} is not a store path (/nix/store/HASH-name)`,
    );
  const switcher = `${storePath}/bin/switch-to-configuration`;
  const ok = await stat(switcher).then(
    (s) => s.isFile() && (s.mode & 0o111) !== 0,
    () => false,
  );
  if (!ok)
    throw new ReleaseError(
      "not_toplevel",
      `${storePath} is not a NixOS system (it has no bin/switch-to-configuration): publish a system toplevel, e.g. --flake .#NAME or nixosConfigurations.NAME.config.system.build.toplevel`,
    );
  let written: string | undefined;
  try {
    written = (await readFile(`${storePath}/system`, "utf8")).trim();
  } catch {
    written = undefined;
  }
  if (systemFlag !== undefined && !SYSTEM.test(systemFlag))
    throw new ReleaseError(
      "invalid_argument",
      `--system ${systemFlag} is not a Nix system such as x86_64-linux`,
    );
  if (written !== undefined && systemFlag !== undefined && written !== systemFlag)
    throw new ReleaseError(
      "invalid_argument",
      `--system ${systemFlag}, but ${storePath}/system says ${written}`,
    );
  const system = written ?? systemFlag;
  if (system === undefined || !SYSTEM.test(system))
    throw new ReleaseError(
      "invalid_argument",
      `${storePath} has no readable system file: give --system (e.g. x86_64-linux)`,
    );
  return { storePath, system };
}
