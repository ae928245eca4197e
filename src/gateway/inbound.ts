// Frames from clients. The first must be a login (login.ts); after it each
// frame is charged to the limits, then answered here (ping, a second login),
// gathered (PushAcks) or sent up the bus to logic, in the partition its
// operation names. The gateway applies no business rules.
import { ackPartition, upEnvelope, type Bus } from '../engines/bus.js';
import { DecodeError, ErrorCode, decodeFrame, encodeFrame, makeFrame, type Frame } from '../protocol/index.js';
import { MAX_REQUEST_ID, route } from '../protocol/operations.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import { log as rootLog, messageTrace } from '../observability/log.js';
import type { Connection } from './connection.js';
import type { Hub } from './hub.js';
import type { Limits } from './limits.js';
import type { LoginHandshake } from './login.js';
import { OutFrame } from './transport.js';
import { ConnectionOrder, MAX_HELD } from './order.js';

/** After a publish of a partition failed, its later requests from the same connection are refused until it comes again, at most this long (see publish). */
export const FAILED_LANE_MS = 1000;
const log = rootLog.child({ component: 'gateway' });

/** How the gateway decodes what clients send (see decodeFrame). */
const CLIENT_FRAMES = { readUnknownFields: false } as const;

/** How long PushAcks gather at the gateway before going up together. */
export const ACK_FLUSH_MS = 100;
/** PushAcks per uplink entry at most (about 60 bytes each). */
const ACKS_PER_ENTRY = 1000;

export class Inbound {
  /** Connections with PushAcks waiting to go up. */
  private readonly acksWaiting = new Set<Connection>();

  constructor(
    private readonly hub: Hub,
    private readonly limits: Limits,
    private readonly login: LoginHandshake,
    private readonly deps: { bus: Bus },
    private readonly metrics: GatewayMetrics,
  ) {}

  /** One frame's bytes from a connection. Returns false to pause reading from it. */
  onPayload(conn: Connection, payload: Uint8Array): boolean {
    if (conn.state === 'closed') return false;
    const now = Date.now();
    conn.lastSeenMs = now;
    let frame: Frame;
    try {
      // Fields this version does not know are dropped here: whatever a client pads a frame with goes no further.
      frame = decodeFrame(payload, CLIENT_FRAMES);
    } catch (err) {
      const code = err instanceof DecodeError ? err.code : ErrorCode.BAD_FRAME;
      this.hub.fail(conn, 0, code, (err as Error).message, true);
      return false;
    }
    this.metrics.frameIn(frame.body.case);
    if (conn.state === 'awaiting-login') return this.login.begin(conn, frame);
    const wait = this.limits.charge(conn, frame.body.case === 'send', now);
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
        this.hub.send(conn, new OutFrame(encodeFrame(makeFrame(frame.id, { case: 'pong', value: { serverTimeMs: BigInt(Date.now()) } }))));
        return;
      case 'login':
        this.hub.fail(conn, frame.id, ErrorCode.ALREADY_LOGGED_IN, 'this connection is already logged in', false);
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

  /**
   * Send up the PushAcks connections have gathered (also when one closes):
   * together, one uplink entry per bucket of users (ackPartition), not one
   * per ack, so a large group's members acking each message cost the bus
   * what the buckets cost.
   */
  flushAcks(only?: Connection): void {
    const buckets = new Map<string, { connId: bigint; frameId: number; userId: string; deviceId: string; conversationId: string; seq: bigint }[]>();
    for (const conn of only ? [only] : this.acksWaiting) {
      if (conn.pendingAcks) {
        const partition = ackPartition(conn.userId);
        let list = buckets.get(partition);
        if (!list) buckets.set(partition, (list = []));
        for (const frame of conn.pendingAcks.values()) {
          if (frame.body.case !== 'pushAck') continue;
          list.push({
            connId: BigInt(conn.id), frameId: frame.id, userId: conn.userId, deviceId: conn.deviceId,
            conversationId: frame.body.value.conversationId, seq: frame.body.value.seq,
          });
        }
      }
      conn.pendingAcks = undefined;
      this.acksWaiting.delete(conn);
    }
    const origin = { node: this.hub.nodeId };
    for (const [partition, acks] of buckets) {
      for (let i = 0; i < acks.length; i += ACKS_PER_ENTRY) {
        this.deps.bus.publishUp(upEnvelope({
          origin, partition, publishedAtMs: BigInt(Date.now()), body: { case: 'acks', value: { acks: acks.slice(i, i + ACKS_PER_ENTRY) } },
        })).catch((err: unknown) => {
          // Cumulative: the next ack of each of these devices makes up for them.
          log.warn({ err, acks: acks.length }, 'PushAck publish failed');
        });
      }
    }
  }

  /** Send a request up to logic, in the partition its operation names (src/protocol/operations.ts). */
  private forward(conn: Connection, frame: Frame, rechecked = false): void {
    // A request behind one whose service is being looked at again waits its turn.
    if (conn.rechecking) {
      if (conn.rechecking.length < MAX_HELD) conn.rechecking.push(frame);
      else this.hub.fail(conn, frame.id, ErrorCode.RATE_LIMITED, `at most ${MAX_HELD} requests may wait for a service to be looked at again`, false);
      return;
    }
    if (frame.requestId.length > MAX_REQUEST_ID) {
      this.hub.fail(conn, frame.id, ErrorCode.BAD_REQUEST, `request_id must be at most ${MAX_REQUEST_ID} characters`, false);
      return;
    }
    const where = route(frame, { userId: conn.userId });
    if (!where) {
      this.hub.fail(conn, frame.id, ErrorCode.UNKNOWN_FRAME, `frame type ${frame.body.case ?? 'unknown'} is not accepted from clients`, false);
      return;
    }
    if (frame.body.case === 'send' && log.isLevelEnabled('debug')) {
      const v = frame.body.value;
      log.debug({ ...messageTrace({ fromUser: conn.userId, clientMsgId: v.clientMsgId, conversationId: v.conversationId || undefined }), conn: conn.id }, 'send received');
    }
    // An ack or a typing notice expects no answer: it goes up as it is, whatever else waits.
    const answered = frame.body.case !== 'pushAck' && frame.body.case !== 'typing';
    const { service, access } = where.operation;
    // Nobody runs the service (its processes are gone past their lease): say so now rather than queue the request for
    // nobody. Not a send: a pipelined sender whose message was refused while the next one got through (the service
    // came back between them) would resend it after the next, out of order; sends wait in their stream instead.
    if (answered && frame.body.case !== 'send' && this.deps.bus.isDown(service)) {
      if (rechecked) {
        this.hub.fail(conn, frame.id, ErrorCode.UNAVAILABLE, `the ${service} service is not running; retry`, false);
        return;
      }
      // Down at the last background look, up to a second ago: it may be back since. Refused only if a look made now
      // agrees; meanwhile the connection's later requests wait behind this one, in order.
      const waiting = (conn.rechecking = [frame]);
      const resume = () => {
        conn.rechecking = undefined;
        if (conn.state === 'closed') return;
        waiting.forEach((f, i) => this.forward(conn, f, i === 0));
      };
      this.deps.bus.recheck(service).then(resume, resume);
      return;
    }
    if (!answered || !this.deps.bus.splitsServices) {
      this.publish(conn, frame, where.partition, where.requestId);
      return;
    }
    conn.order ??= new ConnectionOrder((r) => this.publish(conn, r.frame, r.partition, r.requestId));
    conn.order.submit({ frame, service, partition: where.partition, access, requestId: where.requestId });
  }

  private publish(conn: Connection, frame: Frame, partition: string, requestId: string): void {
    const message = upEnvelope({
      origin: this.hub.originOf(conn), partition, requestId, publishedAtMs: BigInt(Date.now()),
      body: { case: 'frame', value: frame },
    });
    const refuse = (err: unknown) => {
      log.error({ err, conn: conn.id }, 'uplink publish failed');
      conn.order?.answered(frame.id); // answered here: what waits behind it may go
      this.hub.fail(conn, frame.id, ErrorCode.UNAVAILABLE, 'the server could not accept the request; retry', false);
    };
    if (!this.deps.bus.publishInTurn) {
      this.deps.bus.publishUp(message).catch(refuse);
      return;
    }
    // One at a time per partition: a later request never gets in ahead of an earlier one that failed (Bus.publishInTurn).
    // Nor one the client wrote before it heard of the failure: those can come after the queue behind the failed one
    // drained. So after a failure the partition's requests are refused until the failed one comes again (the client
    // resends from it on, in order: the SDK does) or FAILED_LANE_MS has passed (a client that does not resend it).
    const lanes = (conn.publishing ??= new Map<string, Promise<boolean>>());
    const failed = (conn.publishFailed ??= new Map<string, { requestId: string; atMs: number }>());
    const before = lanes.get(partition);
    const turn = (before ?? Promise.resolve(true)).then(async (ok) => {
      const f = failed.get(partition);
      if (f !== undefined && (f.requestId === requestId || Date.now() - f.atMs >= FAILED_LANE_MS)) failed.delete(partition);
      if (!ok || failed.has(partition)) {
        refuse(new Error('an earlier request of this partition could not be accepted'));
        return false;
      }
      try {
        await this.deps.bus.publishUp(message);
        return true;
      } catch (err) {
        failed.set(partition, { requestId, atMs: Date.now() });
        refuse(err);
        return false;
      }
    });
    lanes.set(partition, turn);
    void turn.then(() => {
      if (lanes.get(partition) === turn) lanes.delete(partition);
    });
  }
}
