import type { Command } from "commander";
import type { ProgressRenderer } from "../../ui/progress.js";
import { formatBytes, formatDuration } from "../../ui/format.js";
import { describeLeftovers, writeToDisk, type WriteToDiskResult } from "../../upload/index.js";
import {
  UsageError,
  checkChoice,
  codecFromFlags,
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

interface WriteFlags extends SharedFlags {
  server?: string;
  imagePath?: string;
  imageUrl?: string;
  start?: boolean;
  base?: boolean;
}

function resultJson(r: WriteToDiskResult): Record<string, unknown> {
  return {
    server_id: r.serverId,
    server_name: r.serverName,
    sha256: r.sha256,
    raw_size: r.rawSize,
    source: r.source,
    source_compression: r.sourceCompression,
    source_format: r.sourceFormat,
    transfer: r.transfer,
    bytes_read: r.bytesRead,
    bytes_sent: r.bytesSent,
    started: r.started,
    ...incrementalJson(r),
    ...runJson(r),
  };
}

async function run(flags: WriteFlags): Promise<void> {
  const json = flags.output === "json";
  let renderer: ProgressRenderer | undefined;
  const signals = installSignals("write-to-disk");
  try {
    checkChoice("--output", flags.output, ["text", "json"]);
    if (!flags.server) throw new UsageError("give --server ID|NAME");
    if ((flags.imagePath === undefined) === (flags.imageUrl === undefined)) {
      throw new UsageError("give exactly one of --image-path FILE and --image-url URL");
    }
    const { compression, format } = imageChoices(flags);
    const codec = codecFromFlags(flags);
    const client = makeClient(flags);
    renderer = startProgress(json);
    const r = await writeToDisk({
      client,
      server: /^\d+$/.test(flags.server) ? Number(flags.server) : flags.server,
      image: flags.imagePath !== undefined ? { path: flags.imagePath } : { url: flags.imageUrl as string },
      compression,
      format,
      ...(codec ? { codec } : {}),
      start: flags.start === true,
      ...(flags.base ? { base: true } : {}),
      signal: signals.signal,
      cleanupSignal: signals.cleanupSignal,
      onEvent: (e) => renderer?.onEvent(e),
    });
    renderer.finish();
    if (json) writeOut(`${JSON.stringify(resultJson(r), null, 2)}\n`);
    else {
      writeOut(
        `Wrote ${formatBytes(r.rawSize)} (sha256 ${r.sha256}) to server ${r.serverName} (${r.serverId}) in ${formatDuration(r.durationMs)}; it is ${r.started ? "powered on" : "powered off"}\n`,
      );
      if (r.leftovers.length) writeErr(describeLeftovers(r.leftovers) + "\n");
    }
    process.exitCode = r.leftovers.length ? 1 : 0;
  } catch (err) {
    renderer?.finish();
    reportFailure("write-to-disk", json, err);
  } finally {
    signals.dispose();
  }
}

export function register(program: Command): void {
  withSharedFlags(
    program
      .command("write-to-disk")
      .description(
        "write an image onto an existing server's disk through the rescue system (the disk is overwritten)",
      )
      .option("--server <id|name>", "the server whose disk is overwritten")
      .option("--image-path <file>", "local image file")
      .option("--image-url <url>", "image URL the rescue system downloads")
      .option("--start", "power the server on afterwards (default: leave it off)")
      .option(
        "--base",
        "incremental: the server's current disk is the base; send only the blocks it does not hold (else a full write, saying why)",
      ),
  )
    .addHelpText(
      "after",
      `
Examples:
  $ hetznix write-to-disk --server web-1 --image-path result/nixos.img
  $ hetznix write-to-disk --server 4711 --image-url https://example.org/nixos.img.zst --start
  $ hetznix write-to-disk --server web-1 --image-path result/nixos.img --base`,
    )
    .action(async (flags: WriteFlags) => run(flags));
}
