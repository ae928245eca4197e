// Receive side of the client's promises: per conversation, drop what was
// seen (seq ≤ base), hold what came early (a gap), release in seq order.
// Pure state, no I/O: the client asks it what to deliver and what to sync.
import type { ChatMessage } from '../protocol/index.js';

interface Held {
  message: ChatMessage;
  /** Known to the app already (this device's own send); advance past it without emitting. */
  silent: boolean;
}

interface ConversationState {
  /** Highest seq delivered in order; undefined until the server told us where this device stands. */
  base: number | undefined;
  held: Map<number, Held>;
}

export class Receiver {
  private readonly conversations = new Map<string, ConversationState>();

  private state(conversationId: string): ConversationState {
    let s = this.conversations.get(conversationId);
    if (!s) {
      s = { base: undefined, held: new Map() };
      this.conversations.set(conversationId, s);
    }
    return s;
  }

  base(conversationId: string): number | undefined {
    return this.conversations.get(conversationId)?.base;
  }

  /** Every conversation whose base is known, for a sync request. */
  cursors(): [string, number][] {
    const out: [string, number][] = [];
    for (const [id, s] of this.conversations) if (s.base !== undefined) out.push([id, s.base]);
    return out;
  }

  /** Set the base if unknown (the server says this device stands at seq). */
  establish(conversationId: string, seq: number): ChatMessage[] {
    const s = this.state(conversationId);
    if (s.base === undefined) s.base = seq;
    return this.release(conversationId, s);
  }

  /**
   * Move the base forward to seq (never back): the server resumed after seq
   * because what lies before it is not this user's to see (e.g. while it was
   * out of a group). Held messages up to seq are dropped.
   */
  advance(conversationId: string, seq: number): ChatMessage[] {
    const s = this.state(conversationId);
    if (s.base === undefined || seq > s.base) s.base = seq;
    return this.release(conversationId, s);
  }

  /** Offer a message; returns the messages now deliverable, in order. */
  offer(message: ChatMessage, silent = false): ChatMessage[] {
    const s = this.state(message.conversationId);
    if (s.base !== undefined && message.seq <= s.base) return [];
    if (!s.held.has(message.seq)) s.held.set(message.seq, { message, silent });
    return this.release(message.conversationId, s);
  }

  /** Conversations that cannot move on without a sync: base unknown, or a gap before held messages. */
  stuck(): string[] {
    const out: string[] = [];
    for (const [id, s] of this.conversations) if (s.held.size > 0) out.push(id);
    return out;
  }

  private release(_conversationId: string, s: ConversationState): ChatMessage[] {
    const out: ChatMessage[] = [];
    if (s.base === undefined) return out;
    for (const seq of [...s.held.keys()]) if (seq <= s.base) s.held.delete(seq);
    for (let next = s.held.get(s.base + 1); next; next = s.held.get(s.base + 1)) {
      s.held.delete(s.base + 1);
      s.base += 1;
      if (!next.silent) out.push(next.message);
    }
    return out;
  }
}
