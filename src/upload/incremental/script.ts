/**
 * The rescue side of an incremental write's copy phase: one perl process executes every copy run of the plan on the
 * disk, in the plan's order (plan.ts), each like memmove (backwards when source and destination overlap and the data
 * moves up), 1 MiB at a time, then the disk's buffers are flushed. The list arrives at the start of the extent stream
 * (`C <bytes>` and that many bytes of `src dst length` lines, in bytes); see extentWriteScript in ../rescue.ts.
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
