// The operation table: every client operation declared once — what orders it
// (its partition: a conversation, a group's conversation or the user), whether
// it reads or writes, and which service of logic owns it. The gateway routes
// by it (forwarded or not, to which partition); logic dispatches and schedules
// by it (writes of a partition one after another in arrival order, reads
// beside them). Adding an operation is one proto message, one row here and
// one handler in the owning service.
//
// Server-side only (it hashes with node:crypto); the SDK does not import it.
import { createHash, randomUUID } from 'node:crypto';
import type { Frame } from './gen/longlink/v1/longlink_pb.js';
import type { BodyOf } from './frame.js';
import { directConversationId, groupConversationId, isValidId, userPartition } from './ids.js';

export type Service = 'message' | 'group' | 'storage' | 'presence';

/** Who is asking: the partition of some operations depends on it. */
export interface Asker {
  userId: string;
}

export interface Operation<B = unknown> {
  /** What orders it. */
  partition: 'conversation' | 'group' | 'user';
  /**
   * `write` changes what the store holds: a partition's writes are applied one
   * after another in arrival order (sends may share a transaction), exactly once
   * per request id. `read` changes nothing and runs beside them.
   */
  access: 'read' | 'write';
  service: Service;
  /** The partition key, or '' when the request names none (logic refuses it; it is ordered by the user). */
  key(body: B, asker: Asker, requestId: string): string;
}

function row<C extends ClientCase>(op: Operation<BodyOf<C>>): Operation<BodyOf<C>> {
  return op;
}

type ClientCase = 'send' | 'pushAck' | 'sync' | 'history' | 'markRead' | 'typing' | 'recall' | 'edit' | 'delete' | 'block' | 'react' | 'setProfile' | 'profileQuery' | 'hide'
  | 'search' | 'pushRegister' | 'notifySettings'
  | 'presenceQuery' | 'presenceSubscribe' | 'conversations' | 'group';

const byUser = (_: unknown, asker: Asker) => userPartition(asker.userId);
const byConversation = (b: { conversationId: string }) => b.conversationId;

/**
 * The group id a create request makes: derived from its creator and request
 * id, so the create is ordered in the new group's own partition (known before
 * the group exists) and a resent create names the same group.
 */
export function groupIdForCreate(creator: string, requestId: string): string {
  return createHash('sha256').update(`${creator}\n${requestId}`).digest('base64url').slice(0, 16);
}

type GroupOpCase = NonNullable<BodyOf<'group'>['op']['case']>;

/** Group operations, one row per op. */
export const GROUP_OPERATIONS: Record<GroupOpCase, Operation<BodyOf<'group'>>> = {
  create: { partition: 'group', access: 'write', service: 'group', key: (_b, asker, requestId) => groupConversationId(groupIdForCreate(asker.userId, requestId)) },
  add: { partition: 'group', access: 'write', service: 'group', key: groupKey },
  remove: { partition: 'group', access: 'write', service: 'group', key: groupKey },
  leave: { partition: 'group', access: 'write', service: 'group', key: groupKey },
  dismiss: { partition: 'group', access: 'write', service: 'group', key: groupKey },
  setRole: { partition: 'group', access: 'write', service: 'group', key: groupKey },
  mute: { partition: 'group', access: 'write', service: 'group', key: groupKey },
  info: { partition: 'group', access: 'read', service: 'group', key: groupKey },
};

function groupKey(b: BodyOf<'group'>): string {
  const op = b.op;
  return op.case !== undefined && op.case !== 'create' && op.value.groupId ? groupConversationId(op.value.groupId) : '';
}

/** Every operation a logged-in client may send (anything else is UNKNOWN_FRAME at the gateway). */
export const OPERATIONS = {
  send: row<'send'>({
    partition: 'conversation', access: 'write', service: 'message',
    key: (b, asker) => b.conversationId || (b.toUser ? directConversationId(asker.userId, b.toUser) : ''),
  }),
  recall: row<'recall'>({ partition: 'conversation', access: 'write', service: 'message', key: byConversation }),
  edit: row<'edit'>({ partition: 'conversation', access: 'write', service: 'message', key: byConversation }),
  delete: row<'delete'>({ partition: 'conversation', access: 'write', service: 'message', key: byConversation }),
  // Recorded in the user's note-to-self conversation (RecallService.hide): ordered there.
  hide: row<'hide'>({ partition: 'conversation', access: 'write', service: 'message', key: (_b, asker) => directConversationId(asker.userId, asker.userId) }),
  react: row<'react'>({ partition: 'conversation', access: 'write', service: 'message', key: byConversation }),
  setProfile: row<'setProfile'>({ partition: 'user', access: 'write', service: 'storage', key: byUser }),
  profileQuery: row<'profileQuery'>({ partition: 'user', access: 'read', service: 'storage', key: byUser }),
  // In the 1:1 of the two users: ordered with that conversation's sends, answered by the node that checks them
  // (logic/blocks.ts). Listing only (no user) goes by the asker.
  block: row<'block'>({
    partition: 'conversation', access: 'write', service: 'message',
    key: (b, asker) => (isValidId(b.userId) && b.userId !== asker.userId ? directConversationId(asker.userId, b.userId) : ''),
  }),
  // By the acking user, not the conversation: every member of a large group acks each of its messages, and those acks
  // spread over the storage shards instead of landing on the one that owns the conversation. A delivered cursor only
  // moves forward, whatever order its acks are applied in.
  pushAck: row<'pushAck'>({ partition: 'user', access: 'write', service: 'storage', key: byUser }),
  markRead: row<'markRead'>({ partition: 'conversation', access: 'write', service: 'storage', key: byConversation }),
  typing: row<'typing'>({ partition: 'conversation', access: 'read', service: 'presence', key: byConversation }),
  history: row<'history'>({ partition: 'conversation', access: 'read', service: 'storage', key: byConversation }),
  sync: row<'sync'>({ partition: 'user', access: 'read', service: 'storage', key: byUser }),
  // Over every conversation of the asker: by the asker, like sync.
  search: row<'search'>({ partition: 'user', access: 'read', service: 'storage', key: byUser }),
  pushRegister: row<'pushRegister'>({ partition: 'user', access: 'write', service: 'storage', key: byUser }),
  notifySettings: row<'notifySettings'>({ partition: 'user', access: 'write', service: 'storage', key: byUser }),
  conversations: row<'conversations'>({ partition: 'user', access: 'read', service: 'storage', key: byUser }),
  presenceQuery: row<'presenceQuery'>({ partition: 'user', access: 'read', service: 'presence', key: byUser }),
  presenceSubscribe: row<'presenceSubscribe'>({ partition: 'user', access: 'read', service: 'presence', key: byUser }),
  group: row<'group'>({
    partition: 'group', access: 'write', service: 'group',
    key: (b, asker, requestId) => (b.op.case ? GROUP_OPERATIONS[b.op.case].key(b, asker, requestId) : ''),
  }),
} satisfies Record<ClientCase, Operation<never>>;

/** The operation's name: the frame's case, and the op for a group request (`group.add`). */
export function operationName(frame: Frame): string {
  const body = frame.body;
  if (body.case === 'group') return `group.${body.value.op.case ?? 'none'}`;
  return body.case ?? 'none';
}

/** The row of a frame's operation, or undefined when clients may not send it to logic. */
export function operationOf(frame: Frame): Operation | undefined {
  const body = frame.body;
  // A group request without an op is still logic's to refuse (BAD_REQUEST).
  if (body.case === 'group') return (body.value.op.case ? GROUP_OPERATIONS[body.value.op.case] : OPERATIONS.group) as Operation;
  if (body.case === undefined || !Object.hasOwn(OPERATIONS, body.case)) return undefined;
  return OPERATIONS[body.case as ClientCase] as Operation;
}

/**
 * Whether an operation writes a conversation's timeline (a seq is assigned in
 * the conversation's home datacenter: a send, a recall, a group change), so a
 * datacenter that is not its home forwards it there (src/dc/forward.ts).
 * Cursors, reads and presence are served where the client is.
 */
export function isHomed(op: Operation | undefined): boolean {
  return op !== undefined && op.access === 'write' && (op.service === 'message' || op.service === 'group');
}

/** Longest request id a client may choose. */
export const MAX_REQUEST_ID = 128;

/**
 * Where a request goes: its operation, partition and request id (the
 * client's, the Send's client_msg_id, or a new one). Undefined when clients
 * may not send it to logic.
 */
export function route(frame: Frame, asker: Asker): { operation: Operation; partition: string; requestId: string } | undefined {
  const operation = operationOf(frame);
  if (!operation) return undefined;
  const body = frame.body;
  const requestId = body.case === 'send' && body.value.clientMsgId ? body.value.clientMsgId
    : frame.requestId !== '' ? frame.requestId : randomUUID();
  const key = (operation.key as (b: unknown, a: Asker, r: string) => string)(body.value, asker, requestId);
  return { operation, partition: key || userPartition(asker.userId), requestId };
}
