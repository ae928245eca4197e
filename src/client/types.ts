// Plain data types of the SDK (wire types converted: numbers, not bigint).
import {
  roleFromWire, roleToWire, messageFromWire,
  type ConversationSummary, type Group, type Presence, type Profile, type ChatMessage, type ContentData, type GroupRoleName, type ReactionData, type TimelineEventData,
} from '../protocol/index.js';

export interface ConversationInfo {
  conversationId: string;
  kind: 'direct' | 'group';
  /** Groups: the group's id and name. */
  groupId?: string;
  name?: string;
  /** 1:1: the other user, how far they have read (read marks), and how far their devices have received (delivered marks). */
  peerUser?: string;
  peerReadSeq?: number;
  peerDeliveredSeq?: number;
  lastSeq: number;
  /** Its text is a preview when lastMessageTruncated (the first 200 characters): history has the whole. */
  lastMessage?: ChatMessage;
  lastMessageTruncated?: boolean;
  readSeq: number;
  unread: number;
  lastAtMs: number;
  /** An unread message mentions this user (or everyone). */
  mentioned?: boolean;
}

export interface GroupInfo {
  groupId: string;
  conversationId: string;
  name: string;
  owner: string;
  /** readSeq: how far the member has read (for "read by N" marks). */
  members: { userId: string; role: GroupRoleName; muted: boolean; readSeq: number }[];
  mutedAll: boolean;
  dismissed: boolean;
  createdAtMs: number;
}

export interface PresenceInfo {
  userId: string;
  online: boolean;
  platforms: string[];
}

export interface ReceiptInfo {
  conversationId: string;
  userId: string;
  seq: number;
}

/** 1:1: a device of `userId` has received the conversation up to seq (cumulative). */
export interface DeliveryInfo {
  conversationId: string;
  userId: string;
  seq: number;
}

export interface TypingInfo {
  conversationId: string;
  userId: string;
}

export interface RecallInfo {
  conversationId: string;
  /** The recalled message. */
  seq: number;
  /** Who recalled it (the sender, or a group's owner or admin). */
  by: string;
}

/** A user as others see it (`name` empty: none set, show the user id). */
export interface ProfileInfo {
  userId: string;
  name: string;
  avatarUrl: string;
  updatedAtMs: number;
}

export function profileFromWire(p: Profile): ProfileInfo {
  return { userId: p.userId, name: p.name, avatarUrl: p.avatarUrl, updatedAtMs: Number(p.updatedAtMs) };
}

/** A message's reactions changed: these are all of them now (replace what you show). */
export interface ReactionsInfo {
  conversationId: string;
  seq: number;
  reactions: ReactionData[];
}

/** A message was edited by its sender: show this version in its place. */
export interface EditInfo {
  conversationId: string;
  /** The edited message. */
  seq: number;
  by: string;
  text: string;
  content?: ContentData;
  editedAtMs: number;
}

/** A change of a group (members, roles, mutes, dismissal), from its timeline: once each, in order. */
export interface GroupChange {
  groupId: string;
  conversationId: string;
  /** The seq of the timeline event in the group's conversation. */
  seq: number;
  event: TimelineEventData;
}

export interface BroadcastInfo {
  id: string;
  text: string;
  sentAtMs: number;
}

export function conversationFromWire(c: ConversationSummary): ConversationInfo {
  const out: ConversationInfo = {
    conversationId: c.conversationId,
    kind: c.kind === 'group' ? 'group' : 'direct',
    lastSeq: Number(c.lastSeq),
    readSeq: Number(c.readSeq),
    unread: Number(c.unread),
    lastAtMs: Number(c.lastAtMs),
  };
  if (c.lastMessage) out.lastMessage = messageFromWire(c.lastMessage);
  if (c.lastMessageTruncated) out.lastMessageTruncated = true;
  if (c.mentioned) out.mentioned = true;
  if (out.kind === 'group') {
    out.groupId = c.groupId;
    out.name = c.name;
  } else {
    out.peerUser = c.peerUser;
    out.peerReadSeq = Number(c.peerReadSeq);
    out.peerDeliveredSeq = Number(c.peerDeliveredSeq);
  }
  return out;
}

export function groupFromWire(g: Group): GroupInfo {
  return {
    groupId: g.groupId,
    conversationId: g.conversationId,
    name: g.name,
    owner: g.owner,
    members: g.members.map((m) => ({ userId: m.userId, role: roleFromWire(m.role) ?? 'member', muted: m.muted, readSeq: Number(m.readSeq) })),
    mutedAll: g.mutedAll,
    dismissed: g.dismissed,
    createdAtMs: Number(g.createdAtMs),
  };
}

export function presenceFromWire(p: Presence): PresenceInfo {
  return { userId: p.userId, online: p.online, platforms: [...p.platforms] };
}

export { roleToWire };
