/** Reading the disk files behind emulated servers and rescue hosts. */
import { open } from "node:fs/promises";

/** Up to `length` bytes of the file at `offset` (fewer at its end). */
export async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}
