// Token bucket per connection. A connection over its rate is not dropped and
// loses nothing: the gateway stops reading from it until the bucket refills,
// so a flood slows the flooder alone and per-device order is kept.

export class TokenBucket {
  private tokens: number;
  private lastMs: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.lastMs = now;
  }

  /**
   * Charge one token (the balance may go negative: the frame is handled
   * anyway). Returns 0 when the balance stayed non-negative, else how many
   * milliseconds reading must pause until the debt is paid.
   */
  take(now: number): number {
    this.refill(now);
    this.tokens -= 1;
    if (this.tokens >= 0) return 0;
    return Math.ceil((-this.tokens * 1000) / this.ratePerSecond);
  }

  private refill(now: number): void {
    const elapsed = now - this.lastMs;
    if (elapsed <= 0) return;
    this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerSecond) / 1000);
    this.lastMs = now;
  }
}
