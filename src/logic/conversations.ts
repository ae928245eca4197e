// Conversation list with unread counts, and read receipts.
import { create } from '@bufbuild/protobuf';
import {
  ConversationSummarySchema, ErrorCode, LonglinkError, directMembers, groupIdOf, encodeFrame, makeFrame, messageToWire,
  type ConversationSummary,
} from '../protocol/index.js';
import type { Bus } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { Store } from '../engines/store.js';
import { viewOf } from './access.js';
import { deliverToUsers, type Routing } from './fanout.js';
import type { Pipeline } from './pipeline.js';

export interface ConversationOptions {
  /** Groups larger than this send read receipts only to the reader's own devices. @default 200 */
  receiptFanoutMaxMembers: number;
  /** At most this many conversations are listed, most recent first. @default 1000 */
  maxListed: number;
}

export class Conversations {
  constructor(
    private readonly options: ConversationOptions,
    private readonly deps: { store: Store; bus: Bus; sessions: Sessions; pipeline: Pipeline; routing?: Routing },
  ) {}

  /** The user's conversations, most recent activity first, with last message and unread count. */
  async list(userId: string): Promise<ConversationSummary[]> {
    const store = this.deps.store;
    const rows = (await store.listForUser(userId)).slice(0, this.options.maxListed);
    const out: ConversationSummary[] = [];
    for (const c of rows) {
      const [last] = await store.before(c.conversationId, c.lastSeq + 1, 1, c.joinedSeq);
      const readFrom = Math.max(c.readSeq, c.joinedSeq - 1);
      const summary = create(ConversationSummarySchema, {
        conversationId: c.conversationId,
        kind: c.kind,
        lastSeq: BigInt(c.lastSeq),
        readSeq: BigInt(Math.min(c.readSeq, c.lastSeq)),
        unread: BigInt(await store.unreadCount(c.conversationId, userId, readFrom, c.lastSeq)),
        lastAtMs: BigInt(last?.sentAtMs ?? c.lastAtMs),
        lastMessage: last ? messageToWire(last) : undefined,
      });
      const direct = directMembers(c.conversationId);
      if (direct) {
        const peer = direct[0] === userId ? direct[1] : direct[0];
        summary.peerUser = peer;
        summary.peerReadSeq = BigInt((await store.membership(c.conversationId, peer))?.readSeq ?? 0);
      } else {
        const groupId = groupIdOf(c.conversationId) ?? '';
        const g = await store.groupMeta(groupId);
        summary.groupId = groupId;
        summary.name = g?.name ?? '';
      }
      out.push(summary);
    }
    return out;
  }

  /**
   * Mark read up to seq (0: the latest the user may see). Tells the other
   * side (1:1) or the group's members, and the reader's other devices (only
   * those, once the reader left the group).
   */
  async markRead(userId: string, deviceId: string, conversationId: string, seq: number): Promise<number> {
    const store = this.deps.store;
    const view = await viewOf(store, conversationId, userId);
    if (!view) throw new LonglinkError(ErrorCode.FORBIDDEN, 'not a member of this conversation');
    const [newest] = await store.before(conversationId, view.toSeq !== undefined ? view.toSeq + 1 : 0, 1);
    const latest = newest?.seq ?? 0;
    if (latest === 0) return 0; // nothing to read yet
    const upTo = Math.min(seq > 0 ? seq : latest, latest);
    const read = await store.markRead(conversationId, userId, upTo);
    // One who left a group still moves its own read mark, but tells only its own devices.
    const members = view.active ? await this.deps.pipeline.members(conversationId) : [userId];
    const audience = directMembers(conversationId) || members.length <= this.options.receiptFanoutMaxMembers ? members : [userId];
    const frame = encodeFrame(makeFrame(0, {
      case: 'event',
      value: { body: { case: 'receipt', value: { conversationId, userId, seq: BigInt(read) } } },
    }));
    await deliverToUsers(this.deps, audience.includes(userId) ? audience : [...audience, userId], frame, { userId, deviceId });
    return read;
  }
}
