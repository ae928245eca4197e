// The ledger: what was acked against what was received, so every run counts
// lost and duplicated messages instead of trusting the system under test.
// A payload carries its sender's global index, the sender's message number
// and the time it was due (µs on the machine's monotonic clock, which every
// process shares), padded to the scenario's message size.

/** Microseconds on CLOCK_MONOTONIC: comparable across the processes of one machine. */
export function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** A message's ledger key: sender index and the sender's message number (< 2^20 per sender per run). */
export function msgKey(sender: number, k: number): number {
  return sender * 1_048_576 + k;
}

export function senderOf(key: number): number {
  return Math.floor(key / 1_048_576);
}

export function makePayload(sender: number, k: number, dueUs: number, bytes: number): string {
  const head = `${sender}:${k}:${dueUs}:`;
  return head.length >= bytes ? head : head + 'x'.repeat(bytes - head.length);
}

export function parsePayload(text: string): { sender: number; k: number; dueUs: number } | undefined {
  const a = text.indexOf(':');
  const b = text.indexOf(':', a + 1);
  const c = text.indexOf(':', b + 1);
  if (a < 0 || b < 0 || c < 0) return undefined;
  return { sender: Number(text.slice(0, a)), k: Number(text.slice(a + 1, b)), dueUs: Number(text.slice(b + 1, c)) };
}

/**
 * Latencies in log-spaced buckets (1% wide), so load processes can add their
 * histograms together and percentiles stay within 1%.
 */
export class LogHistogram {
  private static readonly BASE = Math.log(1.01);
  counts = new Map<number, number>();
  total = 0;

  record(us: number): void {
    const b = us <= 1 ? 0 : Math.ceil(Math.log(us) / LogHistogram.BASE);
    this.counts.set(b, (this.counts.get(b) ?? 0) + 1);
    this.total++;
  }

  merge(entries: [number, number][]): void {
    for (const [b, n] of entries) {
      this.counts.set(b, (this.counts.get(b) ?? 0) + n);
      this.total += n;
    }
  }

  entries(): [number, number][] {
    return [...this.counts];
  }

  /** The p-th percentile (0-100) in µs; NaN when empty. */
  percentile(p: number): number {
    if (this.total === 0) return NaN;
    const rank = Math.ceil((p / 100) * this.total);
    let seen = 0;
    for (const b of [...this.counts.keys()].sort((x, y) => x - y)) {
      seen += this.counts.get(b)!;
      if (seen >= rank) return Math.exp(b * LogHistogram.BASE);
    }
    return NaN;
  }
}

/** Exact percentile of a list (0-100). */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export function median(values: number[]): number {
  return percentile(values, 50);
}

/** Which k's of one sender a recipient has seen: a growable bitset. */
export class Seen {
  private bits = new Uint8Array(64);

  /** Marks k; false when it was already marked (a duplicate). */
  mark(k: number): boolean {
    const byte = k >> 3;
    if (byte >= this.bits.length) {
      const grown = new Uint8Array(Math.max(byte + 1, this.bits.length * 2));
      grown.set(this.bits);
      this.bits = grown;
    }
    const bit = 1 << (k & 7);
    if (this.bits[byte]! & bit) return false;
    this.bits[byte]! |= bit;
    return true;
  }
}
