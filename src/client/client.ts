// The Longlink client: one implementation for the SDK, the CLI and tests.
// It keeps the client's half of the promises: every send is resent until
// acked (same client_msg_id, so the server stores it once), messages are
// delivered once each in seq order, gaps are filled by sync, and delivery is
// acked so the server's cursor for this device moves on. Cursors and unacked
// sends are kept in a pluggable store (see store.ts), so a restarted app syncs
// from where it was and resends what was never acked.
//
// This file is the API and the wiring; each concern lives in its own module:
// connection.ts (connect, log in, heartbeat, reconnect, state), requests.ts
// (request/reply matching, request ids), outbox.ts (unacked sends, resends),
// inbox.ts (delivery in order, acks), sync.ts (catch-up) and persistence.ts
// (the store).
import {
  ErrorCode, LonglinkError, decodeFrame, errorName, makeFrame, messageFromWire,
  type ChatMessage, type Frame, type BodyOf, type FrameBodyInit, type FrameCase,
} from '../protocol/index.js';
import type { GroupRoleName } from '../protocol/index.js';
import type {
  ClientEvents, ClientOptions, ClientState, EditOptions, Emit, LoginInfo, PendingSend, ResolvedOptions, SearchHit, SendOptions, SendResult,
} from './client-types.js';
import { contentInit, storedContentOf } from './content.js';
import { downloadFile, uploadFile, type FileInfo, type UploadOptions } from './files.js';
import { Connection } from './connection.js';
import { Emitter } from './emitter.js';
import { Inbox } from './inbox.js';
import { describeError } from './net-errors.js';
import { Outbox, sendResultOf } from './outbox.js';
import { Persistence } from './persistence.js';
import { Requests, newRequestId } from './requests.js';
import { memoryStore } from './store.js';
import { Sync } from './sync.js';
import {
  conversationFromWire, groupFromWire, presenceFromWire, profileFromWire, roleToWire,
  type ConversationInfo, type GroupInfo, type PresenceInfo, type ProfileInfo,
} from './types.js';

export type {
  ClientState, StateDetail, ClientOptions, SendOptions, EditOptions, SendResult, PendingSend, LoginInfo, ClientEvents, SearchHit,
} from './client-types.js';

type BodyOfInit<C extends FrameCase> = Extract<NonNullable<FrameBodyInit>, { case: C }>['value'] & { op: unknown };
type GroupOp = BodyOfInit<'group'>['op'];

/** A presence watch lasts 10 minutes on the server; the client renews it well before. */
const WATCH_RENEW_MS = 4 * 60_000;

export class LonglinkClient extends Emitter<ClientEvents> {
  private readonly options: ResolvedOptions;
  private readonly requests: Requests;
  private readonly link: Connection;
  private readonly outbox: Outbox;
  private readonly inbox: Inbox;
  private readonly syncer: Sync;
  private readonly persistence: Persistence;
  /** Users whose presence is watched: subscribed again after every login, and every WATCH_RENEW_MS (a watch lapses on the server after 10 minutes). */
  private watched: string[] = [];
  private watchTimer: ReturnType<typeof setInterval> | undefined;

  constructor(options: ClientOptions) {
    super();
    const o: ResolvedOptions = {
      reconnect: true,
      initialBackoffMs: 500,
      maxBackoffMs: 30_000,
      resendAfterMs: 10_000,
      ackDelayMs: 30,
      requestTimeoutMs: 15_000,
      clientVersion: 'longlink-client',
      autoSync: true,
      store: memoryStore(),
      ...options,
    };
    this.options = o;
    const emit: Emit = (event, ...args) => this.emit(event, ...args);
    const changed = (): void => this.persistence.changed();
    this.requests = new Requests((frame) => this.link.write(frame), o.requestTimeoutMs);
    this.link = new Connection(o, this.requests, {
      frame: (bytes) => this.onFrame(bytes),
      loggedIn: (info) => this.persistence.adopt(info),
      online: (info) => this.onOnline(info),
      down: (reason) => {
        this.syncer.connectionLost();
        this.requests.failAll(reason);
        this.outbox.connectionLost();
      },
      heartbeat: () => this.outbox.resendStale(),
    }, emit);
    this.outbox = new Outbox({
      link: this.link, newId: () => this.requests.newId(), resendAfterMs: o.resendAfterMs, emit, changed,
      queued: () => {
        if (!this.persistence.loaded) void this.restore();
      },
    });
    this.inbox = new Inbox({ link: this.link, outbox: this.outbox, ackDelayMs: o.ackDelayMs, emit, changed });
    this.syncer = new Sync({ link: this.link, inbox: this.inbox, request: (body) => this.requests.request(body), emit, keepsCursors: options.store !== undefined });
    this.persistence = new Persistence({ store: o.store, link: this.link, inbox: this.inbox, outbox: this.outbox, emit });
  }

  get state(): ClientState {
    return this.link.state;
  }

  get session(): LoginInfo | undefined {
    return this.link.login;
  }

  /** How many sends are not acked yet. */
  get pendingSends(): number {
    return this.outbox.size;
  }

  /** The sends not acked yet, in send order (restored ones first). */
  getPendingSends(): PendingSend[] {
    return this.outbox.pending();
  }

  /** `reconnecting`: when the next attempt starts (ms since the epoch); undefined when none is scheduled. */
  get nextRetryAtMs(): number | undefined {
    return this.link.retryAtMs;
  }

  /**
   * Load the store (once; `connect()` does it before logging in, `send()`
   * starts it too): its cursors seed the receiver, so the sync after login
   * resumes each conversation where this device was, and its unacked sends
   * become pending again ('restored' event). Resolves with those restored sends.
   * A store that cannot be read is reported as an 'error' and treated as empty.
   */
  restore(): Promise<PendingSend[]> {
    return this.persistence.restore();
  }

  /** Connect and log in; resolves with the session, rejects on a login the server refuses. */
  async connect(): Promise<LoginInfo> {
    await this.persistence.closing;
    return this.link.connect(() => this.restore());
  }

  /**
   * Send a message; resolves when the server has stored it (resent across
   * reconnects until then, and kept in the store until acked). Sending again
   * with the clientMsgId of a send that is pending without a promise (a
   * restored one) waits for that send instead of making another.
   */
  send(options: SendOptions): Promise<SendResult> {
    return this.outbox.send(options);
  }

  /** One page of older messages of a conversation, ascending. */
  async history(conversationId: string, options: { beforeSeq?: number; limit?: number } = {}): Promise<{ messages: ChatMessage[]; hasMore: boolean }> {
    const reply = await this.requests.request({
      case: 'history',
      value: { conversationId, beforeSeq: BigInt(options.beforeSeq ?? 0), limit: options.limit ?? 0 },
    });
    if (reply.body.case !== 'historyResult') throw new LonglinkError(ErrorCode.INTERNAL, 'unexpected reply');
    return { messages: reply.body.value.messages.map(messageFromWire), hasMore: reply.body.value.hasMore };
  }

  /**
   * This user's conversations, most recent activity first, with unread
   * counts: page after page up to `max` (default 1000; the server sends at
   * most 500 a page). A long list is cheaper read with conversationsPage.
   */
  async conversations(options: { max?: number } = {}): Promise<ConversationInfo[]> {
    const max = options.max ?? 1000;
    const out: ConversationInfo[] = [];
    for (let page = await this.conversationsPage({ limit: Math.min(max, 500) }); ; page = await this.conversationsPage({ limit: Math.min(max - out.length, 500), after: out.at(-1) })) {
      out.push(...page.conversations.slice(0, max - out.length));
      if (!page.hasMore || out.length >= max) return out;
    }
  }

  /** One page of this user's conversations (default 100), resumed after a conversation of the previous page (its last). */
  async conversationsPage(options: { limit?: number; after?: Pick<ConversationInfo, 'conversationId' | 'lastAtMs'> } = {}): Promise<{ conversations: ConversationInfo[]; hasMore: boolean }> {
    const r = await this.requests.call({
      case: 'conversations',
      value: { limit: options.limit ?? 0, afterAtMs: BigInt(options.after?.lastAtMs ?? 0), afterConversationId: options.after?.conversationId ?? '' },
    }, 'conversationsResult');
    return { conversations: r.conversations.map(conversationFromWire), hasMore: r.hasMore };
  }

  /** Mark a conversation read up to seq (default: its latest message), on every device of this user. */
  async markRead(conversationId: string, seq = 0): Promise<void> {
    await this.requests.call({ case: 'markRead', value: { conversationId, seq: BigInt(seq) } }, 'done', newRequestId());
  }

  /** Recall a message (the sender within the window, or a group admin). */
  async recall(conversationId: string, seq: number): Promise<void> {
    await this.requests.call({ case: 'recall', value: { conversationId, seq: BigInt(seq) } }, 'done', newRequestId());
  }

  /**
   * Edit one of this user's messages: its text, custom type and payload and
   * mentions become these (its reply and forward stay). Every device gets an
   * 'edited' event in order; history and sync return the latest version.
   */
  async edit(conversationId: string, seq: number, options: EditOptions): Promise<void> {
    const content = storedContentOf(options);
    await this.requests.call({
      case: 'edit',
      value: { conversationId, seq: BigInt(seq), text: options.text ?? '', content: content ? contentInit(content) : undefined },
    }, 'done', newRequestId());
  }

  /** React to a message with an emoji (again: nothing changes). Members get a 'reactions' event with the message's reactions. */
  async react(conversationId: string, seq: number, emoji: string): Promise<void> {
    await this.requests.call({ case: 'react', value: { conversationId, seq: BigInt(seq), emoji, remove: false } }, 'done', newRequestId());
  }

  /** Take back your reaction. */
  async unreact(conversationId: string, seq: number, emoji: string): Promise<void> {
    await this.requests.call({ case: 'react', value: { conversationId, seq: BigInt(seq), emoji, remove: true } }, 'done', newRequestId());
  }

  /** Delete a message for yourself only: your devices stop showing it (a 'hide' event on each; reads give it `hidden`). */
  async deleteForMe(conversationId: string, seq: number): Promise<void> {
    await this.requests.call({ case: 'hide', value: { conversationId, seq: BigInt(seq) } }, 'done', newRequestId());
  }

  /** Delete a message for everyone, leaving a tombstone (who may: as for recall). */
  async deleteMessage(conversationId: string, seq: number): Promise<void> {
    await this.requests.call({ case: 'delete', value: { conversationId, seq: BigInt(seq) } }, 'done', newRequestId());
  }

  /** Block a user: its 1:1 messages to you are refused (BLOCKED) and your presence looks offline to it. Returns whom you block. */
  async block(userId: string): Promise<string[]> {
    return (await this.requests.call({ case: 'block', value: { userId, blocked: true } }, 'blockResult', newRequestId())).blocked;
  }

  /** Unblock a user; returns whom you still block. */
  async unblock(userId: string): Promise<string[]> {
    return (await this.requests.call({ case: 'block', value: { userId, blocked: false } }, 'blockResult', newRequestId())).blocked;
  }

  /** Set your display name and avatar URL (both replace what was there; empty clears). */
  async setProfile(profile: { name?: string; avatarUrl?: string }): Promise<ProfileInfo> {
    const r = await this.requests.call({ case: 'setProfile', value: { name: profile.name ?? '', avatarUrl: profile.avatarUrl ?? '' } }, 'profileResult', newRequestId());
    return profileFromWire(r.profiles[0]!);
  }

  /** Profiles of up to 100 users, in the order asked (a user who never set one: empty name and avatar). */
  async profiles(userIds: string[]): Promise<ProfileInfo[]> {
    return (await this.requests.call({ case: 'profileQuery', value: { userIds } }, 'profileResult')).profiles.map(profileFromWire);
  }

  /** The users you block, sorted. */
  async blocked(): Promise<string[]> {
    return (await this.requests.call({ case: 'block', value: { userId: '', blocked: false } }, 'blockResult')).blocked;
  }

  /**
   * Search the messages you may read (every conversation of yours, or one):
   * every word must match, the last as a prefix; best match first. Give
   * `cursor` (the previous page's `nextCursor`) for the next page.
   */
  async search(query: string, options: { conversationId?: string; limit?: number; cursor?: string } = {}): Promise<{ hits: SearchHit[]; nextCursor: string }> {
    const r = await this.requests.call({
      case: 'search', value: { query, conversationId: options.conversationId ?? '', limit: options.limit ?? 0, cursor: options.cursor ?? '' },
    }, 'searchResult');
    return { hits: r.hits.map((h) => ({ message: messageFromWire(h.message!), snippet: h.snippet })), nextCursor: r.nextCursor };
  }

  /**
   * Register this device's push token: while none of your devices is online,
   * messages to you raise a notification through the provider of `platform`
   * ('apns', 'fcm', or 'webhook' for your own push service).
   */
  async registerPush(platform: 'apns' | 'fcm' | 'webhook', token: string): Promise<void> {
    await this.requests.call({ case: 'pushRegister', value: { platform, token, remove: false } }, 'done', newRequestId());
  }

  /** Forget this device's push token (at logout). */
  async unregisterPush(): Promise<void> {
    await this.requests.call({ case: 'pushRegister', value: { platform: '', token: '', remove: true } }, 'done', newRequestId());
  }

  /** Mute (or unmute) a conversation's push notifications for you; its messages still arrive. */
  async muteNotifications(conversationId: string, muted = true): Promise<void> {
    await this.requests.call({ case: 'notifySettings', value: { conversationId, muted } }, 'done', newRequestId());
  }

  /** Upload a file (progress through `onProgress`); send it with `send({ …, attachments: [file] })`. */
  async uploadFile(data: Uint8Array | Blob, options: UploadOptions = {}): Promise<FileInfo> {
    const { server, token } = await this.api();
    return uploadFile(server, token, data, options);
  }

  /** Download a file of a message you may read (or an image's preview). */
  async downloadFile(fileId: string, options: { preview?: boolean } = {}): Promise<{ bytes: Uint8Array; mime: string; name: string }> {
    const { server, token } = await this.api();
    return downloadFile(server, token, fileId, options);
  }

  /** The HTTP API's address and a token for it. */
  private async api(): Promise<{ server: string; token: string }> {
    let server = this.options.apiUrl;
    if (server === undefined && typeof this.options.url === 'string' && /^wss?:\/\//.test(this.options.url)) {
      const u = new URL(this.options.url);
      server = `${u.protocol === 'wss:' ? 'https' : 'http'}://${u.host}`;
    }
    if (server === undefined) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'files go through the HTTP API: give the client apiUrl');
    const token = typeof this.options.token === 'string' ? this.options.token : await this.options.token();
    return { server, token };
  }

  /** Tell the conversation's other members this user is typing (transient; the server rate-limits it). */
  typing(conversationId: string): void {
    this.link.write(makeFrame(this.requests.newId(), { case: 'typing', value: { conversationId } }));
  }

  /** Whether users are online, and on which platforms. */
  async presence(userIds: string[]): Promise<PresenceInfo[]> {
    const r = await this.requests.call({ case: 'presenceQuery', value: { userIds } }, 'presenceResult');
    return r.users.map(presenceFromWire);
  }

  /** Watch users' presence ('presence' events); replaces the previous list and survives reconnects. */
  async watchPresence(userIds: string[]): Promise<PresenceInfo[]> {
    this.watched = [...userIds];
    if (this.watchTimer === undefined && userIds.length > 0) {
      this.watchTimer = setInterval(() => {
        if (this.state === 'online') this.renewWatch();
      }, WATCH_RENEW_MS);
      (this.watchTimer as { unref?: () => void }).unref?.();
    }
    const r = await this.requests.call({ case: 'presenceSubscribe', value: { userIds } }, 'presenceResult');
    return r.users.map(presenceFromWire);
  }

  createGroup(name: string, memberIds: string[]): Promise<GroupInfo> {
    return this.group({ case: 'create', value: { name, memberIds } });
  }

  groupInfo(groupId: string): Promise<GroupInfo> {
    return this.group({ case: 'info', value: { groupId } });
  }

  addMembers(groupId: string, userIds: string[]): Promise<GroupInfo> {
    return this.group({ case: 'add', value: { groupId, userIds } });
  }

  removeMembers(groupId: string, userIds: string[]): Promise<GroupInfo> {
    return this.group({ case: 'remove', value: { groupId, userIds } });
  }

  leaveGroup(groupId: string): Promise<GroupInfo> {
    return this.group({ case: 'leave', value: { groupId } });
  }

  dismissGroup(groupId: string): Promise<GroupInfo> {
    return this.group({ case: 'dismiss', value: { groupId } });
  }

  /** The owner makes a member ADMIN or MEMBER, or hands over ownership (role 'owner'). */
  setRole(groupId: string, userId: string, role: GroupRoleName): Promise<GroupInfo> {
    return this.group({ case: 'setRole', value: { groupId, userId, role: roleToWire(role) } });
  }

  /** Mute or unmute one member, or (no userId) the whole group. */
  mute(groupId: string, muted: boolean, userId = ''): Promise<GroupInfo> {
    return this.group({ case: 'mute', value: { groupId, userId, muted } });
  }

  /**
   * Fetch everything missed, now (also done automatically after every login);
   * resolves when it was delivered (a sync in progress goes on to a full one).
   */
  sync(): Promise<void> {
    return this.syncer.full();
  }

  /**
   * Flush pending acks, close, and write the store. The promises of unacked
   * sends reject (UNAVAILABLE), but the sends stay in the store: the next
   * `connect()` (of this client or of a new one on the same store) restores
   * and resends them.
   */
  async close(): Promise<void> {
    clearInterval(this.watchTimer);
    this.watchTimer = undefined;
    this.inbox.flushAcks();
    this.link.close();
    await this.persistence.putAway(new LonglinkError(ErrorCode.UNAVAILABLE, 'client closed before the server acked (kept in the store for the next connect)'));
  }

  private async group(op: GroupOp): Promise<GroupInfo> {
    // Every group operation but info is a write: its request id lets the server apply it once.
    const requestId = op?.case === 'info' ? '' : newRequestId();
    const r = await this.requests.call({ case: 'group', value: { op } }, 'groupResult', requestId);
    if (!r.group) throw new LonglinkError(ErrorCode.INTERNAL, 'group reply without a group');
    return groupFromWire(r.group);
  }

  /** Logged in and online: what was waiting goes out, watches are renewed, and what was missed is fetched. */
  private onOnline(info: LoginInfo): void {
    this.emit('login', info);
    this.outbox.writeAll();
    this.renewWatch();
    this.syncer.loggedIn(this.options.autoSync);
  }

  /** Subscribe again to the watched users (the server checks again who may be seen). */
  private renewWatch(): void {
    if (this.watched.length === 0) return;
    this.requests.request({ case: 'presenceSubscribe', value: { userIds: this.watched } }).then((reply) => {
      if (reply.body.case === 'presenceResult') for (const p of reply.body.value.users) this.emit('presence', presenceFromWire(p));
    }, () => undefined);
  }

  // ---- frames from the server ------------------------------------------------

  private onFrame(bytes: Uint8Array): void {
    let frame: Frame;
    try {
      frame = decodeFrame(bytes);
    } catch {
      this.emit('error', new LonglinkError(ErrorCode.BAD_FRAME, 'the server sent a frame that does not decode'));
      return;
    }
    const body = frame.body;
    switch (body.case) {
      case 'push':
        for (const m of body.value.messages.map(messageFromWire)) this.inbox.receive(m);
        this.syncer.syncStuck();
        return;
      case 'sendAck':
        this.onSendAck(frame.id, body.value);
        return;
      case 'kick': {
        const err = new LonglinkError(body.value.code, body.value.reason);
        this.emit('kick', err, body.value.reconnect);
        if (!body.value.reconnect) {
          // Offline for good, as after close(): unacked sends stay in the store for the next connect.
          this.link.stop(describeError(err));
          void this.persistence.putAway(err);
        }
        return;
      }
      case 'error':
        this.onError(frame.id, body.value);
        return;
      case 'event':
        this.onEvent(body.value);
        return;
      default:
        this.requests.resolve(frame);
    }
  }

  private onSendAck(id: number, ack: BodyOf<'sendAck'>): void {
    const entry = this.outbox.acked(id, ack.clientMsgId);
    const result = sendResultOf(ack);
    const login = this.link.login;
    if (login) {
      // Our own message has this seq: advance past it without showing it again.
      this.inbox.sentHere(result, login, result.text ?? entry?.options.text ?? '');
      // A conversation this device had no base for (its first message here):
      // sync it, so the base (kept in the store) is known and a later sync
      // does not bring this device's own message back as an incoming one.
      if (this.options.autoSync && this.inbox.base(result.conversationId) === undefined) this.syncer.syncStuck();
    }
    if (!entry) return; // a late duplicate ack
    this.outbox.settle(entry, result);
  }

  private onError(id: number, e: BodyOf<'error'>): void {
    const err = new LonglinkError(e.code, e.message);
    if (this.outbox.refused(id, e.code, err)) return;
    if (this.requests.reject(id, err)) return;
    this.emit('error', err);
  }

  private onEvent(e: BodyOf<'event'>): void {
    const b = e.body;
    switch (b.case) {
      case 'receipt':
        this.emit('receipt', { conversationId: b.value.conversationId, userId: b.value.userId, seq: Number(b.value.seq) });
        return;
      case 'delivery':
        this.emit('delivered', { conversationId: b.value.conversationId, userId: b.value.userId, seq: Number(b.value.seq) });
        return;
      case 'typing':
        this.emit('typing', { conversationId: b.value.conversationId, userId: b.value.userId });
        return;
      case 'presence':
        this.emit('presence', presenceFromWire(b.value));
        return;
      case 'broadcast':
        this.emit('broadcast', { id: b.value.id, text: b.value.text, sentAtMs: Number(b.value.sentAtMs) });
        return;
      case 'resync':
        if (this.options.autoSync) void this.syncer.full().catch(() => undefined);
        return;
      case 'reactions':
        this.emit('reactions', {
          conversationId: b.value.conversationId, seq: Number(b.value.seq),
          reactions: b.value.reactions.map((r) => ({ emoji: r.emoji, count: r.count, users: [...r.users] })),
        });
        return;
    }
  }
}

export { errorName };
