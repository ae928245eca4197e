// The gateway's limits on what clients may do: frames per second per
// connection, messages per second per user (all its connections here), and
// failed logins (per address for forged tokens, per address and user for
// verified ones: login-throttle.ts). Over a rate, nothing is refused: reading
// pauses (the caller's job, for as long as charge() says) and one notice per
// throttling episode tells the client why. Also who a client is for the
// per-address limits (TrustedProxies).
import { BlockList, isIP } from 'node:net';
import { ErrorCode } from '../protocol/index.js';
import type { LimitName } from '../observability/metrics.js';
import type { Connection } from './connection.js';
import { LoginThrottle, forgedKey, userKey } from './login-throttle.js';
import type { GatewayOptions } from './options.js';
import { TokenBucket } from './rate-limit.js';
import { normalizeAddress } from './transport.js';

/** Error codes that mean a configured limit was hit (longlink_limit_breaches_total). */
const LIMIT_OF = new Map<ErrorCode, LimitName>([
  [ErrorCode.FRAME_TOO_LARGE, 'frame_size'],
  [ErrorCode.RATE_LIMITED, 'rate'],
  [ErrorCode.USER_RATE_LIMITED, 'user_rate'],
  [ErrorCode.TOO_MANY_CONNECTIONS, 'connections_per_user'],
  [ErrorCode.LOGIN_THROTTLED, 'login_attempts'],
]);

/**
 * Limits counted in longlink_limit_breaches_total besides those of LIMIT_OF:
 * the connection caps, both refused with CONNECTION_LIMITED.
 * (src/observability/metrics.ts LIMITS should list them, so they show as 0 before the first breach.)
 */
export type ConnectionLimitName = 'connections_per_address' | 'pending_logins';

/** The limit an error code reports as breached, if it is one. */
export function limitOf(code: ErrorCode): LimitName | undefined {
  return LIMIT_OF.get(code);
}

/**
 * A throttling episode ends after this long without throttling; the next one
 * gets a new notice. (Not "the first frame within the rate": a resume timer
 * that fires late refills the bucket and would start a new episode mid-flood.)
 */
const THROTTLE_EPISODE_GAP_MS = 1000;

/** A user's message bucket outlives its last connection here by this long (long enough to refill it). */
const USER_BUCKET_IDLE_MS = 10_000;

/** A notice that a connection is being slowed (sent as a non-fatal Error frame). */
export type ThrottleNotice = (conn: Connection, code: ErrorCode, message: string) => void;

export class Limits {
  /** Send frames per user (all its connections here): user → bucket, kept a while after its last connection (a reconnect gets no fresh burst). */
  private readonly userBuckets = new Map<string, { bucket: TokenBucket; lastMs: number }>();
  /** Failed logins: forged per address, verified per address and user. */
  private readonly loginThrottle: LoginThrottle;

  constructor(
    private readonly options: Pick<GatewayOptions, 'ratePerSecond' | 'userMessagesPerSecond' | 'loginAttemptsPerMinute'>,
    private readonly notice: ThrottleNotice,
  ) {
    this.loginThrottle = new LoginThrottle(options.loginAttemptsPerMinute);
  }

  private get userMessagesPerSecond(): number {
    return this.options.userMessagesPerSecond;
  }

  /**
   * Charge one frame of a logged-in connection: to its own bucket and, for a
   * message (`send`), to its user's. Returns how many milliseconds reading
   * must pause (0: none); the frame itself is handled either way.
   */
  charge(conn: Connection, isSend: boolean, now: number): number {
    let wait = conn.bucket.take(now);
    if (wait > 0) {
      if (now - conn.throttledAtMs > THROTTLE_EPISODE_GAP_MS) {
        this.notice(conn, ErrorCode.RATE_LIMITED, `over ${this.options.ratePerSecond} frames/s; reading paused`);
      }
      conn.throttledAtMs = now;
    }
    if (isSend) {
      // The user's messages per second, all its connections here together: over it, this
      // connection stops reading until the user's bucket refills (nothing is refused or lost).
      const userWait = this.userBucket(conn.userId, now).take(now);
      if (userWait > 0) {
        if (now - conn.userThrottledAtMs > THROTTLE_EPISODE_GAP_MS) {
          this.notice(conn, ErrorCode.USER_RATE_LIMITED, `over ${this.userMessagesPerSecond} messages/s for this user; reading paused`);
        }
        conn.userThrottledAtMs = now;
      }
      wait = Math.max(wait, userWait);
    }
    return wait;
  }

  private userBucket(userId: string, now: number): TokenBucket {
    let entry = this.userBuckets.get(userId);
    if (!entry) {
      entry = { bucket: new TokenBucket(this.userMessagesPerSecond, this.userMessagesPerSecond * 2, now), lastMs: now };
      this.userBuckets.set(userId, entry);
    }
    entry.lastMs = now;
    return entry.bucket;
  }

  /** Where a login from this client address counts its failure when its token does not verify (forged, garbage). */
  forgedLoginKey(clientAddress: string): string {
    return forgedKey(clientAddress);
  }

  /** Where a login of this (verified) user from this client address counts its failure (expired, revoked). */
  userLoginKey(clientAddress: string, userId: string): string {
    return userKey(clientAddress, userId);
  }

  /** True when a login under this key may be tried now. */
  loginAllowed(key: string, now: number): boolean {
    return this.loginThrottle.allowed(key, now);
  }

  /** Count a failed login under this key. */
  loginFailed(key: string, now: number): void {
    this.loginThrottle.failed(key, now);
  }

  /** Forget idle login counters, and the buckets of users gone from here a while (`connected`: the user still has a connection here). */
  sweep(now: number, connected: (userId: string) => boolean): void {
    this.loginThrottle.sweep(now);
    for (const [userId, entry] of this.userBuckets) {
      if (now - entry.lastMs > USER_BUCKET_IDLE_MS && !connected(userId)) this.userBuckets.delete(userId);
    }
  }
}

/**
 * Who a client is, for the per-address limits (login throttle, connections
 * per address): its socket's remote address, or, when that is a configured
 * trusted proxy and the request says X-Forwarded-For (WebSocket upgrades),
 * the right-most forwarded address that is not itself a trusted proxy. A
 * client may write anything into the header; only what the trusted proxies
 * appended (the right end of it) is believed.
 */
export class TrustedProxies {
  private readonly list = new BlockList();
  private readonly none: boolean;

  /** `entries`: IP addresses and CIDR ranges (validated by the configuration). */
  constructor(entries: readonly string[]) {
    this.none = entries.length === 0;
    for (const entry of entries) {
      const [address, prefix] = entry.split('/');
      const family = isIP(address!) === 6 ? 'ipv6' : 'ipv4';
      if (prefix === undefined) this.list.addAddress(normalizeAddress(address), family);
      else this.list.addSubnet(address!, Number(prefix), family);
    }
  }

  /** True when this (normalized) address is a trusted proxy. */
  has(address: string): boolean {
    const family = isIP(address);
    return family !== 0 && this.list.check(address, family === 4 ? 'ipv4' : 'ipv6');
  }

  /** The client address of a connection from `remoteAddress` that came with this X-Forwarded-For. */
  clientAddress(remoteAddress: string | undefined, forwardedFor?: string | string[]): string {
    const peer = normalizeAddress(remoteAddress);
    if (this.none || forwardedFor === undefined || !this.has(peer)) return peer;
    const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor).split(',');
    let client = peer;
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = normalizeAddress(withoutPort(hops[i]!.trim()));
      if (isIP(hop) === 0) break; // not an address: the last hop we believe is as far as we know
      client = hop;
      if (!this.has(hop)) break;
    }
    return client;
  }
}

/** "1.2.3.4:80" → "1.2.3.4", "[::1]:80" → "::1"; a bare IPv6 address stays as it is. */
function withoutPort(hop: string): string {
  if (hop.startsWith('[')) return hop.slice(1, hop.indexOf(']') > 0 ? hop.indexOf(']') : undefined);
  const colon = hop.indexOf(':');
  return colon > 0 && colon === hop.lastIndexOf(':') ? hop.slice(0, colon) : hop;
}
