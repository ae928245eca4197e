// Recall: the sender within the window, or a group's owner or admin at any
// time. Stored as a timeline event whose effect erases the message's text, so
// online devices replace it now and devices that sync later never see the text.
import { randomUUID } from 'node:crypto';
import { ErrorCode, LonglinkError } from '../protocol/index.js';
import type { Store } from '../engines/store.js';
import type { Pipeline } from './pipeline.js';
import { isGroupConversation, viewOf } from './access.js';

export class RecallService {
  constructor(
    private readonly options: { recallWindowMs: number },
    private readonly deps: { store: Store; pipeline: Pipeline },
  ) {}

  async recall(userId: string, deviceId: string, conversationId: string, seq: number): Promise<void> {
    const store = this.deps.store;
    const view = await viewOf(store, conversationId, userId);
    if (!view || !view.active) throw new LonglinkError(ErrorCode.FORBIDDEN, 'not a member of this conversation');
    const target = seq >= view.fromSeq ? await store.message(conversationId, seq) : undefined;
    if (!target || target.event) throw new LonglinkError(ErrorCode.NOT_FOUND, 'no such message');
    if (target.recalledBy !== undefined) return; // already recalled: done
    let allowed = false;
    if (target.fromUser === userId) {
      if (Date.now() - target.sentAtMs > this.options.recallWindowMs) {
        const admin = await this.isGroupAdmin(conversationId, userId);
        if (!admin) throw new LonglinkError(ErrorCode.RECALL_EXPIRED, `messages can be recalled within ${Math.round(this.options.recallWindowMs / 1000)} s`);
      }
      allowed = true;
    } else {
      allowed = await this.isGroupAdmin(conversationId, userId);
    }
    if (!allowed) throw new LonglinkError(ErrorCode.NOT_SENDER, 'only the sender (or a group admin) may recall this message');
    await this.deps.pipeline.commit([{
      conversationId, kind: isGroupConversation(conversationId) ? 'group' : 'direct', members: [],
      fromUser: userId, fromDevice: deviceId, clientMsgId: '', serverMsgId: randomUUID(), text: '', sentAtMs: Date.now(),
      event: { type: 'recalled', actor: userId, targetSeq: seq }, effect: { op: 'recall', targetSeq: seq, by: userId },
    }]);
  }

  private async isGroupAdmin(conversationId: string, userId: string): Promise<boolean> {
    if (!isGroupConversation(conversationId)) return false;
    const m = await this.deps.store.membership(conversationId, userId);
    return m !== undefined && m.leftSeq === undefined && (m.role === 'owner' || m.role === 'admin');
  }
}
