// Presence (who is online, on which platforms) and typing indicators: both
// transient, never stored.
//
// Who may see a user's presence (`visibility`): 'all' lets anyone logged in
// see anyone; 'contacts' only users who share a conversation with them: a 1:1
// conversation with at least one message, or a group both are current
// members of (a dismissed group has none). Everyone may see themselves. A
// query or subscription naming anyone the asker may not see is refused as a
// whole (FORBIDDEN): the reply then says nothing about anyone, and a refused
// subscription leaves the connection's watch list as it was. Presence events
// follow the watch list, which only ever holds users checked when the
// subscription was made (a contact that ends later is not re-checked until
// the next subscription or connection).
import { create } from '@bufbuild/protobuf';
import {
  ErrorCode, LonglinkError, PresenceSchema, directConversationId, encodeFrame, isValidId, makeFrame, type Presence,
} from '../protocol/index.js';
import { down, type Bus, type Origin } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { Registry } from '../engines/registry.js';
import type { Store } from '../engines/store.js';
import { viewOf } from './access.js';
import { deliverToUsers, type Routing } from './fanout.js';
import type { Pipeline } from './pipeline.js';

export interface PresenceOptions {
  /** Users per presence query or subscription. @default 100 */
  maxWatched: number;
  /** One typing event per user and conversation per this many ms; more are dropped. @default 1000 */
  typingIntervalMs: number;
  /** Groups larger than this get no typing events. @default 500 */
  typingMaxMembers: number;
  /** Who may query or watch a user's presence (see the top of this file). @default 'all' */
  visibility?: 'all' | 'contacts';
}

/**
 * Up to this many groups of the asker, a user's membership is read group by
 * group; past it, the user's conversation list is read once instead.
 */
const POINT_READS_MAX = 16;

export class PresenceService {
  /** Last state announced per user, so repeated session events announce nothing new. */
  private readonly announced = new Map<string, string>();
  private readonly lastTyping = new Map<string, number>();

  constructor(
    private readonly options: PresenceOptions,
    private readonly deps: { bus: Bus; sessions: Sessions; registry: Registry; store: Store; pipeline: Pipeline; routing?: Routing },
  ) {}

  /** The presence of some users, as `viewer` may see it. */
  async query(viewer: string, userIds: readonly string[]): Promise<Presence[]> {
    if (userIds.length > this.options.maxWatched) throw new LonglinkError(ErrorCode.BAD_REQUEST, `at most ${this.options.maxWatched} users per presence request`);
    for (const u of userIds) if (!isValidId(u)) throw new LonglinkError(ErrorCode.BAD_REQUEST, `${JSON.stringify(u)} is not a valid user id`);
    const unique = [...new Set(userIds)];
    if (this.options.visibility === 'contacts') await this.requireContacts(viewer, unique);
    const online = await this.deps.sessions.lookup(unique);
    return unique.map((userId) => presenceOf(userId, online.get(userId)?.map((s) => s.platform) ?? []));
  }

  /** Replace the connection's watch list; returns the current state of those users. */
  async subscribe(origin: Origin, userIds: readonly string[]): Promise<Presence[]> {
    const current = await this.query(origin.userId, userIds);
    await this.deps.bus.publishDown(origin.node, down({ case: 'watch', value: { connId: origin.connId, userIds: current.map((p) => p.userId) } }));
    return current;
  }

  /** A session came or went: announce the user's presence to every gateway if it changed. */
  async sessionChanged(userId: string): Promise<void> {
    const platforms = (await this.deps.sessions.lookup([userId])).get(userId)?.map((s) => s.platform) ?? [];
    const p = presenceOf(userId, platforms);
    const key = `${p.online}|${p.platforms.join(',')}`;
    if (this.announced.get(userId) === key) return;
    if (p.online) this.announced.set(userId, key);
    else this.announced.delete(userId);
    const frame = encodeFrame(makeFrame(0, { case: 'event', value: { body: { case: 'presence', value: p } } }));
    for (const node of await this.deps.registry.live('gateway')) {
      await this.deps.bus.publishDown(node.id, down({ case: 'presence', value: { userId, frame } }));
    }
  }

  /** Relay "typing" to the conversation's other members; silently dropped when too frequent. */
  async typing(origin: Origin, conversationId: string): Promise<void> {
    const view = await viewOf(this.deps.store, conversationId, origin.userId);
    if (!view || !view.active) throw new LonglinkError(ErrorCode.FORBIDDEN, 'not a member of this conversation');
    const key = `${origin.userId}|${conversationId}`;
    const now = Date.now();
    if (now - (this.lastTyping.get(key) ?? 0) < this.options.typingIntervalMs) return;
    this.lastTyping.set(key, now);
    if (this.lastTyping.size > 100_000) this.prune(now);
    const members = await this.deps.pipeline.members(conversationId);
    if (members.length > this.options.typingMaxMembers) return;
    const frame = encodeFrame(makeFrame(0, {
      case: 'event',
      value: { body: { case: 'typing', value: { conversationId, userId: origin.userId } } },
    }));
    await deliverToUsers(this.deps, members.filter((u) => u !== origin.userId), frame);
  }

  /** Throws FORBIDDEN naming the first of `userIds` that shares no conversation with `viewer`. */
  private async requireContacts(viewer: string, userIds: readonly string[]): Promise<void> {
    const others = userIds.filter((u) => u !== viewer);
    if (others.length === 0) return;
    const mine = await this.deps.store.listForUser(viewer);
    const direct = new Set(mine.filter((c) => c.kind === 'direct').map((c) => c.conversationId));
    const groups = mine.filter((c) => c.kind === 'group' && c.leftSeq === undefined).map((c) => c.conversationId);
    const visible = await Promise.all(others.map(async (u) =>
      direct.has(directConversationId(viewer, u)) || (groups.length > 0 && await this.sharesGroup(u, groups))));
    const hidden = others.find((_u, i) => !visible[i]);
    if (hidden !== undefined) {
      throw new LonglinkError(ErrorCode.FORBIDDEN, `you may see the presence of ${hidden} only once you share a conversation`);
    }
  }

  /** Whether `userId` is a current member of one of `groups` (a dismissal ends every membership). */
  private async sharesGroup(userId: string, groups: readonly string[]): Promise<boolean> {
    const store = this.deps.store;
    if (groups.length <= POINT_READS_MAX) return (await Promise.all(groups.map((g) => store.isMember(g, userId)))).includes(true);
    const mine = new Set(groups);
    return (await store.listForUser(userId)).some((c) => c.leftSeq === undefined && mine.has(c.conversationId));
  }

  private prune(now: number): void {
    for (const [k, t] of this.lastTyping) if (now - t >= this.options.typingIntervalMs) this.lastTyping.delete(k);
  }
}

function presenceOf(userId: string, platforms: string[]): Presence {
  return create(PresenceSchema, { userId, online: platforms.length > 0, platforms: [...new Set(platforms)].sort() });
}
