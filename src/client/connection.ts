// The client's connection, one at a time: connect and log in, keep it alive
// with pings (a silent server counts as lost), reconnect with backoff after a
// loss, and say so in the client's state. Each connection has a generation:
// callbacks and timers of an older one find it changed and do nothing. What a
// login or a loss means to the rest of the client is the hooks' business.
import { ErrorCode, LonglinkError, encodeFrame, makeFrame, type Frame } from '../protocol/index.js';
import type { ClientState, Emit, LoginInfo, ResolvedOptions, StateDetail } from './client-types.js';
import { describeError } from './net-errors.js';
import type { Requests } from './requests.js';
import type { ClientConnection } from './transport.js';

export interface ConnectionHooks {
  /** Bytes of one frame from the server, on the live connection. */
  frame(bytes: Uint8Array): void;
  /** Logged in as `info`, before the state turns online. */
  loggedIn(info: LoginInfo): void;
  /** Online (after the 'state' event): the session can be used. */
  online(info: LoginInfo): void;
  /** The connection is gone (lost, closed, or failed at login): nothing written on it will be answered. */
  down(reason: string): void;
  /** Every ping interval while connected. */
  heartbeat(): void;
}

export type ConnectionOptions = Pick<
  ResolvedOptions, 'url' | 'token' | 'connector' | 'reconnect' | 'initialBackoffMs' | 'maxBackoffMs' | 'clientVersion'
>;

export class Connection {
  private conn: ClientConnection | undefined;
  private gen = 0;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private attempt = 0;
  /** The gateway of the last connection that failed or was lost: the URL picker avoids it. */
  private lostUrl: string | undefined;
  private lastFrameMs = 0;
  /** Not to reconnect: closed by the app, or kicked for good. */
  private closedByUser = false;
  private current: ClientState = 'idle';
  private loginInfo: LoginInfo | undefined;
  private retryAt: number | undefined;
  /** Why the connection was last lost or an attempt failed (for the 'state' detail). */
  private lostReason: string | undefined;

  constructor(
    private readonly options: ConnectionOptions,
    private readonly requests: Pick<Requests, 'request' | 'newId'>,
    private readonly hooks: ConnectionHooks,
    private readonly emit: Emit,
  ) {}

  get state(): ClientState {
    return this.current;
  }

  /** The session of the last login. */
  get login(): LoginInfo | undefined {
    return this.loginInfo;
  }

  /** `reconnecting`: when the next attempt starts (ms since the epoch). */
  get retryAtMs(): number | undefined {
    return this.retryAt;
  }

  /** Changes whenever a connection starts or ends. */
  get generation(): number {
    return this.gen;
  }

  /** A connection is up (logged in or logging in). */
  get connected(): boolean {
    return this.conn !== undefined;
  }

  get online(): boolean {
    return this.current === 'online';
  }

  /** Write a frame on the live connection; false when there is none. */
  write(frame: Frame): boolean {
    if (!this.conn) return false;
    this.conn.send(encodeFrame(frame));
    return true;
  }

  /**
   * The first connect: `prepare` runs once the state says connecting (the
   * store loads then). If this attempt fails, the client reports it and stays
   * offline: no retries behind the caller's back.
   */
  async connect(prepare: () => Promise<unknown>): Promise<LoginInfo> {
    this.closedByUser = false;
    this.attempt = 0;
    this.setState('connecting');
    await prepare();
    try {
      return await this.open();
    } catch (err) {
      this.cancelRetry();
      this.teardown('connect failed');
      this.setState('offline', { reason: describeError(err) });
      throw err;
    }
  }

  /** Close by the app: no reconnect. */
  close(): void {
    this.closedByUser = true;
    this.cancelRetry();
    const conn = this.conn;
    this.teardown('client closed');
    conn?.close();
    this.setState('offline', { reason: 'closed' });
  }

  /** Kicked for good: the server closes this connection, and the client must not reconnect. */
  stop(reason: string): void {
    this.closedByUser = true;
    this.lostReason = reason;
  }

  private async open(): Promise<LoginInfo> {
    this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting');
    const generation = ++this.gen;
    const token = typeof this.options.token === 'string' ? this.options.token : await this.options.token();
    const url = typeof this.options.url === 'string' ? this.options.url : await this.options.url(this.lostUrl);
    let conn: ClientConnection;
    try {
      conn = await this.options.connector(url, {
        onFrame: (bytes) => {
          if (generation !== this.gen) return;
          this.lastFrameMs = Date.now();
          this.hooks.frame(bytes);
        },
        onClose: (reason) => {
          if (generation !== this.gen) return;
          this.lostUrl = url;
          this.onLost(reason);
        },
      });
    } catch (err) {
      this.lostUrl = url;
      throw err;
    }
    if (generation !== this.gen) {
      conn.close();
      throw new LonglinkError(ErrorCode.UNAVAILABLE, 'superseded');
    }
    this.conn = conn;
    this.lastFrameMs = Date.now();
    let reply: Frame;
    try {
      reply = await this.requests.request({ case: 'login', value: { token, clientVersion: this.options.clientVersion } });
    } catch (err) {
      conn.close();
      this.teardown('login failed');
      throw err;
    }
    if (reply.body.case !== 'loginResult') throw new LonglinkError(ErrorCode.INTERNAL, 'unexpected login reply');
    const r = reply.body.value;
    const info: LoginInfo = { userId: r.userId, deviceId: r.deviceId, platform: r.platform, nodeId: r.nodeId, pingIntervalMs: r.pingIntervalMs, maxFileBytes: Number(r.maxFileBytes) };
    this.loginInfo = info;
    this.attempt = 0;
    this.lostReason = undefined;
    this.hooks.loggedIn(info);
    this.startHeartbeat(r.pingIntervalMs);
    this.setState('online');
    this.hooks.online(info);
    return info;
  }

  private onLost(reason: string): void {
    this.teardown(reason);
    if (this.closedByUser) {
      // Kicked for good: the kick says why.
      this.setState('offline', { reason: this.lostReason ?? reason });
      return;
    }
    this.lostReason = reason;
    if (!this.options.reconnect) {
      this.setState('offline', { reason });
      return;
    }
    this.scheduleReconnect();
  }

  /**
   * The next attempt after a random delay in [0, cap), the cap doubling per
   * failed attempt from initialBackoffMs up to maxBackoffMs ("full jitter":
   * clients that lost one gateway together come back spread over the cap).
   */
  private scheduleReconnect(): void {
    if (this.reconnectTimer !== undefined) return; // one attempt pending at a time
    const cap = Math.min(this.options.maxBackoffMs, this.options.initialBackoffMs * 2 ** this.attempt);
    const delay = Math.floor(Math.random() * cap); // full jitter
    this.attempt++;
    this.retryAt = Date.now() + delay;
    const detail: StateDetail = { retryInMs: delay, retryAtMs: this.retryAt, attempt: this.attempt };
    if (this.lostReason !== undefined) detail.reason = this.lostReason;
    this.setState('reconnecting', detail);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.retryAt = undefined;
      this.open().catch((err: unknown) => {
        this.lostReason = describeError(err);
        if (err instanceof LonglinkError && !this.isRetryableLogin(err)) {
          this.setState('offline', { reason: this.lostReason });
          this.emit('error', err);
          return;
        }
        if (!this.closedByUser && this.current !== 'online') this.scheduleReconnect();
      });
    }, delay);
  }

  private isRetryableLogin(err: LonglinkError): boolean {
    // A new token may fix these, when the app gives a function that gets one.
    if (err.code === ErrorCode.TOKEN_EXPIRED || err.code === ErrorCode.TOKEN_REVOKED) return typeof this.options.token === 'function';
    return ![ErrorCode.TOKEN_INVALID, ErrorCode.TOKEN_MISSING, ErrorCode.FORBIDDEN, ErrorCode.TOO_MANY_CONNECTIONS].includes(err.code);
  }

  private cancelRetry(): void {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.retryAt = undefined;
  }

  private teardown(reason: string): void {
    this.gen++;
    this.conn = undefined;
    clearInterval(this.heartbeatTimer);
    this.hooks.down(reason);
  }

  private startHeartbeat(intervalMs: number): void {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = setInterval(() => {
      if (!this.conn) return;
      if (Date.now() - this.lastFrameMs > intervalMs * 3) {
        // The server went silent: treat the connection as dead.
        const conn = this.conn;
        this.onLost('server silent');
        conn.close();
        return;
      }
      this.write(makeFrame(this.requests.newId(), { case: 'ping', value: {} }));
      this.hooks.heartbeat();
    }, intervalMs);
  }

  private setState(state: ClientState, detail: StateDetail = {}): void {
    if (this.current === state && detail.retryInMs === undefined) return;
    this.current = state;
    this.emit('state', state, detail);
  }
}
