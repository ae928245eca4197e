// Wire ↔ domain. The wire carries int64 as bigint; the rest of Longlink uses
// plain numbers (seq and millisecond times stay far below 2^53).
import { create } from '@bufbuild/protobuf';
import {
  MessageSchema, CursorSchema, TimelineEventSchema, TimelineEventType, GroupRole,
  type Message, type Cursor, type TimelineEvent,
} from './gen/longlink/v1/longlink_pb.js';

export type GroupRoleName = 'owner' | 'admin' | 'member';

export type TimelineEventName =
  | 'group_created' | 'members_added' | 'members_removed' | 'member_left' | 'dismissed'
  | 'role_changed' | 'mute_changed' | 'recalled';

/** A change recorded in a conversation's timeline (stored as a message). */
export interface TimelineEventData {
  type: TimelineEventName;
  actor: string;
  userIds?: string[];
  targetSeq?: number;
  role?: GroupRoleName;
  name?: string;
  muted?: boolean;
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
  return out;
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
  return out;
}

export function cursorToWire(conversationId: string, seq: number): Cursor {
  return create(CursorSchema, { conversationId, seq: BigInt(seq) });
}
