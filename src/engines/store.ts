// Store: messages, conversations, members, device cursors and idempotency
// keys. Split by what each part holds; one implementation object provides all
// of them (`Store`). Every method is async so SQLite and PostgreSQL fit alike.
//
// Contract (test/engines/store.contract.ts), the heart of the four promises:
// - append() is atomic for its whole batch and assigns each conversation's
//   next seq (1, 2, 3, … no gaps) inside the same transaction, so seq is
//   assigned in exactly one place whoever calls.
// - A draft whose (fromUser, clientMsgId) was stored before is not stored
//   again: its result is the original message with `duplicate: true`.
// - Cursors only move forward.
import type { ChatMessage } from '../protocol/index.js';

export type ConversationKind = 'direct';

/** A message before the store gives it its seq. */
export interface MessageDraft {
  conversationId: string;
  kind: ConversationKind;
  /** Users who belong to the conversation; recorded when it is first created. */
  members: readonly string[];
  fromUser: string;
  fromDevice: string;
  /** Idempotency key, unique per sender; empty means "no dedupe". */
  clientMsgId: string;
  serverMsgId: string;
  text: string;
  sentAtMs: number;
}

export interface AppendResult {
  message: ChatMessage;
  /** True when the draft repeated an earlier (fromUser, clientMsgId). */
  duplicate: boolean;
}

export interface MessageStore {
  /** Store a batch in one transaction (group commit); results in draft order. */
  append(drafts: readonly MessageDraft[]): Promise<AppendResult[]>;
  /** Messages with seq > afterSeq, ascending, at most limit. */
  after(conversationId: string, afterSeq: number, limit: number): Promise<ChatMessage[]>;
  /** Messages with seq < beforeSeq (all if beforeSeq ≤ 0), the newest `limit` of them, ascending. */
  before(conversationId: string, beforeSeq: number, limit: number): Promise<ChatMessage[]>;
}

export interface ConversationState {
  conversationId: string;
  lastSeq: number;
  lastAtMs: number;
}

export interface ConversationStore {
  members(conversationId: string): Promise<string[]>;
  isMember(conversationId: string, userId: string): Promise<boolean>;
  /** The user's conversations with their latest seq, most recent activity first. */
  listForUser(userId: string): Promise<ConversationState[]>;
}

export interface DeviceCursor {
  conversationId: string;
  delivered: number;
}

export interface CursorStore {
  /** Move delivered cursors forward (never back), in one transaction. */
  advanceDelivered(updates: readonly { userId: string; deviceId: string; conversationId: string; seq: number }[]): Promise<void>;
  /** The device's delivered cursor per conversation (conversations never acked are absent). */
  delivered(userId: string, deviceId: string): Promise<Map<string, number>>;
}

export interface Store extends MessageStore, ConversationStore, CursorStore {
  close(): Promise<void>;
}
