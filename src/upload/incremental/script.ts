/**
 * The rescue side of an incremental write's copy phase: one perl process executes every copy run of the plan on the
 * disk, in the plan's order (plan.ts), each like memmove (backwards when source and destination overlap and the data
 * moves up), 1 MiB at a time, then the disk's buffers are flushed. The list arrives at the start of the extent stream
 * (`C <bytes>` and that many bytes of `src dst length` lines, in bytes); see extentWriteScript in ../rescue.ts, which
 * also takes this module's bash for the incremental frames (C, K) and for zeroing the gaps.
 */
import { shellQuote } from "../../run/remote.js";
import { DELTA_BLOCK, type CopyRun } from "./plan.js";

/** What the script prints on stdout once every copy is done and flushed. */
export const COPIED_MARK = "HETZNIX-COPIED";

const COPY_PERL = `
use strict;
my ($dev, $list) = @ARGV;
open(my $d, "+<:raw", $dev) or die "hetznix: cannot open $dev: $!\\n";
open(my $l, "<", $list) or die "hetznix: cannot open the copy list: $!\\n";
my $chunk = 1 << 20; my ($runs, $bytes) = (0, 0); my $buf;
sub rd { my ($off, $len) = @_; sysseek($d, $off, 0) or die "hetznix: seek: $!\\n"; my $got = 0;
  while ($got < $len) { my $r = sysread($d, $buf, $len - $got, $got); die "hetznix: read at $off: " . (defined $r ? "end of device" : $!) . "\\n" unless $r; $got += $r; } }
sub wr { my ($off, $len) = @_; sysseek($d, $off, 0) or die "hetznix: seek: $!\\n"; my $put = 0;
  while ($put < $len) { my $w = syswrite($d, $buf, $len - $put, $put); die "hetznix: write at $off: $!\\n" unless $w; $put += $w; } }
while (my $line = <$l>) {
  my ($s, $t, $n) = split(" ", $line);
  die "hetznix: malformed copy line\\n" unless defined $n && "$s $t $n" =~ /^\\d+ \\d+ \\d+$/;
  if ($t > $s && $t < $s + $n) {
    my $left = $n;
    while ($left > 0) { my $c = $left > $chunk ? $chunk : $left; $left -= $c; rd($s + $left, $c); wr($t + $left, $c); }
  } else {
    my $done = 0;
    while ($done < $n) { my $c = $n - $done > $chunk ? $chunk : $n - $done; rd($s + $done, $c); wr($t + $done, $c); $done += $c; }
  }
  $runs++; $bytes += $n;
}
close($d) or die "hetznix: closing $dev: $!\\n";
print STDERR "hetznix: copied $bytes bytes in $runs run(s)\\n";`;

/** The copy list as the stream carries it: one `src dst length` line (bytes) per run, in execution order. */
export function copyList(copies: readonly CopyRun[]): Buffer {
  return Buffer.from(
    copies.map((c) => `${c.src * DELTA_BLOCK} ${c.dst * DELTA_BLOCK} ${c.count * DELTA_BLOCK}\n`).join(""),
    "latin1",
  );
}

/** bash lines: run the copy list in `listFile` on `device` (a shell word, already quoted or a variable). */
export function copyCommand(device: string, listFile: string): string {
  return `perl -e ${shellQuote(COPY_PERL)} ${device} ${listFile}`;
}

/**
 * Holes of an incremental write: the base's data may be there, so they are zeroed, with BLKZEROOUT (zeros by the
 * kernel's guarantee, hashed as such) or else by writing zeros (then read back).
 */
export function incrementalHole(d: string): string[] {
  return [
    "zerorange() {",
    "  local off=$1 len=$2",
    `  if (( off % 4096 == 0 && len % 4096 == 0 )) && blkdiscard -z -o "$off" -l "$len" ${d} 2>/dev/null; then return 0; fi`,
    `  head -c "$len" /dev/zero | dd of=${d} bs=1M iflag=fullblock oflag=seek_bytes seek="$off" conv=notrunc status=none`,
    "  return 1",
    "}",
    "hole() {",
    '  if zerorange "$1" "$2"; then flushmarks; echo "Z $1 $2" >&3; else flushdev; mark R "$1" "$2"; fi',
    "}",
  ];
}

/** The writer's cases for an incremental write: the copy list (first), and blocks kept in place. */
export function incrementalCases(
  d: string,
  bad: (what: string) => string,
  scratch: { offset: number; length: number } | undefined,
): string[] {
  return [
    "      C)",
    `        [[ $a =~ ^[0-9]+$ ]] && (( end == 0 && n == 0 )) && [ -z "\${copied:-}" ] || ${bad("malformed copy list header")}`,
    '        if (( a > 0 )); then dd of="$work/copies" bs="$a" count=1 iflag=fullblock status=none; fi',
    "        if (( a > 0 )); then " + copyCommand(d, '"$work/copies"') + "; fi",
    ...(scratch ? [`        zerorange ${String(scratch.offset)} ${String(scratch.length)} || true`] : []),
    "        flushdev; copied=yes",
    `        echo ${COPIED_MARK} ;;`,
    "      K)",
    `        [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] && (( b > 0 && a >= end )) || ${bad("malformed keep header")}`,
    '        if (( a > end )); then hole "$end" $(( a - end )); fi',
    '        mark R "$a" "$b"; end=$(( a + b )) ;;',
  ];
}

/**
 * `mark KIND OFFSET LENGTH`: a range for the reader to read back, merged with the pending one when adjacent (up to
 * 64 MiB); `flushmarks` passes the pending range on (before a zeroed range, and at the end).
 */
export function incrementalMarks(): string[] {
  return [
    "pend_off=0 pend_len=0",
    "flushmarks() {",
    '  if (( pend_len > 0 )); then echo "R $pend_off $pend_len" >&3; fi',
    "  pend_len=0",
    "}",
    "mark() {",
    "  if (( pend_len > 0 && pend_off + pend_len == $2 && pend_len + $3 <= 67108864 )); then",
    "    pend_len=$(( pend_len + $3 ))",
    "  else",
    "    flushmarks; pend_off=$2 pend_len=$3",
    "  fi",
    "}",
  ];
}
