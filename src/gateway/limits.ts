// The gateway's limits on what clients may do: frames per second per
// connection, messages per second per user (all its connections here), and
// failed logins per address and claimed user. Over a rate, nothing is
// refused: reading pauses (the caller's job, for as long as charge() says)
// and one notice per throttling episode tells the client why.
import { ErrorCode } from '../protocol/index.js';
import type { LimitName } from '../observability/metrics.js';
import type { Connection } from './connection.js';
import { LoginThrottle, loginThrottleKey } from './login-throttle.js';
import type { GatewayOptions } from './options.js';
import { TokenBucket } from './rate-limit.js';

/** Error codes that mean a configured limit was hit (longlink_limit_breaches_total). */
const LIMIT_OF = new Map<ErrorCode, LimitName>([
  [ErrorCode.FRAME_TOO_LARGE, 'frame_size'],
  [ErrorCode.RATE_LIMITED, 'rate'],
  [ErrorCode.USER_RATE_LIMITED, 'user_rate'],
  [ErrorCode.TOO_MANY_CONNECTIONS, 'connections_per_user'],
  [ErrorCode.LOGIN_THROTTLED, 'login_attempts'],
]);

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
  /** Failed logins per client address and claimed user. */
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

  /** Where a login from this address with this token counts its failures (see LoginThrottle). */
  loginKey(remoteAddress: string, token: string): string {
    return loginThrottleKey(hostOf(remoteAddress), token);
  }

  /** True when a login under this key may be tried now. */
  loginAllowed(key: string, now: number): boolean {
    return this.loginThrottle.allowed(key, now);
  }

  /** Count a failed login (bad, expired or revoked token) under this key. */
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

/** The host part of a transport's "host:port" remote address (IPv6 hosts keep their colons). */
function hostOf(remoteAddress: string): string {
  const colon = remoteAddress.lastIndexOf(':');
  return colon > 0 ? remoteAddress.slice(0, colon) : remoteAddress;
}
