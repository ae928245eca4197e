// Conversation list with unread counts, and read receipts.
import { create } from '@bufbuild/protobuf';
import {
  ConversationSummarySchema, ErrorCode, LonglinkError, directMembers, directPeer, groupIdOf, encodeFrame, makeFrame, messageToWire,
  type BodyOf, type ChatMessage, type ConversationSummary,
} from '../protocol/index.js';
import type { Bus } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { DeliveredMark, Store } from '../engines/store.js';
import { requireView } from './access.js';
import { deliverToUsers, type Routing } from './fanout.js';
import type { Pipeline } from './pipeline.js';

export interface ConversationOptions {
  /** Groups larger than this send read receipts only to the reader's own devices. @default 200 */
  receiptFanoutMaxMembers: number;
  /** Summaries per list page when the client asks for 0. @default 100 */
  pageLimit: number;
  /** Most summaries per list page. @default 500 */
  pageMax: number;
  /**
   * 'contacts': a 1:1 peer's delivered mark (which moves when its devices come
   * online) is shown only once that peer has written to the viewer, like its
   * presence. @default 'all'
   */
  deliveredVisibility: 'all' | 'contacts';
}

/** A summary's last message carries this many characters of its text (the client fetches the rest with history). */
export const PREVIEW_CHARS = 200;

/**
 * A last message as the list shows it, bounded like its text: no payload (its
 * type stays), an edit's new text cut, its new content left out. Fetch the
 * message with history for the whole.
 */
function previewOf(m: ChatMessage): ChatMessage {
  const out: ChatMessage = { ...m };
  if (m.content?.payload) {
    const { payload: _payload, ...rest } = m.content;
    out.content = rest;
  }
  if (m.event && (m.event.text !== undefined || m.event.content !== undefined)) {
    const { content: _content, ...event } = m.event;
    if (event.text !== undefined) event.text = [...event.text].slice(0, PREVIEW_CHARS).join('');
    out.event = event;
  }
  return out;
}

export class Conversations {
  constructor(
    private readonly options: ConversationOptions,
    private readonly deps: { store: Store; bus: Bus; sessions: Sessions; pipeline: Pipeline; routing?: Routing },
  ) {}

  /**
   * One page of the user's conversations, most recent activity first, each
   * with its last message (a preview), unread count and read marks: one
   * bounded store read (a page of rows, a few index reads per row).
   */
  async list(userId: string, req: BodyOf<'conversations'>): Promise<{ conversations: ConversationSummary[]; hasMore: boolean }> {
    const limit = req.limit > 0 ? Math.min(req.limit, this.options.pageMax) : this.options.pageLimit;
    const after = req.afterConversationId !== '' ? { atMs: Number(req.afterAtMs), conversationId: req.afterConversationId } : undefined;
    if (after && !Number.isSafeInteger(after.atMs)) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'after_at_ms out of range');
    const rows = await this.deps.store.conversationPage(userId, limit + 1, after, PREVIEW_CHARS);
    const page = rows.slice(0, limit);
    const marked = page.filter((c) => (c.peerDeliveredSeq ?? 0) > 0).map((c) => directPeer(c.conversationId, userId)!);
    const marksShown = await this.deliveredMarksVisible(userId, marked);
    const conversations = page.map((c) => {
      const summary = create(ConversationSummarySchema, {
        conversationId: c.conversationId,
        kind: c.kind,
        lastSeq: BigInt(c.lastSeq),
        readSeq: BigInt(c.readSeq),
        unread: BigInt(c.unread),
        lastAtMs: BigInt(c.lastAtMs),
        lastMessage: c.lastMessage ? messageToWire(previewOf(c.lastMessage)) : undefined,
        lastMessageTruncated: c.lastTruncated,
        mentioned: c.mentioned === true,
      });
      const peer = directPeer(c.conversationId, userId);
      if (peer !== undefined) {
        summary.peerUser = peer;
        summary.peerReadSeq = BigInt(c.peerReadSeq ?? 0);
        if (marksShown.has(peer)) summary.peerDeliveredSeq = BigInt(c.peerDeliveredSeq ?? 0);
      } else {
        summary.groupId = groupIdOf(c.conversationId) ?? '';
        summary.name = c.groupName ?? '';
      }
      return summary;
    });
    return { conversations, hasMore: rows.length > limit };
  }

  /**
   * A 1:1 receiver's delivered mark moved past the other member's messages:
   * that member's devices learn it ("delivered"), if it may see the mark.
   */
  async delivered(mark: DeliveredMark): Promise<void> {
    const sender = directPeer(mark.conversationId, mark.userId);
    if (sender === undefined || sender === mark.userId) return; // a note to self
    if (!(await this.deliveredMarksVisible(sender, [mark.userId])).has(mark.userId)) return;
    const frame = encodeFrame(makeFrame(0, {
      case: 'event',
      value: { body: { case: 'delivery', value: { conversationId: mark.conversationId, userId: mark.userId, seq: BigInt(mark.seq) } } },
    }));
    await deliverToUsers(this.deps, [sender], frame);
  }

  /**
   * Which of `owners` the viewer may see the delivered marks of (see
   * `deliveredVisibility`): a mark that moves when a device comes online
   * tells as much as presence.
   */
  private async deliveredMarksVisible(viewer: string, owners: readonly string[]): Promise<Set<string>> {
    if (this.options.deliveredVisibility === 'all') return new Set(owners);
    return owners.length > 0 ? this.deps.store.writersTo(viewer, owners) : new Set();
  }

  /**
   * Mark read up to seq (0: the latest the user may see). Tells the other
   * side (1:1) or the group's members, and the reader's other devices (only
   * those, once the reader left the group).
   */
  async markRead(userId: string, deviceId: string, conversationId: string, seq: number): Promise<number> {
    const store = this.deps.store;
    const view = await requireView(store, conversationId, userId);
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
