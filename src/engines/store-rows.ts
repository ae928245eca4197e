// What the SQL stores share: the message row as both schemas store it, and
// the message a draft becomes once it has its seq.
import { groupIdOf as groupIdOfConversation } from '../protocol/ids.js';
import type { ChatMessage, ContentData, TimelineEventData } from '../protocol/index.js';
import type { ConversationKind, ConversationState, Effect, HomeRecord, MessageDraft, RiskAuditEntry } from './store.js';

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
  /** contentJson(): content parts, edit time, tombstone; null for plain text never edited. */
  content: string | null;
}

/** messages.content as stored: the content's parts, then the edit time and the tombstone mark. */
interface StoredContent {
  type?: string;
  /** base64 */
  payload?: string;
  mentions?: string[];
  mentionAll?: boolean;
  replyToSeq?: number;
  forward?: ContentData['forward'];
  attachments?: ContentData['attachments'];
  editedAtMs?: number;
  deleted?: boolean;
}

/** The content column of a message (null when it has nothing but text). Fields in one fixed order, like eventJson. */
export function contentJson(m: { content?: ContentData; editedAtMs?: number; deletedBy?: string }): string | null {
  if (m.deletedBy !== undefined) return '{"deleted":true}';
  const out: StoredContent = {};
  const c = m.content;
  if (c?.type) out.type = c.type;
  if (c?.payload && c.payload.length > 0) out.payload = Buffer.from(c.payload).toString('base64');
  if (c?.mentions && c.mentions.length > 0) out.mentions = c.mentions;
  if (c?.mentionAll) out.mentionAll = true;
  if (c?.replyToSeq) out.replyToSeq = c.replyToSeq;
  if (c?.forward) out.forward = c.forward;
  if (c?.attachments && c.attachments.length > 0) out.attachments = c.attachments;
  if (m.editedAtMs) out.editedAtMs = m.editedAtMs;
  return Object.keys(out).length > 0 ? JSON.stringify(out) : null;
}

/** The content column read back onto a message (recalled_by is a tombstone's author when it says deleted). */
function readContent(m: ChatMessage, json: string, by: string | null): void {
  const s = JSON.parse(json) as StoredContent;
  if (s.deleted) {
    if (by !== null) m.deletedBy = by;
    return;
  }
  const c = contentOf(s);
  if (c) m.content = c;
  if (s.editedAtMs) m.editedAtMs = s.editedAtMs;
}

function contentOf(s: StoredContent): ContentData | undefined {
  const c: ContentData = {};
  if (s.type) c.type = s.type;
  if (s.payload) c.payload = new Uint8Array(Buffer.from(s.payload, 'base64'));
  if (s.mentions) c.mentions = s.mentions;
  if (s.mentionAll) c.mentionAll = true;
  if (s.replyToSeq) c.replyToSeq = s.replyToSeq;
  if (s.forward) c.forward = s.forward;
  if (s.attachments) c.attachments = s.attachments;
  return Object.keys(c).length > 0 ? c : undefined;
}

/** Who a message mentions, as the mentions table holds it ('*': everyone). */
export function mentionedIn(c: ContentData | undefined): string[] {
  if (!c) return [];
  const users = new Set(c.mentions ?? []);
  if (c.mentionAll) users.add(MENTION_ALL);
  return [...users];
}

/** The files a message holds (file_refs rows). */
export function attachedFiles(c: ContentData | undefined): string[] {
  return [...new Set((c?.attachments ?? []).map((a) => a.fileId))];
}

/** The mentions row of a mention of everyone. */
export const MENTION_ALL = '*';

/**
 * A timeline event as stored (messages.event): its fields in one fixed order,
 * absent ones left out, so every datacenter's copy of an event is the same
 * text whichever way it came (from a draft, or decoded from the wire).
 */
export function eventJson(e: TimelineEventData): string {
  const out: Record<string, unknown> = { type: e.type, actor: e.actor };
  if (e.userIds !== undefined && e.userIds.length > 0) out.userIds = e.userIds;
  if (e.targetSeq) out.targetSeq = e.targetSeq;
  if (e.role !== undefined) out.role = e.role;
  if (e.name) out.name = e.name;
  // The wire has no "unset" for a bool: a mute change always says which way, other events never.
  if (e.type === 'mute_changed') out.muted = e.muted === true;
  if (e.type === 'edited') out.text = e.text ?? '';
  if (e.targetConversationId) out.targetConversationId = e.targetConversationId;
  const content = e.content ? contentJson({ content: e.content }) : null;
  if (content !== null) out.content = JSON.parse(content) as unknown;
  return JSON.stringify(out);
}

/** messages.event read back (its content's payload was stored as base64). */
function eventOf(json: string): TimelineEventData {
  const { content, ...e } = JSON.parse(json) as Omit<TimelineEventData, 'content'> & { content?: StoredContent };
  const event: TimelineEventData = e;
  const read = content ? contentOf(content) : undefined;
  if (read) event.content = read;
  return event;
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
  if (r.event !== null) m.event = eventOf(r.event);
  if (r.content !== null && r.content !== undefined) readContent(m, r.content, r.recalled_by);
  if (r.recalled_by !== null && m.deletedBy === undefined) m.recalledBy = r.recalled_by;
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
  if (d.content) message.content = d.content;
  if (d.reply) message.reply = d.reply;
  return message;
}

/** A user's row of its conversation list as both schemas read it (its activity time and rejoin flag are typed apart). */
export interface StateColumns {
  id: string; kind: string; last_seq: number; joined_seq: number; left_seq: number | null; read_seq: number;
}

/** A list row as a ConversationState: a member who left sees up to its leaving. */
export function toState(r: StateColumns, atMs: number, rejoined: boolean): ConversationState {
  const c: ConversationState = {
    conversationId: r.id,
    kind: r.kind as ConversationKind,
    lastSeq: r.left_seq === null ? r.last_seq : Math.min(r.last_seq, r.left_seq),
    lastAtMs: atMs,
    joinedSeq: r.joined_seq,
    readSeq: r.read_seq,
  };
  if (r.left_seq !== null) c.leftSeq = r.left_seq;
  if (rejoined) c.rejoined = true;
  return c;
}

/** The group id of a group conversation id `g:{id}` (the id itself when it is not one). */
export function groupIdOf(conversationId: string): string {
  return groupIdOfConversation(conversationId) ?? conversationId;
}

/** The `settings` key of the webhook signing secret. */
export const WEBHOOK_SECRET_KEY = 'risk.webhook_secret';

/** A `risk_audit` row (PostgreSQL hands bigints as strings: Number() makes both stores' rows alike). */
export interface RiskAuditRow {
  id: number | string;
  at_ms: number | string;
  user_id: string;
  rule: string;
  action: string;
  detail: string;
}

export function toRiskAuditEntry(r: RiskAuditRow): RiskAuditEntry {
  return { id: Number(r.id), atMs: Number(r.at_ms), userId: r.user_id, rule: r.rule, action: r.action, detail: r.detail };
}

/**
 * What a stored timeline event did to its conversation (the effect its home
 * applied with it), for a datacenter that copies it: every event carries what
 * its effect needs.
 */
export function effectOfEvent(conversationId: string, message: ChatMessage): Effect | undefined {
  const e = message.event;
  if (!e) return undefined;
  const users = e.userIds ?? [];
  switch (e.type) {
    case 'group_created':
      return { op: 'create-group', groupId: groupIdOfConversation(conversationId) ?? '', name: e.name ?? '', owner: e.actor, members: users };
    case 'members_added':
      return { op: 'add-members', userIds: users };
    case 'members_removed':
    case 'member_left':
      return { op: 'remove-members', userIds: users };
    case 'dismissed':
      return { op: 'dismiss' };
    case 'role_changed':
      return e.role && users[0] ? { op: 'set-role', userId: users[0], role: e.role } : undefined;
    case 'mute_changed':
      return users[0] ? { op: 'mute', userId: users[0], muted: e.muted === true } : { op: 'mute', muted: e.muted === true };
    case 'recalled':
      return e.targetSeq ? { op: 'recall', targetSeq: e.targetSeq, by: e.actor } : undefined;
    case 'edited':
      return e.targetSeq ? { op: 'edit', targetSeq: e.targetSeq, text: e.text ?? '', content: e.content } : undefined;
    case 'deleted':
      return e.targetSeq ? { op: 'delete', targetSeq: e.targetSeq, by: e.actor } : undefined;
    case 'hidden':
      return e.targetSeq && e.targetConversationId ? { op: 'hide', userId: e.actor, conversationId: e.targetConversationId, targetSeq: e.targetSeq } : undefined;
  }
}

/** A `dc_homes` row, as both schemas store it. */
export interface HomeRow {
  dc: string;
  served_by: string;
  epoch: number;
  state: string;
  changed_at_ms: number;
}

export function homeOf(r: HomeRow): HomeRecord {
  return { servedBy: r.served_by, epoch: r.epoch, state: r.state === 'returning' ? 'returning' : 'serving', changedAtMs: r.changed_at_ms };
}
