// Presence (who is online, on which platforms) and typing indicators: both
// transient, never stored.
//
// Who may see a user's presence (`visibility`): 'all' lets anyone logged in
// see anyone; 'contacts' only the users it has written to: it sent a message
// (or acted) in a conversation, 1:1 or group, both are current members of (a
// dismissed group has none). Being written to, or put into a group with
// someone, makes nobody a contact of yours. Everyone may see themselves. A
// query or subscription naming anyone the asker may not see is refused as a
// whole (FORBIDDEN): the reply then says nothing about anyone, and a refused
// subscription leaves the connection's watch list as it was. Presence events
// follow the watch list, which holds users checked when the subscription was
// made; a watch lasts `watchTtlMs` and the client subscribes again to keep it
// (the SDK does), so a contact that ends stops being watched within that time.
import { create } from '@bufbuild/protobuf';
import {
  ErrorCode, LonglinkError, PresenceSchema, directPeer, encodeFrame, isValidId, makeFrame, type Presence,
} from '../protocol/index.js';
import { down, type Bus, type Origin } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { Registry } from '../engines/registry.js';
import type { Watches } from '../engines/watches.js';
import type { Store } from '../engines/store.js';
import { requireView } from './access.js';
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

export class PresenceService {
  /** Last state announced per user, so repeated session events announce nothing new. */
  private readonly announced = new Map<string, string>();
  private readonly lastTyping = new Map<string, number>();

  constructor(
    private readonly options: PresenceOptions,
    private readonly deps: { bus: Bus; sessions: Sessions; registry: Registry; store: Store; pipeline: Pipeline; routing?: Routing; watches?: Watches },
  ) {}

  /** The presence of some users, as `viewer` may see it. */
  async query(viewer: string, userIds: readonly string[]): Promise<Presence[]> {
    if (userIds.length > this.options.maxWatched) throw new LonglinkError(ErrorCode.BAD_REQUEST, `at most ${this.options.maxWatched} users per presence request`);
    for (const u of userIds) if (!isValidId(u)) throw new LonglinkError(ErrorCode.BAD_REQUEST, `${JSON.stringify(u)} is not a valid user id`);
    const unique = [...new Set(userIds)];
    if (this.options.visibility === 'contacts') await this.requireContacts(viewer, unique);
    return (await this.visible(viewer, unique)).presence;
  }

  /** The users' presence as `viewer` may see it: a user who blocks the viewer looks offline, and is not watched for it. */
  private async visible(viewer: string, userIds: readonly string[]): Promise<{ presence: Presence[]; watched: string[] }> {
    const [online, blockers] = await Promise.all([this.deps.sessions.lookup(userIds), this.deps.store.blockersOf(viewer, userIds)]);
    return {
      presence: userIds.map((userId) => presenceOf(userId, blockers.has(userId) ? [] : online.get(userId)?.map((s) => s.platform) ?? [])),
      watched: userIds.filter((u) => !blockers.has(u)),
    };
  }

  /** Replace the connection's watch list; returns the current state of those users. */
  async subscribe(origin: Origin, userIds: readonly string[]): Promise<Presence[]> {
    await this.query(origin.userId, userIds); // checks the request
    const { presence, watched } = await this.visible(origin.userId, [...new Set(userIds)]);
    await this.deps.bus.publishDown(origin.node, down({ case: 'watch', value: { connId: origin.connId, userIds: watched } }));
    return presence;
  }

  /**
   * A session came or went: announce the user's presence, if it changed, to
   * the gateways with a connection watching the user (Watches, kept by the
   * gateways); without Watches, to every gateway.
   */
  async sessionChanged(userId: string): Promise<void> {
    const platforms = (await this.deps.sessions.lookup([userId])).get(userId)?.map((s) => s.platform) ?? [];
    const p = presenceOf(userId, platforms);
    const key = `${p.online}|${p.platforms.join(',')}`;
    if (this.announced.get(userId) === key) return;
    if (p.online) this.announced.set(userId, key);
    else this.announced.delete(userId);
    const frame = encodeFrame(makeFrame(0, { case: 'event', value: { body: { case: 'presence', value: p } } }));
    const nodes = this.deps.watches ? await this.deps.watches.watchers(userId) : (await this.deps.registry.live('gateway')).map((n) => n.id);
    await Promise.all(nodes.map((node) => this.deps.bus.publishDown(node, down({ case: 'presence', value: { userId, frame } }))));
  }

  /** Relay "typing" to the conversation's other members; silently dropped when too frequent. */
  async typing(origin: Origin, conversationId: string): Promise<void> {
    await requireView(this.deps.store, conversationId, origin.userId, true);
    const key = `${origin.userId}|${conversationId}`;
    const now = Date.now();
    if (now - (this.lastTyping.get(key) ?? 0) < this.options.typingIntervalMs) return;
    this.lastTyping.set(key, now);
    if (this.lastTyping.size > 100_000) this.prune(now);
    const members = await this.deps.pipeline.members(conversationId);
    if (members.length > this.options.typingMaxMembers) return;
    // A 1:1 peer who blocks the typer does not see it typing (its messages are refused too).
    const peer = directPeer(conversationId, origin.userId);
    if (peer !== undefined && peer !== origin.userId && (await this.deps.store.blockersOf(origin.userId, [peer])).has(peer)) return;
    const frame = encodeFrame(makeFrame(0, {
      case: 'event',
      value: { body: { case: 'typing', value: { conversationId, userId: origin.userId } } },
    }));
    await deliverToUsers(this.deps, members.filter((u) => u !== origin.userId), frame);
  }

  /** Throws FORBIDDEN naming the first of `userIds` who is not a contact of `viewer` (has not written to it). */
  private async requireContacts(viewer: string, userIds: readonly string[]): Promise<void> {
    const others = userIds.filter((u) => u !== viewer);
    if (others.length === 0) return;
    const contacts = await this.deps.store.writersTo(viewer, others);
    const hidden = others.find((u) => !contacts.has(u));
    if (hidden !== undefined) {
      throw new LonglinkError(ErrorCode.FORBIDDEN, `you may see the presence of ${hidden} only once they have written to you`);
    }
  }

  private prune(now: number): void {
    for (const [k, t] of this.lastTyping) if (now - t >= this.options.typingIntervalMs) this.lastTyping.delete(k);
  }
}

function presenceOf(userId: string, platforms: string[]): Presence {
  return create(PresenceSchema, { userId, online: platforms.length > 0, platforms: [...new Set(platforms)].sort() });
}
