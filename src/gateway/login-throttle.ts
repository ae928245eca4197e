// Failed logins per client address and claimed user (the token's unverified
// `sub`, or none for garbage). A key that failed `limit` times within a minute
// has its logins refused (LOGIN_THROTTLED) until that minute is over. Keyed by
// the claimed user too, so one client sending bad or expired tokens behind a
// NAT, an office address or a proxy does not lock out the other users there:
// only logins claiming the same user (or garbage) from that address wait.
// Per gateway, in memory: spread over N gateways, N times the budget.

const WINDOW_MS = 60_000;

/** The throttle's key for a login: the address and the user the token claims (not verified here). */
export function loginThrottleKey(address: string, token: string): string {
  let claimed = '';
  try {
    const payload = token.split('.')[1];
    if (payload && payload.length <= 4096) {
      const sub = (JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { sub?: unknown }).sub;
      if (typeof sub === 'string') claimed = sub.slice(0, 64);
    }
  } catch {
    /* garbage: keyed by the address alone */
  }
  return `${address}|${claimed}`;
}

export class LoginThrottle {
  private readonly failures = new Map<string, { sinceMs: number; count: number }>();

  constructor(private readonly limit: number) {}

  /** True when a login under this key (see loginThrottleKey) may be tried now. */
  allowed(key: string, now: number): boolean {
    const entry = this.failures.get(key);
    if (!entry) return true;
    if (now - entry.sinceMs >= WINDOW_MS) {
      this.failures.delete(key);
      return true;
    }
    return entry.count < this.limit;
  }

  /** Count a failed login (bad, expired or revoked token) under this key. */
  failed(key: string, now: number): void {
    const entry = this.failures.get(key);
    if (!entry || now - entry.sinceMs >= WINDOW_MS) this.failures.set(key, { sinceMs: now, count: 1 });
    else entry.count++;
  }

  /** Forget keys whose minute is over (called from the gateway's sweep). */
  sweep(now: number): void {
    for (const [key, entry] of this.failures) if (now - entry.sinceMs >= WINDOW_MS) this.failures.delete(key);
  }
}
