/**
 * What a server's disk holds, read from the disk file without attaching it: the partition table (sfdisk) and what
 * each partition (or the whole disk) carries (blkid, probing at the partition's offset). A NixOS root is an ext4
 * file system labelled `nixos`, as the hetznix image and NixOS' make-disk-image have it.
 */
import { execFile } from "node:child_process";
import { stat } from "node:fs/promises";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface PartitionInfo {
  /** 1-based partition number (sda1, sda2, ...). */
  number: number;
  /** Offset and size in bytes. */
  start: number;
  size: number;
  fsType?: string;
  label?: string;
}

export interface DiskContents {
  /** Bytes allocated in the sparse disk file (0: nothing was ever written). */
  allocatedBytes: number;
  partitions: PartitionInfo[];
  /** Where the NixOS root file system is: a partition number, "disk" for the whole disk, or undefined. */
  nixosRoot?: number | "disk";
}

async function probeAt(
  path: string,
  offset?: number,
  size?: number,
): Promise<{ type?: string; label?: string }> {
  const args = ["-p", "-o", "export"];
  if (offset !== undefined) args.push("-O", String(offset));
  if (size !== undefined) args.push("-S", String(size));
  args.push(path);
  try {
    const { stdout } = await run("blkid", args, { timeout: 20_000 });
    const fields = Object.fromEntries(
      stdout
        .split("\n")
        .map((l) => l.split("="))
        .filter((kv) => kv.length >= 2)
        .map(([k, ...v]) => [k, v.join("=")]),
    ) as Record<string, string>;
    return {
      ...(fields.TYPE ? { type: fields.TYPE } : {}),
      ...(fields.LABEL ? { label: fields.LABEL } : {}),
    };
  } catch {
    return {}; // blkid exits 2 when it finds nothing
  }
}

interface SfdiskJson {
  partitiontable?: { sectorsize?: number; partitions?: { node: string; start: number; size: number }[] };
}

export async function probeDisk(path: string): Promise<DiskContents> {
  const allocatedBytes = (await stat(path)).blocks * 512;
  if (allocatedBytes === 0) return { allocatedBytes, partitions: [] };
  let table: SfdiskJson = {};
  try {
    const { stdout } = await run("sfdisk", ["--json", path], { timeout: 20_000 });
    table = JSON.parse(stdout) as SfdiskJson;
  } catch {
    // No partition table.
  }
  const sector = table.partitiontable?.sectorsize ?? 512;
  const partitions: PartitionInfo[] = [];
  for (const p of table.partitiontable?.partitions ?? []) {
    const number = Number(/(\d+)$/.exec(p.node)?.[1]);
    if (!Number.isInteger(number)) continue;
    const info: PartitionInfo = { number, start: p.start * sector, size: p.size * sector };
    const found = await probeAt(path, info.start, info.size);
    if (found.type) info.fsType = found.type;
    if (found.label) info.label = found.label;
    partitions.push(info);
  }
  const root = partitions.find((p) => p.fsType === "ext4" && p.label === "nixos");
  if (root) return { allocatedBytes, partitions, nixosRoot: root.number };
  if (partitions.length === 0) {
    const whole = await probeAt(path);
    if (whole.type === "ext4" && whole.label === "nixos")
      return { allocatedBytes, partitions, nixosRoot: "disk" };
  }
  return { allocatedBytes, partitions };
}
