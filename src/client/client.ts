// The Longlink client: one implementation for the SDK, the CLI and tests.
// It keeps the client's half of the promises: every send is resent until
// acked (same client_msg_id, so the server stores it once), messages are
// delivered once each in seq order, gaps are filled by sync, and delivery is
// acked so the server's cursor for this device moves on. Cursors and unacked
// sends are kept in a pluggable store (see store.ts), so a restarted app syncs
// from where it was and resends what was never acked.
import {
  ErrorCode, LonglinkError, decodeFrame, encodeFrame, errorName, makeFrame, messageFromWire, cursorToWire,
  type ChatMessage, type Frame, type BodyOf, type FrameBodyInit, type FrameCase,
} from '../protocol/index.js';
import { Emitter } from './emitter.js';
import {
  conversationFromWire, groupFromWire, presenceFromWire, roleToWire,
  type BroadcastInfo, type ConversationInfo, type GroupChange, type GroupInfo, type PresenceInfo, type ReceiptInfo,
  type RecallInfo, type TypingInfo,
} from './types.js';
import type { GroupRoleName } from '../protocol/index.js';
import { Receiver } from './receiver.js';
import { memoryStore, type ClientSnapshot, type ClientStore, type StoredSend } from './store.js';
import type { ClientConnection, Connector } from './transport.js';

/**
 * What a UI shows about the connection:
 * - `idle`: never connected;
 * - `connecting`: the first connect (`connect()`) is in progress;
 * - `online`: logged in; sends go out at once;
 * - `reconnecting`: the connection was lost; the client waits `retryInMs`
 *   (see `StateDetail` and `nextRetryAtMs`) and tries again, then stays
 *   `reconnecting` while that attempt is in progress;
 * - `offline`: not connected and not trying (closed, refused, or the first connect failed).
 */
export type ClientState = 'idle' | 'connecting' | 'online' | 'reconnecting' | 'offline';

/** Detail of a 'state' event. */
export interface StateDetail {
  /** `reconnecting`: the next attempt starts in this many ms (full jitter under the backoff cap). */
  retryInMs?: number;
  /** `reconnecting`: when the next attempt starts (ms since the epoch, `Date.now()` clock). */
  retryAtMs?: number;
  /** `reconnecting`: which retry this is since the connection was lost (1 = the first). */
  attempt?: number;
  /** `reconnecting` / `offline`: why the connection was lost, the last attempt failed, or the client stopped. */
  reason?: string;
}

export interface ClientOptions {
  /**
   * Gateway URL (tcp:// or tls://host:port, ws:// or wss://host:port/ws), or a function that
   * picks one on every (re)connect, told which URL just failed or was lost so
   * it can choose another gateway (see `gatewayPicker`).
   */
  url: string | ((avoid: string | undefined) => Promise<string>);
  /** A login token, or a function that gets a fresh one (called on every (re)connect). */
  token: string | (() => Promise<string>);
  connector: Connector;
  /** Reconnect after losing the connection. @default true */
  reconnect?: boolean;
  /** First reconnect delay cap, doubled per attempt up to maxBackoffMs (full jitter). @default 500 */
  initialBackoffMs?: number;
  /** @default 30000 */
  maxBackoffMs?: number;
  /** Resend a send not acked within this time on the same connection. @default 10000 */
  resendAfterMs?: number;
  /** Delay before a cumulative PushAck, to ack many messages at once. @default 30 */
  ackDelayMs?: number;
  /** Timeout of login, sync and history requests. @default 15000 */
  requestTimeoutMs?: number;
  clientVersion?: string;
  /** Run a full sync after every login. Off for send-only tools. @default true */
  autoSync?: boolean;
  /**
   * Where cursors and unacked sends are kept between runs: `fileStore(path)`
   * in Node, `indexedDbStore(name)` in browsers, or your own `ClientStore`.
   * One client per store at a time. @default memoryStore() (nothing outlives the client object)
   */
  store?: ClientStore;
}

export interface SendOptions {
  /** One of: a user (1:1), a group, or a conversation id. */
  to?: string;
  groupId?: string;
  conversationId?: string;
  text: string;
  /** Idempotency key; generated when absent. */
  clientMsgId?: string;
}

export interface SendResult {
  clientMsgId: string;
  serverMsgId: string;
  conversationId: string;
  seq: number;
  sentAtMs: number;
  duplicate: boolean;
}

/**
 * A send the server has not acked yet. Sends of an earlier run (or of this
 * client before `close()`) are loaded from the store by `restore()` (called
 * by `connect()`): no `send()` promise waits for those, so the app learns
 * their fate from the 'sent' and 'failed' events.
 */
export interface PendingSend extends StoredSend {
  /** Loaded from the store rather than made by `send()` on this client since it was loaded. */
  restored: boolean;
}

export interface LoginInfo {
  userId: string;
  deviceId: string;
  platform: string;
  nodeId: string;
  pingIntervalMs: number;
}

export interface ClientEvents {
  /** A message from someone else (or this user's other device), once, in seq order per conversation. */
  message: (message: ChatMessage) => void;
  /** The connection state changed, or (reconnecting) a new retry was scheduled. */
  state: (state: ClientState, detail: StateDetail) => void;
  login: (info: LoginInfo) => void;
  /**
   * Unacked sends loaded from the store (made by an earlier run): they are
   * pending again and go out at the next login with their client_msg_id, so
   * the server stores each once. Their outcome comes as 'sent' or 'failed'.
   */
  restored: (sends: PendingSend[]) => void;
  /** A send was stored by the server: every send, restored or made by `send()` (whose promise resolves too). */
  sent: (result: SendResult, send: PendingSend) => void;
  /**
   * The server refused a send for good (e.g. FORBIDDEN, TEXT_TOO_LARGE): it is
   * not stored and leaves the outbox; `send()`'s promise rejects with the same error.
   */
  failed: (error: LonglinkError, send: PendingSend) => void;
  /** The server closed this session on purpose (e.g. REPLACED by a login of the same device). */
  kick: (error: LonglinkError, reconnect: boolean) => void;
  /** An error the server reported that no request was waiting for. */
  error: (error: LonglinkError) => void;
  /** A full sync finished: everything missed while offline was delivered. */
  synced: () => void;
  /** Someone (or this user on another device) read a conversation up to seq. */
  receipt: (receipt: ReceiptInfo) => void;
  typing: (typing: TypingInfo) => void;
  /** A watched user came online, went offline, or changed platforms. */
  presence: (presence: PresenceInfo) => void;
  /** A message was recalled (its text is gone); also delivered as a 'message' with event type 'recalled'. */
  recall: (recall: RecallInfo) => void;
  /** A group changed (created, members added or removed, left, roles, mutes, dismissed); also delivered as a 'message' with its event. */
  group: (change: GroupChange) => void;
  /** A system announcement. */
  broadcast: (broadcast: BroadcastInfo) => void;
}

interface Pending {
  resolve: (frame: Frame) => void;
  reject: (err: Error) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

interface OutboxEntry {
  options: SendOptions & { clientMsgId: string };
  createdAtMs: number;
  restored: boolean;
  /** The waiting `send()` promise; none for a restored send, nor after `close()`. */
  resolve?: (r: SendResult) => void;
  reject?: (err: Error) => void;
  /** Connection generation it was last written on, and when. */
  sentOn: number;
  sentAtMs: number;
}

const RETRYABLE_SEND = new Set<ErrorCode>([ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL, ErrorCode.RATE_LIMITED]);

type BodyOfInit<C extends FrameCase> = Extract<NonNullable<FrameBodyInit>, { case: C }>['value'] & { op: unknown };

function describe(err: unknown): string {
  if (err instanceof LonglinkError) return `${err.codeName}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

function storeError(what: string, err: unknown): LonglinkError {
  return new LonglinkError(ErrorCode.INTERNAL, `client store ${what} failed: ${describe(err)}`);
}

let idCounter = 0;
function newClientMsgId(): string {
  const rand = Math.random().toString(36).slice(2, 10);
  return `${Date.now().toString(36)}-${rand}-${(idCounter++).toString(36)}`;
}

export class LonglinkClient extends Emitter<ClientEvents> {
  private readonly options: Required<Omit<ClientOptions, 'clientVersion'>> & { clientVersion: string };
  private conn: ClientConnection | undefined;
  private generation = 0;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private outbox = new Map<string, OutboxEntry>();
  private readonly sendIds = new Map<number, string>();
  private receiver = new Receiver();
  private readonly acked = new Map<string, number>();
  private ackTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private attempt = 0;
  /** The gateway of the last connection that failed or was lost: the URL picker avoids it. */
  private lostUrl: string | undefined;
  private lastFrameMs = 0;
  private closedByUser = false;
  /** The sync loop in progress on this connection, if any. */
  private syncLoop: Promise<void> | undefined;
  private fullSyncWanted = false;
  private readonly syncWanted = new Set<string>();
  private _state: ClientState = 'idle';
  private _login: LoginInfo | undefined;
  private watched: string[] = [];
  private retryAt: number | undefined;
  /** Why the connection was last lost or an attempt failed (for the 'state' detail). */
  private lostReason: string | undefined;
  // ---- persistence: the store is loaded once (restore), then saved on every change, coalesced.
  private restoring: Promise<PendingSend[]> | undefined;
  private loaded = false;
  private dirty = false;
  private persistTimer: ReturnType<typeof setTimeout> | undefined;
  /** close() (or a final kick) writing the store: the next connect waits for it. */
  private closing: Promise<void> | undefined;
  /** Whom the stored state belongs to (from the store until a login says). */
  private owner: { userId: string; deviceId: string; fromStore: boolean } | undefined;

  constructor(options: ClientOptions) {
    super();
    this.options = {
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
  }

  get state(): ClientState {
    return this._state;
  }

  get session(): LoginInfo | undefined {
    return this._login;
  }

  /** How many sends are not acked yet. */
  get pendingSends(): number {
    return this.outbox.size;
  }

  /** The sends not acked yet, in send order (restored ones first). */
  getPendingSends(): PendingSend[] {
    return [...this.outbox.values()].map(pendingOf);
  }

  /** `reconnecting`: when the next attempt starts (ms since the epoch); undefined when none is scheduled. */
  get nextRetryAtMs(): number | undefined {
    return this.retryAt;
  }

  /**
   * Load the store (once; `connect()` does it before logging in, `send()`
   * starts it too): its cursors seed the receiver, so the sync after login
   * resumes each conversation where this device was, and its unacked sends
   * become pending again ('restored' event). Resolves with those restored sends.
   * A store that cannot be read is reported as an 'error' and treated as empty.
   */
  restore(): Promise<PendingSend[]> {
    this.restoring ??= this.load();
    return this.restoring;
  }

  /** Connect and log in; resolves with the session, rejects on a login the server refuses. */
  async connect(): Promise<LoginInfo> {
    await this.closing;
    this.closedByUser = false;
    this.attempt = 0;
    this.setState('connecting');
    await this.restore();
    try {
      return await this.open();
    } catch (err) {
      // The first attempt failed: report it and stay offline (no retries behind the caller's back).
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = undefined;
      this.retryAt = undefined;
      this.teardown('connect failed');
      this.setState('offline', { reason: describe(err) });
      throw err;
    }
  }

  /**
   * Send a message; resolves when the server has stored it (resent across
   * reconnects until then, and kept in the store until acked). Sending again
   * with the clientMsgId of a send that is pending without a promise (a
   * restored one) waits for that send instead of making another.
   */
  send(options: SendOptions): Promise<SendResult> {
    const clientMsgId = options.clientMsgId ?? newClientMsgId();
    const existing = this.outbox.get(clientMsgId);
    if (existing && existing.resolve) return Promise.reject(new Error(`client_msg_id ${clientMsgId} is already pending`));
    return new Promise((resolve, reject) => {
      if (existing) {
        existing.resolve = resolve;
        existing.reject = reject;
        return;
      }
      const entry: OutboxEntry = {
        options: { ...options, clientMsgId }, createdAtMs: Date.now(), restored: false, resolve, reject, sentOn: -1, sentAtMs: 0,
      };
      this.outbox.set(clientMsgId, entry);
      this.schedulePersist();
      if (!this.loaded) void this.restore();
      if (this._state === 'online') this.write(entry);
    });
  }

  /** One page of older messages of a conversation, ascending. */
  async history(conversationId: string, options: { beforeSeq?: number; limit?: number } = {}): Promise<{ messages: ChatMessage[]; hasMore: boolean }> {
    const reply = await this.request({
      case: 'history',
      value: { conversationId, beforeSeq: BigInt(options.beforeSeq ?? 0), limit: options.limit ?? 0 },
    });
    if (reply.body.case !== 'historyResult') throw new LonglinkError(ErrorCode.INTERNAL, 'unexpected reply');
    return { messages: reply.body.value.messages.map(messageFromWire), hasMore: reply.body.value.hasMore };
  }

  /** This user's conversations, most recent activity first, with unread counts. */
  async conversations(): Promise<ConversationInfo[]> {
    const r = await this.call({ case: 'conversations', value: {} }, 'conversationsResult');
    return r.conversations.map(conversationFromWire);
  }

  /** Mark a conversation read up to seq (default: its latest message), on every device of this user. */
  async markRead(conversationId: string, seq = 0): Promise<void> {
    await this.call({ case: 'markRead', value: { conversationId, seq: BigInt(seq) } }, 'done');
  }

  /** Recall a message (the sender within the window, or a group admin). */
  async recall(conversationId: string, seq: number): Promise<void> {
    await this.call({ case: 'recall', value: { conversationId, seq: BigInt(seq) } }, 'done');
  }

  /** Tell the conversation's other members this user is typing (transient; the server rate-limits it). */
  typing(conversationId: string): void {
    this.writeFrame(makeFrame(this.nextId++, { case: 'typing', value: { conversationId } }));
  }

  /** Whether users are online, and on which platforms. */
  async presence(userIds: string[]): Promise<PresenceInfo[]> {
    const r = await this.call({ case: 'presenceQuery', value: { userIds } }, 'presenceResult');
    return r.users.map(presenceFromWire);
  }

  /** Watch users' presence ('presence' events); replaces the previous list and survives reconnects. */
  async watchPresence(userIds: string[]): Promise<PresenceInfo[]> {
    this.watched = [...userIds];
    const r = await this.call({ case: 'presenceSubscribe', value: { userIds } }, 'presenceResult');
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

  private async group(op: BodyOfInit<'group'>['op']): Promise<GroupInfo> {
    const r = await this.call({ case: 'group', value: { op } }, 'groupResult');
    if (!r.group) throw new LonglinkError(ErrorCode.INTERNAL, 'group reply without a group');
    return groupFromWire(r.group);
  }

  /** A request whose reply must be of case `expect`. */
  private async call<C extends FrameCase>(body: FrameBodyInit & { case: string }, expect: C): Promise<BodyOf<C>> {
    const reply = await this.request(body);
    if (reply.body.case !== expect) throw new LonglinkError(ErrorCode.INTERNAL, `expected ${expect}, got ${reply.body.case ?? 'nothing'}`);
    return reply.body.value as BodyOf<C>;
  }

  /**
   * Fetch everything missed, now (also done automatically after every login);
   * resolves when it was delivered (a sync in progress goes on to a full one).
   */
  async sync(): Promise<void> {
    this.fullSyncWanted = true;
    await this.runSync();
    if (this.fullSyncWanted) await this.runSync(); // the loop was just finishing when asked
  }

  /**
   * Flush pending acks, close, and write the store. The promises of unacked
   * sends reject (UNAVAILABLE), but the sends stay in the store: the next
   * `connect()` (of this client or of a new one on the same store) restores
   * and resends them.
   */
  async close(): Promise<void> {
    this.closedByUser = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.retryAt = undefined;
    this.flushAcks();
    const conn = this.conn;
    this.teardown('client closed');
    conn?.close();
    this.setState('offline', { reason: 'closed' });
    await this.putAway(new LonglinkError(ErrorCode.UNAVAILABLE, 'client closed before the server acked (kept in the store for the next connect)'));
  }

  /** One putAway at a time; connect() waits for it. */
  private putAway(reason: LonglinkError): Promise<void> {
    const run = (this.closing ?? Promise.resolve()).then(() => this.putAwayNow(reason));
    const tracked = run.finally(() => {
      if (this.closing === tracked) this.closing = undefined;
    });
    this.closing = tracked;
    return tracked;
  }

  // ---- persistence -----------------------------------------------------------

  private async load(): Promise<PendingSend[]> {
    let snapshot: ClientSnapshot | undefined;
    try {
      snapshot = await this.options.store.load();
    } catch (err) {
      this.emit('error', storeError('load', err));
    }
    const restored: OutboxEntry[] = [];
    if (snapshot) {
      const stored = snapshot.userId !== undefined && snapshot.deviceId !== undefined
        ? { userId: snapshot.userId, deviceId: snapshot.deviceId } : undefined;
      // This client logged in as someone else already: the stored state is not its to use (the next save replaces it).
      const foreign = stored !== undefined && this.owner !== undefined
        && (stored.userId !== this.owner.userId || stored.deviceId !== this.owner.deviceId);
      if (stored && !this.owner) this.owner = { ...stored, fromStore: true };
      if (!foreign) {
        for (const [id, seq] of Object.entries(snapshot.cursors)) {
          // The server had (or no longer needs) acks up to here.
          if ((this.acked.get(id) ?? 0) < seq) this.acked.set(id, seq);
          this.deliver(this.receiver.establish(id, seq), id);
        }
        // Stored sends first (they are older), each replaced by a live entry of the same id.
        const merged = new Map<string, OutboxEntry>();
        for (const s of snapshot.outbox) {
          const live = this.outbox.get(s.clientMsgId);
          if (live) {
            merged.set(s.clientMsgId, live);
            continue;
          }
          const { clientMsgId, createdAtMs, text, to, groupId, conversationId } = s;
          const options: SendOptions & { clientMsgId: string } = { clientMsgId, text };
          if (to !== undefined) options.to = to;
          if (groupId !== undefined) options.groupId = groupId;
          if (conversationId !== undefined) options.conversationId = conversationId;
          const entry: OutboxEntry = { options, createdAtMs, restored: true, sentOn: -1, sentAtMs: 0 };
          merged.set(clientMsgId, entry);
          restored.push(entry);
        }
        for (const [id, entry] of this.outbox) if (!merged.has(id)) merged.set(id, entry);
        this.outbox = merged;
      }
    }
    this.loaded = true;
    this.schedulePersist();
    if (this._state === 'online') for (const entry of restored) this.write(entry);
    const out = restored.map(pendingOf);
    if (out.length > 0) this.emit('restored', out);
    return out;
  }

  /** The state to keep: cursors delivered up to, unacked sends in order, and whose they are. */
  private snapshot(): ClientSnapshot {
    const s: ClientSnapshot = {
      version: 1,
      cursors: Object.fromEntries(this.receiver.cursors()),
      outbox: [...this.outbox.values()].map((e) => {
        const { restored: _restored, ...stored } = pendingOf(e);
        return stored;
      }),
    };
    if (this.owner) {
      s.userId = this.owner.userId;
      s.deviceId = this.owner.deviceId;
    }
    return s;
  }

  /** Save soon (coalesced); before the store was loaded, only remember that something changed. */
  private schedulePersist(): void {
    this.dirty = true;
    if (!this.loaded || this.persistTimer !== undefined) return;
    this.persistTimer = setTimeout(() => {
      this.persistTimer = undefined;
      void this.persist();
    }, 0);
  }

  private async persist(): Promise<void> {
    if (!this.loaded || !this.dirty) return;
    this.dirty = false;
    try {
      await this.options.store.save(this.snapshot());
    } catch (err) {
      this.emit('error', storeError('save', err));
    }
  }

  /**
   * Going offline for good (close, or a kick that says not to reconnect): the
   * waiting promises reject with `reason`, the state is written and flushed,
   * and the outbox is left to the store (the next connect loads it again).
   */
  private async putAwayNow(reason: LonglinkError): Promise<void> {
    for (const entry of this.outbox.values()) {
      const reject = entry.reject;
      entry.resolve = undefined;
      entry.reject = undefined;
      reject?.(reason);
    }
    if (this.restoring) await this.restoring;
    else if (this.dirty) await this.restore();
    clearTimeout(this.persistTimer);
    this.persistTimer = undefined;
    this.dirty = true;
    await this.persist();
    try {
      await this.options.store.flush();
    } catch (err) {
      this.emit('error', storeError('write', err));
    }
    this.outbox.clear();
    this.sendIds.clear();
    this.restoring = undefined;
    this.loaded = false;
    this.dirty = false;
  }

  /**
   * A login says whose session this is. State of another user or device
   * (stored, or of an earlier login of this client with another token) is not
   * theirs: its cursors are forgotten and its unacked sends fail (FORBIDDEN)
   * instead of going out under this identity.
   */
  private adopt(info: LoginInfo): void {
    const owner = this.owner;
    this.owner = { userId: info.userId, deviceId: info.deviceId, fromStore: false };
    if (owner === undefined || (owner.userId === info.userId && owner.deviceId === info.deviceId)) {
      if (owner?.fromStore !== false) this.schedulePersist();
      return;
    }
    this.receiver = new Receiver();
    this.acked.clear();
    const err = new LonglinkError(ErrorCode.FORBIDDEN, `queued by ${owner.userId}/${owner.deviceId}, not sent as ${info.userId}/${info.deviceId}`);
    // Stored sends were another identity's; so was everything queued under an earlier login of this client.
    for (const entry of [...this.outbox.values()]) if (entry.restored || !owner.fromStore) this.fail(entry, err);
    this.schedulePersist();
  }

  /** The server stored this send. */
  private settle(entry: OutboxEntry, result: SendResult): void {
    if (this.outbox.get(result.clientMsgId) !== entry) return;
    this.outbox.delete(result.clientMsgId);
    for (const [id, clientMsgId] of this.sendIds) if (clientMsgId === result.clientMsgId) this.sendIds.delete(id);
    this.schedulePersist();
    entry.resolve?.(result);
    this.emit('sent', result, pendingOf(entry));
  }

  /** The server refused this send for good. */
  private fail(entry: OutboxEntry, err: LonglinkError): void {
    const clientMsgId = entry.options.clientMsgId;
    if (this.outbox.get(clientMsgId) !== entry) return;
    this.outbox.delete(clientMsgId);
    for (const [id, c] of this.sendIds) if (c === clientMsgId) this.sendIds.delete(id);
    this.schedulePersist();
    entry.reject?.(err);
    this.emit('failed', err, pendingOf(entry));
  }

  // ---- connection lifecycle ------------------------------------------------

  private async open(): Promise<LoginInfo> {
    this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting');
    const generation = ++this.generation;
    const token = typeof this.options.token === 'string' ? this.options.token : await this.options.token();
    const url = typeof this.options.url === 'string' ? this.options.url : await this.options.url(this.lostUrl);
    let conn: ClientConnection;
    try {
      conn = await this.options.connector(url, {
      onFrame: (bytes) => {
        if (generation === this.generation) this.onFrame(bytes);
      },
      onClose: (reason) => {
        if (generation === this.generation) {
          this.lostUrl = url;
          this.onLost(reason);
        }
      },
    });
    } catch (err) {
      this.lostUrl = url;
      throw err;
    }
    if (generation !== this.generation) {
      conn.close();
      throw new LonglinkError(ErrorCode.UNAVAILABLE, 'superseded');
    }
    this.conn = conn;
    this.lastFrameMs = Date.now();
    let reply: Frame;
    try {
      reply = await this.request({ case: 'login', value: { token, clientVersion: this.options.clientVersion } });
    } catch (err) {
      conn.close();
      this.teardown('login failed');
      throw err;
    }
    if (reply.body.case !== 'loginResult') throw new LonglinkError(ErrorCode.INTERNAL, 'unexpected login reply');
    const r = reply.body.value;
    this._login = { userId: r.userId, deviceId: r.deviceId, platform: r.platform, nodeId: r.nodeId, pingIntervalMs: r.pingIntervalMs };
    this.attempt = 0;
    this.lostReason = undefined;
    this.adopt(this._login);
    this.startHeartbeat(r.pingIntervalMs);
    this.syncFailures = 0;
    this.setState('online');
    this.emit('login', this._login);
    for (const entry of this.outbox.values()) this.write(entry);
    if (this.watched.length > 0) {
      this.request({ case: 'presenceSubscribe', value: { userIds: this.watched } }).then((reply) => {
        if (reply.body.case === 'presenceResult') for (const p of reply.body.value.users) this.emit('presence', presenceFromWire(p));
      }, () => undefined);
    }
    if (this.options.autoSync) {
      this.fullSyncWanted = true;
      void this.runSync();
    }
    return this._login;
  }

  private onLost(reason: string): void {
    this.teardown(reason);
    if (this.closedByUser) {
      // Kicked for good: the kick says why.
      this.setState('offline', { reason: this.lostReason ?? reason });
      return;
    }
    this.lostReason = reason;
    if (!this.options.reconnect) {
      this.setState('offline', { reason });
      return;
    }
    this.scheduleReconnect();
  }

  /**
   * The next attempt after a random delay in [0, cap), the cap doubling per
   * failed attempt from initialBackoffMs up to maxBackoffMs ("full jitter":
   * clients that lost one gateway together come back spread over the cap).
   */
  private scheduleReconnect(): void {
    if (this.reconnectTimer !== undefined) return; // one attempt pending at a time
    const cap = Math.min(this.options.maxBackoffMs, this.options.initialBackoffMs * 2 ** this.attempt);
    const delay = Math.floor(Math.random() * cap); // full jitter
    this.attempt++;
    this.retryAt = Date.now() + delay;
    const detail: StateDetail = { retryInMs: delay, retryAtMs: this.retryAt, attempt: this.attempt };
    if (this.lostReason !== undefined) detail.reason = this.lostReason;
    this.setState('reconnecting', detail);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.retryAt = undefined;
      this.open().catch((err: unknown) => {
        this.lostReason = describe(err);
        if (err instanceof LonglinkError && !this.isRetryableLogin(err)) {
          this.setState('offline', { reason: this.lostReason });
          this.emit('error', err);
          return;
        }
        if (!this.closedByUser && this._state !== 'online') this.scheduleReconnect();
      });
    }, delay);
  }

  private isRetryableLogin(err: LonglinkError): boolean {
    // A new token may fix these, when the app gives a function that gets one.
    if (err.code === ErrorCode.TOKEN_EXPIRED || err.code === ErrorCode.TOKEN_REVOKED) return typeof this.options.token === 'function';
    return ![ErrorCode.TOKEN_INVALID, ErrorCode.TOKEN_MISSING, ErrorCode.FORBIDDEN, ErrorCode.TOO_MANY_CONNECTIONS].includes(err.code);
  }

  private teardown(reason: string): void {
    this.generation++;
    this.conn = undefined;
    clearInterval(this.heartbeat);
    this.syncLoop = undefined;
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new LonglinkError(ErrorCode.UNAVAILABLE, reason));
    }
    this.pending.clear();
    this.sendIds.clear();
  }

  private startHeartbeat(intervalMs: number): void {
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => {
      if (!this.conn) return;
      if (Date.now() - this.lastFrameMs > intervalMs * 3) {
        // The server went silent: treat the connection as dead.
        const conn = this.conn;
        this.onLost('server silent');
        conn.close();
        return;
      }
      this.writeFrame(makeFrame(this.nextId++, { case: 'ping', value: {} }));
      this.resendStale();
    }, intervalMs);
  }

  private setState(state: ClientState, detail: StateDetail = {}): void {
    if (this._state === state && detail.retryInMs === undefined) return;
    this._state = state;
    this.emit('state', state, detail);
  }

  // ---- frames ----------------------------------------------------------------

  private request(body: FrameBodyInit & { case: string }, timeoutMs = this.options.requestTimeoutMs): Promise<Frame> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new LonglinkError(ErrorCode.UNAVAILABLE, `no reply to ${body.case} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      if (!this.writeFrame(makeFrame(id, body))) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new LonglinkError(ErrorCode.UNAVAILABLE, 'not connected'));
      }
    });
  }

  private writeFrame(frame: Frame): boolean {
    if (!this.conn) return false;
    this.conn.send(encodeFrame(frame));
    return true;
  }

  private write(entry: OutboxEntry): void {
    const id = this.nextId++;
    const o = entry.options;
    if (!this.writeFrame(makeFrame(id, {
      case: 'send',
      value: {
        clientMsgId: o.clientMsgId, toUser: o.to ?? '', text: o.text,
        conversationId: o.conversationId ?? (o.groupId !== undefined ? `g:${o.groupId}` : ''),
      },
    }))) return;
    this.sendIds.set(id, o.clientMsgId);
    entry.sentOn = this.generation;
    entry.sentAtMs = Date.now();
  }

  private resendStale(): void {
    const now = Date.now();
    for (const entry of this.outbox.values()) {
      if (entry.sentOn !== this.generation || now - entry.sentAtMs > this.options.resendAfterMs) this.write(entry);
    }
  }

  private onFrame(bytes: Uint8Array): void {
    this.lastFrameMs = Date.now();
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
        this.onMessages(body.value.messages.map(messageFromWire));
        return;
      case 'sendAck':
        this.onSendAck(frame.id, body.value);
        return;
      case 'kick': {
        const err = new LonglinkError(body.value.code, body.value.reason);
        this.emit('kick', err, body.value.reconnect);
        if (!body.value.reconnect) {
          // Offline for good, as after close(): unacked sends stay in the store for the next connect.
          this.closedByUser = true;
          this.lostReason = describe(err);
          void this.putAway(err);
        }
        return;
      }
      case 'error':
        this.onError(frame.id, body.value);
        return;
      case 'event':
        this.onEvent(body.value);
        return;
      default: {
        const p = this.pending.get(frame.id);
        if (p) {
          this.pending.delete(frame.id);
          clearTimeout(p.timer);
          p.resolve(frame);
        }
      }
    }
  }

  /**
   * A message from a push or a sync. One this device sent and still waits an
   * ack for (the ack was lost, or a sync overtook it) settles that send
   * instead of being shown as incoming: the app already shows it as pending.
   */
  private receive(m: ChatMessage): void {
    const own = this._login !== undefined && m.fromUser === this._login.userId && m.fromDevice === this._login.deviceId
      ? this.outbox.get(m.clientMsgId) : undefined;
    this.deliver(this.receiver.offer(m, own !== undefined), m.conversationId);
    if (!own) return;
    this.settle(own, {
      clientMsgId: m.clientMsgId, serverMsgId: m.serverMsgId, conversationId: m.conversationId,
      seq: m.seq, sentAtMs: m.sentAtMs, duplicate: false,
    });
  }

  private onSendAck(id: number, ack: BodyOf<'sendAck'>): void {
    this.sendIds.delete(id);
    const entry = this.outbox.get(ack.clientMsgId);
    const result: SendResult = {
      clientMsgId: ack.clientMsgId, serverMsgId: ack.serverMsgId, conversationId: ack.conversationId,
      seq: Number(ack.seq), sentAtMs: Number(ack.sentAtMs), duplicate: ack.duplicate,
    };
    if (this._login) {
      // Our own message has this seq: advance past it without showing it again.
      this.deliver(this.receiver.offer({
        conversationId: result.conversationId, seq: result.seq, serverMsgId: result.serverMsgId,
        fromUser: this._login.userId, fromDevice: this._login.deviceId, clientMsgId: result.clientMsgId,
        text: entry?.options.text ?? '', sentAtMs: result.sentAtMs,
      }, true), result.conversationId);
      // A conversation this device had no base for (its first message here):
      // sync it, so the base (kept in the store) is known and a later sync
      // does not bring this device's own message back as an incoming one.
      if (this.options.autoSync && this.receiver.base(result.conversationId) === undefined) this.syncStuck();
    }
    if (!entry) return; // a late duplicate ack
    this.settle(entry, result);
  }

  private onError(id: number, e: BodyOf<'error'>): void {
    const err = new LonglinkError(e.code, e.message);
    const clientMsgId = this.sendIds.get(id);
    if (clientMsgId !== undefined) {
      this.sendIds.delete(id);
      const entry = this.outbox.get(clientMsgId);
      if (entry && !RETRYABLE_SEND.has(e.code)) {
        this.fail(entry, err);
      } else if (entry) {
        // Not stored (server busy or failing): send it again soon, with its original id.
        const generation = this.generation;
        setTimeout(() => {
          if (generation === this.generation && this.outbox.get(clientMsgId) === entry) this.write(entry);
        }, 200 + Math.floor(Math.random() * 300));
      }
      return;
    }
    const p = this.pending.get(id);
    if (id !== 0 && p) {
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(err);
      return;
    }
    this.emit('error', err);
  }

  private onEvent(e: BodyOf<'event'>): void {
    const b = e.body;
    switch (b.case) {
      case 'receipt':
        this.emit('receipt', { conversationId: b.value.conversationId, userId: b.value.userId, seq: Number(b.value.seq) });
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
    }
  }

  // ---- receive, sync, ack ----------------------------------------------------

  private onMessages(messages: ChatMessage[]): void {
    for (const m of messages) this.receive(m);
    this.syncStuck();
  }

  private deliver(ready: ChatMessage[], conversationId: string): void {
    for (const m of ready) {
      this.emit('message', m);
      if (m.event?.type === 'recalled' && m.event.targetSeq !== undefined) {
        this.emit('recall', { conversationId: m.conversationId, seq: m.event.targetSeq, by: m.event.actor });
      } else if (m.event && m.conversationId.startsWith('g:')) {
        this.emit('group', { groupId: m.conversationId.slice(2), conversationId: m.conversationId, seq: m.seq, event: m.event });
      }
    }
    this.schedulePersist();
    const base = this.receiver.base(conversationId);
    if (base !== undefined && base > (this.acked.get(conversationId) ?? 0)) this.scheduleAck();
  }

  private syncStuck(): void {
    for (const id of this.receiver.stuck()) this.syncWanted.add(id);
    if (this.syncWanted.size > 0) void this.runSync();
  }

  /** Syncs that failed in a row (the retry backs off; a new connection starts again at 1-2 s). */
  private syncFailures = 0;

  /** One sync loop at a time: a full sync when wanted, else the conversations that are stuck. */
  private runSync(): Promise<void> {
    if (this.syncLoop) return this.syncLoop;
    if (!this.conn) return Promise.resolve();
    const loop = this.syncLoopBody().finally(() => {
      if (this.syncLoop === loop) this.syncLoop = undefined;
    });
    this.syncLoop = loop;
    return loop;
  }

  private async syncLoopBody(): Promise<void> {
    const generation = this.generation;
    try {
      while (generation === this.generation && (this.fullSyncWanted || this.syncWanted.size > 0)) {
        const full = this.fullSyncWanted;
        const only = full ? [] : [...this.syncWanted];
        this.fullSyncWanted = false;
        this.syncWanted.clear();
        await this.syncPages(only);
        this.syncFailures = 0;
        if (full) this.emit('synced');
        for (const id of this.receiver.stuck()) if (!only.includes(id) || full) this.syncWanted.add(id);
      }
    } catch (err) {
      if (generation === this.generation) {
        this.emit('error', err instanceof LonglinkError ? err : new LonglinkError(ErrorCode.INTERNAL, String(err)));
        // Nothing missed may stay missed: try again (a new connection syncs anyway), backing
        // off while it keeps failing (1-2 s, then 2-4 s, ... up to 30 s), so a server busy with a
        // reconnecting crowd is not answered with a storm of repeated syncs.
        this.fullSyncWanted = true;
        const base = Math.min(30_000, 1000 * 2 ** Math.min(this.syncFailures++, 5));
        setTimeout(() => {
          if (generation === this.generation) void this.runSync();
        }, base + Math.floor(Math.random() * base));
      }
    }
  }

  private async syncPages(only: string[]): Promise<void> {
    for (let page = 0; page < 100_000; page++) {
      const known = new Map(this.receiver.cursors());
      const reply = await this.request({
        case: 'sync',
        value: {
          cursors: [...known].filter(([id]) => only.length === 0 || only.includes(id)).map(([id, seq]) => cursorToWire(id, seq)),
          conversationIds: only,
          limit: 0,
        },
      });
      if (reply.body.case !== 'syncResult') throw new LonglinkError(ErrorCode.INTERNAL, 'unexpected sync reply');
      const result = reply.body.value;
      const messages = result.messages.map(messageFromWire);
      const firstSeq = new Map<string, number>();
      for (const m of messages) if (!firstSeq.has(m.conversationId)) firstSeq.set(m.conversationId, m.seq);
      // The server resumed each conversation right before its first message here (or, with none,
      // at its cursor): anything earlier is either had or not this user's to see.
      for (const [id, seq] of firstSeq) this.deliver(this.receiver.advance(id, seq - 1), id);
      for (const c of result.cursors) {
        if (!firstSeq.has(c.conversationId)) this.deliver(this.receiver.advance(c.conversationId, Number(c.seq)), c.conversationId);
      }
      for (const m of messages) this.receive(m);
      if (!result.hasMore) return;
    }
  }

  private scheduleAck(): void {
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => this.flushAcks(), this.options.ackDelayMs);
  }

  private flushAcks(): void {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    if (!this.conn) return;
    for (const [conversationId, base] of this.receiver.cursors()) {
      if (base > (this.acked.get(conversationId) ?? 0)) {
        this.writeFrame(makeFrame(0, { case: 'pushAck', value: { conversationId, seq: BigInt(base) } }));
        this.acked.set(conversationId, base);
      }
    }
  }
}

function pendingOf(e: OutboxEntry): PendingSend {
  const out: PendingSend = { clientMsgId: e.options.clientMsgId, text: e.options.text, createdAtMs: e.createdAtMs, restored: e.restored };
  if (e.options.to !== undefined) out.to = e.options.to;
  if (e.options.groupId !== undefined) out.groupId = e.options.groupId;
  if (e.options.conversationId !== undefined) out.conversationId = e.options.conversationId;
  return out;
}

export { errorName };
