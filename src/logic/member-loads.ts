// Gateways' member loads: a gateway that gets a large group's message for the
// first time (fanout.ts, GroupDeliver) asks for the group's membership windows
// once (GroupMembersRequest, on the group's partition of the message
// service's uplink), then keeps them current from the group's timeline events
// (src/gateway/groups.ts). The answer goes down the asking gateway's own
// stream in parts of WINDOWS_PER_PART windows (a 100,000-member group is
// about 2 MB), the last one marked done.
//
// A load reads the whole group, so few run at once (outside the uplink
// batch, which goes on meanwhile: the gateway holds the group's messages
// until its answer comes), and gateways asking for the same group while its
// read waits share it. A load lost with its node is never answered: the
// gateway asks again after its timeout.
import { down, type Bus, type GroupMembersRequest, type Origin } from '../engines/bus.js';
import type { MemberWindow, Store } from '../engines/store.js';
import { log as rootLog } from '../observability/log.js';

const log = rootLog.child({ component: 'member-loads' });

/** Windows per downlink message of an answer (about 20 bytes each: parts of ~40 KB, under the bus's 64 KiB entries). */
export const WINDOWS_PER_PART = 2000;

/** Loads reading the store at once (each reads a whole group). */
const AT_ONCE = 2;

/** Loads waiting at most; past it a request is answered with an error (the gateway asks again later). */
const MAX_WAITING = 10_000;

interface Waiting {
  conversationId: string;
  /** The lowest since_seq of the requests sharing this read (the windows of the others are among its). */
  sinceSeq: number;
  askers: { node: string; requestId: bigint }[];
}

export class MemberLoads {
  private running = 0;
  /** Reads not started yet, by conversation, in arrival order. */
  private readonly waiting = new Map<string, Waiting>();
  private closed = false;

  constructor(private readonly deps: { bus: Bus; store: Store }) {}

  /** A gateway's request: answered later on its downlink (never throws). */
  submit(origin: Origin, request: GroupMembersRequest): void {
    const asker = { node: origin.node, requestId: origin.connId };
    const sinceSeq = Math.max(0, Number(request.sinceSeq));
    const queued = this.waiting.get(request.conversationId);
    if (queued) {
      // Read later than this request was made: its answer holds every change the asker needs.
      queued.sinceSeq = Math.min(queued.sinceSeq, sinceSeq);
      queued.askers.push(asker);
      return;
    }
    if (this.closed || this.waiting.size >= MAX_WAITING) {
      void this.answerError(request.conversationId, [asker], this.closed ? 'the node is stopping' : 'too many member loads waiting');
      return;
    }
    this.waiting.set(request.conversationId, { conversationId: request.conversationId, sinceSeq, askers: [asker] });
    this.next();
  }

  /** Waiting loads are answered with an error (their gateways ask again); running ones finish. */
  close(): void {
    this.closed = true;
    const left = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of left) void this.answerError(w.conversationId, w.askers, 'the node is stopping');
  }

  private next(): void {
    while (this.running < AT_ONCE && this.waiting.size > 0) {
      const [id, w] = this.waiting.entries().next().value!;
      this.waiting.delete(id);
      this.running++;
      void this.load(w).finally(() => {
        this.running--;
        this.next();
      });
    }
  }

  private async load(w: Waiting): Promise<void> {
    let read: { lastSeq: number; windows: MemberWindow[] };
    try {
      read = await this.deps.store.memberWindows(w.conversationId, w.sinceSeq);
    } catch (err) {
      log.warn({ err, conversation: w.conversationId }, 'member load failed');
      await this.answerError(w.conversationId, w.askers, 'the store did not answer');
      return;
    }
    const wire = read.windows.map((m) => ({ userId: m.userId, joinedSeq: BigInt(m.joinedSeq), leftSeq: BigInt(m.leftSeq ?? 0) }));
    await Promise.all(w.askers.map(async ({ node, requestId }) => {
      const parts: Promise<void>[] = [];
      for (let i = 0; i === 0 || i < wire.length; i += WINDOWS_PER_PART) {
        parts.push(this.deps.bus.publishDown(node, down({
          case: 'groupMembers',
          value: {
            requestId, conversationId: w.conversationId, lastSeq: BigInt(read.lastSeq),
            windows: wire.slice(i, i + WINDOWS_PER_PART), done: i + WINDOWS_PER_PART >= wire.length,
          },
        })));
      }
      await Promise.all(parts).catch((err: unknown) => log.warn({ err, node }, 'member load answer failed'));
    }));
  }

  private async answerError(conversationId: string, askers: readonly { node: string; requestId: bigint }[], error: string): Promise<void> {
    await Promise.all(askers.map(({ node, requestId }) => this.deps.bus.publishDown(node, down({
      case: 'groupMembers', value: { requestId, conversationId, done: true, error },
    })).catch(() => undefined)));
  }
}
