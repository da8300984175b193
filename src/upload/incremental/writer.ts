/**
 * The writer of an incremental write in the rescue system: one perl process reads the whole decompressed extent stream
 * (C, D, K, Z, E frames; see framer.ts and ../extents.ts) and puts every data run on the disk with sysseek/syswrite,
 * instead of one dd per run (a delta has thousands of small runs, and a process per run made the rescue side, not the
 * link, the limit). It tells the reader (fd 3) what it did in disk order, exactly as the bash writer did: ranges to
 * read back (`R`, adjacent ones merged up to 64 MiB) and ranges zeroed with BLKZEROOUT (`Z`, zeros by the kernel's
 * guarantee). Writes go through the page cache: the reader's direct reads write a range back before reading it (the
 * kernel does that for O_DIRECT reads), and its unaligned reads flush the device first, so what is hashed is what
 * the device holds.
 */
import { shellQuote } from "../../run/remote.js";
import { COPIED_MARK, COPY_PERL } from "./script.js";

/** BLKZEROOUT, _IO(0x12, 127): zero a byte range of a block device (without writing, where the device can). */
const BLKZEROOUT = 0x127f;

function writerPerl(badStream: number, sizeMismatch: number): string {
  return `
use strict;
my ($dev, $work, $clear, $discard_rest, $scr_off, $scr_len, $copy) = @ARGV;
$| = 1; binmode(STDIN);
open(my $d, "+<:raw", $dev) or die "hetznix: cannot open $dev: $!\\n";
open(my $m, ">&=", 3) or die "hetznix: no channel to the reader: $!\\n";
select((select($m), $| = 1)[0]);
sub bad { print STDERR "hetznix: $_[0]\\n"; exit ${String(badStream)}; }
my ($p_off, $p_len, $n, $data, $end, $copied, $total) = (0, 0, 0, 0, 0, 0, undef);
sub flushmarks { print $m "R $p_off $p_len\\n" if $p_len > 0; $p_len = 0; }
sub mark { my ($o, $l) = @_;
  if ($p_len > 0 && $p_off + $p_len == $o && $p_len + $l <= 67108864) { $p_len += $l; } else { flushmarks(); ($p_off, $p_len) = ($o, $l); } }
sub flushdev { system("sh", "-c", 'sync; blockdev --flushbufs "$1" 2>/dev/null || true', "sh", $dev); }
sub put { my ($off, $buf) = @_; sysseek($d, $off, 0) or die "hetznix: seek: $!\\n"; my ($done, $len) = (0, length($buf));
  while ($done < $len) { my $w = syswrite($d, $buf, $len - $done, $done); die "hetznix: write at $off: $!\\n" unless $w; $done += $w; } }
my $zeros = "\\0" x 1048576;
sub zerorange { my ($off, $len) = @_;
  return 1 if $off % 4096 == 0 && $len % 4096 == 0 && ioctl($d, ${String(BLKZEROOUT)}, pack("QQ", $off, $len));
  for (my $o = 0; $o < $len; $o += 1048576) { my $c = $len - $o < 1048576 ? $len - $o : 1048576; put($off + $o, substr($zeros, 0, $c)); }
  return 0; }
sub hole { my ($off, $len) = @_;
  if (zerorange($off, $len)) { flushmarks(); print $m "Z $off $len\\n"; } else { flushdev(); mark($off, $len); } }
sub early { print STDERR "hetznix: the image data ended early (no end mark after $data bytes in $n runs)\\n"; exit ${String(sizeMismatch)}; }
sub take { my ($len) = @_; my $buf = "";
  while (length($buf) < $len) { my $r = read(STDIN, $buf, $len - length($buf), length($buf)); die "hetznix: reading the stream: $!\\n" unless defined $r; early() if $r == 0; }
  return $buf; }
sub num { return defined $_[0] && $_[0] =~ /^[0-9]+\\z/; }
while (defined(my $line = <STDIN>)) {
  last unless $line =~ s/\\n\\z//;
  my ($tag, $x, $y) = split(/ /, $line, 3);
  $tag = "" unless defined $tag;
  if ($tag eq "D") {
    bad("malformed extent header") unless num($x) && num($y) && $y > 0 && $x >= $end;
    hole($end, $x - $end) if $x > $end;
    for (my $o = 0; $o < $y; $o += 4194304) { my $c = $y - $o < 4194304 ? $y - $o : 4194304; put($x + $o, take($c)); }
    mark($x, $y); $n++; $data += $y; $end = $x + $y;
  } elsif ($tag eq "Z") {
    bad("malformed zero header") unless num($x) && num($y) && $y > 0 && $x >= $end;
    hole($end, $x + $y - $end); $end = $x + $y;
  } elsif ($tag eq "K") {
    bad("malformed keep header") unless num($x) && num($y) && $y > 0 && $x >= $end;
    hole($end, $x - $end) if $x > $end;
    mark($x, $y); $end = $x + $y;
  } elsif ($tag eq "C") {
    bad("malformed copy list header") unless num($x) && !defined $y && $end == 0 && $n == 0 && !$copied;
    if ($x > 0) {
      open(my $l, ">", "$work/copies") or die "hetznix: cannot write the copy list: $!\\n";
      print $l take($x); close($l) or die "hetznix: writing the copy list: $!\\n";
      system("perl", "-e", $copy, $dev, "$work/copies");
      exit(($? >> 8) || 1) if $? != 0;
    }
    zerorange($scr_off, $scr_len) if $scr_len > 0;
    flushdev(); $copied = 1;
    print "${COPIED_MARK}\\n";
  } elsif ($tag eq "E") {
    bad("malformed end mark") unless num($x) && !defined $y && $x >= $end;
    $total = $x; last;
  } else {
    bad("malformed extent stream");
  }
}
early() unless defined $total;
bad("data after the end mark") if read(STDIN, my $extra, 1);
hole($end, $total - $end) if $total > $end;
flushmarks();
zerorange($total, $clear - $total) if $clear > $total;
system("sh", "-c", 'blkdiscard -o "$1" "$2" 2>/dev/null || true', "sh", int(($total + 4095) / 4096) * 4096, $dev) if $discard_rest;
close($d) or die "hetznix: closing $dev: $!\\n";
close($m);
open(my $w, ">", "$work/written") or die "hetznix: $!\\n";
print $w "$total $n $data\\n"; close($w) or die "hetznix: $!\\n";`;
}

/**
 * A relay in front of the writer that holds up to SPOOL_BYTES of the incoming (compressed) stream in memory: while
 * the copy phase runs, the writer reads nothing, and without it the stream would stop at the pipe and SSH buffers, so
 * the link would idle for the whole copy phase. Bytes pass in order, unchanged; stdin's end ends it.
 */
const SPOOL_PERL = `
use strict; use Fcntl;
my $max = shift; my $buf = ""; my $eof = 0;
binmode(STDIN); binmode(STDOUT);
fcntl(STDOUT, F_SETFL, fcntl(STDOUT, F_GETFL, 0) | O_NONBLOCK) or die "hetznix: spool: $!\\n";
while (!$eof || length($buf) > 0) {
  my ($r, $w) = ("", "");
  vec($r, fileno(STDIN), 1) = 1 if !$eof && length($buf) < $max;
  vec($w, fileno(STDOUT), 1) = 1 if length($buf) > 0;
  my $n = select($r, $w, undef, undef);
  if ($n < 0) { next if $!{EINTR}; die "hetznix: spool: $!\\n"; }
  if (vec($r, fileno(STDIN), 1)) {
    my $got = sysread(STDIN, $buf, 1 << 20, length($buf));
    die "hetznix: spool: reading: $!\\n" unless defined $got;
    $eof = 1 if $got == 0;
  }
  if (vec($w, fileno(STDOUT), 1)) {
    my $put = syswrite(STDOUT, $buf, 1 << 20);
    if (defined $put) { substr($buf, 0, $put) = ""; } elsif (!$!{EAGAIN}) { die "hetznix: spool: writing: $!\\n"; }
  }
}`;

/** Bytes of the incoming stream the spool holds at most (the rescue system's RAM). */
export const SPOOL_BYTES = 128 * 1024 * 1024;

/** bash: the spool relay (stdin to stdout). */
export function spoolCommand(maxBytes = SPOOL_BYTES): string {
  return `perl -e ${shellQuote(SPOOL_PERL)} ${String(maxBytes)}`;
}

export interface IncrementalWriterSpec {
  clearTo: number;
  discardRest?: boolean;
  scratch?: { offset: number; length: number };
  /** Exit status for a malformed stream, and for a stream that ends before its end mark. */
  exitBadStream: number;
  exitSizeMismatch: number;
}

/**
 * The bash command (fed the decompressed stream on stdin, fd 3 open to the reader) that writes an incremental extent
 * stream onto `device` (a shell word), using `$work` for the copy list and writing `$work/written` (`total runs
 * data-bytes`) once done.
 */
export function incrementalWriterCommand(device: string, spec: IncrementalWriterSpec): string {
  return [
    "perl -e",
    shellQuote(writerPerl(spec.exitBadStream, spec.exitSizeMismatch)),
    device,
    '"$work"',
    String(spec.clearTo),
    spec.discardRest ? "1" : "0",
    String(spec.scratch?.offset ?? 0),
    String(spec.scratch?.length ?? 0),
    shellQuote(COPY_PERL),
  ].join(" ");
}
