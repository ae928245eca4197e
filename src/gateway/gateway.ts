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
//   limits.ts     frame and message rates, login throttle
//   hub.ts        the connections and the writes all of them use (send, fail, kick, close)
import type net from 'node:net';
import type tls from 'node:tls';
import type { Server as HttpServer } from 'node:http';
import type { Subscription } from '../engines/bus.js';
import { ErrorCode, encodeFrame, makeFrame } from '../protocol/index.js';
import { noGatewayMetrics } from '../observability/metrics.js';
import { log as rootLog } from '../observability/log.js';
import { Downlink } from './downlink.js';
import { Hub } from './hub.js';
import { ACK_FLUSH_MS, Inbound } from './inbound.js';
import { Limits } from './limits.js';
import { Listeners } from './listeners.js';
import { LoginHandshake } from './login.js';
import { OutFrame } from './transport.js';
import type { GatewayDeps, GatewayOptions } from './options.js';

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
  private readonly listeners: Listeners;
  private sweepTimer: NodeJS.Timeout | undefined;
  private rejoining = false;
  /** A rejoin failed part way: the next announce tries again. */
  private rejoinPending = false;
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
    const metrics = deps.metrics ?? noGatewayMetrics;
    this.started = new Promise((resolve) => {
      this.markStarted = resolve;
    });
    this.hub = new Hub(options, deps, metrics, (conn) => this.inbound.flushAcks(conn));
    this.limits = new Limits(options, (conn, code, message) => this.hub.fail(conn, 0, code, message, false));
    const login = new LoginHandshake(options, deps, metrics, this.hub, this.limits, this.started);
    this.inbound = new Inbound(this.hub, this.limits, login, deps, metrics);
    this.downlink = new Downlink(this.hub, deps, metrics);
    this.listeners = new Listeners(options, this.hub, (conn, payload) => this.inbound.onPayload(conn, payload));
  }

  get connectionCount(): number {
    return this.hub.conns.size;
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
        log.warn({ entries, connections: this.hub.conns.size }, 'downlink entries were trimmed unread: clients sync');
        const resync = RESYNC();
        for (const conn of this.hub.conns.values()) if (conn.state === 'open') this.hub.send(conn, resync);
      },
    });
    const sweepEvery = Math.max(50, Math.min(1000, Math.floor(this.options.pingIntervalMs / 2)));
    this.sweepTimer = setInterval(() => this.sweep(), sweepEvery);
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
    this.limits.sweep(now, (userId) => this.hub.table.has(userId));
    const silentLimit = this.options.pingIntervalMs * 3;
    for (const conn of this.hub.conns.values()) {
      if (conn.state === 'awaiting-login' || conn.state === 'logging-in') {
        if (now - conn.openedAtMs > this.options.loginTimeoutMs) {
          this.hub.fail(conn, 0, ErrorCode.LOGIN_TIMEOUT, `no login within ${this.options.loginTimeoutMs} ms`, true);
        }
      } else if (conn.state === 'open' && now - conn.lastSeenMs > silentLimit) {
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
        load: this.hub.conns.size,
        startedAtMs: this.startedAtMs,
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
  }

  /**
   * Bind again the session of every open connection (a device that logged in
   * elsewhere meanwhile keeps that session, and this connection is closed as
   * replaced), then tell each to sync.
   */
  private async rejoin(): Promise<void> {
    if (this.rejoining) return;
    this.rejoining = true;
    this.rejoinPending = false;
    const open = [...this.hub.conns.values()].filter((c) => c.state === 'open');
    log.warn({ connections: open.length }, 'registry entry was gone (lapsed or lost): binding sessions again, clients sync');
    const resync = RESYNC();
    try {
      for (let i = 0; i < open.length && !this.hub.stopping; i += REJOIN_CHUNK) {
        const chunk = open.slice(i, i + REJOIN_CHUNK).filter((c) => c.state === 'open');
        const online = await this.deps.sessions.lookup([...new Set(chunk.map((c) => c.userId))]);
        await Promise.all(chunk.map(async (conn) => {
          const current = online.get(conn.userId)?.find((s) => s.deviceId === conn.deviceId);
          if (current && (current.node !== this.options.nodeId || current.connId !== conn.id)) {
            this.hub.kick(conn, ErrorCode.REPLACED, 'this device logged in on another connection', false);
            return;
          }
          if (!current) {
            await this.deps.sessions.bind({
              userId: conn.userId, deviceId: conn.deviceId, platform: conn.platform,
              node: this.options.nodeId, connId: conn.id, loginAtMs: conn.openedAtMs,
            });
          }
          if (conn.state === 'open') this.hub.send(conn, resync);
        }));
      }
    } catch (err) {
      log.warn({ err }, 'binding sessions again failed; trying again at the next announce');
      this.rejoinPending = true;
    } finally {
      this.rejoining = false;
    }
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
    await closed;
  }
}
