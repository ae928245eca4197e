// The gateway: holds connections, runs the login handshake, heartbeats and
// idle eviction, the local session table, kicks and backpressure. It has no
// business rules: authenticated requests go up the bus to logic, and what
// comes down is written to the connections it names.
//
// This file wires the parts and runs the node's own cycle (start, the
// registry announce, the sweep, stop). The parts, one concern each:
//   listeners.ts  TCP/TLS and WebSocket accept
//   login.ts      the login handshake (awaiting-login → verifying → binding → open / refused)
//   inbound.ts    frames from logged-in clients: limits, ping, PushAcks, up to logic
//   downlink.ts   what comes down the bus: replies, deliveries, kicks, revokes, presence
//   groups.ts     large groups' membership, kept here, and their messages written by it
//   limits.ts     frame and message rates, login throttle
//   hub.ts        the connections and the writes all of them use (send, fail, kick, close)
import type net from 'node:net';
import type tls from 'node:tls';
import type { Server as HttpServer } from 'node:http';
import { GROUP_DELIVER, type Subscription } from '../engines/bus.js';
import { ErrorCode, encodeFrame, makeFrame } from '../protocol/index.js';
import { noGatewayMetrics, type GatewayMetrics } from '../observability/metrics.js';
import { log as rootLog } from '../observability/log.js';
import { Downlink } from './downlink.js';
import { GroupIndex, type GroupIndexStats } from './groups.js';
import { Hub } from './hub.js';
import { ACK_FLUSH_MS, Inbound } from './inbound.js';
import { Limits } from './limits.js';
import { Listeners } from './listeners.js';
import { LoginHandshake } from './login.js';
import { OutFrame } from './transport.js';
import type { GatewayDeps, GatewayOptions } from './options.js';
import type { Connection } from './connection.js';
import type { SessionInfo } from '../engines/sessions.js';

export type { GatewayDeps, GatewayOptions, LoginPolicy } from './options.js';

const log = rootLog.child({ component: 'gateway' });

/** Connections whose sessions are bound again at once after the registry entry was lost. */
const REJOIN_CHUNK = 500;

/** Event.resync: pushes to this connection may have been lost; sync. */
const RESYNC = (): OutFrame => new OutFrame(encodeFrame(makeFrame(0, { case: 'event', value: { body: { case: 'resync', value: {} } } })));

export class Gateway {
  private readonly hub: Hub;
  private readonly limits: Limits;
  private readonly inbound: Inbound;
  private readonly downlink: Downlink;
  private readonly groups: GroupIndex;
  private readonly metrics: GatewayMetrics;
  private readonly listeners: Listeners;
  /** A write of this node's presence watches failed: they are written whole again at the next announce. */
  private watchesStale = false;
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweepEveryMs = 1000;
  private lastSweepMs = 0;
  /** When this process last came back from being held (see sweep): no client is timed out for silence before then. */
  private resumedAtMs = 0;
  private rejoining = false;
  /** A rejoin failed part way: the next announce tries again. */
  private rejoinPending = false;
  /**
   * A rejoin finished: the next announce checks once more that this node's
   * sessions are still bound. A reaper pass that read the registry before
   * our entry came back may drop them after the rejoin looked.
   */
  private rejoinCheck = false;
  private ackTimer: NodeJS.Timeout | undefined;
  private announceTimer: NodeJS.Timeout | undefined;
  private downSub: Subscription | undefined;
  private readonly startedAtMs = Date.now();
  /** Resolves once start() announced this node: logins wait for it (see LoginHandshake). */
  private readonly started: Promise<void>;
  private markStarted: () => void = () => undefined;
  /** The registry accepted an announce of ours at least once. */
  private announced = false;

  constructor(
    private readonly options: GatewayOptions,
    private readonly deps: GatewayDeps,
  ) {
    this.metrics = deps.metrics ?? noGatewayMetrics;
    this.started = new Promise((resolve) => {
      this.markStarted = resolve;
    });
    this.hub = new Hub(options, deps, this.metrics, (conn) => this.inbound.flushAcks(conn));
    this.limits = new Limits(options, (conn, code, message) => this.hub.fail(conn, 0, code, message, false));
    const login = new LoginHandshake(options, deps, this.metrics, this.hub, this.limits, this.started);
    this.inbound = new Inbound(this.hub, this.limits, login, deps, this.metrics);
    this.groups = new GroupIndex({ nodeId: options.nodeId, maxBytes: options.groupIndexMaxBytes }, {
      bus: deps.bus, table: this.hub.table, send: (conn, out) => this.hub.send(conn, out),
    });
    this.hub.table.onUser = (userId, here) => (here ? this.groups.userOnline(userId) : this.groups.userOffline(userId));
    const watches = deps.watches;
    if (watches) {
      // In call order on one client: the last word on a user is the one Redis keeps.
      this.hub.watchers.onChange = (started, stopped) => {
        const failed = (err: unknown) => {
          if (this.hub.stopping) return;
          log.warn({ err }, 'presence watch write failed; written whole again at the next announce');
          this.watchesStale = true;
        };
        if (started.length > 0) watches.set(options.nodeId, started, true).catch(failed);
        if (stopped.length > 0) watches.set(options.nodeId, stopped, false).catch(failed);
      };
    }
    this.downlink = new Downlink(this.hub, { bus: deps.bus, groups: this.groups }, this.metrics, options.presenceWatchTtlMs);
    this.listeners = new Listeners(options, this.hub, (conn, payload) => this.inbound.onPayload(conn, payload));
  }

  get connectionCount(): number {
    return this.hub.conns.size;
  }

  /** The large groups' membership this gateway keeps (groups.ts). */
  groupStats(): GroupIndexStats {
    return this.groups.stats();
  }

  private get nodeTtlMs(): number {
    return this.options.nodeTtlMs;
  }

  /**
   * Start consuming downlink, sweeping for dead connections and refreshing
   * the registry entry. Resolves after the first registry write was tried, so
   * a cluster knows the node before it binds any session.
   */
  async start(): Promise<void> {
    this.downSub = this.deps.bus.consumeDown(this.options.nodeId, (batch) => this.downlink.onDown(batch), {
      // Pushes for this node were trimmed before it read them (it lagged past the stream's bounds): its clients sync.
      onTrimmed: (entries) => {
        log.warn({ entries, connections: this.hub.conns.size }, 'downlink entries were trimmed unread (pushes, kicks or revocations may be lost)');
        void this.rejoin();
      },
    });
    this.sweepEveryMs = Math.max(50, Math.min(1000, Math.floor(this.options.pingIntervalMs / 2)));
    this.lastSweepMs = Date.now();
    this.sweepTimer = setInterval(() => this.sweep(), this.sweepEveryMs);
    this.sweepTimer.unref();
    this.ackTimer = setInterval(() => this.inbound.flushAcks(), ACK_FLUSH_MS);
    this.ackTimer.unref();
    this.announceTimer = setInterval(() => void this.announce(), Math.max(100, Math.floor(this.nodeTtlMs / 3)));
    this.announceTimer.unref();
    await this.announce();
    this.markStarted();
  }

  /**
   * Listen for TCP clients (TLS when `secure` holds a certificate and key: the
   * address becomes tls://); `publicHost` is the host written into the announced address.
   */
  listenTcp(port: number, host: string, publicHost = host, secure?: tls.SecureContextOptions): Promise<net.AddressInfo> {
    return this.listeners.listenTcp(port, host, publicHost, secure);
  }

  /** Serve WebSocket at /ws on an HTTP server (upgrade requests only). */
  attachWebSocket(http: HttpServer, publicWsUrl: string): void {
    this.listeners.attachWebSocket(http, publicWsUrl);
  }

  /** One pass over every connection: login deadlines and heartbeat timeouts; idle login counters are forgotten. */
  private sweep(): void {
    const now = Date.now();
    // A sweep far later than its interval means this process was held (a long
    // pause, SIGSTOP, a stalled VM): what its clients sent meanwhile is still
    // unread in the sockets, so silence is counted from now, not before.
    if (now - this.lastSweepMs > this.sweepEveryMs * 2 + 500) this.resumedAtMs = now;
    this.lastSweepMs = now;
    this.limits.sweep(now, (userId) => this.hub.table.has(userId));
    const silentLimit = this.options.pingIntervalMs * 3;
    for (const conn of this.hub.conns.values()) {
      if (conn.state === 'awaiting-login' || conn.state === 'logging-in') {
        if (now - Math.max(conn.openedAtMs, this.resumedAtMs) > this.options.loginTimeoutMs) {
          this.hub.fail(conn, 0, ErrorCode.LOGIN_TIMEOUT, `no login within ${this.options.loginTimeoutMs} ms`, true);
        }
      } else if (conn.state === 'open' && now - Math.max(conn.lastSeenMs, this.resumedAtMs) > silentLimit) {
        this.hub.fail(conn, 0, ErrorCode.HEARTBEAT_TIMEOUT, `silent for ${silentLimit} ms`, true);
      }
    }
  }

  private async announce(): Promise<void> {
    if (this.hub.stopping) return;
    const ttl = this.nodeTtlMs;
    let wasLive: boolean;
    try {
      wasLive = await this.deps.registry.announce({
        id: this.options.nodeId,
        role: 'gateway',
        tcpUrl: this.listeners.publicTcpUrl,
        wsUrl: this.listeners.publicWsUrl,
        // Its HTTP port (/healthz, /readyz, /metrics) is the WebSocket's.
        httpUrl: this.listeners.publicWsUrl?.replace(/^ws/, 'http').replace(/\/ws$/, ''),
        load: this.hub.conns.size,
        startedAtMs: this.startedAtMs,
        // It keeps large groups' membership: logic may send their messages once per gateway.
        services: [GROUP_DELIVER],
      }, ttl);
    } catch (err) {
      log.warn({ err }, 'registry announce failed');
      return;
    }
    const first = !this.announced;
    this.announced = true;
    // Our entry was gone: it lapsed (our event loop or network was held past
    // the TTL), or Redis lost it. Either way the cluster may have dropped this
    // node's sessions, so pushes for its users went to sync only meanwhile.
    // The connections themselves are fine: their sessions are bound again and
    // each client is told to sync what it missed. Nobody is disconnected.
    if ((!first && !wasLive) || this.rejoinPending) void this.rejoin();
    else if (this.rejoinCheck) void this.rejoin(true);
    else if (this.watchesStale) void this.rewriteWatches();
  }

  /** Write this node's presence watches whole (a write failed, or the cluster may have dropped them). */
  private async rewriteWatches(): Promise<void> {
    if (!this.deps.watches) return;
    this.watchesStale = false;
    try {
      await this.deps.watches.replace(this.options.nodeId, this.hub.watchers.watched());
    } catch (err) {
      log.warn({ err }, 'writing the presence watches failed; trying again at the next announce');
      this.watchesStale = true;
    }
  }

  /**
   * Make every open connection whole again after this node missed part of
   * the cluster (its registry entry lapsed, or its downlink was trimmed
   * unread): each session is bound again unless a revocation covers its token
   * (a revocation announced meanwhile may be among what was missed: the
   * connection is then kicked TOKEN_REVOKED); a device that logged in
   * elsewhere meanwhile keeps that session and this connection is closed as
   * replaced; the others are told to sync (Event.resync). Nobody else is
   * disconnected. `check` (the announce after a rejoin): only the
   * connections whose session is gone meanwhile are bound again and told to
   * sync (see rejoinCheck).
   */
  private async rejoin(check = false): Promise<void> {
    if (this.rejoining) {
      this.rejoinPending = true; // once more after this one, at the next announce
      return;
    }
    this.rejoining = true;
    this.rejoinPending = false;
    this.rejoinCheck = false;
    const open = [...this.hub.conns.values()].filter((c) => c.state === 'open');
    if (!check) {
      log.warn({ connections: open.length }, 'this node missed part of the cluster (registry entry lapsed, or downlink trimmed): binding sessions again, clients sync');
      this.groups.forget(); // large groups' changes may be among what was missed
    }
    // The cluster may have dropped this node's watches (the reaper: a late pass too, so the check writes them again).
    void this.rewriteWatches();
    const resync = RESYNC();
    this.metrics.rejoin(check);
    try {
      for (let i = 0; i < open.length && !this.hub.stopping; i += REJOIN_CHUNK) {
        const chunk = open.slice(i, i + REJOIN_CHUNK).filter((c) => c.state === 'open');
        const users = [...new Set(chunk.map((c) => c.userId))];
        this.metrics.rejoinLookups(users.length);
        const online = await this.deps.sessions.lookup(users);
        await Promise.all(chunk.map(async (conn) => {
          const current = online.get(conn.userId)?.find((s) => s.deviceId === conn.deviceId);
          // The check after a rejoin: a connection still bound here has already been told to sync.
          if (check && current && this.boundHere(conn, current)) return;
          if (await this.rebind(conn, current) && conn.state === 'open') this.hub.send(conn, resync);
        }));
      }
      if (!check) this.rejoinCheck = true;
    } catch (err) {
      log.warn({ err }, 'binding sessions again failed; trying again at the next announce');
      this.rejoinPending = true;
    } finally {
      this.rejoining = false;
    }
  }

  /** Whether this session is the one of this connection on this node. */
  private boundHere(conn: Connection, s: SessionInfo): boolean {
    return s.node === this.options.nodeId && s.connId === conn.id;
  }

  /** One connection of rejoin(), given the device's session as the cluster has it: true when it stays. */
  private async rebind(conn: Connection, current: SessionInfo | undefined): Promise<boolean> {
    const node = this.options.nodeId;
    if (current && !this.boundHere(conn, current)) {
      this.hub.kick(conn, ErrorCode.REPLACED, 'this device logged in on another connection', false);
      return false;
    }
    if (current) {
      // Still bound here: only a revocation may have been missed.
      const before = await this.deps.sessions.revokedBefore(conn.userId, conn.deviceId);
      if (before > 0 && conn.tokenIssuedAtMs <= before) {
        this.hub.kick(conn, ErrorCode.TOKEN_REVOKED, 'this token was revoked (logged out by an administrator)', false);
        return false;
      }
      return true;
    }
    const result = await this.deps.sessions.bindUnlessRevoked({
      userId: conn.userId, deviceId: conn.deviceId, platform: conn.platform, node, connId: conn.id, loginAtMs: conn.openedAtMs,
    }, conn.tokenIssuedAtMs);
    if (!result.bound) {
      this.hub.kick(conn, ErrorCode.TOKEN_REVOKED, 'this token was revoked (logged out by an administrator)', false);
      return false;
    }
    if (result.previous && !this.boundHere(conn, result.previous)) {
      // A login elsewhere bound the device between the lookup and this bind: it is the newer one; give its session back.
      await this.deps.sessions.bind(result.previous);
      this.hub.kick(conn, ErrorCode.REPLACED, 'this device logged in on another connection', false);
      return false;
    }
    if (conn.state !== 'open') {
      // Closed meanwhile (its logout ran before this bind): take the session back out.
      await this.deps.sessions.unbind(conn.userId, conn.deviceId, node, conn.id);
      return false;
    }
    return true;
  }

  /**
   * Stop: leave the registry first (so clients told to reconnect are not sent
   * back here), stop accepting, tell every client to reconnect elsewhere,
   * then remove whatever sessions of this node are left.
   */
  async stop(): Promise<void> {
    this.hub.stopping = true;
    clearInterval(this.sweepTimer);
    clearInterval(this.announceTimer);
    clearInterval(this.ackTimer);
    await this.deps.registry.remove(this.options.nodeId).catch(() => undefined);
    const closed = this.listeners.closeTcp();
    await this.downSub?.close();
    this.groups.stop();
    for (const conn of [...this.hub.conns.values()]) {
      if (conn.state === 'open') this.hub.kick(conn, ErrorCode.SERVER_SHUTDOWN, 'server is stopping', true);
      else this.hub.close(conn, true, 'stopping');
    }
    this.listeners.closeWebSocket();
    // Let logouts finish (bounded), so offline events reach logic before the bus closes.
    await Promise.race([Promise.allSettled([...this.hub.logouts]), new Promise((r) => setTimeout(r, 3000).unref())]);
    await this.deps.sessions.dropNode(this.options.nodeId).catch((err: unknown) => {
      log.warn({ err }, 'dropping sessions at stop failed');
    });
    await this.deps.watches?.dropNode(this.options.nodeId).catch((err: unknown) => {
      log.warn({ err }, 'dropping presence watches at stop failed');
    });
    await closed;
  }
}
