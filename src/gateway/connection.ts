// One client connection as the gateway sees it: its transport, login state,
// identity and liveness, and the tables that find connections (by device, by
// watched user). Pure state plus small helpers; the protocol flow is in
// login.ts (the handshake), inbound.ts and downlink.ts.
import type { ConnectionOrder } from './order.js';
import type { Frame } from '../protocol/index.js';
import type { Transport } from './transport.js';
import { TokenBucket } from './rate-limit.js';

export type ConnectionState = 'awaiting-login' | 'logging-in' | 'open' | 'closed';

const NO_ONE: ReadonlySet<string> = new Set();

export class Connection {
  state: ConnectionState = 'awaiting-login';
  userId = '';
  deviceId = '';
  platform = '';
  /** Issue time of the token this connection logged in with (revocations cut by it). */
  tokenIssuedAtMs = 0;
  /** A revocation covering this connection's token arrived while it was logging in. */
  revokedWhileLoggingIn = false;
  lastSeenMs: number;
  readonly openedAtMs: number;
  readonly bucket: TokenBucket;
  /**
   * When this connection was last slowed by its frame rate (RATE_LIMITED) and
   * by its user's message rate (USER_RATE_LIMITED). A notice goes out when an
   * episode starts: the first throttling after a quiet second.
   */
  throttledAtMs = -Infinity;
  userThrottledAtMs = -Infinity;
  /** PushAcks waiting to go up, the highest per conversation (see Inbound.flushAcks). */
  pendingAcks: Map<string, Frame> | undefined;
  /** Its requests in order across services, once it sent one (order.ts; a bus that splits services only). */
  order: ConnectionOrder | undefined;
  /** A request for a service thought down, and those sent after it, while that service is looked at again (Inbound.forward). */
  rechecking: Frame[] | undefined;
  /**
   * Per partition, the last of its publishes under way and whether it went
   * through (a bus whose publish can fail after a later one succeeded: see
   * Bus.publishInTurn).
   */
  publishing: Map<string, Promise<boolean>> | undefined;
  /** Per partition, the request whose publish failed, and when (Inbound.publish refuses the later ones until it comes again). */
  publishFailed: Map<string, { requestId: string; atMs: number }> | undefined;
  /** Users whose presence this connection watches (most watch nobody: one shared empty set until they do). */
  watching: ReadonlySet<string> = NO_ONE;
  /** When `watching` was last set (logic checked it then). */
  watchedAtMs = 0;

  constructor(
    readonly id: number,
    readonly transport: Transport,
    now: number,
    ratePerSecond: number,
    rateBurst: number,
  ) {
    this.openedAtMs = now;
    this.lastSeenMs = now;
    this.bucket = new TokenBucket(ratePerSecond, rateBurst, now);
  }
}

/** Local session table: user → device → connection. */
export class SessionTable {
  private readonly byUser = new Map<string, Map<string, Connection>>();
  /** Told when a user's first connection is added (true) and its last removed (false). */
  onUser: ((userId: string, here: boolean) => void) | undefined;

  get(userId: string, deviceId: string): Connection | undefined {
    return this.byUser.get(userId)?.get(deviceId);
  }

  has(userId: string): boolean {
    return this.byUser.has(userId);
  }

  devices(userId: string): Iterable<Connection> {
    return this.byUser.get(userId)?.values() ?? [];
  }

  /** Add a connection; returns the one it replaces for the same device, if any. */
  add(conn: Connection): Connection | undefined {
    let devices = this.byUser.get(conn.userId);
    if (!devices) {
      devices = new Map();
      this.byUser.set(conn.userId, devices);
      this.onUser?.(conn.userId, true);
    }
    const previous = devices.get(conn.deviceId);
    devices.set(conn.deviceId, conn);
    return previous === conn ? undefined : previous;
  }

  /** Remove a connection if it is still the one registered for its device. */
  remove(conn: Connection): boolean {
    const devices = this.byUser.get(conn.userId);
    if (!devices || devices.get(conn.deviceId) !== conn) return false;
    devices.delete(conn.deviceId);
    if (devices.size === 0) {
      this.byUser.delete(conn.userId);
      this.onUser?.(conn.userId, false);
    }
    return true;
  }

  get users(): number {
    return this.byUser.size;
  }

  /** Every user with a connection here. */
  userIds(): Iterable<string> {
    return this.byUser.keys();
  }
}

/** Presence watchers: user → local connections subscribed to them. */
export class PresenceWatchers {
  private readonly byUser = new Map<string, Set<Connection>>();
  /** Told which users this node starts watching (its first connection watching them) and stops watching (its last). */
  onChange: ((started: string[], stopped: string[]) => void) | undefined;

  /** The connections watching this user, if any. */
  of(userId: string): ReadonlySet<Connection> | undefined {
    return this.byUser.get(userId);
  }

  /** Replace whom this connection watches ([] when it closes). */
  set(conn: Connection, userIds: readonly string[]): void {
    const next = new Set(userIds);
    const touched = this.onChange ? [...new Set([...conn.watching, ...next])] : [];
    const had = touched.map((u) => this.byUser.has(u));
    for (const u of conn.watching) {
      const set = this.byUser.get(u);
      set?.delete(conn);
      if (set && set.size === 0) this.byUser.delete(u);
    }
    conn.watching = next;
    conn.watchedAtMs = Date.now();
    for (const u of conn.watching) {
      let set = this.byUser.get(u);
      if (!set) {
        set = new Set();
        this.byUser.set(u, set);
      }
      set.add(conn);
    }
    if (!this.onChange) return;
    const started: string[] = [];
    const stopped: string[] = [];
    touched.forEach((u, i) => {
      const has = this.byUser.has(u);
      if (has && !had[i]) started.push(u);
      else if (!has && had[i]) stopped.push(u);
    });
    if (started.length > 0 || stopped.length > 0) this.onChange(started, stopped);
  }

  /** Every user some connection here watches. */
  watched(): string[] {
    return [...this.byUser.keys()];
  }
}
