// Wire ↔ domain. The wire carries int64 as bigint; the rest of Longlink uses
// plain numbers (seq and millisecond times stay far below 2^53).
import { create } from '@bufbuild/protobuf';
import {
  MessageSchema, CursorSchema, TimelineEventSchema, TimelineEventType, GroupRole, ContentSchema,
  type Message, type Cursor, type TimelineEvent, type Content,
} from './gen/longlink/v1/longlink_pb.js';

export type GroupRoleName = 'owner' | 'admin' | 'member';

export type TimelineEventName =
  | 'group_created' | 'members_added' | 'members_removed' | 'member_left' | 'dismissed'
  | 'role_changed' | 'mute_changed' | 'recalled' | 'edited' | 'deleted' | 'hidden';

/** Where a forwarded message came from. */
export interface ForwardData {
  conversationId: string;
  seq: number;
  fromUser: string;
  sentAtMs: number;
}

/** A message's content beyond its text (Content on the wire); every part optional. */
export interface ContentData {
  /** A custom content type chosen by the business; absent for text. */
  type?: string;
  /** The custom payload, delivered as is (only with a type). */
  payload?: Uint8Array;
  mentions?: string[];
  /** Groups: everyone is mentioned. */
  mentionAll?: boolean;
  /** A reply: the seq of the same conversation it answers. */
  replyToSeq?: number;
  /** A forwarded message: where it came from. */
  forward?: ForwardData;
  /** Files it carries (uploaded with POST /api/v1/files). */
  attachments?: AttachmentData[];
}

/** A file a message carries: everything but fileId is filled in by the server from what the upload stored. */
export interface AttachmentData {
  fileId: string;
  name: string;
  mime: string;
  size: number;
  width: number;
  height: number;
  hasPreview: boolean;
}

/** The most files one message carries. */
export const MAX_ATTACHMENTS = 10;

/** The message a reply quotes, as it is when read. */
export interface QuoteData {
  seq: number;
  fromUser: string;
  /** Its first QUOTE_CHARS characters. */
  text: string;
  type?: string;
  /** Recalled, deleted or expired: nothing is quoted. */
  gone?: boolean;
}

/** One emoji's reactions to a message: how many, and the first users who reacted (earliest first). */
export interface ReactionData {
  emoji: string;
  count: number;
  users: string[];
}

/** Users named per emoji in a message's reactions (the count says how many in all). */
export const REACTION_USERS = 20;

/** Characters of a quoted message's text a reply carries. */
export const QUOTE_CHARS = 200;

/** A change recorded in a conversation's timeline (stored as a message). */
export interface TimelineEventData {
  type: TimelineEventName;
  actor: string;
  userIds?: string[];
  targetSeq?: number;
  role?: GroupRoleName;
  name?: string;
  muted?: boolean;
  /** `edited`: the target's new text and content. */
  text?: string;
  content?: ContentData;
  /** `hidden`: the conversation of targetSeq (the event itself is in the user's note-to-self conversation). */
  targetConversationId?: string;
}

const EVENT_TYPES: [TimelineEventName, TimelineEventType][] = [
  ['group_created', TimelineEventType.GROUP_CREATED],
  ['members_added', TimelineEventType.MEMBERS_ADDED],
  ['members_removed', TimelineEventType.MEMBERS_REMOVED],
  ['member_left', TimelineEventType.MEMBER_LEFT],
  ['dismissed', TimelineEventType.DISMISSED],
  ['role_changed', TimelineEventType.ROLE_CHANGED],
  ['mute_changed', TimelineEventType.MUTE_CHANGED],
  ['recalled', TimelineEventType.RECALLED],
  ['edited', TimelineEventType.EDITED],
  ['deleted', TimelineEventType.DELETED],
  ['hidden', TimelineEventType.HIDDEN],
];
const ROLES: [GroupRoleName, GroupRole][] = [['owner', GroupRole.OWNER], ['admin', GroupRole.ADMIN], ['member', GroupRole.MEMBER]];

export function roleToWire(role: GroupRoleName): GroupRole {
  return ROLES.find(([n]) => n === role)![1];
}

export function roleFromWire(role: GroupRole): GroupRoleName | undefined {
  return ROLES.find(([, w]) => w === role)?.[0];
}

export function eventToWire(e: TimelineEventData): TimelineEvent {
  return create(TimelineEventSchema, {
    type: EVENT_TYPES.find(([n]) => n === e.type)![1],
    actor: e.actor,
    userIds: e.userIds ?? [],
    targetSeq: BigInt(e.targetSeq ?? 0),
    role: e.role ? roleToWire(e.role) : GroupRole.GROUP_ROLE_UNSPECIFIED,
    name: e.name ?? '',
    muted: e.muted ?? false,
    text: e.text ?? '',
    content: e.content ? contentToWire(e.content) : undefined,
    targetConversationId: e.targetConversationId ?? '',
  });
}

export function eventFromWire(e: TimelineEvent): TimelineEventData {
  const out: TimelineEventData = { type: EVENT_TYPES.find(([, w]) => w === e.type)?.[0] ?? 'group_created', actor: e.actor };
  if (e.userIds.length > 0) out.userIds = [...e.userIds];
  if (e.targetSeq !== 0n) out.targetSeq = Number(e.targetSeq);
  const role = roleFromWire(e.role);
  if (role) out.role = role;
  if (e.name) out.name = e.name;
  if (e.muted) out.muted = true;
  if (e.type === TimelineEventType.EDITED) out.text = e.text;
  if (e.targetConversationId !== '') out.targetConversationId = e.targetConversationId;
  if (e.content) {
    const content = contentFromWire(e.content);
    if (content) out.content = content;
  }
  return out;
}

export function contentToWire(c: ContentData): Content {
  return create(ContentSchema, {
    type: c.type ?? '',
    payload: c.payload ?? new Uint8Array(0),
    mentions: c.mentions ?? [],
    mentionAll: c.mentionAll ?? false,
    replyToSeq: BigInt(c.replyToSeq ?? 0),
    forward: c.forward ? { ...c.forward, seq: BigInt(c.forward.seq), sentAtMs: BigInt(c.forward.sentAtMs) } : undefined,
    attachments: (c.attachments ?? []).map((a) => ({ ...a, size: BigInt(a.size) })),
  });
}

/** The wire content as ContentData with only what is set; undefined when nothing is. */
export function contentFromWire(c: Content): ContentData | undefined {
  const out: ContentData = {};
  if (c.type !== '') out.type = c.type;
  if (c.payload.length > 0) out.payload = c.payload;
  if (c.mentions.length > 0) out.mentions = [...c.mentions];
  if (c.mentionAll) out.mentionAll = true;
  if (c.replyToSeq !== 0n) out.replyToSeq = Number(c.replyToSeq);
  if (c.forward) {
    out.forward = { conversationId: c.forward.conversationId, seq: Number(c.forward.seq), fromUser: c.forward.fromUser, sentAtMs: Number(c.forward.sentAtMs) };
  }
  if (c.attachments.length > 0) {
    out.attachments = c.attachments.map((a) => ({
      fileId: a.fileId, name: a.name, mime: a.mime, size: Number(a.size), width: a.width, height: a.height, hasPreview: a.hasPreview,
    }));
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** A stored message as the server and the client SDK see it. */
export interface ChatMessage {
  conversationId: string;
  seq: number;
  serverMsgId: string;
  fromUser: string;
  fromDevice: string;
  clientMsgId: string;
  text: string;
  sentAtMs: number;
  /** Set for timeline events (group membership, recall); text is empty then. */
  event?: TimelineEventData;
  /** Set once the message was recalled: who recalled it (its text is gone). */
  recalledBy?: string;
  /** Custom payload, mentions, reply, forward. */
  content?: ContentData;
  /** Set once edited: when its latest version (text, content) was written. */
  editedAtMs?: number;
  /** Set once deleted for everyone: by whom (a tombstone: text and content gone). */
  deletedBy?: string;
  /** A reply: the quoted message as it is (filled when read or pushed). */
  reply?: QuoteData;
  /** Its reactions when read (sync, history). */
  reactions?: ReactionData[];
  /** The reader deleted it for itself: show nothing of it (text and content empty). */
  hidden?: boolean;
}

export function messageToWire(m: ChatMessage): Message {
  return create(MessageSchema, {
    conversationId: m.conversationId,
    seq: BigInt(m.seq),
    serverMsgId: m.serverMsgId,
    fromUser: m.fromUser,
    fromDevice: m.fromDevice,
    clientMsgId: m.clientMsgId,
    text: m.text,
    sentAtMs: BigInt(m.sentAtMs),
    event: m.event ? eventToWire(m.event) : undefined,
    recalled: m.recalledBy !== undefined,
    recalledBy: m.recalledBy ?? '',
    content: m.content ? contentToWire(m.content) : undefined,
    editedAtMs: BigInt(m.editedAtMs ?? 0),
    deleted: m.deletedBy !== undefined,
    deletedBy: m.deletedBy ?? '',
    reply: m.reply ? { ...m.reply, seq: BigInt(m.reply.seq), type: m.reply.type ?? '', gone: m.reply.gone ?? false } : undefined,
    reactions: m.reactions ?? [],
    hidden: m.hidden ?? false,
  });
}

export function messageFromWire(m: Message): ChatMessage {
  const out: ChatMessage = {
    conversationId: m.conversationId,
    seq: Number(m.seq),
    serverMsgId: m.serverMsgId,
    fromUser: m.fromUser,
    fromDevice: m.fromDevice,
    clientMsgId: m.clientMsgId,
    text: m.text,
    sentAtMs: Number(m.sentAtMs),
  };
  if (m.event) out.event = eventFromWire(m.event);
  if (m.recalled) out.recalledBy = m.recalledBy;
  if (m.content) {
    const content = contentFromWire(m.content);
    if (content) out.content = content;
  }
  if (m.editedAtMs !== 0n) out.editedAtMs = Number(m.editedAtMs);
  if (m.deleted) out.deletedBy = m.deletedBy;
  if (m.reply) {
    const q: QuoteData = { seq: Number(m.reply.seq), fromUser: m.reply.fromUser, text: m.reply.text };
    if (m.reply.type !== '') q.type = m.reply.type;
    if (m.reply.gone) q.gone = true;
    out.reply = q;
  }
  if (m.hidden) out.hidden = true;
  if (m.reactions.length > 0) out.reactions = m.reactions.map((r) => ({ emoji: r.emoji, count: r.count, users: [...r.users] }));
  return out;
}

export function cursorToWire(conversationId: string, seq: number): Cursor {
  return create(CursorSchema, { conversationId, seq: BigInt(seq) });
}
