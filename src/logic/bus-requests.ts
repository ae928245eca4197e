// Requests to logic from inside the cluster (the HTTP API's business push),
// sent like a client's: an uplink envelope in the partition the operation
// table names, handled by that partition's owner in order with everything
// else written there, answered on this node's own downlink.
import { decodeFrame, makeFrame, ErrorCode, LonglinkError, type Frame, type FrameBodyInit } from '../protocol/index.js';
import { route } from '../protocol/operations.js';
import { upEnvelope, type Bus, type Subscription } from '../engines/bus.js';
import { log as rootLog } from '../observability/log.js';

const log = rootLog.child({ component: 'bus-requests' });

export interface BusRequest {
  /** Acting user (the system user for business pushes without a sender). */
  userId: string;
  deviceId: string;
  body: FrameBodyInit;
  /** The write's idempotency key, if the caller has one. */
  requestId?: string;
  /** May act as the system user and post into groups without being a member (admin key checked by the caller). */
  trusted: boolean;
}

export class BusRequester {
  private sub: Subscription | undefined;
  /** Like a gateway's connection ids: unique for this node id across restarts. */
  private nextId = Date.now() * 1000;
  private readonly pending = new Map<number, (frame: Frame) => void>();

  /** `node`: where replies come back (a name of this process's own, not a gateway's). */
  constructor(
    private readonly bus: Bus,
    readonly node: string,
    private readonly timeoutMs = 15_000,
  ) {}

  start(): void {
    this.sub = this.bus.consumeDown(this.node, (batch) => {
      for (const { kind } of batch) {
        if (kind.case !== 'reply') continue;
        const done = this.pending.get(Number(kind.value.connId));
        if (!done) continue;
        try {
          done(decodeFrame(kind.value.frame));
        } catch (err) {
          log.error({ err }, 'undecodable reply');
        }
      }
    }, { broadcast: false });
  }

  async stop(): Promise<void> {
    await this.sub?.close();
  }

  /**
   * Send one request and wait for its reply frame. Rejects with UNAVAILABLE
   * when no reply comes in time (the request may still be applied: a retry
   * with the same request id is applied once).
   */
  async request(r: BusRequest): Promise<Frame> {
    const id = this.nextId++;
    const frame = makeFrame(1, r.body);
    if (r.requestId) frame.requestId = r.requestId;
    const where = route(frame, { userId: r.userId });
    if (!where) throw new LonglinkError(ErrorCode.UNKNOWN_FRAME, `${frame.body.case ?? 'empty'} is not a request`);
    const reply = new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new LonglinkError(ErrorCode.UNAVAILABLE, `no answer within ${this.timeoutMs} ms; retry with the same id (it is applied once)`));
      }, this.timeoutMs);
      this.pending.set(id, (f) => {
        clearTimeout(timer);
        this.pending.delete(id);
        resolve(f);
      });
    });
    try {
      await this.bus.publishUp(upEnvelope({
        origin: { node: this.node, connId: BigInt(id), userId: r.userId, deviceId: r.deviceId, platform: 'api' },
        partition: where.partition, requestId: where.requestId, trusted: r.trusted, publishedAtMs: BigInt(Date.now()),
        body: { case: 'frame', value: frame },
      }));
    } catch (err) {
      this.pending.get(id)?.(makeFrame(1, { case: 'error', value: { code: ErrorCode.UNAVAILABLE, message: 'the bus refused the request; retry' } }));
      log.warn({ err }, 'publish failed');
    }
    return reply;
  }
}
