// What comes down the bus for this node, written to the connections it
// names: replies, message deliveries (a large group's to its members here:
// groups.ts), kicks, revocations, presence watch lists and presence
// changes, and announcements to everyone here.
import type { Bus, Down } from '../engines/bus.js';
import { ErrorCode, decodeFrame, type Frame } from '../protocol/index.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import { log as rootLog, messageTrace } from '../observability/log.js';
import type { Hub } from './hub.js';
import type { GroupIndex } from './groups.js';
import { OutFrame } from './transport.js';

const log = rootLog.child({ component: 'gateway' });

/** A frame's id (field 1, a varint, first when set: protobuf writes fields in number order), read without decoding it. */
export function frameIdOf(frame: Uint8Array): number {
  if (frame[0] !== 0x08) return 0;
  let id = 0;
  for (let i = 1, shift = 0; i < frame.length && shift < 35; i++, shift += 7) {
    id += (frame[i]! & 0x7f) * 2 ** shift;
    if ((frame[i]! & 0x80) === 0) return id;
  }
  return 0;
}

/** One push latency sample per this many deliveries (each sample decodes the frame). */
const LATENCY_SAMPLE_EVERY = 16;

export class Downlink {
  private deliveries = 0;

  constructor(
    private readonly hub: Hub,
    private readonly deps: { bus: Bus; groups: GroupIndex },
    private readonly metrics: GatewayMetrics,
    /** A watch lasts this long after logic checked it; the client subscribes again to keep it (the SDK every 4 minutes). */
    private readonly watchTtlMs: number,
  ) {}

  onDown(batch: Down[]): void {
    const { conns, table, watchers } = this.hub;
    for (const { kind } of batch) {
      switch (kind.case) {
        case 'reply': {
          const conn = conns.get(Number(kind.value.connId));
          if (conn && conn.state === 'open') {
            this.hub.send(conn, new OutFrame(kind.value.frame));
            conn.order?.answered(frameIdOf(kind.value.frame));
          }
          break;
        }
        case 'deliver': {
          const { frame, targets } = kind.value;
          const out = new OutFrame(frame);
          const trace = log.isLevelEnabled('debug');
          const sample = ++this.deliveries % LATENCY_SAMPLE_EVERY === 0;
          if (trace || sample) this.inspectPush(frame, targets.length, trace, sample);
          for (const target of targets) {
            for (const conn of table.devices(target.userId)) {
              if (conn.deviceId !== target.exceptDevice && conn.state === 'open') this.hub.send(conn, out);
            }
          }
          break;
        }
        case 'groupDeliver': {
          // A large group's message: this gateway knows who of its connections may see it (groups.ts).
          const sample = ++this.deliveries % LATENCY_SAMPLE_EVERY === 0;
          if (sample || log.isLevelEnabled('debug')) this.inspectPush(kind.value.frame, 0, log.isLevelEnabled('debug'), sample);
          this.deps.groups.onDeliver(kind.value);
          break;
        }
        case 'groupMembers':
          this.deps.groups.onMembers(kind.value);
          break;
        case 'kick': {
          const k = kind.value;
          const conn = k.connId !== 0n ? conns.get(Number(k.connId)) : table.get(k.userId, k.deviceId);
          if (conn && conn.userId === k.userId && conn.deviceId === k.deviceId) this.hub.kick(conn, k.code, k.reason, k.reconnect);
          break;
        }
        case 'revoke':
          this.revoke(kind.value.userId, kind.value.deviceId || undefined, Number(kind.value.beforeMs));
          break;
        case 'watch': {
          const conn = conns.get(Number(kind.value.connId));
          if (conn && conn.state === 'open') watchers.set(conn, kind.value.userIds);
          break;
        }
        case 'presence': {
          const watching = watchers.of(kind.value.userId);
          if (!watching) break;
          const out = new OutFrame(kind.value.frame);
          const lapsed = Date.now() - this.watchTtlMs;
          for (const conn of [...watching]) {
            // A watch was checked when made: past its lifetime it lapses until the client subscribes again (checked again).
            if (conn.watchedAtMs < lapsed) watchers.set(conn, []);
            else this.hub.send(conn, out);
          }
          break;
        }
        case 'announce': {
          const out = new OutFrame(kind.value.frame);
          for (const conn of conns.values()) if (conn.state === 'open') this.hub.send(conn, out);
          break;
        }
        default:
          // A kind this gateway does not know (a newer logic node during a rolling upgrade): skipped.
          this.deps.bus.counters.unknownSkipped++;
      }
    }
  }

  /** Kick this node's connections whose token a revocation covers; mark those still logging in (their login checks the mark). */
  private revoke(userId: string, deviceId: string | undefined, beforeMs: number): void {
    const reason = deviceId === undefined ? 'logged out everywhere by an administrator' : `device ${deviceId} logged out by an administrator`;
    for (const conn of [...this.hub.conns.values()]) {
      if (conn.userId !== userId || (deviceId !== undefined && conn.deviceId !== deviceId) || conn.tokenIssuedAtMs > beforeMs) continue;
      if (conn.state === 'open') this.hub.kick(conn, ErrorCode.TOKEN_REVOKED, reason);
      else if (conn.state === 'logging-in') conn.revokedWhileLoggingIn = true;
    }
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
}
