// Changes to a stored message, each stored as a timeline event whose effect
// changes the message in the same transaction, so online devices apply it in
// order and devices that sync later read the message as it is now:
//
// - Recall: the sender within the window; in a group, also its owner (anyone's
//   message, any time) and its admins (their own, and plain members'
//   messages, any time; not the owner's or another admin's), the same ranks
//   as removing and muting. The text is erased; the message says recalled.
// - Delete for everyone: who may recall may delete; the message becomes a
//   tombstone (text and content gone; it says deleted, and by whom).
// - Edit: the sender only, any time, while a member; the text and content
//   become the new version (its reply and forward stay), checked by the
//   content rules as a send is.
import { randomUUID } from 'node:crypto';
import { ErrorCode, LonglinkError, SYSTEM_USER, directConversationId, isGroupConversation, type ChatMessage, type ContentData, type GroupRoleName } from '../protocol/index.js';
import type { MessageDraft, Store } from '../engines/store.js';
import { eventKey, type Pipeline } from './pipeline.js';
import { requireView } from './access.js';
import { checkContent, hasBody, resolveContent } from './content.js';
import type { BlockService } from './blocks.js';

export class RecallService {
  constructor(
    private readonly options: { recallWindowMs: number; maxTextBytes: number; maxPayloadBytes: number },
    private readonly deps: { store: Store; pipeline: Pipeline; blocks: BlockService },
  ) {}

  /**
   * Recall (or, `kind` delete, delete for everyone) one message; `requestId`
   * makes it once-only (a redelivered or resent request is done). The
   * service itself (`trusted` system user: the risk service) may do it to any
   * message, any time.
   */
  async recall(
    userId: string, deviceId: string, conversationId: string, seq: number, requestId: string, trusted = false, kind: 'recall' | 'delete' = 'recall',
  ): Promise<void> {
    if (await this.repeated(userId, requestId)) return;
    const service = trusted && userId === SYSTEM_USER;
    const target = await this.target(conversationId, seq, userId, service);
    if (target.recalledBy !== undefined || target.deletedBy !== undefined) return; // already gone: done
    const group = isGroupConversation(conversationId);
    const rank = service ? 'owner' : group ? await this.rankIn(conversationId, userId) : 'member';
    if (target.fromUser === userId) {
      if (rank === 'member' && Date.now() - target.sentAtMs > this.options.recallWindowMs) {
        throw new LonglinkError(ErrorCode.RECALL_EXPIRED, `messages can be ${kind === 'recall' ? 'recalled' : 'deleted for everyone'} within ${Math.round(this.options.recallWindowMs / 1000)} s`);
      }
    } else {
      const senderRank = group ? await this.rankIn(conversationId, target.fromUser) : 'member';
      const allowed = rank === 'owner' || (rank === 'admin' && senderRank === 'member');
      if (!allowed) throw new LonglinkError(ErrorCode.NOT_SENDER, `only the sender (or a group admin over a member) may ${kind} this message`);
    }
    await this.deps.pipeline.commit([this.event(conversationId, userId, deviceId, requestId, kind === 'recall'
      ? { event: { type: 'recalled', actor: userId, targetSeq: seq }, effect: { op: 'recall', targetSeq: seq, by: userId } }
      : { event: { type: 'deleted', actor: userId, targetSeq: seq }, effect: { op: 'delete', targetSeq: seq, by: userId } })]);
  }

  /** Edit one of the user's own messages: its text and content become these (its reply and forward stay). */
  async edit(userId: string, deviceId: string, conversationId: string, seq: number, text: string, content: ContentData | undefined, requestId: string): Promise<void> {
    checkContent(content, text, conversationId, this.options.maxPayloadBytes, true);
    if (Buffer.byteLength(text, 'utf8') > this.options.maxTextBytes) {
      throw new LonglinkError(ErrorCode.TEXT_TOO_LARGE, `message text is ${Buffer.byteLength(text, 'utf8')} bytes; the limit is ${this.options.maxTextBytes}`);
    }
    if (text.includes('\u0000')) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'text must not contain NUL (U+0000)');
    if (await this.repeated(userId, requestId)) return;
    await requireView(this.deps.store, conversationId, userId, true);
    const target = await this.target(conversationId, seq, userId, false);
    if (target.recalledBy !== undefined || target.deletedBy !== undefined) throw new LonglinkError(ErrorCode.NOT_FOUND, 'the message was recalled or deleted');
    if (target.fromUser !== userId) throw new LonglinkError(ErrorCode.NOT_SENDER, 'only the sender may edit a message');
    if (target.content?.forward) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'a forwarded message cannot be edited');
    await this.deps.blocks.requireNotBlocked(userId, conversationId); // an edit writes to the peer as a send does
    if (!hasBody(text, content) && !target.content?.attachments) throw new LonglinkError(ErrorCode.TEXT_EMPTY, 'an edit needs a text or a content type');
    const resolved = await resolveContent(this.deps.store, userId, conversationId, text, content, false);
    const next: ContentData = { ...resolved.content };
    if (target.content?.replyToSeq) next.replyToSeq = target.content.replyToSeq;
    if (target.content?.attachments) next.attachments = target.content.attachments;
    const withContent = Object.keys(next).length > 0 ? { content: next } : {};
    // The content rules see the new version as a send (a refusal is CONTENT_BLOCKED; a mask replaces the text).
    const draft = this.event(conversationId, userId, deviceId, requestId, {});
    const stored = await this.deps.pipeline.screen({ ...draft, text, ...withContent });
    await this.deps.pipeline.commit([{
      ...draft,
      event: { type: 'edited', actor: userId, targetSeq: seq, text: stored, ...withContent },
      effect: { op: 'edit', targetSeq: seq, text: stored, ...withContent },
    }]);
  }

  /**
   * Delete a message for the user only: a `hidden` event in its note-to-self
   * conversation (so every device of the user learns it in order, online or
   * at sync), whose effect records the hide (reads then give it `hidden`).
   */
  async hide(userId: string, deviceId: string, conversationId: string, seq: number, requestId: string): Promise<void> {
    if (await this.repeated(userId, requestId)) return;
    const view = await requireView(this.deps.store, conversationId, userId);
    const visible = seq >= view.fromSeq && (view.toSeq === undefined || seq <= view.toSeq);
    const target = visible ? await this.deps.store.message(conversationId, seq) : undefined;
    if (!target || target.event) throw new LonglinkError(ErrorCode.NOT_FOUND, 'no such message');
    const self = directConversationId(userId, userId);
    await this.deps.pipeline.commit([{
      ...this.event(self, userId, deviceId, requestId, {}),
      members: [userId],
      event: { type: 'hidden', actor: userId, targetSeq: seq, targetConversationId: conversationId },
      effect: { op: 'hide', userId, conversationId, targetSeq: seq },
    }]);
  }

  /** A request applied before (its process may have died before publishing it): its event goes out again, as a repeat. */
  private async repeated(userId: string, requestId: string): Promise<boolean> {
    const key = eventKey(requestId);
    const applied = key !== '' ? await this.deps.store.messageByRequest(userId, key) : undefined;
    if (!applied) return false;
    await this.deps.pipeline.pushResults([{ message: applied, duplicate: true }]);
    return true;
  }

  /** The message a change names: one the user may see (the service: any), not an event. */
  private async target(conversationId: string, seq: number, userId: string, service: boolean): Promise<ChatMessage> {
    const fromSeq = service ? 1 : (await requireView(this.deps.store, conversationId, userId, true)).fromSeq;
    const target = seq >= fromSeq ? await this.deps.store.message(conversationId, seq) : undefined;
    if (!target || target.event) throw new LonglinkError(ErrorCode.NOT_FOUND, 'no such message');
    return target;
  }

  private event(
    conversationId: string, userId: string, deviceId: string, requestId: string, change: Pick<MessageDraft, 'event' | 'effect'>,
  ): MessageDraft {
    return {
      conversationId, kind: isGroupConversation(conversationId) ? 'group' : 'direct', members: [],
      fromUser: userId, fromDevice: deviceId, clientMsgId: eventKey(requestId), serverMsgId: randomUUID(), text: '', sentAtMs: Date.now(),
      ...change,
    };
  }

  /** A user's rank in a group now: one who left (or never was a member, e.g. the system user) counts as a member. */
  private async rankIn(conversationId: string, userId: string): Promise<GroupRoleName> {
    const m = await this.deps.store.membership(conversationId, userId);
    return m !== undefined && m.leftSeq === undefined ? m.role : 'member';
  }
}
