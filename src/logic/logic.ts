// Logic node: consumes uplink batches from the bus and dispatches each request
// to the handler its operation names (src/protocol/operations.ts). A node
// consumes the uplink of the services it runs (all of them by default; see
// src/roles/logic.ts for the split layout) and serves any request it is
// handed, whatever its service. The batch
// runs as schedule.ts says: every partition's writes in arrival order (sends
// stored together, a membership change a barrier between them), reads beside
// them. Replies go down the bus to the connection that asked.
//
// Failures: a client's fault is answered with its coded error. Anything else
// a write hits (the store unavailable, fenced, or a bug) fails the batch back
// to the bus, which hands it again (an outage pauses consumption; a bad entry
// is isolated and dead-lettered alone). Every write is idempotent by its
// request id, so what was applied before the failure is not applied twice.
import {
  ErrorCode, LonglinkError, contentFromWire, encodeFrame, makeFrame,
  type BodyOf, type Frame, type FrameBodyInit,
} from '../protocol/index.js';
import { isHomed, operationName, operationOf } from '../protocol/operations.js';
import { PUSH_GROUP, SEARCH_GROUP, down, type Bus, type Origin, type Service, type Subscription, type UpEnvelope } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { Registry } from '../engines/registry.js';
import type { Watches } from '../engines/watches.js';
import { SendersRefusedError, StoreUnavailableError, isFencedError, isStoreDataError, isUnavailable, type AppendResult, type DeliveredMark, type MessageDraft, type Store } from '../engines/store.js';
import { Pipeline, type ContentFilter, type PipelineOptions } from './pipeline.js';
import { viewRefusal, viewsOf } from './access.js';
import { GroupService, groupToWire } from './groups.js';
import { Conversations } from './conversations.js';
import { RecallService } from './recall.js';
import { BlockService } from './blocks.js';
import { ReactionService } from './reactions.js';
import { ProfileService, profileToWire } from './profiles.js';
import { PresenceService } from './presence.js';
import { Reads } from './reads.js';
import { SearchService } from './search.js';
import { PushDevices } from './push-devices.js';
import { ReadQueue } from './read-queue.js';
import { MemberLoads } from './member-loads.js';
import { seqOf } from './seq.js';
import { runBatch, type Scheduled } from './schedule.js';
import { log as rootLog, messageTrace } from '../observability/log.js';
import { noLogicMetrics, type LogicMetrics } from '../observability/metrics.js';
import type { Routing } from './fanout.js';
import type { Homes } from '../dc/homes.js';
import type { Forwarder } from '../dc/forward.js';
import type { DEFAULTS } from '../config.js';

const log = rootLog.child({ component: 'logic' });

/** Logic's options, from the configuration (src/config.ts: loadServerConfig and DEFAULTS). */
export interface LogicOptions {
  nodeId: string;
  /** This node's datacenter (LONGLINK_DC). */
  dc?: string;
  maxTextBytes: number;
  /** Largest custom payload (Content.payload), bytes. */
  maxPayloadBytes: number;
  /** Largest group, owner included. */
  maxGroupMembers: number;
  /** Groups one user may be a current member of. */
  maxGroupsPerUser: number;
  /** Who may add a user to a group (see groups.ts). */
  groupAddPolicy: 'anyone' | 'contacts' | 'nobody';
  /** How long a sender may recall a message. */
  recallWindowMs: number;
  /** How pushes find gateways (see fanout.ts). */
  routing: Routing;
  /** Who may query or watch a user's presence: anyone, or users sharing a conversation with them. */
  presenceVisibility: 'all' | 'contacts';
  /** Page sizes, fan-out and presence bounds (DEFAULTS.logic). */
  tuning: LogicTuning;
  /** Full-text search (LONGLINK_SEARCH); off, nothing is indexed and searches are refused FORBIDDEN. @default true */
  search?: boolean;
  /** Push stored messages at once, or publish them for the push consumer group (see pipeline.ts). @default 'direct' */
  delivery?: 'direct' | 'committed';
  /** Checks every send before it is stored (the risk rules). */
  contentFilter?: ContentFilter;
  /** With `direct` delivery, publish to the committed stream too (PipelineOptions.publishCommitted). */
  publishCommitted?: boolean;
}

export type LogicTuning = { readonly [K in keyof typeof DEFAULTS.logic]: number };

export interface LogicDeps {
  bus: Bus;
  sessions: Sessions;
  registry: Registry;
  store: Store;
  /** Which gateways watch whose presence (presence changes go only to them). @default every gateway gets every change */
  watches?: Watches;
  /** Counters for /metrics. @default none */
  metrics?: LogicMetrics;
  /** Several datacenters: writes to a conversation homed in another one are forwarded there (src/dc/). @default one datacenter */
  datacenters?: { homes: Homes; forwarder: Forwarder; replication?: PipelineOptions['replication']; homeEpochs?: PipelineOptions['homeEpochs'] };
}

/** One request of a batch with what the handlers need. */
export interface Request {
  up: UpEnvelope;
  origin: Origin;
  /** The client frame it carries (none for a session event). */
  frame: Frame | undefined;
  /** Its frame id, echoed on the reply. */
  id: number;
  requestId: string;
}

type Handler = (r: Request, body: never) => Promise<FrameBodyInit | undefined>;

export class Logic {
  readonly pipeline: Pipeline;
  readonly groups: GroupService;
  readonly conversations: Conversations;
  readonly presence: PresenceService;
  private readonly recalls: RecallService;
  readonly blocks: BlockService;
  readonly reactions: ReactionService;
  private readonly profiles: ProfileService;
  private readonly reads: Reads;
  readonly searches: SearchService;
  private readonly pushDevices: PushDevices;
  /** Reads wait here, fairly between users, outside the batches. */
  readonly readQueue: ReadQueue;
  /** Gateways' loads of a large group's membership (member-loads.ts). */
  private readonly memberLoads: MemberLoads;
  private sub: Subscription | undefined;
  private pushSub: Subscription | undefined;
  private searchSub: Subscription | undefined;
  private readonly metrics: LogicMetrics;
  /** The handler of every operation but send (stored in batches) and pushAck (cursors, gathered). */
  private readonly handlers: Record<string, Handler>;

  constructor(
    private readonly options: LogicOptions,
    private readonly deps: LogicDeps,
  ) {
    const { routing, tuning } = options;
    this.blocks = new BlockService(deps);
    this.pipeline = new Pipeline({
      maxTextBytes: options.maxTextBytes, maxPayloadBytes: options.maxPayloadBytes, blocks: this.blocks, routing, delivery: options.delivery, nodeId: options.nodeId, dc: options.dc,
      replication: deps.datacenters?.replication, homeEpochs: deps.datacenters?.homeEpochs, contentFilter: options.contentFilter,
      publishCommitted: options.publishCommitted,
    }, deps);
    const withPipeline = { ...deps, pipeline: this.pipeline, routing, blocks: this.blocks };
    this.groups = new GroupService({
      maxMembers: options.maxGroupMembers, maxGroupsPerUser: options.maxGroupsPerUser, addPolicy: options.groupAddPolicy,
    }, withPipeline);
    this.conversations = new Conversations({
      receiptFanoutMaxMembers: tuning.receiptFanoutMaxMembers, pageLimit: tuning.conversationsPageLimit, pageMax: tuning.conversationsPageMax,
      deliveredVisibility: options.presenceVisibility,
    }, withPipeline);
    this.recalls = new RecallService({
      recallWindowMs: options.recallWindowMs, maxTextBytes: options.maxTextBytes, maxPayloadBytes: options.maxPayloadBytes,
    }, withPipeline);
    this.reactions = new ReactionService(withPipeline);
    this.profiles = new ProfileService(deps);
    this.presence = new PresenceService({
      maxWatched: tuning.maxWatched, typingIntervalMs: tuning.typingIntervalMs, typingMaxMembers: tuning.typingMaxMembers,
      visibility: options.presenceVisibility,
    }, withPipeline);
    this.reads = new Reads({ syncPageLimit: tuning.syncPageLimit, historyPageLimit: tuning.historyPageLimit, maxBytes: tuning.replyMaxBytes }, deps);
    this.searches = new SearchService({ maxBytes: tuning.replyMaxBytes, enabled: options.search !== false }, deps);
    this.pushDevices = new PushDevices(deps);
    this.readQueue = new ReadQueue({
      atOnce: tuning.readsAtOnce, queuedPerUser: tuning.readsQueuedPerUser, bytesPerSecond: tuning.readBytesPerSecond, bytesBurst: tuning.readBytesBurst,
    });
    this.metrics = deps.metrics ?? noLogicMetrics;
    this.memberLoads = new MemberLoads(deps);

    const group = async (r: Request, b: BodyOf<'group'>): Promise<FrameBodyInit> => {
      const g = await this.groups.handle({ userId: r.origin.userId, deviceId: r.origin.deviceId, requestId: r.requestId, trusted: r.up.trusted }, b);
      return { case: 'groupResult', value: { group: groupToWire(g) } };
    };
    const handlers = {
      group,
      markRead: async (r: Request, b: BodyOf<'markRead'>): Promise<FrameBodyInit> => {
        await this.conversations.markRead(r.origin.userId, r.origin.deviceId, b.conversationId, seqOf(b.seq));
        return { case: 'done', value: {} };
      },
      recall: async (r: Request, b: BodyOf<'recall'>): Promise<FrameBodyInit> => {
        await this.recalls.recall(r.origin.userId, r.origin.deviceId, b.conversationId, seqOf(b.seq), r.requestId, r.up.trusted);
        return { case: 'done', value: {} };
      },
      delete: async (r: Request, b: BodyOf<'delete'>): Promise<FrameBodyInit> => {
        await this.recalls.recall(r.origin.userId, r.origin.deviceId, b.conversationId, seqOf(b.seq), r.requestId, r.up.trusted, 'delete');
        return { case: 'done', value: {} };
      },
      hide: async (r: Request, b: BodyOf<'hide'>): Promise<FrameBodyInit> => {
        await this.recalls.hide(r.origin.userId, r.origin.deviceId, b.conversationId, seqOf(b.seq), r.requestId);
        return { case: 'done', value: {} };
      },
      edit: async (r: Request, b: BodyOf<'edit'>): Promise<FrameBodyInit> => {
        const content = b.content ? contentFromWire(b.content) : undefined;
        await this.recalls.edit(r.origin.userId, r.origin.deviceId, b.conversationId, seqOf(b.seq), b.text, content, r.requestId);
        return { case: 'done', value: {} };
      },
      setProfile: async (r: Request, b: BodyOf<'setProfile'>): Promise<FrameBodyInit> =>
        ({ case: 'profileResult', value: { profiles: [profileToWire(await this.profiles.set(r.origin.userId, b.name, b.avatarUrl))] } }),
      profileQuery: async (_r: Request, b: BodyOf<'profileQuery'>): Promise<FrameBodyInit> =>
        ({ case: 'profileResult', value: { profiles: (await this.profiles.query(b.userIds)).map(profileToWire) } }),
      react: async (r: Request, b: BodyOf<'react'>): Promise<FrameBodyInit> => {
        await this.reactions.react(r.origin.userId, b.conversationId, seqOf(b.seq), b.emoji, b.remove);
        return { case: 'done', value: {} };
      },
      block: async (r: Request, b: BodyOf<'block'>): Promise<FrameBodyInit> =>
        ({ case: 'blockResult', value: { blocked: await this.blocks.block(r.origin.userId, b.userId, b.blocked) } }),
      typing: async (r: Request, b: BodyOf<'typing'>) => {
        await this.presence.typing(r.origin, b.conversationId);
        return undefined;
      },
      sync: (r: Request, b: BodyOf<'sync'>) => this.reads.sync(r.origin, b),
      history: (r: Request, b: BodyOf<'history'>) => this.reads.history(r.origin, b),
      search: (r: Request, b: BodyOf<'search'>) => this.searches.search(r.origin, b),
      pushRegister: async (r: Request, b: BodyOf<'pushRegister'>): Promise<FrameBodyInit> => {
        await this.pushDevices.register(r.origin, b);
        return { case: 'done', value: {} };
      },
      notifySettings: async (r: Request, b: BodyOf<'notifySettings'>): Promise<FrameBodyInit> => {
        await this.pushDevices.settings(r.origin, b);
        return { case: 'done', value: {} };
      },
      conversations: async (r: Request, b: BodyOf<'conversations'>): Promise<FrameBodyInit> =>
        ({ case: 'conversationsResult', value: await this.conversations.list(r.origin.userId, b) }),
      presenceQuery: async (r: Request, b: BodyOf<'presenceQuery'>): Promise<FrameBodyInit> =>
        ({ case: 'presenceResult', value: { users: await this.presence.query(r.origin.userId, b.userIds) } }),
      presenceSubscribe: async (r: Request, b: BodyOf<'presenceSubscribe'>): Promise<FrameBodyInit> =>
        ({ case: 'presenceResult', value: { users: await this.presence.subscribe(r.origin, b.userIds) } }),
    };
    this.handlers = handlers as Record<string, Handler>;
  }

  /** Consume the uplink of these services (all by default). */
  start(services?: readonly Service[]): void {
    this.sub = this.deps.bus.consumeUp((batch) => this.process(batch), { services, onTakeover: () => this.pipeline.forgetCaches() });
  }

  /** Join the committed stream's push group: fan out what any node stored (delivery `committed`). */
  startPush(): void {
    this.pushSub = this.deps.bus.consumeCommitted(PUSH_GROUP, async (batch) => {
      await this.pipeline.pushCommitted(batch);
    });
  }

  /** Join the committed stream's search group: index what any node stored (search.ts). */
  startIndexing(): void {
    if (!this.searches.enabled) return;
    this.searchSub = this.deps.bus.consumeCommitted(SEARCH_GROUP, (batch) => this.searches.index(batch));
  }

  async stop(): Promise<void> {
    await Promise.all([this.sub?.close(), this.pushSub?.close(), this.searchSub?.close()]);
    await this.reactions.flush().catch((err: unknown) => log.warn({ err }, 'pushing the last reactions failed; devices read them with the messages'));
    // Reads still waiting are answered UNAVAILABLE (ask again); running ones may finish, briefly.
    this.readQueue.close();
    this.memberLoads.close();
    await this.readQueue.idle(2000);
  }

  /** One uplink batch. A client's fault is answered; a failure of a write rejects (the bus hands the batch again). */
  async process(whole: UpEnvelope[]): Promise<void> {
    this.metrics.batch(whole.length);
    const dcs = this.deps.datacenters;
    const batch = dcs ? await this.forwardRemote(await dcs.forwarder.admit(whole), dcs) : whole;
    const scheduled: Scheduled<Request>[] = [];
    const acks: Request[] = [];
    for (const up of batch) {
      const origin = up.origin;
      if (!origin) continue; // not from a role of this cluster: nothing to answer
      const frame = up.body.case === 'frame' ? up.body.value : undefined;
      const r: Request = { up, origin, frame, id: frame?.id ?? 0, requestId: up.requestId };
      const connection = `${origin.node}/${origin.connId}`;
      if (up.body.case === 'session') {
        this.metrics.request('session');
        scheduled.push({ item: r, partition: up.partition, kind: 'write', connection });
        continue;
      }
      if (up.body.case === 'acks') {
        // A gateway's gathered PushAcks: each as if its connection had sent it alone.
        for (const a of up.body.value.acks) {
          this.metrics.request('pushAck');
          const frame = makeFrame(a.frameId, { case: 'pushAck', value: { conversationId: a.conversationId, seq: a.seq } });
          acks.push({
            up, origin: { ...origin, connId: a.connId, userId: a.userId, deviceId: a.deviceId }, frame, id: a.frameId, requestId: '',
          });
        }
        continue;
      }
      if (up.body.case === 'members') {
        // A gateway's load of a large group's membership: answered on its own, outside the batch.
        this.metrics.request('members');
        this.memberLoads.submit(origin, up.body.value);
        continue;
      }
      if (!frame) continue; // a kind this node does not know (a newer publisher): nothing to do
      this.metrics.request(frame.body.case);
      const op = operationOf(frame);
      if (frame.body.case === 'pushAck') acks.push(r);
      else if (!op) scheduled.push({ item: r, partition: up.partition, kind: 'read', connection }); // answered UNKNOWN_FRAME
      else scheduled.push({ item: r, partition: up.partition, kind: frame.body.case === 'send' ? 'send' : op.access, connection });
    }
    await runBatch(scheduled, {
      sends: (items) => this.sends(items),
      write: (r) => this.write(r),
      read: (r) => this.read(r),
    });
    if (acks.length > 0) await this.pushAcks(acks);
  }

  /**
   * Several datacenters: the writes of this batch to conversations homed in
   * another one are forwarded there (each partition's in order, all of them
   * answered before the batch is done); the rest is returned, handled here.
   */
  private async forwardRemote(batch: UpEnvelope[], dcs: NonNullable<LogicDeps['datacenters']>): Promise<UpEnvelope[]> {
    const homed = batch.filter((up) => up.origin && up.body.case === 'frame' && isHomed(operationOf(up.body.value)));
    if (homed.length === 0) return batch;
    const routes = await dcs.homes.routesOf(homed.map((up) => up.partition));
    const away = new Map<string, UpEnvelope[]>(); // by partition, in batch order
    const held: UpEnvelope[] = [];
    const elsewhere = new Set<UpEnvelope>();
    for (const up of homed) {
      const route = routes.get(up.partition);
      if (route === undefined || route === dcs.homes.dc) continue;
      elsewhere.add(up);
      if (route === 'hold') {
        held.push(up);
        continue;
      }
      const list = away.get(up.partition);
      if (list) list.push(up);
      else away.set(up.partition, [up]);
    }
    if (elsewhere.size === 0) return batch;
    // Held (this datacenter is about to serve the home, or hands it over): the batch waits and is handed again, so
    // its writes keep their order (answering them UNAVAILABLE would let a later one in flight be stored first).
    if (held.length > 0) throw new StoreUnavailableError('a conversation of this batch has its home moving between datacenters; the batch is handed again');
    await Promise.all([...away].map(([partition, ups]) => dcs.forwarder.forward(routes.get(partition)!, ups)));
    return batch.filter((up) => !elsewhere.has(up));
  }

  /** A write: answered, or its failure (not the client's fault) rejects. */
  private async write(r: Request): Promise<void> {
    if (!r.frame) {
      await this.presence.sessionChanged(r.origin.userId).catch((err: unknown) => log.warn({ err, user: r.origin.userId }, 'presence update failed'));
      return;
    }
    let reply: FrameBodyInit | undefined;
    try {
      reply = await this.dispatch(r);
    } catch (err) {
      if (!(err instanceof LonglinkError)) throw err;
      await this.replyError(r, err);
      return;
    }
    if (reply) await this.reply(r.origin, r.id, reply);
  }

  /** A read: queued (answered later, whatever happens: nothing to redo), or refused BUSY when its user has too many waiting. */
  private read(r: Request): void {
    const queued = this.readQueue.submit(r.origin.userId, async () => {
      try {
        const reply = await this.dispatch(r);
        return reply ? await this.reply(r.origin, r.id, reply) : 0;
      } catch (err) {
        await this.replyError(r, isUnavailable(err) ? new LonglinkError(ErrorCode.UNAVAILABLE, 'the store is unavailable; retry') : err);
        return 0;
      }
    }, () => void this.replyError(r, new LonglinkError(ErrorCode.UNAVAILABLE, 'the server is stopping; ask again')));
    if (!queued) {
      this.metrics.limitBreach('reads_queued');
      void this.replyError(r, new LonglinkError(ErrorCode.BUSY, 'too many of your requests are waiting; retry later'));
    }
  }

  private dispatch(r: Request): Promise<FrameBodyInit | undefined> {
    const body = r.frame?.body;
    const handler = body?.case !== undefined && Object.hasOwn(this.handlers, body.case) ? this.handlers[body.case] : undefined;
    if (!handler) throw new LonglinkError(ErrorCode.UNKNOWN_FRAME, `frame type ${body?.case ?? 'unknown'} is not handled by logic`);
    return handler(r, body!.value as never);
  }

  /**
   * Check, store (one transaction), ack and push the sends of one round.
   * Acks go first: the sender's wait is the commit, not the fan-out. A data
   * error (a message the store cannot hold) is isolated by storing one by
   * one and answered to its sender; anything else rejects.
   */
  private async sends(items: Request[]): Promise<void> {
    const now = Date.now();
    const checked = await Promise.all(items.map(async (r) => {
      const body = r.frame?.body;
      if (body?.case !== 'send') throw new Error('a send was scheduled for what is not one');
      const s = body.value;
      try {
        const draft = await this.pipeline.prepare({
          fromUser: r.origin.userId, fromDevice: r.origin.deviceId, claimedFrom: s.fromUser, trusted: r.up.trusted,
          toUser: s.toUser, conversationId: s.conversationId, clientMsgId: s.clientMsgId, text: s.text,
          ...(s.content ? { content: contentFromWire(s.content) } : {}),
        }, now);
        if (log.isLevelEnabled('debug')) {
          log.debug({ ...messageTrace({ fromUser: draft.fromUser, clientMsgId: draft.clientMsgId, conversationId: draft.conversationId }), gateway: r.origin.node }, 'send accepted');
        }
        return { r, draft };
      } catch (err) {
        if (!(err instanceof LonglinkError)) throw err;
        await this.replyError(r, err);
        return undefined;
      }
    }));
    const ready = checked.filter((c): c is { r: Request; draft: MessageDraft } => c !== undefined);
    if (ready.length > 0) await this.commitSends(ready);
  }

  private async commitSends(sends: { r: Request; draft: MessageDraft }[]): Promise<void> {
    let results: AppendResult[];
    try {
      results = await this.pipeline.store(sends.map((s) => s.draft));
    } catch (err) {
      if (err instanceof SendersRefusedError) {
        // A group change committed meanwhile (by the group service) refused these senders; nothing was stored.
        await Promise.all([...err.refused].map(([i, why]) => this.replyError(sends[i]!.r, why)));
        const rest = sends.filter((_, i) => !err.refused.has(i));
        if (rest.length > 0) await this.commitSends(rest);
        return;
      }
      if (!isStoreDataError(err)) throw err;
      if (sends.length > 1) {
        log.error({ err, sends: sends.length }, 'a batch of sends was refused by the store; storing one by one');
        for (const s of sends) await this.commitSends([s]);
        return;
      }
      const { r, draft } = sends[0]!;
      log.error({ err, ...messageTrace({ fromUser: r.origin.userId, clientMsgId: draft.clientMsgId }) }, 'a send was refused by the store');
      await this.replyError(r, new LonglinkError(ErrorCode.BAD_REQUEST, 'the message cannot be stored'));
      return;
    }
    // `replicated` acks: published now, acked once another datacenter holds them (the batch does not wait for that).
    if (this.pipeline.replicates) {
      const { copied } = await this.pipeline.publishForCopies(results);
      void copied.then(
        () => this.ackSends(sends, results),
        () => Promise.all(sends.map((s) => this.replyError(s.r, new LonglinkError(ErrorCode.UNAVAILABLE,
          'stored, but not yet held by another datacenter (LONGLINK_DC_ACK=replicated); resend it: it is applied once')))),
      ).catch((err: unknown) => log.warn({ err }, 'answering replicated sends failed; their senders resend'));
      return;
    }
    await this.ackSends(sends, results);
    await this.pipeline.pushResults(results);
  }

  /** Each send's ack, with the text as stored when it is not what was sent. */
  private async ackSends(sends: readonly { r: Request }[], results: readonly AppendResult[]): Promise<void> {
    await Promise.all(results.map((res, i) => {
      const m = res.message;
      const { r } = sends[i]!;
      // The sender learns the text as stored when it is not what it sent (masked, replaced): its device shows what everyone sees.
      const asked = r.frame?.body.case === 'send' ? r.frame.body.value.text : m.text;
      return this.reply(r.origin, r.id, {
        case: 'sendAck',
        value: {
          clientMsgId: m.clientMsgId, serverMsgId: m.serverMsgId, conversationId: m.conversationId,
          seq: BigInt(m.seq), sentAtMs: BigInt(m.sentAtMs), duplicate: res.duplicate, text: m.text !== asked ? m.text : '',
        },
      });
    }));
  }

  /**
   * Delivered cursors, gathered from the batch's PushAcks (cumulative: a
   * lost one is made up by the next). Who may ack is read once per
   * conversation of the batch (a large group's members ack each message).
   */
  private async pushAcks(acks: Request[]): Promise<void> {
    const updates: { userId: string; deviceId: string; conversationId: string; seq: number }[] = [];
    const byConversation = new Map<string, { r: Request; seq: number }[]>();
    const refused: Promise<void>[] = [];
    for (const r of acks) {
      const body = r.frame?.body;
      if (body?.case !== 'pushAck') throw new Error('a push ack was gathered for what is not one');
      const seq = Number(body.value.seq);
      if (!Number.isSafeInteger(seq) || seq < 0) {
        refused.push(this.replyError(r, new LonglinkError(ErrorCode.BAD_REQUEST, 'seq out of range')));
        continue;
      }
      const list = byConversation.get(body.value.conversationId);
      if (list) list.push({ r, seq });
      else byConversation.set(body.value.conversationId, [{ r, seq }]);
    }
    await Promise.all([...refused, ...[...byConversation].map(async ([conversationId, list]) => {
      let views: Map<string, unknown>;
      try {
        views = await viewsOf(this.deps.store, conversationId, [...new Set(list.map((a) => a.r.origin.userId))]);
      } catch (err) {
        if (isFencedError(err)) throw err;
        log.warn({ err }, 'cursor check failed');
        return;
      }
      await Promise.all(list.map(async ({ r, seq }) => {
        if (views.get(r.origin.userId) === undefined) return this.replyError(r, viewRefusal(conversationId));
        updates.push({ userId: r.origin.userId, deviceId: r.origin.deviceId, conversationId, seq });
        return undefined;
      }));
    })]);
    if (updates.length === 0) return;
    let moved: DeliveredMark[];
    try {
      moved = await this.deps.store.advanceDelivered(updates);
    } catch (err) {
      log.error({ err }, 'cursor write failed');
      return;
    }
    // A 1:1 whose receiver's delivered mark moved: the sender's devices learn it ("delivered").
    await Promise.all(moved.map((m) => this.conversations.delivered(m).catch((err: unknown) => log.warn({ err }, 'delivery event failed'))));
  }

  /** Send a reply to the connection that asked; resolves with its size in bytes. */
  private async reply(origin: Origin, id: number, body: FrameBodyInit): Promise<number> {
    const frame = encodeFrame(makeFrame(id, body));
    await this.deps.bus.publishDown(origin.node, down({ case: 'reply', value: { connId: origin.connId, frame } }));
    return frame.length;
  }

  private async replyError(r: Request, err: unknown): Promise<void> {
    const known = err instanceof LonglinkError;
    if (!known) log.error({ err, user: r.origin.userId, op: r.frame ? operationName(r.frame) : r.up.body.case }, 'request failed');
    const code = known ? err.code : ErrorCode.INTERNAL;
    this.metrics.error(code);
    if (code === ErrorCode.GROUP_FULL) this.metrics.limitBreach('group_size');
    if (code === ErrorCode.TOO_MANY_GROUPS) this.metrics.limitBreach('groups_per_user');
    const message = known ? err.message : 'internal error';
    await this.reply(r.origin, r.id, {
      case: 'error',
      value: { code, message, fatal: false, reconnect: false },
    }).catch((e: unknown) => log.error({ err: e }, 'reply failed'));
  }
}

