// Failed logins per client address. An address that failed `limit` times
// within a minute has every login refused (LOGIN_THROTTLED) until that minute
// is over, which makes guessing tokens slow without touching the many honest
// users behind one NAT or office address (their logins succeed and are not
// counted). Per gateway, in memory: an attacker spread over N gateways gets N
// times the budget, which still bounds it.

const WINDOW_MS = 60_000;

export class LoginThrottle {
  private readonly failures = new Map<string, { sinceMs: number; count: number }>();

  constructor(private readonly limit: number) {}

  /** True when this address may try to log in now. */
  allowed(address: string, now: number): boolean {
    const entry = this.failures.get(address);
    if (!entry) return true;
    if (now - entry.sinceMs >= WINDOW_MS) {
      this.failures.delete(address);
      return true;
    }
    return entry.count < this.limit;
  }

  /** Count a failed login (bad, expired or revoked token) from this address. */
  failed(address: string, now: number): void {
    const entry = this.failures.get(address);
    if (!entry || now - entry.sinceMs >= WINDOW_MS) this.failures.set(address, { sinceMs: now, count: 1 });
    else entry.count++;
  }

  /** Forget addresses whose minute is over (called from the gateway's sweep). */
  sweep(now: number): void {
    for (const [address, entry] of this.failures) if (now - entry.sinceMs >= WINDOW_MS) this.failures.delete(address);
  }

  get size(): number {
    return this.failures.size;
  }
}
