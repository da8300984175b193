/**
 * The exact shell commands hetznix runs in the rescue system, built by pure functions with every value quoted.
 * Each script prints one machine-readable line (`HETZNIX-RESULT key=value ...`) that parseResult reads.
 */
import { shellQuote } from "../run/remote.js";
import type { Compression, ImageFormat } from "./source.js";

export { bashCommand, parseResult, shellQuote } from "../run/remote.js";

/** The server's disk in the rescue system. */
export const DISK_DEVICE = "/dev/sda";

/** Headroom the RAM disk must keep beyond a qcow2 image converted in the rescue system. */
export const RESCUE_RAM_HEADROOM = 64 * 1024 * 1024;

/** Exit status of the scripts when the qcow2 image does not fit the rescue RAM disk. */
export const EXIT_NO_ROOM = 90;
/** Exit status when the downloaded size differs from the expected size. */
export const EXIT_SIZE_MISMATCH = 91;
/** Exit status when the received qcow2 image names a backing file or an external data file. */
export const EXIT_UNSAFE_QCOW2 = 93;

/** The decompression stage in the rescue system for data arriving with `compression` (null for none). */
export function remoteDecompressor(compression: Compression): string | null {
  switch (compression) {
    case "none":
      return null;
    case "gz":
      return "gzip -dc";
    case "bz2":
      return "bzip2 -dc";
    case "xz":
      return "xz -dc -T0";
    case "zstd":
      return "zstd -dc";
  }
}

/** Discard the whole disk, so blocks the image leaves out (sparse writes skip zeros) read as zeros. */
export function discardCommand(device = DISK_DEVICE): string {
  const d = shellQuote(device);
  return `blkdiscard -f ${d} 2>/dev/null || blkdiscard ${d}`;
}

/**
 * Limits of a download by the rescue system, so a URL that stalls or crawls cannot keep the temporary server busy
 * forever: curl gives up when fewer than `lowSpeedBytesPerSecond` arrive for `lowSpeedSeconds` in a row, and (when
 * the size is announced) when the whole download takes longer than `deadlineBaseSeconds` plus the size at
 * `deadlineBytesPerSecond`.
 */
export interface DownloadLimits {
  /** Default 64 KiB/s. */
  lowSpeedBytesPerSecond: number;
  /** Default 60 s. */
  lowSpeedSeconds: number;
  /** Default 600 s. */
  deadlineBaseSeconds: number;
  /** Default 1 MiB/s: a 4 GiB image gets 10 + 68 minutes. */
  deadlineBytesPerSecond: number;
}

export const DEFAULT_DOWNLOAD_LIMITS: DownloadLimits = {
  lowSpeedBytesPerSecond: 64 * 1024,
  lowSpeedSeconds: 60,
  deadlineBaseSeconds: 600,
  deadlineBytesPerSecond: 1024 * 1024,
};

/** The overall deadline (whole seconds) of a download of `announcedBytes`, or undefined when the size is unknown. */
export function downloadDeadlineSeconds(limits: DownloadLimits, announcedBytes?: number): number | undefined {
  if (announcedBytes === undefined) return undefined;
  return Math.ceil(limits.deadlineBaseSeconds + announcedBytes / limits.deadlineBytesPerSecond);
}

/** What the download stage prints on stderr when curl fails: `HETZNIX-DOWNLOAD-FAILED curl-exit=N`. */
export const DOWNLOAD_FAILED_MARK = "HETZNIX-DOWNLOAD-FAILED";

export type WriteInput =
  | { kind: "stdin" }
  | {
      kind: "url";
      url: string;
      /** Default DEFAULT_DOWNLOAD_LIMITS. */
      limits?: DownloadLimits;
      /** curl --max-time: the whole download (see downloadDeadlineSeconds). */
      maxSeconds?: number;
    };

export interface WriteSpec {
  input: WriteInput;
  /** Compression of the bytes as they arrive (after the wire codec, or as the URL serves them). */
  compression: Compression;
  /** raw: decompress straight onto the disk; qcow2: keep in the RAM disk, then convert. */
  format: ImageFormat;
  device?: string;
  /**
   * raw: the exact raw size expected (checked: a shorter stream is a truncated download).
   * qcow2: the qcow2 file's size, when known (checked against free RAM-disk space before downloading).
   */
  expectedBytes?: number;
  /** qcow2: the virtual size (the raw image size), read from the header. */
  virtualSize?: number;
}

function sourceStage(input: WriteInput): string {
  if (input.kind === "stdin") return "cat";
  const limits = input.limits ?? DEFAULT_DOWNLOAD_LIMITS;
  // The URL is one literal word: quoted for the shell, and --globoff so curl does not expand `[1-2]` or `{a,b}` into
  // several downloads whose concatenation would be written (and verified) as the image. --fail: HTTP errors fail;
  // curl also fails when fewer bytes arrive than Content-Length announced. No --retry: a retried transfer writes its
  // bytes to the pipe again after those already sent, so the disk would get a corrupt concatenation.
  const curl = [
    "curl --globoff --fail --silent --show-error --location --connect-timeout 20",
    `--speed-limit ${Math.max(1, Math.floor(limits.lowSpeedBytesPerSecond))}`,
    `--speed-time ${Math.max(1, Math.ceil(limits.lowSpeedSeconds))}`,
    ...(input.maxSeconds !== undefined ? [`--max-time ${Math.max(1, Math.ceil(input.maxSeconds))}`] : []),
    `--url ${shellQuote(input.url)}`,
  ].join(" ");
  return `{ ${curl} || { rc=$?; echo "${DOWNLOAD_FAILED_MARK} curl-exit=$rc" >&2; exit "$rc"; }; }`;
}

/**
 * sha256 of stdin as bare hex: openssl when present (it uses the CPU's SHA instructions, several times faster than
 * coreutils' sha256sum), else sha256sum.
 */
const HASH_FUNCTION =
  "h256() { if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r | cut -d' ' -f1; else sha256sum | cut -d' ' -f1; fi; }";

const PRELUDE = [
  "set -euo pipefail",
  HASH_FUNCTION,
  "work=$(mktemp -d /tmp/hetznix.XXXXXX)",
  "pids=",
  'cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }',
  "trap cleanup EXIT",
  'mkfifo "$work/hash" "$work/count"',
  'h256 < "$work/hash" > "$work/sha" & pids="$pids $!"',
  'wc -c < "$work/count" > "$work/len" & pids="$pids $!"',
];

const READ_STREAM_RESULT = [
  "wait $pids",
  "pids=",
  "stream_sha=$(tr -d ' \\n' < \"$work/sha\")",
  "stream_len=$(tr -d ' \\n' < \"$work/len\")",
];

/**
 * Refuse a received qcow2 file that is not self-contained before qemu-img opens it: a backing file (header bytes
 * 8..15, its offset, not zero) or, in version 3, an external data file (incompatible feature bit 2, in byte 79)
 * would be read from the rescue system's own files into the disk. The client checked the header it sniffed, but a
 * URL may serve other bytes to the download.
 */
function qcow2SafetyCheck(file: string): string[] {
  const f = `"${file}"`;
  const refuse = (what: string) =>
    `echo "hetznix: the received qcow2 image ${what}; refusing to convert it (its bytes would come from the rescue system's files)" >&2; exit ${EXIT_UNSAFE_QCOW2}`;
  return [
    `if [ "$(od -An -v -tx1 -j8 -N8 ${f} | tr -d ' \\n')" != 0000000000000000 ]; then ${refuse("names a backing file")}; fi`,
    `if [ $(( $(od -An -tu1 -j7 -N1 ${f}) )) -ge 3 ] && [ $(( $(od -An -tu1 -j79 -N1 ${f}) & 4 )) -ne 0 ]; then ${refuse("keeps its data in an external data file")}; fi`,
  ];
}

function sizeCheck(expected: number): string {
  const n = String(expected);
  return `if [ "$stream_len" != ${n} ]; then echo "hetznix: received $stream_len bytes of image data, expected ${n} (truncated download?)" >&2; exit ${EXIT_SIZE_MISMATCH}; fi`;
}

/**
 * The script that writes the image onto the disk. It hashes and counts the (decompressed) stream as it passes, so
 * the client can compare with its own hash. Prints `HETZNIX-RESULT stream-sha256=.. stream-bytes=..` and, for
 * qcow2, `raw-sha256=.. raw-bytes=..` of the converted disk contents.
 */
export function writeScript(spec: WriteSpec): string {
  const device = shellQuote(spec.device ?? DISK_DEVICE);
  const decompress = remoteDecompressor(spec.compression);
  const pipeline = [sourceStage(spec.input), ...(decompress ? [decompress] : [])];
  const lines = [...PRELUDE];
  if (spec.format === "raw") {
    pipeline.push(`tee "$work/hash" "$work/count"`);
    pipeline.push(`dd of=${device} bs=4M iflag=fullblock conv=sparse status=none`);
    lines.push(pipeline.join(" | "));
    lines.push(...READ_STREAM_RESULT);
    if (spec.expectedBytes !== undefined) lines.push(sizeCheck(spec.expectedBytes));
    lines.push("sync");
    lines.push('echo "HETZNIX-RESULT stream-sha256=$stream_sha stream-bytes=$stream_len"');
    return lines.join("\n") + "\n";
  }
  // qcow2: the rescue system's root is a RAM disk; check there is room before receiving anything.
  if (spec.virtualSize === undefined) throw new Error("writeScript: qcow2 needs virtualSize");
  const vsize = String(spec.virtualSize);
  if (spec.expectedBytes !== undefined) {
    const need = String(spec.expectedBytes);
    lines.push(`avail=$(df -P -B1 "$work" | awk 'NR==2 {print $4}')`);
    lines.push(
      `if [ "$avail" -lt $((${need} + ${RESCUE_RAM_HEADROOM})) ]; then echo "hetznix: the qcow2 image (${need} bytes) does not fit in the rescue system's RAM disk ($avail bytes free); install qemu-img where hetznix runs so it converts the image there" >&2; exit ${EXIT_NO_ROOM}; fi`,
    );
  }
  pipeline.push(`tee "$work/hash" "$work/count"`);
  pipeline.push(`cat > "$work/image.qcow2"`);
  lines.push(pipeline.join(" | "));
  lines.push(...READ_STREAM_RESULT);
  if (spec.expectedBytes !== undefined) lines.push(sizeCheck(spec.expectedBytes));
  lines.push(...qcow2SafetyCheck("$work/image.qcow2"));
  lines.push(`qemu-img check -q -f qcow2 "$work/image.qcow2"`);
  lines.push(`qemu-img convert -n -f qcow2 -O raw "$work/image.qcow2" ${device}`);
  lines.push("sync");
  lines.push(`blockdev --flushbufs ${device} 2>/dev/null || true`);
  lines.push(`if [ -b ${device} ]; then drv=host_device; else drv=file; fi`);
  lines.push(
    `qemu-img compare -q --image-opts "driver=qcow2,file.filename=$work/image.qcow2" "driver=raw,size=${vsize},file.driver=$drv,file.filename=${spec.device ?? DISK_DEVICE}"`,
  );
  lines.push(`raw_sha=$(head -c ${vsize} ${device} | h256)`);
  lines.push(
    `echo "HETZNIX-RESULT stream-sha256=$stream_sha stream-bytes=$stream_len raw-sha256=$raw_sha raw-bytes=${vsize}"`,
  );
  return lines.join("\n") + "\n";
}

/** Hash the first `bytes` bytes of the disk as they are on the device (the page cache is flushed first). */
export function verifyScript(bytes: number, device = DISK_DEVICE): string {
  const d = shellQuote(device);
  return (
    [
      "set -euo pipefail",
      HASH_FUNCTION,
      "sync",
      `blockdev --flushbufs ${d} 2>/dev/null || true`,
      `disk_sha=$(head -c ${String(bytes)} ${d} | h256)`,
      `echo "HETZNIX-RESULT disk-sha256=$disk_sha disk-bytes=${String(bytes)}"`,
    ].join("\n") + "\n"
  );
}

/** Bytes the rescue system's download (curl) has read so far, from /proc/PID/io; prints nothing if none runs. */
export function downloadProgressScript(): string {
  return `p=$(pgrep -o -x curl) && awk '/^rchar:/ {print "HETZNIX-RESULT rchar=" $2}' /proc/$p/io || true\n`;
}
