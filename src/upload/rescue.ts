/**
 * The exact shell commands hetznix runs in the rescue system, built by pure functions with every value quoted.
 * Each script prints one machine-readable line (`HETZNIX-RESULT key=value ...`) that parseResult reads.
 */
import { shellQuote } from "../run/remote.js";
import type { Compression, ImageFormat } from "./source.js";
import { incrementalCases, incrementalHole, incrementalMarks } from "./incremental/script.js";

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

/** sha256("abc"): the self-test a hash tool must pass before it is trusted. */
const SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

/**
 * `h256`: sha256 of stdin as bare hex, with the fastest correct tool the rescue system has. `openssl dgst -sha256`
 * uses the CPU's SHA instructions (about 4x coreutils' sha256sum on the benchmark machine); it is used only when it is
 * there and hashes "abc" right, else sha256sum. `$hash_tool` names the one chosen.
 */
export const HASH_FUNCTION = [
  `if command -v openssl >/dev/null 2>&1 && [ "$(printf abc | openssl dgst -sha256 -r 2>/dev/null | cut -c1-64)" = ${SHA256_ABC} ]; then`,
  "  hash_tool=openssl; h256() { openssl dgst -sha256 -r | cut -c1-64; }",
  "else",
  "  hash_tool=sha256sum; h256() { sha256sum | cut -c1-64; }",
  "fi",
].join("\n");

/**
 * On exit, stop the background readers and hashers at once: SIGKILL, because a subshell still opening one of the
 * FIFOs (blocked until the other end opens, which never happens when the script fails early) defers a SIGTERM until
 * the open returns, and would hold the SSH channel's stdout open forever.
 */
export const CLEANUP_FUNCTION =
  'cleanup() { for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done; rm -rf "$work"; }';

const PRELUDE = [
  "set -euo pipefail",
  HASH_FUNCTION,
  "work=$(mktemp -d /tmp/hetznix.XXXXXX)",
  "pids=",
  CLEANUP_FUNCTION,
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

/**
 * `dio`: "direct" when the device takes O_DIRECT (writes then go to the device, and reads come from it, not from the
 * page cache), else empty. `readrange OFFSET LENGTH`: those bytes of the device on stdout, as the device has them: with
 * direct I/O for the 4 KiB-aligned part, and after flushing the device's buffers for an unaligned tail (or everything,
 * without direct I/O).
 */
function readBackFunctions(device: string): string {
  const d = shellQuote(device);
  return [
    `if dd if=${d} of=/dev/null bs=4096 count=1 iflag=direct status=none 2>/dev/null; then dio=direct; else dio=; fi`,
    `flushdev() { sync; blockdev --flushbufs ${d} 2>/dev/null || true; }`,
    "readrange() {",
    "  local off=$1 len=$2 a=0",
    '  if [ -n "$dio" ]; then a=$(( len / 4096 * 4096 )); fi',
    `  if (( a > 0 )); then dd if=${d} bs=4M iflag=direct,skip_bytes,count_bytes skip=$off count=$a status=none; fi`,
    "  if (( len > a )); then",
    "    flushdev",
    `    dd if=${d} bs=4M iflag=skip_bytes,count_bytes skip=$(( off + a )) count=$(( len - a )) status=none`,
    "  fi",
    "}",
  ].join("\n");
}

/** Hash the first `bytes` bytes of the disk as they are on the device (direct I/O, or after flushing its buffers). */
export function verifyScript(bytes: number, device = DISK_DEVICE): string {
  return (
    [
      "set -euo pipefail",
      HASH_FUNCTION,
      readBackFunctions(device),
      "sync",
      `disk_sha=$(readrange 0 ${String(bytes)} | h256)`,
      `echo "HETZNIX-RESULT disk-sha256=$disk_sha disk-bytes=${String(bytes)} hash-tool=$hash_tool"`,
    ].join("\n") + "\n"
  );
}

/** Exit status when the extent stream is malformed (a bad header, data after the end mark). */
export const EXIT_BAD_STREAM = 92;
/** What the extent script prints on stdout once every extent is written and flushed (the read-back goes on). */
export const WRITTEN_MARK = "HETZNIX-WRITTEN";

export interface ExtentWriteSpec {
  /** Compression of the extent stream on the wire ("none" or a codec the rescue system decompresses). */
  compression: Compression;
  /** The raw image's size when known (checked against the end mark). */
  expectedBytes?: number;
  device?: string;
  /**
   * An incremental write onto the base's disk (nothing was discarded): the stream starts with the copy list
   * (`C <bytes>`, run by the copy phase before anything else), `K <offset> <length>` marks blocks already in place
   * (read back, never written), holes are zeroed (they may hold the base's data), and after the image the disk is
   * zeroed up to `clearTo` (the base's size) so no stale data is left. Prints COPIED_MARK after the copy phase.
   */
  incremental?: {
    clearTo: number;
    /** Discard the disk after the image (best effort; write-to-disk, whose full write discards it all first). */
    discardRest?: boolean;
    /** Scratch space the copy phase staged blocks in (bytes): zeroed once the copies are done. */
    scratch?: { offset: number; length: number };
  };
}

/**
 * Write an extent stream (see extents.ts) from stdin onto the disk, and prove what the disk holds while it is written:
 *
 * - the writer decompresses the stream and puts each run with one dd where it belongs (direct I/O); each range of
 *   zeros before it (or announced by Z, or after the last run) is zeroed with BLKZEROOUT where the device does that
 *   without writing, else left as discarded; it tells the reader what it did, in disk order;
 * - the reader, one step behind, reads back from the device what was written and every hole not zeroed that way, and
 *   hashes zeros for the zeroed ones, into one sha256 over the whole image;
 * - after the end mark: flush, let the reader finish, print the disk's sha256.
 *
 * So on a slow link the read-back happens while the next bytes are still on the way, and the verification costs
 * almost nothing at the end. Prints WRITTEN_MARK once the writer is done, then
 * `HETZNIX-RESULT disk-sha256=.. disk-bytes=.. data-bytes=.. extents=.. hash-tool=.. direct-io=yes|no
 * holes=zeroed|read-back`.
 */
export function extentWriteScript(spec: ExtentWriteSpec): string {
  const device = spec.device ?? DISK_DEVICE;
  const d = shellQuote(device);
  const decompress = remoteDecompressor(spec.compression);
  const bad = (what: string) => `{ echo "hetznix: ${what}" >&2; exit ${EXIT_BAD_STREAM}; }`;
  const lines = [
    "set -euo pipefail",
    HASH_FUNCTION,
    readBackFunctions(device),
    "work=$(mktemp -d /tmp/hetznix.XXXXXX)",
    "pids=",
    CLEANUP_FUNCTION,
    "trap cleanup EXIT",
    'mkfifo "$work/marks" "$work/back"',
    'h256 < "$work/back" > "$work/sha" & pids="$pids $!"',
    // Holes (the image's zero blocks, never sent): zeroed with BLKZEROOUT when the device does that without
    // writing (its queue says so, or /sys is not there to ask), so they are zeros by the kernel's guarantee; else
    // (or when that fails) read back like the data.
    "zeroout=no",
    `if [ -b ${d} ]; then`,
    `  mm=$(printf %d:%d 0x$(stat -L -c %t ${d}) 0x$(stat -L -c %T ${d}))`,
    '  wz=$(cat "/sys/dev/block/$mm/queue/write_zeroes_max_bytes" 2>/dev/null || echo unknown)',
    '  if [ "$wz" != 0 ]; then zeroout=yes; fi',
    "fi",
    ...(spec.incremental ? incrementalHole(d) : discardedHole(d)),
    // The reader: what the writer did, in disk order. Data and unzeroed holes are read back; zeroed holes are
    // zeros by the kernel's guarantee and hashed as such.
    // What the writer tells the reader: at once for a full write; an incremental one merges adjacent ranges to read
    // back (its many small K and D runs would cost one dd each), up to 64 MiB.
    ...(spec.incremental ? incrementalMarks() : ['mark() { echo "$1 $2 $3" >&3; }', "flushmarks() { :; }"]),
    "readback() {",
    "  local pos=0 kind off len",
    "  while read -r kind off len; do",
    '    [[ $off =~ ^[0-9]+$ && $len =~ ^[0-9]+$ && $off = "$pos" ]] || exit 93',
    '    case "$kind" in',
    '      D|R) readrange "$off" "$len" ;;',
    '      Z) head -c "$len" /dev/zero ;;',
    "      *) exit 93 ;;",
    "    esac",
    "    pos=$(( off + len ))",
    "  done",
    '  echo "$pos" > "$work/back-bytes"',
    "}",
    'readback < "$work/marks" > "$work/back" & pids="$pids $!"',
    'exec 3> "$work/marks"',
    // The writer. bash's read takes a pipe byte by byte, so each header is consumed exactly, and dd with
    // iflag=fullblock count=1 reads exactly the run that follows it.
    `${decompress ? `${decompress} | ` : ""}{`,
    "  total= n=0 data=0 end=0",
    "  while IFS=' ' read -r tag a b; do",
    '    case "$tag" in',
    "      D)",
    `        [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] && (( b > 0 && a >= end )) || ${bad("malformed extent header")}`,
    '        if (( a > end )); then hole "$end" $(( a - end )); fi',
    // O_DIRECT takes whole 4 KiB blocks only: an unaligned run (the image's last, when its size is not a
    // multiple of 4 KiB) goes through the page cache; the read-back of a direct read flushes that range first.
    '        if [ -n "$dio" ] && (( a % 4096 == 0 && b % 4096 == 0 )); then wf=seek_bytes,direct; else wf=seek_bytes; fi',
    `        dd of=${d} bs="$b" count=1 iflag=fullblock seek="$a" oflag=$wf conv=notrunc status=none`,
    '        mark D "$a" "$b"',
    "        n=$(( n + 1 )); data=$(( data + b )); end=$(( a + b )) ;;",
    "      Z)",
    `        [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] && (( b > 0 && a >= end )) || ${bad("malformed zero header")}`,
    '        hole "$end" $(( a + b - end )); end=$(( a + b )) ;;',
    ...(spec.incremental ? incrementalCases(d, bad, spec.incremental.scratch) : []),
    `      E) [[ $a =~ ^[0-9]+$ ]] && (( a >= end )) || ${bad("malformed end mark")}; total=$a; break ;;`,
    `      *) ${bad("malformed extent stream")} ;;`,
    "    esac",
    "  done",
    `  [ -n "$total" ] || { echo "hetznix: the image data ended early (no end mark after $data bytes in $n runs)" >&2; exit ${EXIT_SIZE_MISMATCH}; }`,
    `  if IFS= read -r -n 1 _; then ${bad("data after the end mark")}; fi`,
    '  if (( total > end )); then hole "$end" $(( total - end )); fi',
    "  flushmarks",
    ...(spec.incremental
      ? [
          `  if (( ${String(spec.incremental.clearTo)} > total )); then zerorange "$total" $(( ${String(spec.incremental.clearTo)} - total )) || true; fi`,
          ...(spec.incremental.discardRest
            ? [`  blkdiscard -o $(( (total + 4095) / 4096 * 4096 )) ${d} 2>/dev/null || true`]
            : []),
        ]
      : []),
    '  echo "$total $n $data" > "$work/written"',
    "}",
    'read -r total n data < "$work/written"',
  ];
  if (spec.expectedBytes !== undefined) {
    const e = String(spec.expectedBytes);
    lines.push(
      `if [ "$total" != ${e} ]; then echo "hetznix: received an image of $total bytes, expected ${e} (truncated?)" >&2; exit ${EXIT_SIZE_MISMATCH}; fi`,
    );
  }
  lines.push(
    "sync",
    `echo ${WRITTEN_MARK}`,
    "exec 3>&-",
    'for p in $pids; do wait "$p"; done',
    "pids=",
    'back=$(cat "$work/back-bytes")',
    'if [ -n "$dio" ]; then direct=yes; else direct=no; fi',
    "if [ $zeroout = yes ]; then holes=zeroed; else holes=read-back; fi",
    `[ "$back" = "$total" ] || { echo "hetznix: read back $back bytes of $total" >&2; exit 1; }`,
    'disk_sha=$(tr -d " \\n" < "$work/sha")',
    'echo "HETZNIX-RESULT disk-sha256=$disk_sha disk-bytes=$total data-bytes=$data extents=$n hash-tool=$hash_tool direct-io=$direct holes=$holes"',
  );
  return lines.join("\n") + "\n";
}

/** Holes of a write onto a discarded disk: zeroed without writing where the device can, else read back. */
function discardedHole(d: string): string[] {
  return [
    "hole() {",
    "  local off=$1 len=$2",
    `  if [ $zeroout = yes ] && (( off % 4096 == 0 && len % 4096 == 0 )) && blkdiscard -z -o "$off" -l "$len" ${d} 2>/dev/null; then`,
    '    echo "Z $off $len" >&3',
    "  else",
    '    echo "R $off $len" >&3',
    "  fi",
    "}",
  ];
}

/** Bytes the rescue system's download (curl) has read so far, from /proc/PID/io; prints nothing if none runs. */
export function downloadProgressScript(): string {
  return `p=$(pgrep -o -x curl) && awk '/^rchar:/ {print "HETZNIX-RESULT rchar=" $2}' /proc/$p/io || true\n`;
}
