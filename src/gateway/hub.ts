// This node's connections and the few writes every part of the gateway makes
// to them: send (with backpressure), fail, kick and close. Closing is the one
// place a logged-in connection is logged out: its session record unbound and
// logic told it went offline.
import { upEnvelope, type Bus } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import { ErrorCode, encodeFrame, errorName, makeFrame, shouldReconnect, userPartition } from '../protocol/index.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import { log as rootLog } from '../observability/log.js';
import { Connection, PresenceWatchers, SessionTable } from './connection.js';
import { limitOf, type ConnectionLimitName } from './limits.js';
import type { GatewayOptions } from './options.js';
import { OutFrame, type Transport } from './transport.js';

const log = rootLog.child({ component: 'gateway' });

type HubOptions = Pick<
  GatewayOptions,
  'nodeId' | 'maxOutboundBytes' | 'ratePerSecond' | 'rateBurst' | 'maxConnectionsPerAddress' | 'maxPendingLogins'
>;

/** Why a new connection is refused before it is admitted. */
export interface AdmissionRefusal {
  limit: ConnectionLimitName;
  message: string;
}

export class Hub {
  /** Every connection of this node, logging in or logged in, by id. */
  readonly conns = new Map<number, Connection>();
  /** Logged-in connections by user and device. */
  readonly table = new SessionTable();
  readonly watchers = new PresenceWatchers();
  /** Logouts (session unbind + offline event) still running; stop() waits for them. */
  readonly logouts = new Set<Promise<void>>();
  /** The gateway is stopping: no new connections. */
  stopping = false;
  /** Connections per client address (see Transport.clientAddress), logged in or not. */
  private readonly perAddress = new Map<string, number>();
  /** Connections not yet logged in (awaiting-login or logging-in). */
  private pending = 0;
  /** Connections not yet logged in, per client address. */
  private readonly pendingPerAddress = new Map<string, number>();
  /**
   * Connection ids never repeat across restarts of a node id (they start at
   * the start time in µs), so a reply or kick still in the downlink for the
   * previous process cannot reach a new connection.
   */
  private nextConnId = Date.now() * 1000;

  constructor(
    private readonly options: HubOptions,
    private readonly deps: { bus: Bus; sessions: Sessions },
    private readonly metrics: GatewayMetrics,
    /** Send up the PushAcks a closing connection gathered (see Inbound.flushAcks). */
    private readonly flushAcks: (conn: Connection) => void,
  ) {}

  /**
   * Whether a new connection from this client address would pass the
   * connection caps: connections per address, and connections not yet
   * logged in. Undefined: admit it.
   */
  admissionRefusal(address: string): AdmissionRefusal | undefined {
    const { maxConnectionsPerAddress, maxPendingLogins } = this.options;
    if ((this.perAddress.get(address) ?? 0) >= maxConnectionsPerAddress) {
      return { limit: 'connections_per_address', message: `this address already holds ${maxConnectionsPerAddress} connections to this gateway; retry later` };
    }
    const pendingPerAddress = Math.max(16, Math.floor(maxPendingLogins / PENDING_SHARE));
    if ((this.pendingPerAddress.get(address) ?? 0) >= pendingPerAddress) {
      return { limit: 'pending_logins', message: `this address already has ${pendingPerAddress} connections logging in to this gateway; retry later` };
    }
    if (this.pending >= maxPendingLogins) {
      return { limit: 'pending_logins', message: `this gateway already has ${maxPendingLogins} connections logging in; retry later` };
    }
    return undefined;
  }

  /** Refuse a connection that was never admitted: a fatal CONNECTION_LIMITED error (retry later), then close. */
  refuse(transport: Transport, refusal: AdmissionRefusal): void {
    const code = ErrorCode.CONNECTION_LIMITED;
    this.metrics.error(code);
    this.metrics.limitBreach(refusal.limit);
    const frame = makeFrame(0, { case: 'error', value: { code, message: refusal.message, fatal: true, reconnect: shouldReconnect(code) } });
    transport.send(new OutFrame(encodeFrame(frame)));
    transport.end();
  }

  /** A new connection on this transport, awaiting its login. */
  admit(transport: Transport): Connection {
    const conn = new Connection(this.nextConnId++, transport, Date.now(), this.options.ratePerSecond, this.options.rateBurst);
    this.conns.set(conn.id, conn);
    bump(this.perAddress, transport.clientAddress, 1);
    this.pending++;
    bump(this.pendingPerAddress, transport.clientAddress, 1);
    this.metrics.connectionOpened(transport.kind);
    return conn;
  }

  /** The connection's login is done: it is open, and no longer counts as logging in. */
  opened(conn: Connection): void {
    if (conn.state !== 'awaiting-login' && conn.state !== 'logging-in') return;
    conn.state = 'open';
    this.pending--;
    bump(this.pendingPerAddress, conn.transport.clientAddress, -1);
  }

  /** Write a frame; a connection whose unread backlog passes the limit is dropped. */
  send(conn: Connection, out: OutFrame): void {
    if (conn.state === 'closed') return;
    if (conn.transport.bufferedBytes > this.options.maxOutboundBytes) {
      this.fail(conn, 0, ErrorCode.SLOW_CONSUMER, 'the client is not reading; outbound queue is full', true, true);
      return;
    }
    conn.transport.send(out);
    this.metrics.framesOut(1);
  }

  /** Send an Error frame; when `close`, close the connection after it. */
  fail(conn: Connection, requestId: number, code: ErrorCode, message: string, close: boolean, destroyNow = false): void {
    if (conn.state === 'closed') return;
    this.metrics.error(code);
    const limit = limitOf(code);
    if (limit) this.metrics.limitBreach(limit);
    const frame = makeFrame(requestId, {
      case: 'error',
      value: { code, message, fatal: close, reconnect: close && shouldReconnect(code) },
    });
    if (!destroyNow) conn.transport.send(new OutFrame(encodeFrame(frame)));
    if (close) this.close(conn, destroyNow, `${errorName(code)}: ${message}`);
  }

  kick(conn: Connection, code: ErrorCode, reason: string, reconnect = false): void {
    if (conn.state === 'closed') return;
    this.metrics.kick(code);
    conn.transport.send(new OutFrame(encodeFrame(makeFrame(0, { case: 'kick', value: { code, reason, reconnect } }))));
    this.close(conn, false, `kick ${errorName(code)}`);
  }

  close(conn: Connection, destroy: boolean, _why: string): void {
    if (conn.state === 'closed') return;
    const wasOpen = conn.state === 'open';
    if (!wasOpen) {
      this.pending--;
      bump(this.pendingPerAddress, conn.transport.clientAddress, -1);
    }
    conn.state = 'closed';
    this.metrics.connectionClosed(conn.transport.kind);
    // (closed during login: the login unbinds once its bind returns)
    this.conns.delete(conn.id);
    bump(this.perAddress, conn.transport.clientAddress, -1);
    if (wasOpen) {
      if (conn.pendingAcks) this.flushAcks(conn);
      conn.order?.close();
      this.table.remove(conn);
      if (conn.watching.size > 0) this.watchers.set(conn, []);
      const logout = this.unbind(conn).then(() => this.sessionEvent(conn, 'offline'));
      this.logouts.add(logout);
      void logout.finally(() => this.logouts.delete(logout));
    }
    if (destroy) conn.transport.destroy();
    else conn.transport.end();
  }

  /** Remove this connection's session record; true when it was still the device's record. */
  async unbind(conn: Connection): Promise<boolean> {
    try {
      return await this.deps.sessions.unbind(conn.userId, conn.deviceId, this.options.nodeId, conn.id);
    } catch (err) {
      log.error({ err, user: conn.userId }, 'session unbind failed');
      return false;
    }
  }

  /** This gateway's node id. */
  get nodeId(): string {
    return this.options.nodeId;
  }

  /** Who sent what goes up from this connection. */
  originOf(conn: Connection) {
    return { node: this.options.nodeId, connId: BigInt(conn.id), userId: conn.userId, deviceId: conn.deviceId, platform: conn.platform };
  }

  /** Tell logic a session came online or went offline (for presence). */
  sessionEvent(conn: Connection, session: 'online' | 'offline'): Promise<void> {
    const message = upEnvelope({
      origin: this.originOf(conn), partition: userPartition(conn.userId), publishedAtMs: BigInt(Date.now()),
      body: { case: 'session', value: { online: session === 'online' } },
    });
    return this.deps.bus.publishUp(message).catch((err: unknown) => {
      log.warn({ err, user: conn.userId }, 'session event publish failed');
    });
  }
}

/**
 * One address may have at most this share of maxPendingLogins logging in at
 * once (1/8: 250 of the default 2000): a login takes a round trip, so an
 * honest NAT needs few; without it two addresses could hold every pending
 * slot until their login timeout.
 */
const PENDING_SHARE = 8;

function bump(counts: Map<string, number>, key: string, by: number): void {
  const n = (counts.get(key) ?? 0) + by;
  if (n > 0) counts.set(key, n);
  else counts.delete(key);
}
