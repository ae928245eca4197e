// The gateway: holds connections, runs the login handshake, heartbeats and
// idle eviction, the local session table, kicks and backpressure. It has no
// business rules: authenticated requests go up the bus to logic, and what
// comes down is written to the connections it names.
import net from 'node:net';
import tls from 'node:tls';
import type { Server as HttpServer, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { down, upEnvelope, type Bus, type Down, type Subscription } from '../engines/bus.js';
import type { SessionInfo, Sessions } from '../engines/sessions.js';
import type { Registry } from '../engines/registry.js';
import type { TokenService } from '../auth/tokens.js';
import {
  DecodeError, ErrorCode, LonglinkError, decodeFrame, encodeFrame, errorName,
  makeFrame, shouldReconnect, userPartition, type Frame,
} from '../protocol/index.js';
import { MAX_REQUEST_ID, route } from '../protocol/operations.js';
import { Connection, SessionTable } from './connection.js';
import { TokenBucket } from './rate-limit.js';
import { LoginThrottle, loginThrottleKey } from './login-throttle.js';
import { noGatewayMetrics, type GatewayMetrics, type LimitName } from '../observability/metrics.js';
import { log as rootLog, messageTrace } from '../observability/log.js';
import { OutFrame, type Transport, type TransportSink } from './transport.js';
import { TcpTransport } from './tcp.js';
import { WsTransport } from './ws.js';

const log = rootLog.child({ component: 'gateway' });

export interface GatewayOptions {
  nodeId: string;
  loginTimeoutMs: number;
  pingIntervalMs: number;
  maxFrameBytes: number;
  maxTextBytes: number;
  ratePerSecond: number;
  rateBurst: number;
  maxOutboundBytes: number;
  /** Messages (send frames) per second per user, all its connections on this gateway together (burst: twice that). @default 200 */
  userMessagesPerSecond?: number;
  /** Connections one user may hold at once, cluster-wide (its sessions). @default 20 */
  maxConnectionsPerUser?: number;
  /** Failed logins per client address and claimed user per minute on this gateway; past it, those logins are refused until the minute ends. @default 60 */
  loginAttemptsPerMinute?: number;
  /**
   * Multi-login policy: `multi` — any number of devices (the same device id
   * replaces its older connection); `platform` — one device per platform;
   * `single` — one device in all. @default 'multi'
   */
  loginPolicy?: LoginPolicy;
  /**
   * Registry TTL: the gateway refreshes its entry every third of it; a gateway
   * not refreshed within it is dead to the cluster, which drops its sessions.
   * @default 15000
   */
  nodeTtlMs?: number;
}

export type LoginPolicy = 'multi' | 'platform' | 'single';

export interface GatewayDeps {
  bus: Bus;
  sessions: Sessions;
  registry: Registry;
  tokens: TokenService;
  /** Counters for /metrics. @default none */
  metrics?: GatewayMetrics;
}

/** Error codes that mean a configured limit was hit (longlink_limit_breaches_total). */
const LIMIT_OF = new Map<ErrorCode, LimitName>([
  [ErrorCode.FRAME_TOO_LARGE, 'frame_size'],
  [ErrorCode.RATE_LIMITED, 'rate'],
  [ErrorCode.USER_RATE_LIMITED, 'user_rate'],
  [ErrorCode.TOO_MANY_CONNECTIONS, 'connections_per_user'],
  [ErrorCode.LOGIN_THROTTLED, 'login_attempts'],
]);

/**
 * A throttling episode ends after this long without throttling; the next one
 * gets a new notice. (Not "the first frame within the rate": a resume timer
 * that fires late refills the bucket and would start a new episode mid-flood.)
 */
const THROTTLE_EPISODE_GAP_MS = 1000;

/** A user's message bucket outlives its last connection here by this long (long enough to refill it). */
const USER_BUCKET_IDLE_MS = 10_000;

/** One push latency sample per this many deliveries (each sample decodes the frame). */
const LATENCY_SAMPLE_EVERY = 16;

/** How long PushAcks gather at the gateway before going up together. */
const ACK_FLUSH_MS = 100;


export class Gateway {
  private readonly conns = new Map<number, Connection>();
  private readonly table = new SessionTable();
  /** Presence watchers: user → local connections subscribed to them. */
  private readonly watchers = new Map<string, Set<Connection>>();
  /**
   * Connection ids never repeat across restarts of a node id (they start at
   * the start time in µs), so a reply or kick still in the downlink for the
   * previous process cannot reach a new connection.
   */
  private nextConnId = Date.now() * 1000;
  private sweepTimer: NodeJS.Timeout | undefined;
  private ackTimer: NodeJS.Timeout | undefined;
  /** Connections with PushAcks waiting to go up. */
  private readonly acksWaiting = new Set<Connection>();
  private announceTimer: NodeJS.Timeout | undefined;
  private downSub: Subscription | undefined;
  private tcpServer: net.Server | undefined;
  private wss: WebSocketServer | undefined;
  private publicTcpUrl: string | undefined;
  private publicWsUrl: string | undefined;
  private stopping = false;
  private readonly startedAtMs = Date.now();
  /** Logouts (session unbind + offline event) still running; stop() waits for them. */
  private readonly logouts = new Set<Promise<void>>();
  /** Resolves once start() announced this node: logins wait for it (see login()). */
  private readonly started: Promise<void>;
  private markStarted: () => void = () => undefined;
  /** The registry accepted an announce of ours at least once. */
  private announced = false;
  /** Send frames per user (all its connections here): user → bucket, kept a while after its last connection (a reconnect gets no fresh burst). */
  private readonly userBuckets = new Map<string, { bucket: TokenBucket; lastMs: number }>();
  /** Failed logins per client address and claimed user. */
  private readonly loginThrottle: LoginThrottle;
  private readonly metrics: GatewayMetrics;
  private deliveries = 0;

  constructor(
    private readonly options: GatewayOptions,
    private readonly deps: GatewayDeps,
  ) {
    this.loginThrottle = new LoginThrottle(options.loginAttemptsPerMinute ?? 60);
    this.metrics = deps.metrics ?? noGatewayMetrics;
    this.started = new Promise((resolve) => {
      this.markStarted = resolve;
    });
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  private get nodeTtlMs(): number {
    return this.options.nodeTtlMs ?? 15_000;
  }

  /**
   * Start consuming downlink, sweeping for dead connections and refreshing
   * the registry entry. Resolves after the first registry write was tried, so
   * a cluster knows the node before it binds any session.
   */
  async start(): Promise<void> {
    this.downSub = this.deps.bus.consumeDown(this.options.nodeId, (batch) => this.onDown(batch));
    const sweepEvery = Math.max(50, Math.min(1000, Math.floor(this.options.pingIntervalMs / 2)));
    this.sweepTimer = setInterval(() => this.sweep(), sweepEvery);
    this.sweepTimer.unref();
    this.ackTimer = setInterval(() => this.flushAcks(), ACK_FLUSH_MS);
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
    const onSocket = (socket: net.Socket) => this.accept(new TcpTransport(socket, this.options.maxFrameBytes));
    const server: net.Server = secure
      ? tls.createServer({ ...secure, handshakeTimeout: this.options.loginTimeoutMs }, onSocket)
      : net.createServer(onSocket);
    server.on('error', (err) => log.error({ err }, 'tcp server error'));
    // A failed TLS handshake (plain bytes, bad client hello) is the client's problem: drop the socket.
    server.on('tlsClientError', (_err: Error, socket: tls.TLSSocket) => socket.destroy());
    this.tcpServer = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port, host, backlog: 4096 }, () => {
        const address = server.address() as net.AddressInfo;
        this.publicTcpUrl = `${secure ? 'tls' : 'tcp'}://${publicHost}:${address.port}`;
        resolve(address);
      });
    });
  }

  /** Serve WebSocket at /ws on an HTTP server (upgrade requests only). */
  attachWebSocket(http: HttpServer, publicWsUrl: string): void {
    this.publicWsUrl = publicWsUrl;
    this.wss = new WebSocketServer({
      noServer: true,
      // Frames up to 4x the limit are read and answered with FRAME_TOO_LARGE;
      // past that ws closes the socket itself with close code 1009.
      maxPayload: this.options.maxFrameBytes * 4,
      perMessageDeflate: false,
      clientTracking: false,
    });
    http.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      const path = (request.url ?? '').split('?')[0];
      if (path !== '/ws' || this.stopping) {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
        setTimeout(() => socket.destroy(), 1000).unref();
        return;
      }
      socket.on('error', () => socket.destroy());
      this.wss!.handleUpgrade(request, socket, head, (ws) => {
        this.accept(new WsTransport(ws, request, this.options.maxFrameBytes));
      });
    });
  }

  private accept(transport: Transport): void {
    if (this.stopping) {
      transport.destroy();
      return;
    }
    const conn = new Connection(this.nextConnId++, transport, Date.now(), this.options.ratePerSecond, this.options.rateBurst);
    this.conns.set(conn.id, conn);
    this.metrics.connectionOpened(transport.kind);
    const sink: TransportSink = {
      onPayload: (payload) => this.onPayload(conn, payload),
      onFramingError: (code, message) => this.fail(conn, 0, code, message, true),
      onActivity: () => {
        conn.lastSeenMs = Date.now();
      },
      onClose: () => this.onClosed(conn),
    };
    transport.attach(sink);
  }

  // ---- inbound ----------------------------------------------------------

  /** Returns false to pause reading from this connection. */
  private onPayload(conn: Connection, payload: Uint8Array): boolean {
    if (conn.state === 'closed') return false;
    const now = Date.now();
    conn.lastSeenMs = now;
    let frame: Frame;
    try {
      frame = decodeFrame(payload);
    } catch (err) {
      const code = err instanceof DecodeError ? err.code : ErrorCode.BAD_FRAME;
      this.fail(conn, 0, code, (err as Error).message, true);
      return false;
    }
    const body = frame.body;
    this.metrics.frameIn(body.case);
    if (conn.state === 'awaiting-login') {
      if (body.case !== 'login') {
        this.fail(conn, frame.id, ErrorCode.NOT_LOGGED_IN, 'the first frame must be a login', true);
        return false;
      }
      const throttleKey = loginThrottleKey(hostOf(conn.transport.remoteAddress), body.value.token);
      if (!this.loginThrottle.allowed(throttleKey, now)) {
        this.metrics.login(ErrorCode.LOGIN_THROTTLED);
        this.fail(conn, frame.id, ErrorCode.LOGIN_THROTTLED, 'too many failed logins from this address; retry in a minute', true);
        return false;
      }
      conn.state = 'logging-in';
      void this.login(conn, frame.id, body.value.token, throttleKey);
      return false; // resume once logged in
    }
    let wait = conn.bucket.take(now);
    if (wait > 0) {
      if (now - conn.throttledAtMs > THROTTLE_EPISODE_GAP_MS) {
        this.fail(conn, 0, ErrorCode.RATE_LIMITED, `over ${this.options.ratePerSecond} frames/s; reading paused`, false);
      }
      conn.throttledAtMs = now;
    }
    if (body.case === 'send') {
      // The user's messages per second, all its connections here together: over it, this
      // connection stops reading until the user's bucket refills (nothing is refused or lost).
      const userWait = this.userBucket(conn.userId, now).take(now);
      if (userWait > 0) {
        if (now - conn.userThrottledAtMs > THROTTLE_EPISODE_GAP_MS) {
          this.fail(conn, 0, ErrorCode.USER_RATE_LIMITED, `over ${this.userMessagesPerSecond} messages/s for this user; reading paused`, false);
        }
        conn.userThrottledAtMs = now;
      }
      wait = Math.max(wait, userWait);
    }
    if (wait > 0) {
      setTimeout(() => {
        if (conn.state === 'open') conn.transport.resume();
      }, wait).unref();
      // This frame is handled now; the ones after it wait.
      this.handle(conn, frame);
      return false;
    }
    this.handle(conn, frame);
    return true;
  }

  private handle(conn: Connection, frame: Frame): void {
    const body = frame.body;
    switch (body.case) {
      case 'ping':
        this.send(conn, new OutFrame(encodeFrame(makeFrame(frame.id, { case: 'pong', value: { serverTimeMs: BigInt(Date.now()) } }))));
        return;
      case 'login':
        this.fail(conn, frame.id, ErrorCode.ALREADY_LOGGED_IN, 'this connection is already logged in', false);
        return;
      case 'pushAck': {
        // Cumulative: only the highest per conversation matters, so they go up together every
        // ACK_FLUSH_MS (a member of a busy group acks many pushes a second).
        this.metrics.pushAck();
        const acks = (conn.pendingAcks ??= new Map());
        const waiting = acks.get(body.value.conversationId);
        if (!waiting || (waiting.body.case === 'pushAck' && waiting.body.value.seq < body.value.seq)) acks.set(body.value.conversationId, frame);
        this.acksWaiting.add(conn);
        return;
      }
      default:
        this.forward(conn, frame);
    }
  }

  /** Send up the PushAcks connections have gathered (also when one closes). */
  private flushAcks(only?: Connection): void {
    for (const conn of only ? [only] : this.acksWaiting) {
      if (conn.pendingAcks) for (const frame of conn.pendingAcks.values()) this.forward(conn, frame);
      conn.pendingAcks = undefined;
      this.acksWaiting.delete(conn);
    }
  }

  /** Send a request up to logic, in the partition its operation names (src/protocol/operations.ts). */
  private forward(conn: Connection, frame: Frame): void {
    if (frame.requestId.length > MAX_REQUEST_ID) {
      this.fail(conn, frame.id, ErrorCode.BAD_REQUEST, `request_id must be at most ${MAX_REQUEST_ID} characters`, false);
      return;
    }
    const where = route(frame, { userId: conn.userId });
    if (!where) {
      this.fail(conn, frame.id, ErrorCode.UNKNOWN_FRAME, `frame type ${frame.body.case ?? 'unknown'} is not accepted from clients`, false);
      return;
    }
    if (frame.body.case === 'send' && log.isLevelEnabled('debug')) {
      const v = frame.body.value;
      log.debug({ ...messageTrace({ fromUser: conn.userId, clientMsgId: v.clientMsgId, conversationId: v.conversationId || undefined }), conn: conn.id }, 'send received');
    }
    const message = upEnvelope({
      origin: this.originOf(conn), partition: where.partition, requestId: where.requestId, publishedAtMs: BigInt(Date.now()),
      body: { case: 'frame', value: frame },
    });
    this.deps.bus.publishUp(message).catch((err: unknown) => {
      log.error({ err, conn: conn.id }, 'uplink publish failed');
      this.fail(conn, frame.id, ErrorCode.UNAVAILABLE, 'the server could not accept the request; retry', false);
    });
  }

  private originOf(conn: Connection) {
    return { node: this.options.nodeId, connId: BigInt(conn.id), userId: conn.userId, deviceId: conn.deviceId, platform: conn.platform };
  }

  /** `throttleKey`: where a failure of this login is counted (see LoginThrottle). */
  private async login(conn: Connection, requestId: number, token: string, throttleKey: string): Promise<void> {
    const refuse = (code: ErrorCode, message: string) => {
      this.metrics.login(code);
      if (code !== ErrorCode.UNAVAILABLE && code !== ErrorCode.TOO_MANY_CONNECTIONS) this.loginThrottle.failed(throttleKey, Date.now());
      this.fail(conn, requestId, code, message, true);
    };
    let claims;
    try {
      claims = await this.deps.tokens.verify(token);
    } catch (err) {
      refuse(err instanceof LonglinkError ? err.code : ErrorCode.TOKEN_INVALID, (err as Error).message);
      return;
    }
    if (conn.state !== 'logging-in') return; // closed meanwhile
    if (claims.expiresAtMs <= Date.now()) {
      refuse(ErrorCode.TOKEN_EXPIRED, 'token expired');
      return;
    }
    // No session is bound before the cluster knows this node: a reaper that saw
    // sessions of an unknown node would take them for a dead node's.
    await this.started;
    if (conn.state !== 'logging-in') return;
    conn.userId = claims.userId;
    conn.deviceId = claims.deviceId;
    conn.platform = claims.platform;
    conn.tokenIssuedAtMs = claims.issuedAtMs;
    const revoked = (beforeMs: number) => claims.issuedAtMs <= beforeMs || conn.revokedWhileLoggingIn;
    const REVOKED_MESSAGE = 'this token was revoked (logged out by an administrator); get a new one';
    // A revoked token never touches the session table (it would take the device's session).
    try {
      if (revoked(await this.deps.sessions.revokedBefore(conn.userId, conn.deviceId))) {
        refuse(ErrorCode.TOKEN_REVOKED, REVOKED_MESSAGE);
        return;
      }
    } catch (err) {
      log.error({ err, user: conn.userId }, 'revocation check failed');
      refuse(ErrorCode.UNAVAILABLE, 'the server could not check the token; retry');
      return;
    }
    if (conn.state !== 'logging-in') return;
    // Register the session before answering: once the client has its LoginResult it
    // syncs, and every message stored after this point must find the session to be pushed.
    let previous: SessionInfo | undefined;
    try {
      previous = await this.deps.sessions.bind({
        userId: conn.userId, deviceId: conn.deviceId, platform: conn.platform,
        node: this.options.nodeId, connId: conn.id, loginAtMs: Date.now(),
      });
    } catch (err) {
      log.error({ err, user: conn.userId }, 'session bind failed');
      refuse(ErrorCode.UNAVAILABLE, 'the server could not register the session; retry');
      return;
    }
    if (conn.state !== 'logging-in') {
      await this.abandonBind(conn, previous); // closed while binding
      return;
    }
    // Checked again after the bind: a revocation written meanwhile is seen here, or (announced
    // to every gateway after it was written) marked this connection while it logged in.
    let userSessions: SessionInfo[];
    let revokedBeforeMs: number;
    try {
      [revokedBeforeMs, userSessions] = await Promise.all([
        this.deps.sessions.revokedBefore(conn.userId, conn.deviceId),
        this.deps.sessions.lookup([conn.userId]).then((m) => m.get(conn.userId) ?? []),
      ]);
    } catch (err) {
      log.error({ err, user: conn.userId }, 'login checks failed');
      await this.abandonBind(conn, previous);
      refuse(ErrorCode.UNAVAILABLE, 'the server could not check the session; retry');
      return;
    }
    const refusal = revoked(revokedBeforeMs)
      ? { code: ErrorCode.TOKEN_REVOKED, message: REVOKED_MESSAGE }
      : userSessions.length > this.maxConnectionsPerUser
        ? { code: ErrorCode.TOO_MANY_CONNECTIONS, message: `this user already holds ${this.maxConnectionsPerUser} connections` }
        : undefined;
    if (refusal || conn.state !== 'logging-in') {
      await this.abandonBind(conn, previous);
      if (refusal) refuse(refusal.code, refusal.message);
      return;
    }
    conn.state = 'open';
    this.metrics.login('ok');
    conn.lastSeenMs = Date.now();
    const replaced = this.table.add(conn);
    if (replaced) this.kick(replaced, ErrorCode.REPLACED, 'the same device logged in on another connection');
    this.send(conn, new OutFrame(encodeFrame(makeFrame(requestId, {
      case: 'loginResult',
      value: {
        userId: claims.userId,
        deviceId: claims.deviceId,
        platform: claims.platform,
        pingIntervalMs: this.options.pingIntervalMs,
        serverTimeMs: BigInt(Date.now()),
        nodeId: this.options.nodeId,
        maxFrameBytes: this.options.maxFrameBytes,
        maxTextBytes: this.options.maxTextBytes,
      },
    }))));
    conn.transport.resume();
    try {
      if (previous && previous.node !== this.options.nodeId) {
        await this.deps.bus.publishDown(previous.node, down({
          case: 'kick',
          value: {
            userId: previous.userId, deviceId: previous.deviceId, connId: BigInt(previous.connId),
            code: ErrorCode.REPLACED, reason: 'the same device logged in on another connection',
          },
        }));
      }
      await this.enforceLoginPolicy(conn, userSessions);
      void this.sessionEvent(conn, 'online');
    } catch (err) {
      log.error({ err, user: conn.userId }, 'post-login work failed');
    }
  }

  /**
   * Undo a bind of a login that did not complete. The bind replaced the
   * device's session record: if ours is still the record, the connection it
   * replaced (alive or not) has none, so nothing would be pushed to it. It is
   * told to reconnect, which binds it again.
   */
  private async abandonBind(conn: Connection, previous: SessionInfo | undefined): Promise<void> {
    const removed = await this.unbind(conn);
    if (!removed || !previous) return;
    const reason = 'a login of this device on another connection was refused after taking its session; reconnect';
    if (previous.node === this.options.nodeId) {
      const local = this.conns.get(previous.connId);
      if (local && local.state === 'open' && local.userId === previous.userId && local.deviceId === previous.deviceId) {
        this.kick(local, ErrorCode.REPLACED, reason, true);
      }
      return;
    }
    await this.deps.bus.publishDown(previous.node, down({
      case: 'kick',
      value: { userId: previous.userId, deviceId: previous.deviceId, connId: BigInt(previous.connId), code: ErrorCode.REPLACED, reason, reconnect: true },
    })).catch((err: unknown) => log.warn({ err }, 'telling a replaced connection to reconnect failed'));
  }

  /** Kick the user's other devices that the multi-login policy does not allow beside this one. */
  private async enforceLoginPolicy(conn: Connection, sessions: readonly SessionInfo[]): Promise<void> {
    const policy = this.options.loginPolicy ?? 'multi';
    if (policy === 'multi') return;
    for (const s of sessions) {
      if (s.deviceId === conn.deviceId) continue;
      if (policy === 'platform' && s.platform !== conn.platform) continue;
      const reason = policy === 'single'
        ? `logged in on another device (${conn.deviceId}); one device at a time`
        : `logged in on another ${conn.platform} device (${conn.deviceId}); one per platform`;
      if (s.node === this.options.nodeId) {
        const local = this.conns.get(s.connId);
        if (local && local.userId === s.userId && local.deviceId === s.deviceId) this.kick(local, ErrorCode.LOGIN_POLICY, reason);
      } else {
        await this.deps.bus.publishDown(s.node, down({
          case: 'kick', value: { userId: s.userId, deviceId: s.deviceId, connId: BigInt(s.connId), code: ErrorCode.LOGIN_POLICY, reason },
        }));
      }
    }
  }

  /** Tell logic a session came online or went offline (for presence). */
  private sessionEvent(conn: Connection, session: 'online' | 'offline'): Promise<void> {
    const message = upEnvelope({
      origin: this.originOf(conn), partition: userPartition(conn.userId), publishedAtMs: BigInt(Date.now()),
      body: { case: 'session', value: { online: session === 'online' } },
    });
    return this.deps.bus.publishUp(message).catch((err: unknown) => {
      log.warn({ err, user: conn.userId }, 'session event publish failed');
    });
  }

  private setWatching(conn: Connection, userIds: string[]): void {
    for (const u of conn.watching) {
      const set = this.watchers.get(u);
      set?.delete(conn);
      if (set && set.size === 0) this.watchers.delete(u);
    }
    conn.watching = new Set(userIds);
    for (const u of conn.watching) {
      let set = this.watchers.get(u);
      if (!set) {
        set = new Set();
        this.watchers.set(u, set);
      }
      set.add(conn);
    }
  }

  // ---- outbound ---------------------------------------------------------

  private onDown(batch: Down[]): void {
    for (const { kind } of batch) {
      switch (kind.case) {
        case 'reply': {
          const conn = this.conns.get(Number(kind.value.connId));
          if (conn && conn.state === 'open') this.send(conn, new OutFrame(kind.value.frame));
          break;
        }
        case 'deliver': {
          const { frame, targets } = kind.value;
          const out = new OutFrame(frame);
          const trace = log.isLevelEnabled('debug');
          const sample = ++this.deliveries % LATENCY_SAMPLE_EVERY === 0;
          if (trace || sample) this.inspectPush(frame, targets.length, trace, sample);
          for (const target of targets) {
            for (const conn of this.table.devices(target.userId)) {
              if (conn.deviceId !== target.exceptDevice && conn.state === 'open') this.send(conn, out);
            }
          }
          break;
        }
        case 'kick': {
          const k = kind.value;
          const conn = k.connId !== 0n ? this.conns.get(Number(k.connId)) : this.table.get(k.userId, k.deviceId);
          if (conn && conn.userId === k.userId && conn.deviceId === k.deviceId) this.kick(conn, k.code, k.reason, k.reconnect);
          break;
        }
        case 'revoke':
          this.revoke(kind.value.userId, kind.value.deviceId || undefined, Number(kind.value.beforeMs));
          break;
        case 'watch': {
          const conn = this.conns.get(Number(kind.value.connId));
          if (conn && conn.state === 'open') this.setWatching(conn, kind.value.userIds);
          break;
        }
        case 'presence': {
          const watching = this.watchers.get(kind.value.userId);
          if (!watching) break;
          const out = new OutFrame(kind.value.frame);
          for (const conn of watching) this.send(conn, out);
          break;
        }
        case 'announce': {
          const out = new OutFrame(kind.value.frame);
          for (const conn of this.conns.values()) if (conn.state === 'open') this.send(conn, out);
          break;
        }
        default:
          // A kind this gateway does not know (a newer logic node during a rolling upgrade): skipped.
          this.deps.bus.counters.unknownSkipped++;
      }
    }
  }

  /** Kick this node's connections whose token a revocation covers; mark those still logging in. */
  private revoke(userId: string, deviceId: string | undefined, beforeMs: number): void {
    const reason = deviceId === undefined ? 'logged out everywhere by an administrator' : `device ${deviceId} logged out by an administrator`;
    for (const conn of [...this.conns.values()]) {
      if (conn.userId !== userId || (deviceId !== undefined && conn.deviceId !== deviceId) || conn.tokenIssuedAtMs > beforeMs) continue;
      if (conn.state === 'open') this.kick(conn, ErrorCode.TOKEN_REVOKED, reason);
      else if (conn.state === 'logging-in') conn.revokedWhileLoggingIn = true;
    }
  }

  /** Write a frame; a connection whose unread backlog passes the limit is dropped. */
  private send(conn: Connection, out: OutFrame): void {
    if (conn.state === 'closed') return;
    if (conn.transport.bufferedBytes > this.options.maxOutboundBytes) {
      this.fail(conn, 0, ErrorCode.SLOW_CONSUMER, 'the client is not reading; outbound queue is full', true, true);
      return;
    }
    conn.transport.send(out);
    this.metrics.framesOut(1);
  }

  /**
   * Look inside a push this gateway writes (decoded once): at debug, one line
   * per message (the last step of a message's trace); when sampled, the push
   * latency from the newest message's server time to now (its write).
   */
  private inspectPush(bytes: Uint8Array, users: number, trace: boolean, sample: boolean): void {
    let frame: Frame;
    try {
      frame = decodeFrame(bytes);
    } catch {
      return; // not ours to judge: the frame goes out as it is
    }
    if (frame.body.case !== 'push') return;
    let sentAtMs = 0;
    for (const m of frame.body.value.messages) {
      sentAtMs = Math.max(sentAtMs, Number(m.sentAtMs));
      if (trace) {
        log.debug({ ...messageTrace({ fromUser: m.fromUser, clientMsgId: m.clientMsgId, serverMsgId: m.serverMsgId, conversationId: m.conversationId, seq: Number(m.seq) }), users }, 'push written');
      }
    }
    if (sample && sentAtMs > 0) this.metrics.pushLatency(Math.max(0, Date.now() - sentAtMs) / 1000);
  }

  /** Send an Error frame; when `close`, close the connection after it. */
  private fail(conn: Connection, requestId: number, code: ErrorCode, message: string, close: boolean, destroyNow = false): void {
    if (conn.state === 'closed') return;
    this.metrics.error(code);
    const limit = LIMIT_OF.get(code);
    if (limit) this.metrics.limitBreach(limit);
    const frame = makeFrame(requestId, {
      case: 'error',
      value: { code, message, fatal: close, reconnect: close && shouldReconnect(code) },
    });
    if (!destroyNow) conn.transport.send(new OutFrame(encodeFrame(frame)));
    if (close) this.close(conn, destroyNow, `${errorName(code)}: ${message}`);
  }

  private kick(conn: Connection, code: ErrorCode, reason: string, reconnect = false): void {
    if (conn.state === 'closed') return;
    this.metrics.kick(code);
    conn.transport.send(new OutFrame(encodeFrame(makeFrame(0, { case: 'kick', value: { code, reason, reconnect } }))));
    this.close(conn, false, `kick ${errorName(code)}`);
  }

  private close(conn: Connection, destroy: boolean, _why: string): void {
    if (conn.state === 'closed') return;
    const wasOpen = conn.state === 'open';
    conn.state = 'closed';
    this.metrics.connectionClosed(conn.transport.kind);
    // (closed during login: login() unbinds once its bind returns)
    this.conns.delete(conn.id);
    if (wasOpen) {
      if (conn.pendingAcks) this.flushAcks(conn);
      this.table.remove(conn);
      if (conn.watching.size > 0) this.setWatching(conn, []);
      const logout = this.unbind(conn).then(() => this.sessionEvent(conn, 'offline'));
      this.logouts.add(logout);
      void logout.finally(() => this.logouts.delete(logout));
    }
    if (destroy) conn.transport.destroy();
    else conn.transport.end();
  }

  private onClosed(conn: Connection): void {
    this.close(conn, true, 'peer closed');
  }

  /** Remove this connection's session record; true when it was still the device's record. */
  private async unbind(conn: Connection): Promise<boolean> {
    try {
      return await this.deps.sessions.unbind(conn.userId, conn.deviceId, this.options.nodeId, conn.id);
    } catch (err) {
      log.error({ err, user: conn.userId }, 'session unbind failed');
      return false;
    }
  }

  /** One pass over every connection: login deadlines and heartbeat timeouts; idle login counters are forgotten. */
  private sweep(): void {
    const now = Date.now();
    this.loginThrottle.sweep(now);
    for (const [userId, entry] of this.userBuckets) {
      if (now - entry.lastMs > USER_BUCKET_IDLE_MS && !this.table.has(userId)) this.userBuckets.delete(userId);
    }
    const silentLimit = this.options.pingIntervalMs * 3;
    for (const conn of this.conns.values()) {
      if (conn.state === 'awaiting-login' || conn.state === 'logging-in') {
        if (now - conn.openedAtMs > this.options.loginTimeoutMs) {
          this.fail(conn, 0, ErrorCode.LOGIN_TIMEOUT, `no login within ${this.options.loginTimeoutMs} ms`, true);
        }
      } else if (conn.state === 'open' && now - conn.lastSeenMs > silentLimit) {
        this.fail(conn, 0, ErrorCode.HEARTBEAT_TIMEOUT, `silent for ${silentLimit} ms`, true);
      }
    }
  }

  private get userMessagesPerSecond(): number {
    return this.options.userMessagesPerSecond ?? 200;
  }

  private get maxConnectionsPerUser(): number {
    return this.options.maxConnectionsPerUser ?? 20;
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

  private async announce(): Promise<void> {
    if (this.stopping) return;
    const ttl = this.nodeTtlMs;
    let wasLive: boolean;
    try {
      wasLive = await this.deps.registry.announce({
        id: this.options.nodeId,
        role: 'gateway',
        tcpUrl: this.publicTcpUrl,
        wsUrl: this.publicWsUrl,
        load: this.conns.size,
        startedAtMs: this.startedAtMs,
      }, ttl);
    } catch (err) {
      log.warn({ err }, 'registry announce failed');
      return;
    }
    const first = !this.announced;
    this.announced = true;
    // Our entry was gone: it lapsed (we were paused or cut off past the TTL),
    // or Redis lost it. Either way the cluster may have dropped this node's
    // sessions, so pushes for its users went to sync only. Every client logs
    // in again (binding its session anew) and syncs what it missed.
    if (!first && !wasLive) {
      log.warn({ connections: this.conns.size }, 'registry entry was gone (lapsed or lost): reconnecting every client');
      for (const conn of [...this.conns.values()]) {
        if (conn.state === 'open') this.kick(conn, ErrorCode.NODE_EXPIRED, 'gateway lost its cluster registration; reconnect and sync', true);
      }
    }
  }

  /**
   * Stop: leave the registry first (so clients told to reconnect are not sent
   * back here), stop accepting, tell every client to reconnect elsewhere,
   * then remove whatever sessions of this node are left.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.sweepTimer);
    clearInterval(this.announceTimer);
    clearInterval(this.ackTimer);
    await this.deps.registry.remove(this.options.nodeId).catch(() => undefined);
    const closed = new Promise<void>((resolve) => (this.tcpServer ? this.tcpServer.close(() => resolve()) : resolve()));
    await this.downSub?.close();
    for (const conn of [...this.conns.values()]) {
      if (conn.state === 'open') this.kick(conn, ErrorCode.SERVER_SHUTDOWN, 'server is stopping', true);
      else this.close(conn, true, 'stopping');
    }
    this.wss?.close();
    // Let logouts finish (bounded), so offline events reach logic before the bus closes.
    await Promise.race([Promise.allSettled([...this.logouts]), new Promise((r) => setTimeout(r, 3000).unref())]);
    await this.deps.sessions.dropNode(this.options.nodeId).catch((err: unknown) => {
      log.warn({ err }, 'dropping sessions at stop failed');
    });
    await closed;
  }
}

/** The host part of a transport's "host:port" remote address (IPv6 hosts keep their colons). */
function hostOf(remoteAddress: string): string {
  const colon = remoteAddress.lastIndexOf(':');
  return colon > 0 ? remoteAddress.slice(0, colon) : remoteAddress;
}
