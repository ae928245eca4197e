// The outbox: sends the server has not acked yet. Each goes out at every login
// and again when not acked in time on a connection, always with its
// client_msg_id, so the server stores it once however often it is written.
// An ack (or the message itself coming back by sync, see inbox.ts) settles
// it; a refusal for good fails it. Keeping it between runs is persistence.ts's.
import { ErrorCode, LonglinkError, groupConversationId, makeFrame, type BodyOf, type Frame } from '../protocol/index.js';
import type { Emit, PendingSend, SendOptions, SendResult } from './client-types.js';
import type { StoredContent, StoredSend } from './store.js';
import { contentInit, storedContentOf } from './content.js';

export interface OutboxEntry {
  /** As given to send(), its content as stored (content.ts). */
  options: SendOptions & { clientMsgId: string; content?: StoredContent };
  createdAtMs: number;
  restored: boolean;
  /** The waiting `send()` promise; none for a restored send, nor after `close()`. */
  resolve?: (r: SendResult) => void;
  reject?: (err: Error) => void;
  /** Connection generation it was last written on, and when. */
  sentOn: number;
  sentAtMs: number;
}

/** What the outbox needs of the rest of the client. */
export interface OutboxHost {
  /** The connection: which one is live (its generation), whether logged in, and a way to write on it. */
  link: { readonly generation: number; readonly online: boolean; write(frame: Frame): boolean };
  newId(): number;
  resendAfterMs: number;
  emit: Emit;
  /** The outbox changed: save it (coalesced). */
  changed(): void;
  /** A new send was queued: the store must be loaded (its older sends go out first). */
  queued(): void;
}

const RETRYABLE_SEND = new Set<ErrorCode>([ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL, ErrorCode.RATE_LIMITED]);

let idCounter = 0;
function newClientMsgId(): string {
  const rand = Math.random().toString(36).slice(2, 10);
  return `${Date.now().toString(36)}-${rand}-${(idCounter++).toString(36)}`;
}

function withContent(o: SendOptions): { content?: StoredContent } {
  const content = storedContentOf(o);
  return content ? { content } : {};
}

export function pendingOf(e: OutboxEntry): PendingSend {
  const out: PendingSend = { clientMsgId: e.options.clientMsgId, text: e.options.text ?? '', createdAtMs: e.createdAtMs, restored: e.restored };
  if (e.options.content !== undefined) out.content = e.options.content;
  if (e.options.to !== undefined) out.to = e.options.to;
  if (e.options.groupId !== undefined) out.groupId = e.options.groupId;
  if (e.options.conversationId !== undefined) out.conversationId = e.options.conversationId;
  return out;
}

export function sendResultOf(ack: BodyOf<'sendAck'>): SendResult {
  const result: SendResult = {
    clientMsgId: ack.clientMsgId, serverMsgId: ack.serverMsgId, conversationId: ack.conversationId,
    seq: Number(ack.seq), sentAtMs: Number(ack.sentAtMs), duplicate: ack.duplicate,
  };
  if (ack.text !== '') result.text = ack.text;
  return result;
}

/** Which conversation a send goes to, as far as the client can name it (sends of one keep their order). */
function conversationKey(o: OutboxEntry['options']): string {
  if (o.conversationId) return o.conversationId;
  if (o.groupId !== undefined) return groupConversationId(o.groupId);
  return `to:${o.to ?? ''}`;
}

export class Outbox {
  /** By client_msg_id, in send order (restored ones first). */
  private entries = new Map<string, OutboxEntry>();
  /** Conversations with a refused send waiting to go out again (one timer each). */
  private readonly retrying = new Set<string>();
  /** Frame id of each send written on this connection → its client_msg_id (an Error names only the frame). */
  private readonly sendIds = new Map<number, string>();

  constructor(private readonly host: OutboxHost) {}

  get size(): number {
    return this.entries.size;
  }

  get(clientMsgId: string): OutboxEntry | undefined {
    return this.entries.get(clientMsgId);
  }

  /** The sends not acked yet, in send order. */
  pending(): PendingSend[] {
    return [...this.entries.values()].map(pendingOf);
  }

  /** The sends not acked yet, as a store keeps them. */
  stored(): StoredSend[] {
    return [...this.entries.values()].map((e) => {
      const { restored: _restored, ...stored } = pendingOf(e);
      return stored;
    });
  }

  /** See `LonglinkClient.send`. */
  send(options: SendOptions): Promise<SendResult> {
    const clientMsgId = options.clientMsgId ?? newClientMsgId();
    const existing = this.entries.get(clientMsgId);
    if (existing && existing.resolve) return Promise.reject(new Error(`client_msg_id ${clientMsgId} is already pending`));
    return new Promise((resolve, reject) => {
      if (existing) {
        existing.resolve = resolve;
        existing.reject = reject;
        return;
      }
      const entry: OutboxEntry = {
        options: { ...options, clientMsgId, ...withContent(options) }, createdAtMs: Date.now(), restored: false, resolve, reject, sentOn: -1, sentAtMs: 0,
      };
      this.entries.set(clientMsgId, entry);
      this.host.changed();
      this.host.queued();
      // Behind a refused send of its conversation waiting to go out again: it goes out with it, after it.
      if (this.host.link.online && !this.retrying.has(conversationKey(entry.options))) this.write(entry);
    });
  }

  /**
   * Sends loaded from the store join the outbox ahead of the live ones (they
   * are older); a live send of the same id stands for its stored copy.
   * Returns the sends restored, written at once when online.
   */
  restore(stored: StoredSend[]): OutboxEntry[] {
    const restored: OutboxEntry[] = [];
    const merged = new Map<string, OutboxEntry>();
    for (const s of stored) {
      const live = this.entries.get(s.clientMsgId);
      if (live) {
        merged.set(s.clientMsgId, live);
        continue;
      }
      const { clientMsgId, createdAtMs, text, to, groupId, conversationId, content } = s;
      const options: OutboxEntry['options'] = { clientMsgId, text };
      if (content !== undefined) options.content = content;
      if (to !== undefined) options.to = to;
      if (groupId !== undefined) options.groupId = groupId;
      if (conversationId !== undefined) options.conversationId = conversationId;
      const entry: OutboxEntry = { options, createdAtMs, restored: true, sentOn: -1, sentAtMs: 0 };
      merged.set(clientMsgId, entry);
      restored.push(entry);
    }
    for (const [id, entry] of this.entries) if (!merged.has(id)) merged.set(id, entry);
    this.entries = merged;
    return restored;
  }

  /** Logged in: everything goes out, in order. */
  writeAll(entries: Iterable<OutboxEntry> = this.entries.values()): void {
    for (const entry of entries) this.write(entry);
  }

  /** Each heartbeat: what this connection never carried, or carried too long ago unacked, goes out again. */
  resendStale(): void {
    const now = Date.now();
    const generation = this.host.link.generation;
    for (const entry of this.entries.values()) {
      if (this.retrying.has(conversationKey(entry.options))) continue; // goes out with its conversation's refused send
      if (entry.sentOn !== generation || now - entry.sentAtMs > this.host.resendAfterMs) this.write(entry);
    }
  }

  /** A SendAck for frame `id`: the send it settles, if still pending (none: a late duplicate ack). */
  acked(id: number, clientMsgId: string): OutboxEntry | undefined {
    this.sendIds.delete(id);
    return this.entries.get(clientMsgId);
  }

  /** An Error for frame `id`: handles it if that frame was a send (false: it was not). */
  refused(id: number, code: ErrorCode, err: LonglinkError): boolean {
    const clientMsgId = this.sendIds.get(id);
    if (clientMsgId === undefined) return false;
    this.sendIds.delete(id);
    const entry = this.entries.get(clientMsgId);
    if (entry && !RETRYABLE_SEND.has(code)) {
      this.fail(entry, err);
    } else if (entry) {
      // Not stored (server busy or failing): send it again soon, with its original id, and with it every later send of
      // its conversation still pending, in their order. Each refused one going out again on a timer of its own would
      // let a later one be stored before an earlier one (repeats of sends stored meanwhile are answered as duplicates).
      const key = conversationKey(entry.options);
      if (this.retrying.has(key)) return true;
      this.retrying.add(key);
      const generation = this.host.link.generation;
      setTimeout(() => {
        this.retrying.delete(key);
        if (generation !== this.host.link.generation) return; // a new connection writes everything pending anyway
        // From the refused send on (or, were it acked meanwhile, every pending send of the conversation), in order.
        let from = !this.entries.has(clientMsgId) || this.entries.get(clientMsgId) !== entry;
        for (const e of this.entries.values()) {
          if (e === entry) from = true;
          if (from && conversationKey(e.options) === key) this.write(e);
        }
      }, 200 + Math.floor(Math.random() * 300));
    }
    return true;
  }

  /** The server stored this send. */
  settle(entry: OutboxEntry, result: SendResult): void {
    if (this.entries.get(result.clientMsgId) !== entry) return;
    this.entries.delete(result.clientMsgId);
    this.forgetFramesOf(result.clientMsgId);
    this.host.changed();
    entry.resolve?.(result);
    this.host.emit('sent', result, pendingOf(entry));
  }

  /** The server refused this send for good. */
  fail(entry: OutboxEntry, err: LonglinkError): void {
    const clientMsgId = entry.options.clientMsgId;
    if (this.entries.get(clientMsgId) !== entry) return;
    this.entries.delete(clientMsgId);
    this.forgetFramesOf(clientMsgId);
    this.host.changed();
    entry.reject?.(err);
    this.host.emit('failed', err, pendingOf(entry));
  }

  /** Fail every send `which` picks (sends of another identity, at login). */
  failWhere(which: (entry: OutboxEntry) => boolean, err: LonglinkError): void {
    for (const entry of [...this.entries.values()]) if (which(entry)) this.fail(entry, err);
  }

  /** Going offline for good: the waiting promises reject; the sends stay (for the store). */
  rejectWaiting(reason: LonglinkError): void {
    for (const entry of this.entries.values()) {
      const reject = entry.reject;
      entry.resolve = undefined;
      entry.reject = undefined;
      reject?.(reason);
    }
  }

  /** The connection is gone: no ack or Error will come for what was written on it. */
  connectionLost(): void {
    this.sendIds.clear();
  }

  /** Left to the store: empty. */
  clear(): void {
    this.entries.clear();
    this.sendIds.clear();
  }

  private write(entry: OutboxEntry): void {
    const id = this.host.newId();
    const o = entry.options;
    if (!this.host.link.write(makeFrame(id, {
      case: 'send',
      value: {
        clientMsgId: o.clientMsgId, toUser: o.to ?? '', text: o.text ?? '',
        conversationId: o.conversationId ?? (o.groupId !== undefined ? groupConversationId(o.groupId) : ''),
        content: o.content ? contentInit(o.content) : undefined,
      },
    }))) return;
    this.sendIds.set(id, o.clientMsgId);
    entry.sentOn = this.host.link.generation;
    entry.sentAtMs = Date.now();
  }

  private forgetFramesOf(clientMsgId: string): void {
    for (const [id, c] of this.sendIds) if (c === clientMsgId) this.sendIds.delete(id);
  }
}
