// The message pipeline: validate (and the content filter) → dedupe and assign
// seq (in the store, one transaction per batch) → ack senders → push to
// recipients. Client sends (from the bus), business pushes (HTTP API) and
// timeline events (group changes, recalls) all come through here.
//
// Delivery is `direct` in one process (pushed by whoever stored) or
// `committed` in a cluster: what was stored is published to the committed
// stream, and the push consumer group fans it out (pushCommitted), so
// persistence and fan-out scale apart and a large group's fan-out never
// holds the next batch of sends.
import { randomUUID } from 'node:crypto';
import {
  ErrorCode, LonglinkError, SYSTEM_USER, directConversationId, directMembers, encodeFrame, groupIdOf, isGroupConversation, isValidId,
  makeFrame, messageFromWire, messageToWire, type ChatMessage, type ContentData,
} from '../protocol/index.js';
import { committed, type Bus, type Committed } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { AppendResult, MessageDraft, Store } from '../engines/store.js';
import { membersOf, wasMemberAtDismissal } from './access.js';
import { checkContent, hasBody, resolveContent } from './content.js';
import { log as rootLog } from '../observability/log.js';

const log = rootLog.child({ component: 'pipeline' });
import { deliver, deliverToGateways, groupDeliverNodes, type Delivery, type GroupDelivery, type Routing } from './fanout.js';
import type { Registry } from '../engines/registry.js';

export interface SendRequest {
  fromUser: string;
  fromDevice: string;
  /** Asserted sender from the frame; must be empty or equal to fromUser. */
  claimedFrom: string;
  toUser: string;
  conversationId: string;
  clientMsgId: string;
  text: string;
  /** Custom payload, mentions, reply, forward (content.ts). */
  content?: ContentData;
  /** Sent through the admin API: may post into a group without being a member. */
  trusted?: boolean;
}

/**
 * A check of every send's content before it is stored (the content rules and
 * the business's before-send webhook, src/risk/control.ts): resolves to let
 * it through (with a text to store instead, e.g. masked, or undefined to keep
 * it), throws LonglinkError to refuse it with that code.
 */
export type ContentFilter = (draft: Readonly<MessageDraft>) => Promise<string | undefined>;

export interface PipelineOptions {
  maxTextBytes: number;
  /** Largest custom payload. @default maxTextBytes */
  maxPayloadBytes?: number;
  /**
   * 1:1 sends are refused BLOCKED when the recipient blocks the sender
   * (blocks.ts). @default no blocking
   */
  blocks?: { blocks(blocker: string, peer: string): Promise<boolean>; forget(): void };
  /** @default 'targeted' */
  routing?: Routing;
  /** Push what was stored at once (`direct`), or publish it for the push consumer group (`committed`). @default 'direct' */
  delivery?: 'direct' | 'committed';
  /** This node, named in what it publishes. */
  nodeId?: string;
  /** Its datacenter, named in what it publishes (the sync services of the others copy what names theirs). */
  dc?: string;
  /**
   * The `replicated` acknowledgement mode (src/dc/replication.ts): what is
   * published waits until another datacenter holds it, before any ack.
   */
  replication?: { expect(messages: readonly { conversationId: string; seq: number }[]): Promise<void> };
  /**
   * Several datacenters: each conversation's home and the epoch of the record
   * under which this datacenter serves it, set on every draft (the store
   * refuses an append under an older one: MessageDraft.homeEpoch). Rejects
   * StoreUnavailableError when one is not served here now.
   */
  homeEpochs?: (conversationIds: readonly string[]) => Promise<Map<string, { dc: string; epoch: number }>>;
  contentFilter?: ContentFilter;
  /**
   * With `direct` delivery: publish what was stored to the committed stream
   * too, for its other consumer groups (the risk service, the webhooks) of an
   * embedded server. @default false
   */
  publishCommitted?: boolean;
}

const MAX_CLIENT_MSG_ID = 128;

/**
 * The idempotency key a timeline event is stored under: its request id, in a
 * namespace of its own beside the actor's message ids. A redelivered or
 * resent write finds its event by it (Store.messageByRequest) and is not
 * applied again. '' (no key) only when there is no request id.
 */
export function eventKey(requestId: string, part = 0): string {
  if (requestId === '') return '';
  return part === 0 ? `op:${requestId}` : `op:${requestId}#${part}`;
}
/** Messages read at most to learn whether a group's membership changed between two seqs (past it: read the members again). */
const EVENT_SCAN = 256;
/** How long the push group reuses a group's members (checked against the events between) before reading them again. */
const PUSH_MEMBERS_MS = 10_000;
/** How long a group's member list is reused for fan-out before it is read again. */
const MEMBER_CACHE_MS = 2000;
/** Seqs of a conversation pushed by this push consumer, none missing between. */
interface PushedRange {
  from: number;
  upTo: number;
}

/** Seqs read from the store at most to fill one gap in the push order (past it, devices see the gap and sync). */
const GAP_FILL = 256;
/** How long the push group trusts the last seq it pushed in a conversation (a shard may have moved and back since). */
const PUSH_ORDER_MS = 10_000;
/** Conversations whose last pushed seq is kept (the least recently pushed forgotten first). */
const PUSH_ORDER_KEPT = 10_000;
/** Groups whose size class (large or not) the push group keeps. */
const LARGE_KEPT = 100_000;

/**
 * What a send must be whatever the store holds: its sender, id, text, and
 * destination (exactly one of a user, a 1:1 it belongs to, or a group id).
 * Throws LonglinkError with the reason; the group's rules are checked later.
 */
export function checkSend(req: Omit<SendRequest, 'fromDevice' | 'trusted'>, maxTextBytes: number, maxPayloadBytes = maxTextBytes): void {
  if (req.claimedFrom !== '' && req.claimedFrom !== req.fromUser) {
    throw new LonglinkError(ErrorCode.FORBIDDEN, 'cannot send as another user');
  }
  // Characters (code points), not UTF-16 units: an emoji counts once.
  if (!req.clientMsgId || [...req.clientMsgId].length > MAX_CLIENT_MSG_ID) {
    throw new LonglinkError(ErrorCode.BAD_REQUEST, `client_msg_id must be 1-${MAX_CLIENT_MSG_ID} characters`);
  }
  if (!hasBody(req.text, req.content)) throw new LonglinkError(ErrorCode.TEXT_EMPTY, 'message text is empty (and no content type or forward)');
  // A send to a user goes to their 1:1 (checkContent refuses mention_all outside groups).
  checkContent(req.content, req.text, req.conversationId !== '' ? req.conversationId : directConversationId(req.fromUser, req.toUser), maxPayloadBytes);
  // PostgreSQL text cannot hold NUL; refused everywhere, so both stores keep the same messages.
  if (req.text.includes('\u0000') || req.clientMsgId.includes('\u0000')) {
    throw new LonglinkError(ErrorCode.BAD_REQUEST, 'text and client_msg_id must not contain NUL (U+0000)');
  }
  const bytes = Buffer.byteLength(req.text, 'utf8');
  if (bytes > maxTextBytes) {
    throw new LonglinkError(ErrorCode.TEXT_TOO_LARGE, `message text is ${bytes} bytes; the limit is ${maxTextBytes}`);
  }
  if (req.toUser !== '' && req.conversationId === '') {
    if (!isValidId(req.toUser)) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'to_user is not a valid user id');
    if (req.toUser === SYSTEM_USER) throw new LonglinkError(ErrorCode.FORBIDDEN, 'the system user does not take messages');
    return;
  }
  if (req.conversationId === '' || req.toUser !== '') {
    throw new LonglinkError(ErrorCode.BAD_REQUEST, 'give exactly one of to_user or conversation_id');
  }
  const pair = directMembers(req.conversationId);
  if (pair) {
    if (!pair.includes(req.fromUser)) throw new LonglinkError(ErrorCode.FORBIDDEN, 'not a member of this conversation');
    if (pair.includes(SYSTEM_USER) && req.fromUser !== SYSTEM_USER) throw new LonglinkError(ErrorCode.FORBIDDEN, 'the system user does not take messages');
    return;
  }
  if (!isGroupConversation(req.conversationId)) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'unknown conversation id');
}

export class Pipeline {
  private readonly memberCache = new Map<string, { members: string[]; atMs: number }>();

  constructor(
    private readonly options: PipelineOptions,
    private readonly deps: { bus: Bus; sessions: Sessions; store: Store; registry?: Registry },
  ) {}

  /** Checks a request and turns it into a draft; throws LonglinkError with the reason. */
  async prepare(req: SendRequest, nowMs: number): Promise<MessageDraft> {
    checkSend(req, this.options.maxTextBytes, this.options.maxPayloadBytes);
    const base: Omit<MessageDraft, 'conversationId' | 'kind' | 'members'> = {
      fromUser: req.fromUser, fromDevice: req.fromDevice, clientMsgId: req.clientMsgId,
      serverMsgId: randomUUID(), text: req.text, sentAtMs: nowMs,
    };
    let draft: MessageDraft;
    if (req.toUser !== '') draft = this.direct(directConversationId(req.fromUser, req.toUser), base);
    else if (directMembers(req.conversationId)) draft = this.direct(req.conversationId, base);
    else {
      await this.checkGroupSender(req.conversationId, req.fromUser, req.trusted === true);
      // Checked again where it is stored: a group change another service commits meanwhile must win.
      const system = req.trusted === true && req.fromUser === SYSTEM_USER;
      draft = { ...base, conversationId: req.conversationId, kind: 'group', members: [], checkSender: !system };
    }
    if (draft.kind === 'direct' && this.options.blocks && req.trusted !== true) {
      const peer = draft.members.find((u) => u !== req.fromUser);
      if (peer !== undefined && await this.options.blocks.blocks(peer, req.fromUser)) {
        // A resend of a message stored before the block (its ack was lost) is the duplicate it is: the store answers it.
        const stored = draft.clientMsgId !== '' ? await this.deps.store.messageByRequest(draft.fromUser, draft.clientMsgId) : undefined;
        if (!stored || stored.conversationId !== draft.conversationId) throw new LonglinkError(ErrorCode.BLOCKED, 'this user does not take your messages');
      }
    }
    if (req.content) {
      let resolved: Awaited<ReturnType<typeof resolveContent>>;
      try {
        resolved = await resolveContent(this.deps.store, req.fromUser, draft.conversationId, req.text, req.content, req.trusted === true);
      } catch (err) {
        // A resend of a message stored before (its ack was lost) is the duplicate it is, whatever became of what it
        // replied to or forwarded since, or of the sender's rank: the store answers it.
        const stored = err instanceof LonglinkError && draft.clientMsgId !== '' ? await this.deps.store.messageByRequest(draft.fromUser, draft.clientMsgId) : undefined;
        if (!stored || stored.conversationId !== draft.conversationId) throw err;
        return draft;
      }
      if (Buffer.byteLength(resolved.text, 'utf8') > this.options.maxTextBytes) throw new LonglinkError(ErrorCode.TEXT_TOO_LARGE, 'the forwarded text is over the limit');
      draft = { ...draft, text: resolved.text };
      if (resolved.content) draft.content = resolved.content;
      if (resolved.reply) draft.reply = resolved.reply;
    }
    let text: string | undefined;
    try {
      text = await this.options.contentFilter?.(draft);
    } catch (err) {
      // A resend of a message stored before (its ack was lost) is the duplicate it is, whatever the rules say now: the store
      // answers it. The draft carries the stored text (which the rules let through), never the refused one: were the stored
      // message to expire meanwhile, what is stored again is that.
      if (err instanceof LonglinkError && err.code === ErrorCode.CONTENT_BLOCKED && draft.clientMsgId !== '') {
        const stored = await this.deps.store.messageByRequest(draft.fromUser, draft.clientMsgId);
        if (stored && !stored.event && stored.text !== '') return { ...draft, text: stored.text };
      }
      throw err;
    }
    return text === undefined ? draft : { ...draft, text };
  }

  /** The text to store for a draft by the content filter (refusals throw LonglinkError): an edit is checked as a send is. */
  async screen(draft: MessageDraft): Promise<string> {
    return (await this.options.contentFilter?.(draft)) ?? draft.text;
  }

  private direct(conversationId: string, base: Omit<MessageDraft, 'conversationId' | 'kind' | 'members'>): MessageDraft {
    const members = directMembers(conversationId)!;
    return { ...base, conversationId, kind: 'direct', members: members[0] === members[1] ? [members[0]] : members };
  }

  private async checkGroupSender(conversationId: string, userId: string, trusted: boolean): Promise<void> {
    const group = await this.deps.store.groupMeta(groupIdOf(conversationId)!);
    if (!group) throw new LonglinkError(ErrorCode.NOT_FOUND, 'no such group');
    if (group.dismissed) {
      // Only the admin API's system sender and those the dismissal ended learn of it; anyone else is just not a member.
      if ((trusted && userId === SYSTEM_USER) || await wasMemberAtDismissal(this.deps.store, conversationId, userId)) {
        throw new LonglinkError(ErrorCode.GROUP_DISMISSED, 'the group was dismissed');
      }
      throw new LonglinkError(ErrorCode.NOT_MEMBER, 'not a member of this group');
    }
    if (trusted && userId === SYSTEM_USER) return;
    // Membership and mutes change; a store that checks them in the append's transaction decides them at one moment for the whole batch.
    if (this.deps.store.checksSenders) return;
    const m = await this.deps.store.membership(conversationId, userId);
    if (!m || m.leftSeq !== undefined) throw new LonglinkError(ErrorCode.NOT_MEMBER, 'not a member of this group');
    if (m.muted) throw new LonglinkError(ErrorCode.MUTED, 'you are muted in this group');
    if (group.mutedAll && m.role === 'member') throw new LonglinkError(ErrorCode.MUTED, 'the group is muted; only its owner and admins may send');
  }

  /**
   * Store a batch (one transaction), then push it. Results in draft order.
   * `alsoNotify[i]` names users outside the conversation who get draft i's
   * push too (members just removed learn of their removal). A push that fails
   * is logged: the message is stored, and recipients get it at their next
   * sync (or on the next message's gap).
   */
  async commit(drafts: readonly MessageDraft[], alsoNotify: readonly (readonly string[] | undefined)[] = []): Promise<AppendResult[]> {
    const results = await this.store(drafts);
    if (this.options.delivery === 'committed') {
      // Not published: the request fails and is handed again; the store finds what it stored and it is published then.
      await this.pushResults(results, alsoNotify);
      return results;
    }
    await this.pushResults(results, alsoNotify).catch((err: unknown) => {
      log.warn({ err }, 'push failed after store; recipients get the messages at sync');
    });
    return results;
  }

  /** Store a batch in one transaction; nothing is pushed yet. */
  async store(drafts: readonly MessageDraft[]): Promise<AppendResult[]> {
    if (drafts.length === 0) return [];
    const epochs = await this.options.homeEpochs?.(drafts.map((d) => d.conversationId));
    const fenced = epochs ? drafts.map((d) => ({ ...d, homeEpoch: epochs.get(d.conversationId) })) : drafts;
    const results = await this.deps.store.append(fenced);
    for (const d of drafts) if (d.effect) this.memberCache.delete(d.conversationId);
    return results;
  }

  /**
   * Push stored results, duplicates included: a duplicate means an earlier
   * attempt stored the message, and that attempt may have died (or failed)
   * before its push. Clients drop a push they already have by (conversation,
   * seq), so pushing twice is harmless and never pushing is not. A duplicate
   * goes only to the members who may see it (joined by its seq), not to one
   * who joined the group after it was stored.
   */
  /**
   * The `replicated` mode's send path: publish stored results now, and return
   * a promise that settles once another datacenter holds them (rejects
   * StoreUnavailableError when none does in time): the sends' acks wait for
   * it, the batch does not (its shard goes on with the next one meanwhile).
   */
  async publishForCopies(results: readonly AppendResult[]): Promise<{ copied: Promise<void> }> {
    const copied = this.options.replication!.expect(results.map((r) => r.message));
    copied.catch(() => undefined); // observed by the caller; never unhandled meanwhile
    await this.deps.bus.publishCommitted(results.map((r) => committed({
      message: messageToWire(r.message), originNode: this.options.nodeId ?? '', originDc: this.options.dc ?? '', duplicate: r.duplicate,
    })));
    return { copied };
  }

  /** Whether pushResults waits until another datacenter holds what it publishes (acks then go after it). */
  get replicates(): boolean {
    return this.options.replication !== undefined && this.options.delivery === 'committed';
  }

  async pushResults(results: readonly AppendResult[], alsoNotify: readonly (readonly string[] | undefined)[] = []): Promise<void> {
    if (results.length === 0) return;
    const entries = () => results.map((r, i) => committed({
      message: messageToWire(r.message), originNode: this.options.nodeId ?? '', originDc: this.options.dc ?? '', duplicate: r.duplicate, alsoNotify: [...(alsoNotify[i] ?? [])],
    }));
    if (this.options.delivery === 'committed') {
      const copied = this.options.replication?.expect(results.map((r) => r.message));
      copied?.catch(() => undefined); // awaited below; a failed publish must not leave it unobserved
      await this.deps.bus.publishCommitted(entries());
      await copied;
      return;
    }
    if (this.options.publishCommitted === true) await this.deps.bus.publishCommitted(entries());
    await this.push(results.map((r, i) => ({ message: r.message, extra: alsoNotify[i] ?? [], duplicate: r.duplicate })));
  }

  /**
   * The push consumer group's handler: fan committed messages out to the
   * gateways holding their recipients, each conversation in seq order. A
   * group message goes to the members at its seq (membersAtSeq): membership
   * may have changed since it was stored, by another service, before this push.
   *
   * Two services write a group's timeline (messages, and the group service's
   * events), and each publishes after its own commit, so a later seq can be
   * published first. A conversation's seqs commit in order (a seq is taken
   * under the conversation's lock, held to the commit), so every seq below a
   * committed one is stored: on a gap after what this consumer pushed, what
   * is missing is read from the store and pushed first, and skipped when its
   * own entry comes. An entry below what it knows of (it took the shard
   * over, or the conversation was quiet for PUSH_ORDER_MS) is pushed when it
   * comes, late: a device that saw the gap has synced it, and drops the repeat.
   * What was pushed is noted only once the batch is delivered: a batch that
   * fails is handed again, and pushed again.
   */
  async pushCommitted(batch: readonly Committed[]): Promise<void> {
    // `replicated` mode: nobody is shown a message of this datacenter before another one holds it (the copy a lost
    // datacenter's recipients get back is the one they saw). Copies from elsewhere were held there first.
    const own = batch.filter((c) => c.message && !c.replicated).map((c) => ({ conversationId: c.message!.conversationId, seq: Number(c.message!.seq) }));
    if (own.length > 0) await this.options.replication?.expect(own);
    const large = await this.largeOf(batch);
    // Every live gateway must keep large groups' membership; else (a rolling upgrade) they go per member for now.
    const nodes = large.size > 0 ? await groupDeliverNodes({ ...this.deps, routing: this.options.routing }) : undefined;
    if (large.size > 0 && !nodes) {
      if (Date.now() - this.olderGatewayLoggedAt > 60_000) {
        this.olderGatewayLoggedAt = Date.now();
        log.warn('a live gateway does not take large groups\' messages (an older version): they go per member until it is gone');
      }
      large.clear();
    }
    const items: { message: ChatMessage; extra: readonly string[]; members: string[]; large?: boolean }[] = [];
    const add = async (message: ChatMessage, extra: readonly string[]) => {
      // A large group's message goes once per gateway, which knows the members (fanout.ts): none are read here.
      if (large.has(message.conversationId)) {
        items.push({ message, extra, members: [], large: true });
        return;
      }
      const members = isGroupConversation(message.conversationId)
        ? await this.membersAtSeq(message.conversationId, message.seq)
        : await this.members(message.conversationId);
      items.push({ message, extra, members });
    };
    const noted = new Map<string, PushedRange>();
    for (const c of batch) {
      if (!c.message) continue;
      const message = messageFromWire(c.message);
      const conversation = message.conversationId;
      const range = noted.get(conversation) ?? this.pushedRange(conversation);
      if (range && message.seq >= range.from && message.seq <= range.upTo) continue; // pushed already: filled from the store, or published again
      if (range && message.seq > range.upTo + 1) {
        const missing = await this.deps.store.after(conversation, range.upTo, GAP_FILL, message.seq - 1);
        // `replicated` mode: what fills a gap is shown once another datacenter holds it, as the batch's own entries are
        // (it may be a send whose copy timed out, its batch handed again: shown now, then lost with this datacenter, it
        // would come back from the other one under another seq, a second time).
        if (missing.length > 0) await this.options.replication?.expect(missing);
        for (const m of missing) await add(m, await this.alsoNotifyOf(m));
      }
      await add(message, c.alsoNotify);
      noted.set(conversation, !range
        ? { from: message.seq, upTo: message.seq }
        : message.seq < range.from
          ? { from: range.from === message.seq + 1 ? message.seq : range.from, upTo: range.upTo }
          : { from: range.from, upTo: message.seq });
    }
    await this.deliverPushes(items, nodes);
    for (const [conversation, range] of noted) this.notePushed(conversation, range);
  }

  private olderGatewayLoggedAt = 0;

  /** Groups the store marks large (for good: the mark never goes back), the least recently marked forgotten first past LARGE_KEPT. */
  private readonly largeKnown = new Set<string>();
  /** Groups found small, and when: trusted PUSH_MEMBERS_MS, unless a batch adds members to one. */
  private readonly smallKnown = new Map<string, number>();

  /**
   * The large groups among a batch's conversations (Store.largeGroups): read
   * for those not known large yet, except a small one read lately to which
   * the batch adds nobody. A group found small a moment before it grew is
   * pushed per member meanwhile, which is still right, only dearer.
   */
  private async largeOf(batch: readonly Committed[]): Promise<Set<string>> {
    const groups = new Set<string>();
    const growing = new Set<string>();
    for (const c of batch) {
      const id = c.message?.conversationId;
      if (id === undefined || !isGroupConversation(id)) continue;
      groups.add(id);
      const type = c.message!.event ? messageFromWire(c.message!).event?.type : undefined;
      if (type === 'group_created' || type === 'members_added') growing.add(id);
    }
    const out = new Set<string>();
    const ask: string[] = [];
    const now = Date.now();
    for (const id of groups) {
      if (this.largeKnown.has(id)) out.add(id);
      else if (growing.has(id) || now - (this.smallKnown.get(id) ?? -Infinity) >= PUSH_MEMBERS_MS) ask.push(id);
    }
    if (ask.length === 0) return out;
    const found = await this.deps.store.largeGroups(ask);
    for (const id of ask) {
      this.smallKnown.delete(id);
      if (found.has(id)) {
        out.add(id);
        if (this.largeKnown.size >= LARGE_KEPT) this.largeKnown.delete(this.largeKnown.values().next().value!);
        this.largeKnown.add(id);
      } else {
        if (this.smallKnown.size >= LARGE_KEPT) this.smallKnown.delete(this.smallKnown.keys().next().value!);
        this.smallKnown.set(id, now);
      }
    }
    return out;
  }

  /** Per conversation: the seqs the push group pushed here with none missing between (from..upTo), and when (trusted for PUSH_ORDER_MS). */
  private readonly pushedSeqs = new Map<string, PushedRange & { atMs: number }>();

  private pushedRange(conversationId: string): PushedRange | undefined {
    const kept = this.pushedSeqs.get(conversationId);
    return kept && Date.now() - kept.atMs < PUSH_ORDER_MS ? kept : undefined;
  }

  private notePushed(conversationId: string, range: PushedRange): void {
    this.pushedSeqs.delete(conversationId);
    if (this.pushedSeqs.size >= PUSH_ORDER_KEPT) this.pushedSeqs.delete(this.pushedSeqs.keys().next().value!);
    this.pushedSeqs.set(conversationId, { ...range, atMs: Date.now() });
  }

  /** Who outside the conversation gets a stored event's push: the members it removed, or all of a dismissed group's. */
  async alsoNotifyOf(message: ChatMessage): Promise<readonly string[]> {
    const type = message.event?.type;
    if (type === 'members_removed' || type === 'member_left') return message.event?.userIds ?? [];
    if (type !== 'dismissed') return [];
    return (await this.deps.store.group(groupIdOf(message.conversationId)!))?.members.map((m) => m.userId) ?? [];
  }

  /** Per group: its members at `atSeq` (the push group's view, kept by membersAtSeq for PUSH_MEMBERS_MS). */
  private readonly pushMembers = new Map<string, { members: string[]; atSeq: number; atMs: number }>();

  /**
   * The members of a group at `seq`, for a push: those whose membership
   * window holds it (Store.membersAt: one removed after it, by the time of
   * the push, still gets it).
   * Kept per group as of a seq; reused for another seq when no timeline
   * event lies between the two (read from the store: the messages between),
   * else read again.
   */
  private async membersAtSeq(conversationId: string, seq: number): Promise<string[]> {
    const kept = this.pushMembers.get(conversationId);
    // Kept a while only: an event between two seqs may have expired meanwhile (retention), which the scan cannot see.
    if (kept && Date.now() - kept.atMs < PUSH_MEMBERS_MS) {
      if (kept.atSeq === seq) return kept.members;
      const [after, upTo] = seq > kept.atSeq ? [kept.atSeq, seq] : [seq, kept.atSeq];
      const between = await this.deps.store.after(conversationId, after, EVENT_SCAN, upTo);
      if (between.length < EVENT_SCAN && !between.some((m) => m.event && m.event.type !== 'recalled')) {
        if (seq > kept.atSeq) kept.atSeq = seq;
        return kept.members;
      }
    }
    const members = await this.deps.store.membersAt(conversationId, seq);
    if (this.pushMembers.size >= 1000) this.pushMembers.delete(this.pushMembers.keys().next().value!);
    this.pushMembers.delete(conversationId);
    this.pushMembers.set(conversationId, { members, atSeq: seq, atMs: Date.now() });
    return members;
  }

  /** Drop cached member lists (this node just took over conversations another node may have changed). */
  forgetCaches(): void {
    this.options.blocks?.forget();
    this.memberCache.clear();
    this.pushMembers.clear();
    this.pushedSeqs.clear();
  }

  /** Current members, cached briefly for fan-out (invalidated by this node's own membership changes). */
  async members(conversationId: string): Promise<string[]> {
    if (!isGroupConversation(conversationId)) return membersOf(this.deps.store, conversationId);
    const cached = this.memberCache.get(conversationId);
    const now = Date.now();
    if (cached && now - cached.atMs < MEMBER_CACHE_MS) return cached.members;
    const members = await this.deps.store.members(conversationId);
    if (this.memberCache.size >= 1000) {
      for (const [id, entry] of this.memberCache) if (now - entry.atMs >= MEMBER_CACHE_MS) this.memberCache.delete(id);
    }
    this.memberCache.set(conversationId, { members, atMs: now });
    return members;
  }

  /**
   * Push stored messages to every online device of every member. A plain
   * message skips the device that sent it (it has the SendAck); a timeline
   * event goes to every device, the actor's included.
   */
  private async push(items: readonly { message: ChatMessage; extra: readonly string[]; duplicate?: boolean }[]): Promise<void> {
    const withMembers: { message: ChatMessage; extra: readonly string[]; members: string[] }[] = [];
    for (const { message: m, extra, duplicate } of items) {
      const members = duplicate && isGroupConversation(m.conversationId)
        ? await this.deps.store.membersAt(m.conversationId, m.seq)
        : await this.members(m.conversationId);
      withMembers.push({ message: m, extra, members });
    }
    await this.deliverPushes(withMembers);
  }

  /**
   * An event about message `seq` (its reactions) for every member who may see
   * it: a large group's once per gateway (as its messages, to the members at
   * that seq), others' to the current members' devices.
   */
  async deliverEvent(conversationId: string, seq: number, frame: Uint8Array): Promise<void> {
    const routing = this.options.routing ?? 'targeted';
    if (isGroupConversation(conversationId)) {
      const large = this.largeKnown.has(conversationId) || (await this.deps.store.largeGroups([conversationId])).has(conversationId);
      const nodes = large ? await groupDeliverNodes({ ...this.deps, routing }) : undefined;
      if (nodes) {
        const carrier: ChatMessage = { conversationId, seq, serverMsgId: '', fromUser: '', fromDevice: '', clientMsgId: '', text: '', sentAtMs: 0 };
        await deliverToGateways(this.deps, nodes, [{ message: carrier, frame }]);
        return;
      }
    }
    // A group's: to those who may see that message (a member who joined after it does not hear of it).
    const userIds = isGroupConversation(conversationId) ? await this.deps.store.membersAt(conversationId, seq) : await this.members(conversationId);
    await deliver({ ...this.deps, routing }, [{ userIds, frame }]);
  }

  /** `nodes`: the gateways large groups' messages go to (groupDeliverNodes), when some are large. */
  private async deliverPushes(items: readonly { message: ChatMessage; extra: readonly string[]; members: string[]; large?: boolean }[], nodes: readonly string[] = []): Promise<void> {
    const deliveries: Delivery[] = [];
    const toGateways: GroupDelivery[] = [];
    for (const { message: m, extra, members, large } of items) {
      if (large) {
        // Who gets it is the gateways' to say, from the membership they keep (its removed members learn of it there).
        toGateways.push({ message: m, frame: encodeFrame(makeFrame(0, { case: 'push', value: { messages: [messageToWire(m)] } })) });
        continue;
      }
      deliveries.push({
        userIds: [...members, ...extra],
        frame: encodeFrame(makeFrame(0, { case: 'push', value: { messages: [messageToWire(m)] } })),
        // A plain message skips the device that sent it (it has the SendAck); an event goes to every device.
        except: m.event ? undefined : { userId: m.fromUser, deviceId: m.fromDevice },
      });
    }
    const routing = this.options.routing ?? 'targeted';
    // Each conversation's messages are in one of the two lists, in order; the two go out side by side.
    await Promise.all([deliver({ ...this.deps, routing }, deliveries), deliverToGateways(this.deps, nodes, toGateways)]);
  }
}
