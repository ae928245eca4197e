// Recall: the sender within the window; in a group, also its owner (anyone's
// message, any time) and its admins (their own, and plain members' messages,
// any time; not the owner's or another admin's), the same ranks as removing
// and muting. Stored as a timeline event whose effect erases the message's
// text, so online devices replace it now and devices that sync later never
// see the text.
import { randomUUID } from 'node:crypto';
import { ErrorCode, LonglinkError, SYSTEM_USER, isGroupConversation, type GroupRoleName } from '../protocol/index.js';
import type { Store } from '../engines/store.js';
import { eventKey, type Pipeline } from './pipeline.js';
import { requireView } from './access.js';

export class RecallService {
  constructor(
    private readonly options: { recallWindowMs: number },
    private readonly deps: { store: Store; pipeline: Pipeline },
  ) {}

  /**
   * Recall one message; `requestId` makes it once-only (a redelivered or
   * resent recall is done). The service itself (`trusted` system user: the
   * risk service) recalls any message, any time.
   */
  async recall(userId: string, deviceId: string, conversationId: string, seq: number, requestId: string, trusted = false): Promise<void> {
    const store = this.deps.store;
    const key = eventKey(requestId);
    const applied = key !== '' ? await store.messageByRequest(userId, key) : undefined;
    if (applied) {
      // Applied before (its process may have died before publishing it): its event goes out again, as a repeat.
      await this.deps.pipeline.pushResults([{ message: applied, duplicate: true }]);
      return;
    }
    const service = trusted && userId === SYSTEM_USER;
    const fromSeq = service ? 1 : (await requireView(store, conversationId, userId, true)).fromSeq;
    const target = seq >= fromSeq ? await store.message(conversationId, seq) : undefined;
    if (!target || target.event) throw new LonglinkError(ErrorCode.NOT_FOUND, 'no such message');
    if (target.recalledBy !== undefined) return; // already recalled: done
    const group = isGroupConversation(conversationId);
    const rank = service ? 'owner' : group ? await this.rankIn(conversationId, userId) : 'member';
    if (target.fromUser === userId) {
      if (rank === 'member' && Date.now() - target.sentAtMs > this.options.recallWindowMs) {
        throw new LonglinkError(ErrorCode.RECALL_EXPIRED, `messages can be recalled within ${Math.round(this.options.recallWindowMs / 1000)} s`);
      }
    } else {
      const senderRank = group ? await this.rankIn(conversationId, target.fromUser) : 'member';
      const allowed = rank === 'owner' || (rank === 'admin' && senderRank === 'member');
      if (!allowed) throw new LonglinkError(ErrorCode.NOT_SENDER, 'only the sender (or a group admin over a member) may recall this message');
    }
    await this.deps.pipeline.commit([{
      conversationId, kind: group ? 'group' : 'direct', members: [],
      fromUser: userId, fromDevice: deviceId, clientMsgId: key, serverMsgId: randomUUID(), text: '', sentAtMs: Date.now(),
      event: { type: 'recalled', actor: userId, targetSeq: seq }, effect: { op: 'recall', targetSeq: seq, by: userId },
    }]);
  }

  /** A user's rank in a group now: one who left (or never was a member, e.g. the system user) counts as a member. */
  private async rankIn(conversationId: string, userId: string): Promise<GroupRoleName> {
    const m = await this.deps.store.membership(conversationId, userId);
    return m !== undefined && m.leftSeq === undefined ? m.role : 'member';
  }
}
