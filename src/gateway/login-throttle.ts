// Failed logins, counted only under what a client cannot forge. A token is
// verified first (HS256: microseconds), then:
//   - one that does not verify (forged, garbage, missing) counts against its
//     client address alone, whatever user it claims;
//   - one that verifies but fails (expired, revoked) counts against its
//     address and its user, who is known for sure.
// A key that failed `limit` times within a minute has those logins refused
// (LOGIN_THROTTLED) until that minute is over. So an attacker sending tokens
// that claim a victim throttles only its own address's forged tokens: the
// victim's valid token, from anywhere (the same NAT included), still logs in;
// and a client with expired tokens behind an office address or a proxy does
// not lock out the other users there. Per gateway, in memory: spread over N
// gateways, N times the budget.
import { unverifiedClaims } from '../auth/tokens.js';

const WINDOW_MS = 60_000;
/** Keys remembered at most; past it the oldest are forgotten first (an attacker with many addresses cannot grow this without bound). */
const MAX_KEYS = 100_000;

/** The key of logins from this address whose token did not verify. */
export function forgedKey(address: string): string {
  return `a|${address}`;
}

/** The key of logins of this user from this address whose token verified. */
export function userKey(address: string, userId: string): string {
  return `u|${address}|${userId}`;
}

/**
 * The user of a token whose signature verified but that was refused before
 * its claims were returned (TokenService.verify throws TOKEN_EXPIRED only
 * after the signature checked out). Empty when it cannot be read.
 */
export function verifiedSubject(token: string): string {
  const sub = unverifiedClaims(token)?.sub;
  return typeof sub === 'string' ? sub.slice(0, 64) : '';
}

export class LoginThrottle {
  private readonly failures = new Map<string, { sinceMs: number; count: number }>();

  constructor(
    private readonly limit: number,
    private readonly maxKeys = MAX_KEYS,
  ) {}

  /** True when a login under this key may be tried now. */
  allowed(key: string, now: number): boolean {
    const entry = this.failures.get(key);
    if (!entry) return true;
    if (now - entry.sinceMs >= WINDOW_MS) {
      this.failures.delete(key);
      return true;
    }
    return entry.count < this.limit;
  }

  /** Count a failed login under this key. */
  failed(key: string, now: number): void {
    const entry = this.failures.get(key);
    if (entry && now - entry.sinceMs < WINDOW_MS) {
      entry.count++;
      return;
    }
    this.failures.delete(key); // a new minute: to the back of the insertion order
    // Keys are in the order their minutes began: the first is the oldest (O(1), no scan).
    if (this.failures.size >= this.maxKeys) this.failures.delete(this.failures.keys().next().value!);
    this.failures.set(key, { sinceMs: now, count: 1 });
  }

  /** Forget keys whose minute is over (called from the gateway's sweep): the oldest first, up to the first still counting. */
  sweep(now: number): void {
    for (const [key, entry] of this.failures) {
      if (now - entry.sinceMs < WINDOW_MS) return;
      this.failures.delete(key);
    }
  }

  get size(): number {
    return this.failures.size;
  }
}
