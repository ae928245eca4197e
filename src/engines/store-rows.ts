// What the SQL stores share: the message row as both schemas store it, and
// the message a draft becomes once it has its seq.
import { groupIdOf as groupIdOfConversation } from '../protocol/ids.js';
import type { ChatMessage, TimelineEventData } from '../protocol/index.js';
import type { MessageDraft } from './store.js';

/** A `messages` row; `event` is the timeline event as JSON text. */
export interface MessageRow {
  conversation_id: string;
  seq: number;
  server_msg_id: string;
  from_user: string;
  from_device: string;
  client_msg_id: string;
  text: string;
  sent_at_ms: number;
  event: string | null;
  recalled_by: string | null;
}

/** A row as a ChatMessage: optional fields absent, not null. */
export function toMessage(r: MessageRow): ChatMessage {
  const m: ChatMessage = {
    conversationId: r.conversation_id,
    seq: r.seq,
    serverMsgId: r.server_msg_id,
    fromUser: r.from_user,
    fromDevice: r.from_device,
    clientMsgId: r.client_msg_id,
    text: r.text,
    sentAtMs: r.sent_at_ms,
  };
  if (r.event !== null) m.event = JSON.parse(r.event) as TimelineEventData;
  if (r.recalled_by !== null) m.recalledBy = r.recalled_by;
  return m;
}

/** The message a draft becomes with `seq`. */
export function draftMessage(d: MessageDraft, seq: number): ChatMessage {
  const message: ChatMessage = {
    conversationId: d.conversationId,
    seq,
    serverMsgId: d.serverMsgId,
    fromUser: d.fromUser,
    fromDevice: d.fromDevice,
    clientMsgId: d.clientMsgId,
    text: d.text,
    sentAtMs: d.sentAtMs,
  };
  if (d.event) message.event = d.event;
  return message;
}

/** The group id of a group conversation id `g:{id}` (the id itself when it is not one). */
export function groupIdOf(conversationId: string): string {
  return groupIdOfConversation(conversationId) ?? conversationId;
}
