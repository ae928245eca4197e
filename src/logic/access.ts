// Who may read or write a conversation, and which part of it they see.
// 1:1 conversations name their two members in their id, so their checks cost
// no store read; a group member sees its timeline from its join event up to
// its removal (if any).
import { ErrorCode, LonglinkError, directMembers, isGroupConversation } from '../protocol/index.js';
import type { ConversationStore, MessageStore } from '../engines/store.js';

/** The part of a conversation a user may read: seq in [fromSeq, toSeq]. */
export interface View {
  fromSeq: number;
  /** Undefined while the user is a member: no upper bound. */
  toSeq?: number;
  /** Still a member (may send). */
  active: boolean;
}

/** The user's view of a conversation, or undefined if it may not read it at all. */
export async function viewOf(store: ConversationStore, conversationId: string, userId: string): Promise<View | undefined> {
  const direct = directMembers(conversationId);
  if (direct) return direct[0] === userId || direct[1] === userId ? { fromSeq: 1, active: true } : undefined;
  if (!isGroupConversation(conversationId)) return undefined;
  const m = await store.membership(conversationId, userId);
  if (!m) return undefined;
  const view: View = { fromSeq: m.joinedSeq, active: m.leftSeq === undefined };
  if (m.leftSeq !== undefined) view.toSeq = m.leftSeq;
  return view;
}

/** viewOf() for several users of one conversation, with one store read at most. */
export async function viewsOf(store: ConversationStore, conversationId: string, userIds: readonly string[]): Promise<Map<string, View | undefined>> {
  const out = new Map<string, View | undefined>();
  if (!isGroupConversation(conversationId) || directMembers(conversationId)) {
    for (const u of userIds) out.set(u, await viewOf(store, conversationId, u));
    return out;
  }
  const rows = await store.memberships(conversationId, userIds);
  for (const u of userIds) {
    const m = rows.get(u);
    if (!m) {
      out.set(u, undefined);
      continue;
    }
    const view: View = { fromSeq: m.joinedSeq, active: m.leftSeq === undefined };
    if (m.leftSeq !== undefined) view.toSeq = m.leftSeq;
    out.set(u, view);
  }
  return out;
}

/** The refusal for a user without a view of a conversation (see requireView). */
export function viewRefusal(conversationId: string): LonglinkError {
  if (!directMembers(conversationId) && !isGroupConversation(conversationId)) {
    return new LonglinkError(ErrorCode.BAD_REQUEST, conversationIdProblem(conversationId));
  }
  return new LonglinkError(ErrorCode.FORBIDDEN, 'not a member of this conversation');
}

/**
 * The user's view of a conversation, or a coded refusal: BAD_REQUEST when the
 * id is not a conversation id at all (saying how ids are spelled), FORBIDDEN
 * when the user may not read it (or, with `active`, no longer write it).
 */
export async function requireView(store: ConversationStore, conversationId: string, userId: string, active = false): Promise<View> {
  const view = await viewOf(store, conversationId, userId);
  if (view && (!active || view.active)) return view;
  if (!directMembers(conversationId) && !isGroupConversation(conversationId)) {
    throw new LonglinkError(ErrorCode.BAD_REQUEST, conversationIdProblem(conversationId));
  }
  throw new LonglinkError(ErrorCode.FORBIDDEN, 'not a member of this conversation');
}

/** Why a string is not a conversation id, for a client that spelled one wrong. */
export function conversationIdProblem(id: string): string {
  const shown = JSON.stringify(id.length > 80 ? `${id.slice(0, 80)}…` : id);
  const parts = id.split(':');
  if (parts.length === 3 && parts[0] === 'u' && parts[1]! > parts[2]! && directMembers(`u:${parts[2]}:${parts[1]}`)) {
    return `${shown} is not a conversation id: a 1:1's id names its two users sorted (u:${parts[2]}:${parts[1]})`;
  }
  return `${shown} is not a conversation id: u:{a}:{b} (two user ids, a ≤ b) for a 1:1, g:{group_id} for a group`;
}

export async function canAccess(store: ConversationStore, conversationId: string, userId: string): Promise<boolean> {
  return (await viewOf(store, conversationId, userId)) !== undefined;
}

/** The current members of a conversation. */
export async function membersOf(store: ConversationStore, conversationId: string): Promise<string[]> {
  const direct = directMembers(conversationId);
  if (direct) return direct[0] === direct[1] ? [direct[0]] : [...direct];
  return store.members(conversationId);
}

/**
 * Whether the user belonged to a dismissed group up to its end. Dismissal
 * ends every membership at its own event (the conversation's last), so a
 * member then left exactly there; one removed earlier, or never a member, did not.
 */
export async function wasMemberAtDismissal(store: ConversationStore & MessageStore, conversationId: string, userId: string): Promise<boolean> {
  const m = await store.membership(conversationId, userId);
  if (!m) return false;
  if (m.leftSeq === undefined) return true;
  const [last] = await store.before(conversationId, 0, 1);
  return last?.event?.type === 'dismissed' && last.seq === m.leftSeq;
}
