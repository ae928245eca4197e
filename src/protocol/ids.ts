// Identifiers shared by every role and the client: user, device and group
// ids, and the conversation-id vocabulary (`u:{a}:{b}` for 1:1, `g:{group}`
// for groups) and the user partition (`user:{id}`). Nothing else spells them.

/** User and device ids: 1-64 chars of [A-Za-z0-9_.@-]. No ':' so conversation ids parse. */
export const ID_PATTERN = /^[A-Za-z0-9_.@-]{1,64}$/;

export function isValidId(id: string): boolean {
  return ID_PATTERN.test(id);
}

/** The sender id of messages the server sends on behalf of the system (business push). */
export const SYSTEM_USER = 'system';

/**
 * The 1:1 conversation between two users: `u:{a}:{b}` with a ≤ b, so both
 * sides derive the same id.
 */
export function directConversationId(userA: string, userB: string): string {
  return userA <= userB ? `u:${userA}:${userB}` : `u:${userB}:${userA}`;
}

/** The two members of a 1:1 conversation id, or undefined if it is not one. */
export function directMembers(conversationId: string): [string, string] | undefined {
  const parts = conversationId.split(':');
  if (parts.length !== 3 || parts[0] !== 'u') return undefined;
  const [, a, b] = parts as [string, string, string];
  if (!isValidId(a) || !isValidId(b) || a > b) return undefined;
  return [a, b];
}

/** The other member of a 1:1 conversation `userId` belongs to (itself for a note to self), or undefined. */
export function directPeer(conversationId: string, userId: string): string | undefined {
  const members = directMembers(conversationId);
  if (!members || !members.includes(userId)) return undefined;
  return members[0] === userId ? members[1] : members[0];
}

/** The conversation of a group: `g:{groupId}`. */
export function groupConversationId(groupId: string): string {
  return `g:${groupId}`;
}

/** A well-formed group conversation id (`g:` and a valid group id). */
export function isGroupConversation(conversationId: string): boolean {
  return conversationId.startsWith('g:') && isValidId(conversationId.slice(2));
}

/** The group id of a group conversation id, or undefined if it is not one. */
export function groupIdOf(conversationId: string): string | undefined {
  return isGroupConversation(conversationId) ? conversationId.slice(2) : undefined;
}

/** The partition of what concerns one user only (its reads, its session events). */
export function userPartition(userId: string): string {
  return `user:${userId}`;
}
