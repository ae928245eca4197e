// The message pipeline: validate → dedupe and assign seq (in the store, one
// transaction per batch) → ack senders → push to recipients. Both client
// sends (from the bus) and business pushes (from the HTTP API) come through here.
import { randomUUID } from 'node:crypto';
import {
  ErrorCode, LonglinkError, SYSTEM_USER, directConversationId, directMembers, encodeFrame, isValidId,
  makeFrame, messageToWire, type ChatMessage,
} from '../protocol/index.js';
import type { Bus, DeliverTarget } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { AppendResult, MessageDraft, Store } from '../engines/store.js';
import { membersOf } from './access.js';

export interface SendRequest {
  fromUser: string;
  fromDevice: string;
  /** Asserted sender from the frame; must be empty or equal to fromUser. */
  claimedFrom: string;
  toUser: string;
  conversationId: string;
  clientMsgId: string;
  text: string;
}

export interface PipelineOptions {
  maxTextBytes: number;
}

const MAX_CLIENT_MSG_ID = 128;

export class Pipeline {
  constructor(
    private readonly options: PipelineOptions,
    private readonly deps: { bus: Bus; sessions: Sessions; store: Store },
  ) {}

  /** Checks a request and turns it into a draft; throws LonglinkError with the reason. */
  draft(req: SendRequest, nowMs: number): MessageDraft {
    if (req.claimedFrom !== '' && req.claimedFrom !== req.fromUser) {
      throw new LonglinkError(ErrorCode.FORBIDDEN, 'cannot send as another user');
    }
    if (!req.clientMsgId || req.clientMsgId.length > MAX_CLIENT_MSG_ID) {
      throw new LonglinkError(ErrorCode.BAD_REQUEST, `client_msg_id must be 1-${MAX_CLIENT_MSG_ID} characters`);
    }
    if (req.text.length === 0) throw new LonglinkError(ErrorCode.TEXT_EMPTY, 'message text is empty');
    const bytes = Buffer.byteLength(req.text, 'utf8');
    if (bytes > this.options.maxTextBytes) {
      throw new LonglinkError(ErrorCode.TEXT_TOO_LARGE, `message text is ${bytes} bytes; the limit is ${this.options.maxTextBytes}`);
    }
    let conversationId: string;
    if (req.toUser !== '' && req.conversationId === '') {
      if (!isValidId(req.toUser)) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'to_user is not a valid user id');
      if (req.toUser === SYSTEM_USER) throw new LonglinkError(ErrorCode.FORBIDDEN, 'the system user does not take messages');
      conversationId = directConversationId(req.fromUser, req.toUser);
    } else if (req.conversationId !== '' && req.toUser === '') {
      const members = directMembers(req.conversationId);
      if (!members) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'unknown conversation id');
      if (!members.includes(req.fromUser)) throw new LonglinkError(ErrorCode.FORBIDDEN, 'not a member of this conversation');
      conversationId = req.conversationId;
    } else {
      throw new LonglinkError(ErrorCode.BAD_REQUEST, 'give exactly one of to_user or conversation_id');
    }
    const members = directMembers(conversationId)!;
    return {
      conversationId,
      kind: 'direct',
      members: members[0] === members[1] ? [members[0]] : members,
      fromUser: req.fromUser,
      fromDevice: req.fromDevice,
      clientMsgId: req.clientMsgId,
      serverMsgId: randomUUID(),
      text: req.text,
      sentAtMs: nowMs,
    };
  }

  /** Store a batch (one transaction), then push what is new. Results in draft order. */
  async commit(drafts: readonly MessageDraft[]): Promise<AppendResult[]> {
    if (drafts.length === 0) return [];
    const results = await this.deps.store.append(drafts);
    const fresh = results.filter((r) => !r.duplicate).map((r) => r.message);
    if (fresh.length > 0) {
      await this.push(fresh).catch((err: unknown) => {
        // Stored and acked: recipients get it at their next sync (or on the next message's gap).
        console.error('[logic] push failed after store', err);
      });
    }
    return results;
  }

  /** Push stored messages to every online device of every member, except the sending device. */
  private async push(messages: readonly ChatMessage[]): Promise<void> {
    const membersByConversation = new Map<string, string[]>();
    for (const m of messages) {
      if (!membersByConversation.has(m.conversationId)) {
        membersByConversation.set(m.conversationId, await membersOf(this.deps.store, m.conversationId));
      }
    }
    const users = new Set<string>();
    for (const members of membersByConversation.values()) for (const u of members) users.add(u);
    const online = await this.deps.sessions.lookup([...users]);
    if (online.size === 0) return;
    for (const m of messages) {
      const byNode = new Map<string, DeliverTarget[]>();
      for (const user of membersByConversation.get(m.conversationId)!) {
        const nodes = new Set((online.get(user) ?? []).map((s) => s.node));
        for (const node of nodes) {
          const targets = byNode.get(node) ?? [];
          targets.push(user === m.fromUser ? { userId: user, exceptDevice: m.fromDevice } : { userId: user });
          byNode.set(node, targets);
        }
      }
      if (byNode.size === 0) continue;
      const frame = encodeFrame(makeFrame(0, { case: 'push', value: { messages: [messageToWire(m)] } }));
      for (const [node, targets] of byNode) {
        await this.deps.bus.publishDown(node, { kind: 'deliver', targets, frame });
      }
    }
  }
}
