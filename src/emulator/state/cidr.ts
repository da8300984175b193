/** IPv4 networks in CIDR notation, as integers: parsing, containment, overlap. */
export interface Cidr {
  base: number;
  bits: number;
}

export function toInt(ip: string): number | undefined {
  const parts = ip.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return undefined;
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

export function toIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join(".");
}

export function parseCidr(text: string): Cidr | undefined {
  const [ip = "", bits, more] = text.split("/");
  const base = toInt(ip);
  if (base === undefined || more !== undefined || bits === undefined || !/^\d{1,2}$/.test(bits))
    return undefined;
  const b = Number(bits);
  if (b > 32 || base % 2 ** (32 - b) !== 0) return undefined;
  return { base, bits: b };
}

export function size(c: Cidr): number {
  return 2 ** (32 - c.bits);
}

export function within(inner: Cidr, outer: Cidr): boolean {
  return (
    inner.bits >= outer.bits &&
    inner.base >= outer.base &&
    inner.base + size(inner) <= outer.base + size(outer)
  );
}

export function contains(c: Cidr, ip: number): boolean {
  return ip >= c.base && ip < c.base + size(c);
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  return a.base < b.base + size(b) && b.base < a.base + size(a);
}
