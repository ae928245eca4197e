// Who may read or write a conversation, and which part of it they see.
// 1:1 conversations name their two members in their id, so their checks cost
// no store read; a group member sees its timeline from its join event up to
// its removal (if any).
import { directMembers, isGroupConversation } from '../protocol/index.js';
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
