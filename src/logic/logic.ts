// Logic node: consumes client requests from the bus in batches. Sends of a
// batch are stored in one transaction and acked together; the other requests
// follow in order. Replies go down the bus to the connection that asked.
import {
  ErrorCode, LonglinkError, cursorToWire, encodeFrame, makeFrame, messageToWire,
  type BodyOf, type FrameBodyInit,
} from '../protocol/index.js';
import type { Bus, Origin, Subscription, UpMessage } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { Registry } from '../engines/registry.js';
import { isFencedError, type AppendResult, type MessageDraft, type Store } from '../engines/store.js';
import { Pipeline } from './pipeline.js';
import { viewOf } from './access.js';
import { GroupService, groupToWire } from './groups.js';
import { Conversations } from './conversations.js';
import { RecallService } from './recall.js';
import { PresenceService } from './presence.js';
import { log as rootLog, messageTrace } from '../observability/log.js';
import { noLogicMetrics, type LogicMetrics } from '../observability/metrics.js';
import type { Routing } from './fanout.js';

const log = rootLog.child({ component: 'logic' });

/** Retries of a store that fails for a moment, 100 ms doubling (~6 s in all), before the bus takes over. */
const STORE_RETRIES = 6;

/**
 * An error the store will give again for the same data (PostgreSQL classes 22
 * data exception and 23 integrity violation; SQLite constraint errors), as
 * opposed to the store being down or busy.
 */
function isDataError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return false;
  return /^2[23][0-9A-Z]{3}$/.test(code) || code.startsWith('SQLITE_CONSTRAINT') || code === 'SQLITE_MISMATCH' || code === 'SQLITE_TOOBIG';
}

/** Soft cap of a sync page's text, so replies stay well under client frame limits. */
const MAX_PAGE_BYTES = 1024 * 1024;

export interface LogicOptions {
  nodeId: string;
  maxTextBytes: number;
  /** Messages per sync page when the client asks for 0 or more than this. @default 200 */
  syncPageLimit?: number;
  /** Messages per history page, likewise. @default 100 */
  historyPageLimit?: number;
  /** Largest group, owner included. @default 20000 */
  maxGroupMembers?: number;
  /** How long a sender may recall a message. @default 120000 */
  recallWindowMs?: number;
  /** Groups larger than this send read receipts only to the reader's devices. @default 200 */
  receiptFanoutMaxMembers?: number;
  /** How pushes find gateways (see fanout.ts). @default 'targeted' */
  routing?: Routing;
  /** Who may query or watch a user's presence: anyone, or users sharing a conversation with them. @default 'all' */
  presenceVisibility?: 'all' | 'contacts';
}

export interface LogicDeps {
  bus: Bus;
  sessions: Sessions;
  registry: Registry;
  store: Store;
  /** Counters for /metrics. @default none */
  metrics?: LogicMetrics;
}

export class Logic {
  readonly pipeline: Pipeline;
  readonly groups: GroupService;
  readonly conversations: Conversations;
  readonly presence: PresenceService;
  private readonly recalls: RecallService;
  private sub: Subscription | undefined;
  private readonly syncPageLimit: number;
  /** Reads of a batch running at once (see handleRest). */
  private readonly readSlots = new Slots(READS_AT_ONCE);
  private readonly metrics: LogicMetrics;
  private readonly historyPageLimit: number;

  constructor(
    private readonly options: LogicOptions,
    private readonly deps: LogicDeps,
  ) {
    const routing = options.routing ?? 'targeted';
    this.pipeline = new Pipeline({ maxTextBytes: options.maxTextBytes, routing }, deps);
    const withPipeline = { ...deps, pipeline: this.pipeline, routing };
    this.groups = new GroupService({ maxMembers: options.maxGroupMembers ?? 20_000 }, withPipeline);
    this.conversations = new Conversations({
      receiptFanoutMaxMembers: options.receiptFanoutMaxMembers ?? 200,
      maxListed: 1000,
    }, withPipeline);
    this.recalls = new RecallService({ recallWindowMs: options.recallWindowMs ?? 120_000 }, withPipeline);
    this.presence = new PresenceService({
      maxWatched: 100, typingIntervalMs: 1000, typingMaxMembers: 500, visibility: options.presenceVisibility ?? 'all',
    }, withPipeline);
    this.metrics = deps.metrics ?? noLogicMetrics;
    this.syncPageLimit = options.syncPageLimit ?? 200;
    this.historyPageLimit = options.historyPageLimit ?? 100;
  }

  start(): void {
    this.sub = this.deps.bus.consumeUp((batch) => this.process(batch), { onTakeover: () => this.pipeline.forgetCaches() });
  }

  async stop(): Promise<void> {
    await this.sub?.close();
  }

  /** One uplink batch. Never throws for a client's fault; each bad request gets its coded error. */
  async process(batch: UpMessage[]): Promise<void> {
    const now = Date.now();
    this.metrics.batch(batch.length);
    for (const up of batch) this.metrics.request(up.session ? 'session' : up.frame.body.case);
    const sends: { up: UpMessage; draft: MessageDraft }[] = [];
    const acks: { userId: string; deviceId: string; conversationId: string; seq: number }[] = [];
    const rest: UpMessage[] = [];
    // Checked together (a distributed store answers each in a round trip), kept in batch order.
    const checked = await Promise.all(batch.map(async (up) => {
      const body = up.frame.body;
      try {
        if (up.session) return { rest: up };
        if (body.case === 'send') {
          const s = body.value;
          const draft = await this.pipeline.prepare({
            fromUser: up.origin.userId, fromDevice: up.origin.deviceId, claimedFrom: s.fromUser,
            toUser: s.toUser, conversationId: s.conversationId, clientMsgId: s.clientMsgId, text: s.text,
          }, now);
          if (log.isLevelEnabled('debug')) {
            log.debug({ ...messageTrace({ fromUser: draft.fromUser, clientMsgId: draft.clientMsgId, conversationId: draft.conversationId }), gateway: up.origin.node }, 'send accepted');
          }
          return { send: { up, draft } };
        } else if (body.case === 'pushAck') {
          const seq = Number(body.value.seq);
          if (!Number.isSafeInteger(seq) || seq < 0) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'seq out of range');
          if (!(await viewOf(this.deps.store, body.value.conversationId, up.origin.userId))) {
            throw new LonglinkError(ErrorCode.FORBIDDEN, 'not a member of this conversation');
          }
          return { ack: { userId: up.origin.userId, deviceId: up.origin.deviceId, conversationId: body.value.conversationId, seq } };
        }
        return { rest: up };
      } catch (err) {
        return { refused: { up, err } };
      }
    }));
    for (const c of checked) {
      if (c.send) sends.push(c.send);
      else if (c.ack) acks.push(c.ack);
      else if (c.rest) rest.push(c.rest);
    }
    await Promise.all(checked.map((c) => (c.refused ? this.replyError(c.refused.up.origin, c.refused.up.frame.id, c.refused.err) : undefined)));

    if (sends.length > 0) await this.commitSends(sends);
    if (acks.length > 0) {
      try {
        await this.deps.store.advanceDelivered(acks);
      } catch (err) {
        log.error({ err }, 'cursor write failed');
      }
    }
    await this.handleRest(rest);
  }

  /**
   * The batch's other requests. Writes (group changes, read marks, recalls,
   * session events…) run one at a time in batch order, as a conversation has
   * one writer; reads (sync, history, the conversation list, presence queries)
   * run beside them, at most READS_AT_ONCE together, so a crowd syncing after
   * a reconnect does not queue one round trip after another. Each connection's
   * requests still run in the order it sent them.
   */
  private async handleRest(rest: readonly UpMessage[]): Promise<void> {
    const run = async (up: UpMessage): Promise<void> => {
      try {
        await this.handle(up);
      } catch (err) {
        // This node lost the shard mid-batch: no reply, and the batch stays unacked for the new owner.
        if (isFencedError(err)) throw err;
        await this.replyError(up.origin, up.frame.id, err);
      }
    };
    const lastOfConnection = new Map<string, Promise<void>>();
    let writes: Promise<void> = Promise.resolve();
    const all: Promise<void>[] = [];
    for (const up of rest) {
      const key = `${up.origin.node}/${up.origin.connId}`;
      const before = lastOfConnection.get(key) ?? Promise.resolve();
      let done: Promise<void>;
      if (!up.session && READS.has(up.frame.body.case ?? '')) {
        done = before.then(() => this.readSlots.run(() => run(up)));
      } else {
        done = Promise.all([before, writes]).then(() => run(up));
        writes = done;
      }
      lastOfConnection.set(key, done);
      all.push(done);
    }
    await Promise.all(all);
  }

  /**
   * Store the batch's sends in one transaction, ack each sender, then push.
   * Acks go first: the sender's wait is the commit, not the fan-out.
   *
   * Failures: a store that is down or failing for a moment (connection lost,
   * restart, serialization) is retried here with backoff, holding the batch
   * so nothing behind it overtakes it; if it stays down, the error goes to the
   * bus, which redelivers the batch in order. A bad message (a data error) is
   * isolated by storing the batch one message at a time. A failed push also
   * goes to the bus: the redelivered batch finds its messages stored
   * (duplicates) and pushes them again.
   */
  private async commitSends(sends: { up: UpMessage; draft: MessageDraft }[]): Promise<void> {
    let results: AppendResult[] | undefined;
    for (let attempt = 0; results === undefined; attempt++) {
      try {
        results = await this.pipeline.store(sends.map((s) => s.draft));
      } catch (err) {
        if (isDataError(err) && sends.length > 1) {
          log.error({ err, sends: sends.length }, 'a batch of sends was refused by the store; storing one by one');
          for (const s of sends) await this.commitSends([s]);
          return;
        }
        if (isDataError(err)) {
          const { up } = sends[0]!;
          log.error({ err, ...messageTrace({ fromUser: up.origin.userId, clientMsgId: sends[0]!.draft.clientMsgId }) }, 'a send was refused by the store');
          await this.replyError(up.origin, up.frame.id, new LonglinkError(ErrorCode.BAD_REQUEST, 'the message cannot be stored'));
          return;
        }
        // This node lost the shard: the batch is the new owner's now, retrying cannot succeed.
        if (isFencedError(err)) throw err;
        if (attempt >= STORE_RETRIES) throw err;
        log.warn({ err, attempt: attempt + 1, of: STORE_RETRIES }, 'store unavailable; retrying');
        await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
      }
    }
    await Promise.all(results.map((r, i) => {
      const up = sends[i]!.up;
      const m = r.message;
      return this.reply(up.origin, up.frame.id, {
        case: 'sendAck',
        value: {
          clientMsgId: m.clientMsgId, serverMsgId: m.serverMsgId, conversationId: m.conversationId,
          seq: BigInt(m.seq), sentAtMs: BigInt(m.sentAtMs), duplicate: r.duplicate,
        },
      });
    }));
    await this.pipeline.pushResults(results);
  }

  private async handle(up: UpMessage): Promise<void> {
    const { origin } = up;
    if (up.session) return this.presence.sessionChanged(origin.userId);
    const id = up.frame.id;
    const body = up.frame.body;
    switch (body.case) {
      case 'sync':
        return this.reply(origin, id, await this.sync(origin, body.value));
      case 'history':
        return this.reply(origin, id, await this.history(origin, body.value));
      case 'group': {
        const g = await this.groups.handle({ userId: origin.userId, deviceId: origin.deviceId }, body.value);
        return this.reply(origin, id, { case: 'groupResult', value: { group: groupToWire(g) } });
      }
      case 'markRead':
        await this.conversations.markRead(origin.userId, origin.deviceId, body.value.conversationId, seqOf(body.value.seq));
        return this.reply(origin, id, { case: 'done', value: {} });
      case 'recall':
        await this.recalls.recall(origin.userId, origin.deviceId, body.value.conversationId, seqOf(body.value.seq));
        return this.reply(origin, id, { case: 'done', value: {} });
      case 'typing':
        return this.presence.typing(origin, body.value.conversationId);
      case 'presenceQuery':
        return this.reply(origin, id, { case: 'presenceResult', value: { users: await this.presence.query(origin.userId, body.value.userIds) } });
      case 'presenceSubscribe':
        return this.reply(origin, id, { case: 'presenceResult', value: { users: await this.presence.subscribe(origin, body.value.userIds) } });
      case 'conversations':
        return this.reply(origin, id, { case: 'conversationsResult', value: { conversations: await this.conversations.list(origin.userId) } });
      default:
        throw new LonglinkError(ErrorCode.UNKNOWN_FRAME, `frame type ${body.case ?? 'unknown'} is not handled by logic`);
    }
  }

  /** What a device missed, from its cursors, one page of at most `limit` messages. */
  private async sync(origin: Origin, req: BodyOf<'sync'>): Promise<FrameBodyInit> {
    const store = this.deps.store;
    const limit = req.limit > 0 ? Math.min(req.limit, this.syncPageLimit) : this.syncPageLimit;
    const given = new Map<string, number>();
    for (const c of req.cursors) given.set(c.conversationId, Math.max(0, seqOf(c.seq)));
    const only = new Set(req.conversationIds);
    for (const conversationId of only) {
      if (!(await viewOf(store, conversationId, origin.userId))) {
        throw new LonglinkError(ErrorCode.FORBIDDEN, `not a member of ${conversationId}`);
      }
    }
    const delivered = await store.delivered(origin.userId, origin.deviceId);
    const conversations = (await store.listForUser(origin.userId)).filter((c) => only.size === 0 || only.has(c.conversationId));
    const reached = new Map<string, number>();
    for (const conversationId of only) reached.set(conversationId, given.get(conversationId) ?? delivered.get(conversationId) ?? 0);
    // A group member stands at least just before its join event.
    for (const c of conversations) {
      if (only.has(c.conversationId)) reached.set(c.conversationId, Math.max(reached.get(c.conversationId)!, c.joinedSeq - 1));
    }
    const messages = [];
    let remaining = limit;
    let hasMore = false;
    let bytes = 0;
    for (const c of conversations) {
      // A group member sees its timeline from its join event on.
      const base = Math.max(given.get(c.conversationId) ?? delivered.get(c.conversationId) ?? 0, c.joinedSeq - 1);
      if (c.lastSeq <= base) {
        if (only.has(c.conversationId)) reached.set(c.conversationId, base);
        continue;
      }
      if (remaining === 0) {
        hasMore = true;
        break;
      }
      let page = await store.after(c.conversationId, base, remaining, c.lastSeq);
      // Keep frames reasonable: stop a page at about 1 MiB of text (always at least one message).
      let cut = page.length;
      for (let i = 0; i < page.length; i++) {
        bytes += Buffer.byteLength(page[i]!.text, 'utf8') + 128;
        if (bytes > MAX_PAGE_BYTES && messages.length + i > 0) {
          cut = i;
          break;
        }
      }
      if (cut < page.length) {
        page = page.slice(0, cut);
        remaining = 0;
      } else remaining -= page.length;
      messages.push(...page);
      const last = page.length > 0 ? page[page.length - 1]!.seq : base;
      reached.set(c.conversationId, last);
      if (last < c.lastSeq) hasMore = true;
    }
    return {
      case: 'syncResult',
      value: {
        messages: messages.map(messageToWire),
        cursors: [...reached].map(([conversationId, seq]) => cursorToWire(conversationId, seq)),
        hasMore,
      },
    };
  }

  private async history(origin: Origin, req: BodyOf<'history'>): Promise<FrameBodyInit> {
    const view = await viewOf(this.deps.store, req.conversationId, origin.userId);
    if (!view) throw new LonglinkError(ErrorCode.FORBIDDEN, 'not a member of this conversation');
    const limit = req.limit > 0 ? Math.min(req.limit, this.historyPageLimit) : this.historyPageLimit;
    let before = seqOf(req.beforeSeq);
    if (view.toSeq !== undefined && (before <= 0 || before > view.toSeq + 1)) before = view.toSeq + 1;
    const page = await this.deps.store.before(req.conversationId, before, limit + 1, view.fromSeq);
    const hasMore = page.length > limit;
    const messages = hasMore ? page.slice(1) : page;
    return { case: 'historyResult', value: { conversationId: req.conversationId, messages: messages.map(messageToWire), hasMore } };
  }

  private reply(origin: Origin, id: number, body: FrameBodyInit): Promise<void> {
    return this.deps.bus.publishDown(origin.node, { kind: 'reply', connId: origin.connId, frame: encodeFrame(makeFrame(id, body)) });
  }

  private async replyError(origin: Origin, id: number, err: unknown): Promise<void> {
    const known = err instanceof LonglinkError;
    if (!known) log.error({ err, user: origin.userId }, 'request failed');
    const code = known ? err.code : ErrorCode.INTERNAL;
    this.metrics.error(code);
    if (code === ErrorCode.GROUP_FULL) this.metrics.limitBreach('group_size');
    const message = known ? err.message : 'internal error';
    await this.reply(origin, id, {
      case: 'error',
      value: { code, message, fatal: false, reconnect: false },
    }).catch((e: unknown) => log.error({ err: e }, 'reply failed'));
  }
}

function seqOf(v: bigint): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'seq out of range');
  return n;
}

/** Requests that only read: a batch runs them beside its writes (see Logic.handleRest). */
const READS = new Set(['sync', 'history', 'conversations', 'presenceQuery']);
/** At most this many reads of one batch at once (a PostgreSQL pool has 10 connections by default). */
const READS_AT_ONCE = 16;

/** At most `size` tasks at once; the others wait their turn in order. */
class Slots {
  private busy = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly size: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.busy >= this.size) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.busy++;
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next(); // the slot passes straight to the next task
      else this.busy--;
    }
  }
}
