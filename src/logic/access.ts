// Who may read or write a conversation. 1:1 conversations name their two
// members in their id, so most checks cost no store read.
import { directMembers } from '../protocol/index.js';
import type { ConversationStore } from '../engines/store.js';

export async function canAccess(store: ConversationStore, conversationId: string, userId: string): Promise<boolean> {
  const direct = directMembers(conversationId);
  if (direct) return direct[0] === userId || direct[1] === userId;
  return store.isMember(conversationId, userId);
}

/** The members of a conversation. */
export async function membersOf(store: ConversationStore, conversationId: string): Promise<string[]> {
  const direct = directMembers(conversationId);
  if (direct) return direct[0] === direct[1] ? [direct[0]] : [...direct];
  return store.members(conversationId);
}
