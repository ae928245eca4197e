// Forwarding: a write to a conversation homed in another datacenter (a send,
// a recall, a group change) is handed to that datacenter's bus, in the same
// partition, with the same request id, as if its own gateway had published it;
// the home's owner of the partition applies it in order with everything else
// written there, and its reply comes back here and goes on to the client's
// gateway. Applied once however often it is forwarded (the request id).
//
// Per partition, the bus hands logic one batch at a time, and the forwarder
// publishes a batch's writes in their order before the batch is done: a
// conversation's writes reach its home in the order they reached this
// datacenter. Their replies are relayed as they come.
import { create } from '@bufbuild/protobuf';
import { ErrorCode, encodeFrame, makeFrame } from '../protocol/index.js';
import { down, upEnvelope, type Bus, type Subscription, type UpEnvelope } from '../engines/bus.js';
import { OriginSchema } from '../protocol/gen/longlink/internal/v1/envelope_pb.js';
import { log as rootLog } from '../observability/log.js';
import { within } from './within.js';
import { isHomed, operationOf } from '../protocol/operations.js';

const log = rootLog.child({ component: 'dc-forward' });

/** A datacenter's bus as the forwarder uses it: publish uplink, read its own replies. */
export type PeerBus = Pick<Bus, 'publishUp' | 'consumeDown' | 'close'>;

export interface ForwarderOptions {
  /** This process's node id (its reply stream in each peer is named after it). */
  nodeId: string;
  /** This datacenter's name. */
  dc: string;
  /** How long a forwarded write may wait for its home's reply before the client is told UNAVAILABLE (it resends; applied once). @default 5000 */
  timeoutMs?: number;
}

interface Pending {
  resolve(frame: Uint8Array | undefined): void;
}

export interface ForwarderCounters {
  forwarded: number;
  timedOut: number;
}

/** How long a write refused in a hand-off holds back its connection's later writes of the partition, at most. */
const FENCE_MS = 60_000;
/** Fences kept at most (the oldest go first). */
const FENCES_MAX = 100_000;

export class Forwarder {
  private readonly subs: Subscription[] = [];
  /**
   * Per connection and partition: the first write refused because a hand-off
   * failed (its key), and until when. Until that write comes back (the client
   * resends in order), the connection's later writes of the partition are
   * refused too, in any batch, whether they would be forwarded or stored
   * here (the home may have moved meanwhile): stored first, they would
   * overtake it.
   */
  private readonly fences = new Map<string, { key: string; untilMs: number }>();
  private readonly pending = new Map<number, Pending>();
  /** Like a gateway's connection ids: unique for this node id across restarts. */
  private nextId = Date.now() * 1000;
  readonly counters: ForwarderCounters = { forwarded: 0, timedOut: 0 };
  private readonly replyNode: string;

  constructor(
    private readonly options: ForwarderOptions,
    private readonly deps: { bus: Bus; peers: ReadonlyMap<string, PeerBus> },
  ) {
    this.replyNode = `${options.nodeId}.from-${options.dc}`;
  }

  start(): void {
    for (const peer of this.deps.peers.values()) {
      this.subs.push(peer.consumeDown(this.replyNode, (batch) => {
        for (const { kind } of batch) {
          if (kind.case !== 'reply') continue;
          this.pending.get(Number(kind.value.connId))?.resolve(kind.value.frame);
        }
      }, { broadcast: false }));
    }
  }

  async stop(): Promise<void> {
    for (const p of this.pending.values()) p.resolve(undefined);
    await Promise.all(this.subs.map((s) => s.close()));
  }

  /**
   * Hand writes (one partition's, in order) to datacenter `dc`; each reply is
   * relayed to the gateway that published the write here when it comes (a
   * write its home did not answer in time is answered UNAVAILABLE: the client
   * resends it, and it is applied once). Resolves once the writes are handed
   * over, not answered: a batch that waited for the other datacenter's
   * answers could wait on a batch there that waits for this one's.
   */
  async forward(dc: string, ups: readonly UpEnvelope[]): Promise<void> {
    const peer = this.deps.peers.get(dc);
    const handed: Promise<void>[] = [];
    // Once one write could not be handed over, the later ones of the partition are refused too, unsent: stored
    // before the first one's resend, they would overtake it (the client resends them after it, in order).
    let refusedFrom: string | undefined;
    for (const up of ups) {
      if (refusedFrom !== undefined) {
        this.fence(up);
        handed.push(this.unavailable(up, refusedFrom));
        continue;
      }
      if (up.forwardedFrom !== '') {
        handed.push(this.unavailable(up, `this conversation's home is moving (${up.forwardedFrom} sent it here, this datacenter sends it to ${dc}); resend`));
        continue;
      }
      if (!peer) {
        handed.push(this.unavailable(up, `this conversation's home datacenter (${dc}) is not configured here`));
        continue;
      }
      const origin = up.origin!;
      const id = this.nextId++;
      const timer = setTimeout(() => {
        if (!this.pending.has(id)) return;
        this.counters.timedOut++;
        this.pending.get(id)!.resolve(undefined);
      }, this.options.timeoutMs ?? 5000);
      this.pending.set(id, {
        resolve: (frame) => {
          clearTimeout(timer);
          this.pending.delete(id);
          const answered = frame
            ? this.deps.bus.publishDown(origin.node, down({ case: 'reply', value: { connId: origin.connId, frame } }))
            : this.unavailable(up, `no answer from this conversation's home datacenter (${dc}) in time; resend (it is applied once)`);
          answered.catch((err: unknown) => log.warn({ err }, 'relaying a forwarded write\'s answer failed; the client resends'));
        },
      });
      this.counters.forwarded++;
      // In order: the next write of the partition is handed over after this one (a publish the link holds up
      // stays queued, in order, in front of the next; past a second the batch goes on and the client resends).
      await within(1000, () => peer.publishUp(upEnvelope({
        ...up,
        origin: create(OriginSchema, { ...origin, node: this.replyNode, connId: BigInt(id) }),
        forwardedFrom: this.options.dc,
      }))).catch((err: unknown) => {
        log.warn({ reason: (err as Error).message, dc }, 'handing a write to its home datacenter failed');
        refusedFrom = `an earlier write of this conversation could not be handed to its home datacenter (${dc}); resend (it is applied once)`;
        this.fence(up);
        this.pending.get(id)?.resolve(undefined);
      });
    }
    await Promise.all(handed);
  }

  /**
   * The writes of a batch that may go on: those held back behind a write a
   * hand-off refused (see `fences`) are answered UNAVAILABLE and left out;
   * the refused write itself, come back, lifts its fence.
   */
  async admit(batch: readonly UpEnvelope[]): Promise<UpEnvelope[]> {
    if (this.fences.size === 0) return [...batch];
    const now = Date.now();
    const held: Promise<void>[] = [];
    const admitted = batch.filter((up) => {
      if (up.body.case !== 'frame' || !isHomed(operationOf(up.body.value))) return true; // reads, acks: never held
      const at = fenceOf(up);
      const fence = at === undefined ? undefined : this.fences.get(at);
      if (!fence) return true;
      if (fence.untilMs <= now || writeKey(up) === fence.key) {
        this.fences.delete(at!);
        return true;
      }
      held.push(this.unavailable(up, 'an earlier write of this conversation from this connection was refused; resend it first (in order)'));
      return false;
    });
    await Promise.all(held);
    return admitted;
  }

  /** Hold the connection's later writes of the partition behind this refused one (the first refused of its connection only). */
  private fence(up: UpEnvelope): void {
    const at = fenceOf(up);
    const key = writeKey(up);
    if (at === undefined || key === undefined || this.fences.has(at)) return;
    if (this.fences.size >= FENCES_MAX) this.fences.delete(this.fences.keys().next().value!);
    this.fences.set(at, { key, untilMs: Date.now() + FENCE_MS });
  }

  /** Answer a write UNAVAILABLE, with why (the client resends it; applied once). */
  unavailable(up: UpEnvelope, why: string): Promise<void> {
    const origin = up.origin!;
    const frameId = up.body.case === 'frame' ? up.body.value.id : 0;
    const frame = encodeFrame(makeFrame(frameId, { case: 'error', value: { code: ErrorCode.UNAVAILABLE, message: why } }));
    return this.deps.bus.publishDown(origin.node, down({ case: 'reply', value: { connId: origin.connId, frame } }));
  }
}

/** Where a write's fence is kept: its connection and partition (undefined: no origin). */
function fenceOf(up: UpEnvelope): string | undefined {
  const o = up.origin;
  return o ? `${o.node}/${o.connId}|${up.partition}` : undefined;
}

/** What a resend of this write carries again: a send's client_msg_id, else its request id (undefined: none). */
function writeKey(up: UpEnvelope): string | undefined {
  if (up.body.case !== 'frame') return undefined;
  const frame = up.body.value;
  if (frame.body.case === 'send' && frame.body.value.clientMsgId !== '') return `m:${frame.body.value.clientMsgId}`;
  const requestId = up.requestId || frame.requestId;
  return requestId ? `r:${requestId}` : undefined;
}
