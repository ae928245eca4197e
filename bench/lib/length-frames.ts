// The raw-net baseline's framing (4-byte big-endian length, then the body),
// shared by its server and its load client. Kept apart from both so the
// server process loads no client code.

/** Largest body either side accepts. */
export const MAX_BODY = 1 << 20;

/**
 * Splits a byte stream into bodies. `push` calls `onBody` for each complete
 * one and returns false on a bad length or when `onBody` refuses a body (the
 * caller closes the connection); a partial frame is kept for the next chunk.
 */
export class LengthFrames {
  /** Bytes of an incomplete frame carried over from the previous chunk. */
  private rest: Buffer | null = null;

  push(chunk: Buffer, onBody: (body: Buffer) => boolean, stopped: () => boolean): boolean {
    const data = this.rest === null ? chunk : Buffer.concat([this.rest, chunk]);
    this.rest = null;
    const end = data.length;
    let off = 0;
    while (end - off >= 4) {
      const len = data.readUInt32BE(off);
      if (len === 0 || len > MAX_BODY) return false;
      if (end - off - 4 < len) break;
      const body = data.subarray(off + 4, off + 4 + len);
      off += 4 + len;
      if (!onBody(body)) return false;
      if (stopped()) return true;
    }
    // Copy the tail so a partial frame does not pin the whole chunk.
    if (off < end) this.rest = Buffer.from(data.subarray(off));
    return true;
  }
}
