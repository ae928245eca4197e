// The login handshake, a small state machine per connection:
//
//   awaiting-login ─ a login frame ─▶ verifying
//   verifying      ─ the token verifies, its user is not throttled at this address,
//                    and it has not expired; this node is announced ──────────────▶ binding
//   binding        ─ not revoked; the session bound; still not revoked; the user
//                    within its connection limit ─────────────────────────────────▶ open
//   any phase      ─ a check fails ─▶ refused (an Error frame, then the connection closes)
//
// The login throttle (login-throttle.ts) is asked once the token is checked,
// so it counts only what a client cannot forge: a token that does not verify
// is refused, and counted, under its client address alone (LOGIN_THROTTLED
// once the address has sent too many); one that verifies counts under its
// user and address, whose own failures (expired, revoked) may throttle it.
// So forged tokens claiming a user never hold up that user's valid token.
//
// Every await may outlive the connection (login deadline, peer gone, a kick):
// the login then stops where it is — abandoned — undoing its bind if it made
// one. The connection's state is 'logging-in' from verifying to binding, and
// reading from it pauses from its login frame until it is open.
import { down, type Bus } from '../engines/bus.js';
import type { SessionInfo, Sessions } from '../engines/sessions.js';
import type { TokenClaims, TokenService } from '../auth/tokens.js';
import { ErrorCode, LonglinkError, encodeFrame, makeFrame, type Frame } from '../protocol/index.js';
import { verifiedSubject } from './login-throttle.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import { log as rootLog } from '../observability/log.js';
import type { Connection } from './connection.js';
import type { Hub } from './hub.js';
import type { Limits } from './limits.js';
import type { GatewayOptions } from './options.js';
import { OutFrame } from './transport.js';

const log = rootLog.child({ component: 'gateway' });

export type LoginPhase = 'awaiting-login' | 'verifying' | 'binding' | 'open' | 'refused' | 'abandoned';

/** Why a login is refused: the code and message of the fatal Error frame. */
interface Refusal {
  code: ErrorCode;
  message: string;
}

const REVOKED: Refusal = { code: ErrorCode.TOKEN_REVOKED, message: 'this token was revoked (logged out by an administrator); get a new one' };
const ADDRESS_THROTTLED: Refusal = {
  code: ErrorCode.LOGIN_THROTTLED, message: 'too many logins with tokens that do not verify from this address; retry in a minute',
};
const USER_THROTTLED: Refusal = { code: ErrorCode.LOGIN_THROTTLED, message: 'too many failed logins of this user from this address; retry in a minute' };
const REPLACED_REASON = 'the same device logged in on another connection';

type LoginOptions = Pick<
  GatewayOptions,
  'nodeId' | 'pingIntervalMs' | 'maxFrameBytes' | 'maxTextBytes' | 'maxPayloadBytes' | 'maxFileBytes' | 'maxConnectionsPerUser' | 'loginPolicy'
>;

/** One login in progress and what it has learnt so far. */
class LoginAttempt {
  phase: LoginPhase = 'verifying';
  /** The verified token (from verifying on). */
  claims!: TokenClaims;
  /** The device's session record the bind replaced, if any (from binding on). */
  previous: SessionInfo | undefined;
  /** The user's sessions, as the bind left them (the connection limit and the login policy judge them). */
  sessions: SessionInfo[] = [];

  /**
   * Where a failure of this login is counted (see LoginThrottle): its client
   * address while the token is unverified, its user and address once it verified.
   */
  throttleKey: string;

  constructor(
    readonly conn: Connection,
    readonly requestId: number,
    readonly token: string,
    forgedKey: string,
  ) {
    this.throttleKey = forgedKey;
  }

  /** The connection closed while the login awaited something. */
  get closed(): boolean {
    return this.conn.state !== 'logging-in';
  }
}

export class LoginHandshake {
  constructor(
    private readonly options: LoginOptions,
    private readonly deps: { tokens: TokenService; sessions: Sessions; bus: Bus },
    private readonly metrics: GatewayMetrics,
    private readonly hub: Hub,
    private readonly limits: Limits,
    /** Resolves once the gateway announced this node. */
    private readonly started: Promise<void>,
  ) {}

  private get maxConnectionsPerUser(): number {
    return this.options.maxConnectionsPerUser;
  }

  /**
   * awaiting-login: a connection's first frame. It must be a login; the login
   * then runs on its own. Returns false: reading pauses until the login is
   * open (or for good).
   */
  begin(conn: Connection, frame: Frame): false {
    const body = frame.body;
    if (body.case !== 'login') {
      this.hub.fail(conn, frame.id, ErrorCode.NOT_LOGGED_IN, 'the first frame must be a login', true);
      return false;
    }
    conn.state = 'logging-in';
    void this.run(new LoginAttempt(conn, frame.id, body.value.token, this.limits.forgedLoginKey(conn.transport.clientAddress)));
    return false;
  }

  private async run(a: LoginAttempt): Promise<void> {
    a.phase = await this.verifying(a);
    if (a.phase === 'binding') a.phase = await this.binding(a);
    if (a.phase === 'open') await this.open(a);
  }

  /**
   * verifying: the token's signature, then the throttle of what it turned
   * out to be (see the top of this file), then its expiry; then no further
   * until this node is announced.
   */
  private async verifying(a: LoginAttempt): Promise<'binding' | 'refused' | 'abandoned'> {
    const address = a.conn.transport.clientAddress;
    try {
      a.claims = await this.deps.tokens.verify(a.token);
    } catch (err) {
      const code = err instanceof LonglinkError ? err.code : ErrorCode.TOKEN_INVALID;
      // (counted even when the client has gone meanwhile: closing at once must not dodge the throttle)
      // TOKEN_EXPIRED comes only after the signature verified: its user is who it says.
      const user = code === ErrorCode.TOKEN_EXPIRED ? verifiedSubject(a.token) : '';
      if (user !== '') a.throttleKey = this.limits.userLoginKey(address, user);
      if (!this.limits.loginAllowed(a.throttleKey, Date.now())) return this.throttled(a, user !== '' ? USER_THROTTLED : ADDRESS_THROTTLED);
      return this.refuse(a, { code, message: (err as Error).message });
    }
    if (a.closed) return 'abandoned';
    a.throttleKey = this.limits.userLoginKey(address, a.claims.userId);
    if (!this.limits.loginAllowed(a.throttleKey, Date.now())) return this.throttled(a, USER_THROTTLED);
    if (a.claims.expiresAtMs <= Date.now()) return this.refuse(a, { code: ErrorCode.TOKEN_EXPIRED, message: 'token expired' });
    // No session is bound before the cluster knows this node: a reaper that saw
    // sessions of an unknown node would take them for a dead node's.
    await this.started;
    if (a.closed) return 'abandoned';
    const { conn, claims } = a;
    conn.userId = claims.userId;
    conn.deviceId = claims.deviceId;
    conn.platform = claims.platform;
    conn.tokenIssuedAtMs = claims.issuedAtMs;
    return 'binding';
  }

  /**
   * binding: one atomic step binds the session unless a revocation covers the
   * token (a revoked token never touches the session table: it would take the
   * device's session), and returns the user's sessions; then the checks that
   * need no round trip: a revocation announced while this login ran, and the
   * user's connection limit. A revocation written after the bind is announced
   * to every gateway, which kicks the connection. A login refused or abandoned
   * after its bind gives the device's session back (abandonBind).
   */
  private async binding(a: LoginAttempt): Promise<'open' | 'refused' | 'abandoned'> {
    const { conn } = a;
    let result;
    try {
      // Registered before the answer: once the client has its LoginResult it syncs, and every
      // message stored after this point must find the session to be pushed.
      result = await this.deps.sessions.bindUnlessRevoked({
        userId: conn.userId, deviceId: conn.deviceId, platform: conn.platform,
        node: this.options.nodeId, connId: conn.id, loginAtMs: Date.now(),
      }, a.claims.issuedAtMs);
    } catch (err) {
      log.error({ err, user: conn.userId }, 'session bind failed');
      return this.refuse(a, { code: ErrorCode.UNAVAILABLE, message: 'the server could not register the session; retry' });
    }
    if (!result.bound) return this.refuse(a, REVOKED);
    a.previous = result.previous;
    a.sessions = result.sessions;
    const after = conn.revokedWhileLoggingIn ? REVOKED
      : a.sessions.length > this.maxConnectionsPerUser
        ? { code: ErrorCode.TOO_MANY_CONNECTIONS, message: `this user already holds ${this.maxConnectionsPerUser} connections` }
        : undefined;
    if (after || a.closed) {
      await this.abandonBind(a);
      return after ? this.refuse(a, after) : 'abandoned';
    }
    return 'open';
  }

  /**
   * open: the connection takes its device's place here (a local connection it
   * replaces is kicked), gets its LoginResult and is read again. What follows
   * does not hold up the answer: the replaced connection on another node is
   * kicked, the login policy applied, logic told the session is online.
   */
  private async open(a: LoginAttempt): Promise<void> {
    const { conn, previous } = a;
    this.hub.opened(conn);
    this.metrics.login('ok');
    conn.lastSeenMs = Date.now();
    const replaced = this.hub.table.add(conn);
    if (replaced) this.hub.kick(replaced, ErrorCode.REPLACED, REPLACED_REASON);
    this.hub.send(conn, this.loginResult(a));
    conn.transport.resume();
    try {
      if (previous && previous.node !== this.options.nodeId) {
        await this.deps.bus.publishDown(previous.node, down({
          case: 'kick',
          value: {
            userId: previous.userId, deviceId: previous.deviceId, connId: BigInt(previous.connId),
            code: ErrorCode.REPLACED, reason: REPLACED_REASON,
          },
        }));
      }
      await this.enforceLoginPolicy(conn, a.sessions);
      void this.hub.sessionEvent(conn, 'online');
    } catch (err) {
      log.error({ err, user: conn.userId }, 'post-login work failed');
    }
  }

  private loginResult(a: LoginAttempt): OutFrame {
    const { claims } = a;
    return new OutFrame(encodeFrame(makeFrame(a.requestId, {
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
        maxPayloadBytes: this.options.maxPayloadBytes,
        maxFileBytes: BigInt(this.options.maxFileBytes ?? 0),
      },
    })));
  }

  /** refused by the login throttle: answered and closed, not counted again. */
  private throttled(a: LoginAttempt, { code, message }: Refusal): 'refused' {
    this.metrics.login(code);
    this.hub.fail(a.conn, a.requestId, code, message, true);
    return 'refused';
  }

  /**
   * refused: counted (toward the client's login throttle too, unless the
   * failure was ours or the user's connection limit), answered, closed.
   */
  private refuse(a: LoginAttempt, { code, message }: Refusal): 'refused' {
    this.metrics.login(code);
    if (code !== ErrorCode.UNAVAILABLE && code !== ErrorCode.TOO_MANY_CONNECTIONS) this.limits.loginFailed(a.throttleKey, Date.now());
    this.hub.fail(a.conn, a.requestId, code, message, true);
    return 'refused';
  }

  /**
   * Undo a bind of a login that did not complete. The bind replaced the
   * device's session record: if ours is still the record, the connection it
   * replaced (alive or not) has none, so nothing would be pushed to it. It is
   * told to reconnect, which binds it again.
   */
  private async abandonBind(a: LoginAttempt): Promise<void> {
    const { previous } = a;
    const removed = await this.hub.unbind(a.conn);
    if (!removed || !previous) return;
    const reason = 'a login of this device on another connection was refused after taking its session; reconnect';
    if (previous.node === this.options.nodeId) {
      const local = this.hub.conns.get(previous.connId);
      if (local && local.state === 'open' && local.userId === previous.userId && local.deviceId === previous.deviceId) {
        this.hub.kick(local, ErrorCode.REPLACED, reason, true);
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
    const policy = this.options.loginPolicy;
    if (policy === 'multi') return;
    for (const s of sessions) {
      if (s.deviceId === conn.deviceId) continue;
      if (policy === 'platform' && s.platform !== conn.platform) continue;
      const reason = policy === 'single'
        ? `logged in on another device (${conn.deviceId}); one device at a time`
        : `logged in on another ${conn.platform} device (${conn.deviceId}); one per platform`;
      if (s.node === this.options.nodeId) {
        const local = this.hub.conns.get(s.connId);
        if (local && local.userId === s.userId && local.deviceId === s.deviceId) this.hub.kick(local, ErrorCode.LOGIN_POLICY, reason);
      } else {
        await this.deps.bus.publishDown(s.node, down({
          case: 'kick', value: { userId: s.userId, deviceId: s.deviceId, connId: BigInt(s.connId), code: ErrorCode.LOGIN_POLICY, reason },
        }));
      }
    }
  }
}
