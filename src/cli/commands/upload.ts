import { basename } from "node:path";
import type { Command } from "commander";
import type { Architecture } from "../../hcloud/schema.js";
import type { ProgressRenderer } from "../../ui/progress.js";
import { formatBytes, formatDuration } from "../../ui/format.js";
import {
  UploadError,
  checkImageFile,
  describeLeftovers,
  parseLabels,
  readManifest,
  uploadImages,
  type ManifestEntry,
  type UploadOptions,
  type UploadResult,
} from "../../upload/index.js";
import {
  UsageError,
  checkChoice,
  codecFromFlags,
  collect,
  describeError,
  errorJson,
  exitCodeFor,
  imageChoices,
  installSignals,
  makeClient,
  reportFailure,
  incrementalJson,
  runJson,
  startProgress,
  withSharedFlags,
  type SharedFlags,
  writeErr,
  writeOut,
} from "../shared.js";

interface UploadFlags extends SharedFlags {
  imagePath?: string[];
  imageUrl?: string[];
  manifest?: string;
  architecture?: string[];
  serverType?: string[];
  location?: string;
  description?: string;
  labels?: string;
  force?: boolean;
  base?: string;
  series?: string;
}

function resultJson(r: UploadResult): Record<string, unknown> {
  return {
    image_id: r.imageId,
    reused: r.reused,
    description: r.description,
    architecture: r.architecture,
    labels: r.labels,
    sha256: r.sha256 ?? null,
    raw_size: r.rawSize ?? null,
    source: r.source,
    source_compression: r.sourceCompression,
    source_format: r.sourceFormat,
    transfer: r.transfer ?? null,
    compression_level: r.levelChoice
      ? {
          level: r.levelChoice.level,
          link_mbit_per_second: r.levelChoice.linkMbitPerSecond,
          cores: r.levelChoice.cores,
          bound: r.levelChoice.bound,
          measured: r.levelChoice.measured.map((m) => ({
            level: m.level,
            mb_per_second: m.mbPerSecond,
            ratio: m.ratio,
          })),
          detail: r.levelChoice.detail,
        }
      : null,
    bytes_read: r.bytesRead,
    bytes_sent: r.bytesSent,
    bytes_hashed: r.bytesHashed,
    server_type: r.serverType ?? null,
    location: r.location ?? null,
    ...incrementalJson(r),
    ...runJson(r),
  };
}

interface Job {
  name: string;
  options: Omit<UploadOptions, "client">;
}

function buildJobs(flags: UploadFlags, manifest: ManifestEntry[] | undefined): Job[] {
  const shared = imageChoices(flags);
  const userLabels = parseLabels(flags.labels);
  const codec = codecFromFlags(flags);
  const common = {
    ...(flags.location ? { location: flags.location } : {}),
    ...(flags.description ? { description: flags.description } : {}),
    ...(codec ? { codec } : {}),
    force: flags.force === true,
    ...(flags.base !== undefined ? { base: flags.base } : {}),
    ...(flags.series !== undefined ? { series: flags.series } : {}),
  };
  const jobs: Job[] = [];
  if (manifest) {
    if (flags.imagePath?.length || flags.imageUrl?.length)
      throw new UsageError("give images either with --manifest or with --image-path/--image-url");
    for (const e of manifest) {
      const image = e.path !== undefined ? { path: e.path } : { url: e.url as string };
      jobs.push({
        name: e.path ?? (e.url as string),
        options: {
          ...common,
          image,
          compression: e.compression ?? shared.compression,
          format: e.format ?? shared.format,
          ...(e.architecture ? { architecture: e.architecture } : {}),
          ...(e.serverType ? { serverType: e.serverType } : {}),
          ...(e.location ? { location: e.location } : {}),
          ...(e.description ? { description: e.description } : {}),
          labels: { ...userLabels, ...(e.labels ?? {}) },
        },
      });
    }
    return jobs;
  }
  const images = [
    ...(flags.imagePath ?? []).map((p) => ({ image: { path: p }, name: p })),
    ...(flags.imageUrl ?? []).map((u) => ({ image: { url: u }, name: u })),
  ];
  if (images.length === 0) throw new UsageError("give --image-path FILE, --image-url URL or --manifest FILE");
  const pick = (list: string[], flag: string, i: number): string | undefined => {
    if (list.length === 0) return undefined;
    if (list.length === 1) return list[0];
    if (list.length !== images.length) {
      throw new UsageError(
        `give ${flag} once (for every image) or once per image (${images.length} times, in order)`,
      );
    }
    return list[i];
  };
  images.forEach((img, i) => {
    const architecture = pick(flags.architecture ?? [], "--architecture", i);
    const serverType = pick(flags.serverType ?? [], "--server-type", i);
    if (architecture === undefined && serverType === undefined) {
      throw new UsageError(`give --architecture (x86 or arm) or --server-type for ${img.name}`);
    }
    if (architecture !== undefined && architecture !== "x86" && architecture !== "arm") {
      throw new UploadError("invalid_argument", `Unknown architecture ${architecture}; use x86 or arm`);
    }
    jobs.push({
      name: img.name,
      options: {
        ...common,
        ...shared,
        image: img.image,
        ...(architecture ? { architecture: architecture as Architecture } : {}),
        ...(serverType ? { serverType } : {}),
        labels: userLabels,
      },
    });
  });
  return jobs;
}

async function run(flags: UploadFlags): Promise<void> {
  const json = flags.output === "json";
  let renderer: ProgressRenderer | undefined;
  const signals = installSignals("upload");
  try {
    checkChoice("--output", flags.output, ["text", "json"]);
    const manifest = flags.manifest ? await readManifest(flags.manifest) : undefined;
    // A file that is not there is the first thing to say, before asking for other flags.
    for (const path of [...(flags.imagePath ?? []), ...(manifest ?? []).flatMap((e) => e.path ?? [])])
      await checkImageFile(path);
    const jobs = buildJobs(flags, manifest);
    const client = makeClient(flags);
    const multi = jobs.length > 1;
    renderer = startProgress(json, multi);
    const names = jobs.map((j) => (multi ? basename(j.name) : j.name));
    const settled = await uploadImages(
      jobs.map((j, i) => ({
        ...j.options,
        client,
        name: names[i],
        signal: signals.signal,
        cleanupSignal: signals.cleanupSignal,
        onEvent: (e) => renderer?.onEvent(e),
      })),
    );
    renderer.finish();
    let failed = 0;
    let worst = 0;
    const jsonItems: Record<string, unknown>[] = [];
    settled.forEach((s, i) => {
      const name = jobs[i]?.name ?? "";
      if (s.status === "fulfilled") {
        const r = s.value;
        if (json) jsonItems.push(resultJson(r));
        else {
          writeErr(
            `${multi ? `[${names[i]}] ` : ""}${r.reused ? "Reused snapshot" : "Created snapshot"} ${r.imageId} (${r.architecture}${r.reused ? ", same content already uploaded" : ""}) in ${formatDuration(r.durationMs)}; ${r.bytesHashed ? `hashed ${formatBytes(r.bytesHashed)}, ` : ""}read ${formatBytes(r.bytesRead)}, sent ${formatBytes(r.bytesSent)}\n`,
          );
          if (r.leftovers.length) writeErr(describeLeftovers(r.leftovers) + "\n");
          writeOut(multi ? `${r.imageId}\t${name}\n` : `${r.imageId}\n`);
        }
        if (r.leftovers.length) worst = Math.max(worst, 1);
      } else {
        failed++;
        worst = Math.max(worst, exitCodeFor(s.reason));
        if (json) jsonItems.push({ source: name, error: errorJson(s.reason) });
        else writeErr(`hetznix upload: ${multi ? `${name}: ` : ""}${describeError(s.reason)}\n`);
      }
    });
    if (json) {
      const body = multi ? { images: jsonItems, failed } : jsonItems[0];
      writeOut(`${JSON.stringify(body, null, 2)}\n`);
    }
    process.exitCode = worst;
  } catch (err) {
    renderer?.finish();
    reportFailure("upload", json, err);
  } finally {
    signals.dispose();
  }
}

export function register(program: Command): void {
  withSharedFlags(
    program
      .command("upload")
      .description(
        "upload a disk image (raw or qcow2, optionally compressed; file or URL) as a Hetzner Cloud snapshot",
      )
      .option("--image-path <file>", "local image file (repeat to upload several in parallel)", collect)
      .option("--image-url <url>", "image URL the rescue system downloads (repeatable)", collect)
      .option(
        "--manifest <file>",
        "YAML/JSON list of images to upload in parallel (path|url, architecture, ...)",
      )
      .option(
        "--architecture <arch>",
        "x86 or arm (once for all images, or once per image in order)",
        collect,
      )
      .option(
        "--server-type <name>",
        "temporary server type (default: cheapest that fits, from the catalogue)",
        collect,
      )
      .option("--location <name>", "location to try first for the temporary server")
      .option("--description <text>", "snapshot description")
      .option("--labels <k=v,...>", "snapshot labels")
      .option("--force", "upload even if a snapshot with the same content exists")
      .option(
        "--base <snapshot|auto>",
        "incremental: start from this snapshot (id, label selector or description; auto = newest of the series) and send only blocks it lacks",
      )
      .option(
        "--series <name>",
        "image series (label hetznix/series) for --base auto (default: the file name without store hash, versions, extensions)",
      ),
  )
    .addHelpText(
      "after",
      `
Examples:
  $ hetznix upload --image-path result/nixos.img --architecture x86 --description "nixos 25.05"
  $ hetznix upload --image-path nixos.img.zst --server-type cax11 --labels role=web,env=prod
  $ hetznix upload --image-url https://example.org/nixos.qcow2 --architecture arm --location hel1
  $ hetznix upload --image-path x86.img --architecture x86 --image-path arm.img --architecture arm
  $ hetznix upload --manifest images.yaml --output json
  $ hetznix upload --image-path result/nixos.img --architecture x86 --base auto

Prints the snapshot id on stdout (steps and progress go to stderr). An image whose content already exists as a
snapshot is not uploaded again (--force to upload anyway).`,
    )
    .action(async (flags: UploadFlags) => run(flags));
}
