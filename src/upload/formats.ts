/**
 * What an image's first bytes say: its compression and format (from magic bytes, never from the name), a qcow2
 * image's virtual size, and whether a qcow2 image is self-contained. Pure.
 */
import { UploadError } from "./errors.js";

export type Compression = "none" | "gz" | "bz2" | "xz" | "zstd";
export type ImageFormat = "raw" | "qcow2";
export const COMPRESSIONS: readonly Compression[] = ["none", "gz", "bz2", "xz", "zstd"];
export const FORMATS: readonly ImageFormat[] = ["raw", "qcow2"];

/** How many leading bytes the sniffer looks at. */
export const SNIFF_BYTES = 65536;

export interface Sniffed {
  compression: Compression;
  /** Only meaningful when compression is "none" (or for the decompressed head). */
  format: ImageFormat;
  /** Set when the bytes are a known format hetznix does not take (zip, vmdk, ...). */
  unsupported?: string;
}

const COMPRESSION_MAGIC: [Compression, number[]][] = [
  ["gz", [0x1f, 0x8b]],
  ["bz2", [0x42, 0x5a, 0x68]], // "BZh"
  ["xz", [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ["zstd", [0x28, 0xb5, 0x2f, 0xfd]],
];

const QCOW2_MAGIC = [0x51, 0x46, 0x49, 0xfb]; // "QFI\xfb"

/** Formats that are recognisably not a raw disk or qcow2; uploading them would write garbage. */
const UNSUPPORTED_MAGIC: [string, number, number[]][] = [
  ["zip archive", 0, [0x50, 0x4b, 0x03, 0x04]],
  ["7-zip archive", 0, [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]],
  ["rar archive", 0, [0x52, 0x61, 0x72, 0x21, 0x1a, 0x07]],
  ["lz4 data", 0, [0x04, 0x22, 0x4d, 0x18]],
  ["lzip data", 0, [0x4c, 0x5a, 0x49, 0x50]],
  ["VMDK disk", 0, [0x4b, 0x44, 0x4d, 0x56]], // "KDMV"
  ["VMDK descriptor", 0, [...Buffer.from("# Disk DescriptorFile")]],
  ["VDI disk", 64, [0x7f, 0x10, 0xda, 0xbe]],
  ["VHDX disk", 0, [...Buffer.from("vhdxfile")]],
  ["VHD disk", 0, [...Buffer.from("conectix")]],
  ["QED disk", 0, [0x51, 0x45, 0x44, 0x00]],
  ["qcow (version 1) disk", 0, [0x51, 0x46, 0x49, 0xfb, 0x00, 0x00, 0x00, 0x01]],
  ["tar archive", 257, [...Buffer.from("ustar")]],
];

function startsWith(head: Uint8Array, offset: number, magic: number[]): boolean {
  if (head.length < offset + magic.length) return false;
  return magic.every((b, i) => head[offset + i] === b);
}

/** Compression and format from the first bytes. Pure. */
export function sniffBytes(head: Uint8Array): Sniffed {
  for (const [compression, magic] of COMPRESSION_MAGIC) {
    if (startsWith(head, 0, magic)) return { compression, format: "raw" };
  }
  for (const [name, offset, magic] of UNSUPPORTED_MAGIC) {
    if (startsWith(head, offset, magic)) return { compression: "none", format: "raw", unsupported: name };
  }
  if (startsWith(head, 0, QCOW2_MAGIC)) return { compression: "none", format: "qcow2" };
  return { compression: "none", format: "raw" };
}

/** The virtual disk size of a qcow2 image (header bytes 24..31, big endian). Pure. */
export function qcow2VirtualSize(head: Uint8Array): number {
  if (head.length < 32 || !startsWith(head, 0, QCOW2_MAGIC)) throw new Error("not a qcow2 header");
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  return Number(view.getBigUint64(24, false));
}

/**
 * Why a qcow2 image is refused, from its header, or undefined when it is self-contained. A backing file or an external
 * data file is another file that `qemu-img convert` reads on the machine that converts the image (this one, or the
 * rescue system): its bytes would end up in the snapshot (e.g. `qemu-img create -f qcow2 -b /etc/shadow -F raw x 1M`).
 * Pure.
 */
export function qcow2Hazard(head: Uint8Array): string | undefined {
  if (head.length < 20 || !startsWith(head, 0, QCOW2_MAGIC)) return "its qcow2 header is cut short";
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const version = view.getUint32(4, false);
  const backingOffset = view.getBigUint64(8, false);
  if (backingOffset !== 0n) {
    // The name is stored at backing_file_offset, backing_file_size bytes long (at most 1023).
    const size = Math.min(view.getUint32(16, false), 1023);
    const at = Number(backingOffset);
    const name =
      at + size <= head.length
        ? Buffer.from(head.subarray(at, at + size))
            .toString("utf8")
            .replace(/[^\x20-\x7e]/g, "?")
        : undefined;
    return `it names a backing file${name ? ` ${name}` : ""}`;
  }
  // Version 3: incompatible features at bytes 72..79; bit 2 says the guest data lives in an external data file.
  if (version >= 3) {
    if (head.length < 80) return "its qcow2 header is cut short";
    if ((view.getBigUint64(72, false) & 4n) !== 0n) return "it keeps its data in an external data file";
  }
  return undefined;
}

/** The refusal of a qcow2 image that is not self-contained (see qcow2Hazard). */
export function unsafeQcow2Error(where: string, hazard: string): UploadError {
  return new UploadError(
    "unsafe_image",
    `${where} is a qcow2 image that is not self-contained: ${hazard}. Converting it would copy that other file of the converting machine into the snapshot, so hetznix refuses it; make a self-contained image first (qemu-img convert -f qcow2 -O qcow2 IN OUT, where IN's backing file is the one you mean)`,
  );
}
