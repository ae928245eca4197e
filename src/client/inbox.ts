// The inbox: messages in, from pushes and syncs, delivered to the app once
// each and in seq order per conversation (the Receiver decides what is
// ready), and acked to the server with a cumulative PushAck so this device's
// cursor moves on. A message this device sent itself and still waits an ack
// for settles that send instead of showing up as incoming.
import { groupIdOf, makeFrame, type ChatMessage, type Frame } from '../protocol/index.js';
import type { Emit, LoginInfo, SendResult } from './client-types.js';
import type { EditInfo } from './types.js';
import type { Outbox } from './outbox.js';
import { Receiver } from './receiver.js';

/** What the inbox needs of the rest of the client. */
export interface InboxHost {
  link: { readonly connected: boolean; readonly login: LoginInfo | undefined; write(frame: Frame): boolean };
  outbox: Pick<Outbox, 'get' | 'settle'>;
  ackDelayMs: number;
  emit: Emit;
  /** The cursors moved: save them (coalesced). */
  changed(): void;
}

export class Inbox {
  private receiver = new Receiver();
  /** Per conversation, the seq the server was last told (by a PushAck, or the store) this device has. */
  private readonly acked = new Map<string, number>();
  /**
   * The sync token of the last full-sync page delivered (kept with the
   * cursors: the server reads only what changed since it, trusting that
   * this device has, by its cursors, everything before it).
   */
  private token: string | undefined;
  private ackTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly host: InboxHost) {}

  /** Where this device stands in a conversation; undefined until the server (or the store) said. */
  base(conversationId: string): number | undefined {
    return this.receiver.base(conversationId);
  }

  /** Every conversation whose base is known. */
  cursors(): [string, number][] {
    return this.receiver.cursors();
  }

  /** The sync token to send with the next full sync; undefined when this device has none. */
  syncToken(): string | undefined {
    return this.token;
  }

  /** A full-sync page was delivered (its messages and cursors): its token is where the next full sync resumes. */
  setSyncToken(token: string): void {
    if (token === '' || token === this.token) return;
    this.token = token;
    this.host.changed();
  }

  /** A token from the store, kept with the cursors restored beside it; one this run already has is newer. */
  restoreSyncToken(token: string): void {
    this.token ??= token;
  }

  /** Conversations that cannot move on without a sync. */
  stuck(): string[] {
    return this.receiver.stuck();
  }

  /** A message from a push or a sync. */
  receive(m: ChatMessage): void {
    const login = this.host.link.login;
    const own = login !== undefined && m.fromUser === login.userId && m.fromDevice === login.deviceId
      ? this.host.outbox.get(m.clientMsgId) : undefined;
    this.deliver(this.receiver.offer(m, own !== undefined), m.conversationId);
    if (!own) return;
    this.host.outbox.settle(own, {
      clientMsgId: m.clientMsgId, serverMsgId: m.serverMsgId, conversationId: m.conversationId,
      seq: m.seq, sentAtMs: m.sentAtMs, duplicate: false,
    });
  }

  /** This device's own message was stored with this seq (a SendAck): advance past it without showing it. */
  sentHere(result: SendResult, login: LoginInfo, text: string): void {
    this.deliver(this.receiver.offer({
      conversationId: result.conversationId, seq: result.seq, serverMsgId: result.serverMsgId,
      fromUser: login.userId, fromDevice: login.deviceId, clientMsgId: result.clientMsgId,
      text, sentAtMs: result.sentAtMs,
    }, true), result.conversationId);
  }

  /**
   * The server resumed a conversation after seq (a sync): what lies before it
   * is had, or not this user's to see.
   */
  advance(conversationId: string, seq: number): void {
    this.deliver(this.receiver.advance(conversationId, seq), conversationId);
  }

  /** A cursor from the store: this device had everything up to seq, and the server had (or no longer needs) acks up to there. */
  restoreCursor(conversationId: string, seq: number): void {
    if ((this.acked.get(conversationId) ?? 0) < seq) this.acked.set(conversationId, seq);
    this.deliver(this.receiver.establish(conversationId, seq), conversationId);
  }

  /** Another identity logged in: nothing known of the conversations holds for it. */
  reset(): void {
    this.receiver = new Receiver();
    this.acked.clear();
    this.token = undefined;
  }

  /** Ack everything delivered, now. */
  flushAcks(): void {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    if (!this.host.link.connected) return;
    for (const [conversationId, base] of this.receiver.cursors()) {
      if (base > (this.acked.get(conversationId) ?? 0)) {
        this.host.link.write(makeFrame(0, { case: 'pushAck', value: { conversationId, seq: BigInt(base) } }));
        this.acked.set(conversationId, base);
      }
    }
  }

  private deliver(ready: ChatMessage[], conversationId: string): void {
    const emit = this.host.emit;
    for (const m of ready) {
      emit('message', m);
      if (m.event?.type === 'recalled' && m.event.targetSeq !== undefined) {
        emit('recall', { conversationId: m.conversationId, seq: m.event.targetSeq, by: m.event.actor });
      } else if (m.event?.type === 'deleted' && m.event.targetSeq !== undefined) {
        emit('delete', { conversationId: m.conversationId, seq: m.event.targetSeq, by: m.event.actor });
      } else if (m.event?.type === 'hidden' && m.event.targetSeq !== undefined && m.event.targetConversationId !== undefined) {
        emit('hide', { conversationId: m.event.targetConversationId, seq: m.event.targetSeq });
      } else if (m.event?.type === 'edited' && m.event.targetSeq !== undefined) {
        const edit: EditInfo = { conversationId: m.conversationId, seq: m.event.targetSeq, by: m.event.actor, text: m.event.text ?? '', editedAtMs: m.sentAtMs };
        if (m.event.content) edit.content = m.event.content;
        emit('edit', edit);
      } else if (m.event && groupIdOf(m.conversationId) !== undefined) {
        emit('group', { groupId: groupIdOf(m.conversationId)!, conversationId: m.conversationId, seq: m.seq, event: m.event });
      }
    }
    this.host.changed();
    const base = this.receiver.base(conversationId);
    if (base !== undefined && base > (this.acked.get(conversationId) ?? 0)) this.scheduleAck();
  }

  /** Ack a little later, so one PushAck covers many messages. */
  private scheduleAck(): void {
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => this.flushAcks(), this.host.ackDelayMs);
  }
}
