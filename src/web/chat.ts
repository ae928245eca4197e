// The chat view: conversation list, one open conversation, the composer and
// the connection state, all driven by the SDK client's events.
import {
  directConversationId, directMembers, LonglinkError, errorName, groupConversationId, groupIdOf, isGroupConversation,
  type LonglinkClient, type ChatMessage, type ClientState, type ConversationInfo, type DeliveryInfo, type PendingSend,
  type PresenceInfo, type ReceiptInfo, type SendOptions, type SendResult, type StoredSend, type TimelineEventData,
  type ContentData, type QuoteData, type ReactionData, type ReactionsInfo, type AttachmentData,
} from '../client/browser.js';
import { byId, clockTime, h, randomId } from './dom.js';
import { Files, fileLabel } from './files.js';

/** Messages per history page. */
const PAGE = 30;
const TYPING_SHOWN_MS = 4000;
const TYPING_SENT_EVERY_MS = 2000;
const TITLE = 'Longlink';

interface Conv {
  id: string;
  kind: 'direct' | 'group';
  title: string;
  peer?: string;
  groupId?: string;
  lastSeq: number;
  lastText: string;
  lastAtMs: number;
  /**
   * How far this page (or this user's other device) told the server it read.
   * Only markRead sends the others a receipt (sending a message moves the
   * server's read cursor silently), so what is shown is marked read even
   * when the server's cursor is already past it.
   */
  markedSeq: number;
  /** How far this user has read as the server counts it (marked read, or wrote after it): the "New messages" divider follows it. */
  readSeq: number;
  unread: number;
  /** Seqs counted as unread here since the server's list was loaded (it counted up to baseSeq). */
  baseSeq: number;
  counted: Set<number>;
  /** Direct: how far the peer has read, and how far a device of theirs has received (the server's delivery cursor). */
  peerReadSeq: number;
  deliveredSeq: number;
  /** Groups: how far each other member has read (group info at open, then receipts). */
  readers: Map<string, number>;
}

interface Item {
  seq?: number;
  clientMsgId: string;
  from: string;
  text: string;
  sentAtMs: number;
  status: 'pending' | 'sent' | 'failed';
  error?: string;
  recalled?: boolean;
  /** Deleted for everyone: a tombstone. */
  deleted?: boolean;
  /** Custom type and payload, mentions, reply, forward. */
  content?: ContentData;
  /** A reply's quote. */
  reply?: QuoteData;
  edited?: boolean;
  reactions?: ReactionData[];
  event?: TimelineEventData;
  /** Files of one of our sends, as uploaded here (the server's copy is in content once it is loaded). */
  files?: AttachmentData[];
  /** Order of pending items (no seq yet). */
  order: number;
}

/** One of our sends the server has not stored yet, in whichever conversation. */
interface PendingItem extends Item {
  conversationId: string;
}

interface Open {
  id: string;
  /** The messages loaded, by seq (pending sends live in Chat.pending). */
  items: Map<number, Item>;
  hasMore: boolean;
  loading: boolean;
  /** The first page could not be loaded (e.g. offline): it is loaded again when the connection is back. */
  failed: boolean;
  /** The "New messages" divider goes before the first message of others after this seq (none when undefined). */
  unreadAfter?: number;
  /** A message opened from a search result: marked, and scrolled to. */
  found?: number;
}

export interface ChatOptions {
  /** The open conversation changed (undefined: none): the page remembers it, and shows the list or the chat on narrow screens. */
  onOpen?: (conversationId: string | undefined) => void;
}

// ---- helpers ---------------------------------------------------------------------------------

function describe(err: unknown): string {
  if (err instanceof LonglinkError) return `${errorName(err.code)}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

function eventText(e: TimelineEventData): string {
  const who = (e.userIds ?? []).join(', ');
  switch (e.type) {
    case 'group_created': return `${e.actor} created the group${e.name ? ` “${e.name}”` : ''}${who ? ` with ${who}` : ''}`;
    case 'members_added': return `${e.actor} added ${who}`;
    case 'members_removed': return `${e.actor} removed ${who}`;
    case 'member_left': return `${e.actor} left`;
    case 'dismissed': return `${e.actor} dismissed the group`;
    case 'role_changed': return `${e.actor} made ${who} ${e.role ?? 'member'}`;
    case 'mute_changed': return `${e.actor} ${e.muted ? 'muted' : 'unmuted'} ${who || 'the group'}`;
    case 'recalled': return `${e.actor} recalled a message`;
    case 'edited': return `${e.actor} edited a message`;
    case 'deleted': return `${e.actor} deleted a message`;
    case 'hidden': return 'you deleted a message for yourself';
  }
}

/** A custom payload shown in a bubble: its text (JSON or not) cut to 120 characters; bytes that are not text, their size. */
function payloadPreview(payload: Uint8Array | undefined): string {
  if (!payload || payload.length === 0) return '';
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(payload);
  } catch {
    return `(${payload.length} bytes)`;
  }
  return text.length > 120 ? `${text.slice(0, 119)}…` : text;
}

/** A stored send as `send()` options: its one target and its client_msg_id (so the server stores it once). */
function sendOptions(s: StoredSend): SendOptions {
  const o: SendOptions = { text: s.text, clientMsgId: s.clientMsgId };
  if (s.to !== undefined) o.to = s.to;
  if (s.groupId !== undefined) o.groupId = s.groupId;
  if (s.conversationId !== undefined) o.conversationId = s.conversationId;
  if (s.content?.attachments) o.attachments = s.content.attachments;
  return o;
}

export class Chat {
  private readonly convs = new Map<string, Conv>();
  /** Presence of the watched peers; empty while we are not connected (then nobody's presence is known). */
  private readonly online = new Map<string, boolean>();
  /** conversation → who is typing, until when. */
  private readonly typing = new Map<string, Map<string, number>>();
  /** Our sends not stored yet (written here, restored from the store, or adopted from a closed tab), by client_msg_id. */
  private readonly pending = new Map<string, PendingItem>();
  /** The conversation list's rows, by conversation id. */
  private readonly rows = new Map<string, HTMLLIElement>();
  /** Display names from users' profiles ('' : none set); asked for once per user. */
  private readonly names = new Map<string, string>();
  private open: Open | undefined;
  private order = 0;
  private lastTypingSent = 0;
  private readTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshing: Promise<void> | undefined;
  private refreshAgain = false;
  private watched = '';
  private stateTimer: ReturnType<typeof setInterval> | undefined;
  private typingTimer: ReturnType<typeof setInterval> | undefined;
  /** The notice shows an error that happened while not connected: it goes when the connection is back. */
  private noticeUntilOnline = false;
  /** Why the server closed the connection (a kick that reconnects), shown until online again. */
  private kickReason = '';
  private readonly unsubscribe: (() => void)[] = [];
  readonly files: Files;
  private readonly el = {
    me: byId('me-name'),
    conn: byId('conn'),
    connNotice: byId('conn-notice'),
    list: byId<HTMLUListElement>('conversations'),
    title: byId('pane-title'),
    paneDot: byId('pane-dot'),
    typing: byId('typing'),
    scroller: byId('messages'),
    older: byId<HTMLButtonElement>('older'),
    messages: byId<HTMLOListElement>('message-list'),
    notice: byId('notice'),
    composer: byId<HTMLFormElement>('composer'),
    text: byId<HTMLInputElement>('composer-text'),
  };

  constructor(
    private readonly client: LonglinkClient,
    /** The user logged in. */
    readonly me: string,
    private readonly options: ChatOptions = {},
  ) {
    this.el.me.textContent = me;
    this.files = new Files(client, (text) => this.notice(text));
    const c = client;
    this.unsubscribe.push(
      c.on('state', (state, detail) => this.showState(state, detail.retryInMs)),
      c.on('message', (m) => this.onMessage(m)),
      c.on('receipt', (r) => this.onReceipt(r)),
      c.on('delivered', (d) => this.onDelivered(d)),
      c.on('recall', (r) => this.onRecall(r.conversationId, r.seq)),
      c.on('reactions', (r) => this.onReactions(r)),
      c.on('hide', (x) => {
        // Deleted for this user (here or on another of its devices): it goes from the page.
        if (this.open?.id === x.conversationId && this.open.items.delete(x.seq)) this.renderMessages('keep');
      }),
      c.on('typing', (t) => this.onTyping(t.conversationId, t.userId)),
      c.on('presence', (p) => this.onPresence(p)),
      c.on('synced', () => this.scheduleRefresh(0)),
      // Every send ends as 'sent' or 'failed', whoever made it: this page, an earlier load of it, or a closed tab.
      c.on('restored', (sends) => this.onRestored(sends)),
      c.on('sent', (r, s) => this.onSent(r, s)),
      c.on('failed', (err, s) => this.onFailed(err, s)),
      c.on('kick', (err, reconnect) => this.onKick(err, reconnect)),
      c.on('error', (err) => console.warn('[longlink]', describe(err))),
    );
    this.showState(client.state);
    this.typingTimer = setInterval(() => this.expireTyping(), 1000);
  }

  /** Stop listening to the client and clear the view (log out). */
  dispose(): void {
    for (const off of this.unsubscribe) off();
    clearInterval(this.stateTimer);
    clearInterval(this.typingTimer);
    clearTimeout(this.readTimer);
    clearTimeout(this.refreshTimer);
    this.files.dispose();
    this.open = undefined;
    this.rows.clear();
    this.el.list.replaceChildren();
    this.el.messages.replaceChildren();
    this.renderPane();
    this.el.older.hidden = true;
    this.notice('');
    this.connNotice('');
    document.title = TITLE;
  }

  // ---- user actions ------------------------------------------------------------

  async openConversation(id: string): Promise<void> {
    if (this.open?.id === id) return;
    const conv = this.convs.get(id);
    const open: Open = {
      id, items: new Map(), hasMore: false, loading: true, failed: false,
      // Opened with unread messages: mark where they start (it stays while the conversation is open).
      unreadAfter: conv && conv.unread > 0 ? conv.readSeq : undefined,
    };
    this.show(open);
    if (conv?.kind === 'group') void this.loadReaders(conv);
    await this.loadFirstPage(open);
    if (this.open !== open) return;
    this.readOpenSoon();
    // Ready to type with a keyboard; on touch screens a focus would pop the keyboard over the messages.
    if (matchMedia('(pointer: fine)').matches) this.el.text.focus();
  }

  /** Back to the list (the narrow layout's back button): nothing is open, so nothing is read meanwhile. */
  closeConversation(): void {
    if (this.open) this.show(undefined);
  }

  /** Make `open` the open conversation (or none), and draw the page for it. */
  private show(open: Open | undefined): void {
    this.open = open;
    this.options.onOpen?.(open?.id);
    this.notice('');
    this.renderList();
    this.renderPane();
    this.renderMessages('bottom');
  }

  /** Open a conversation remembered across a reload, if it is still one of this user's. */
  async reopen(id: string): Promise<void> {
    const members = directMembers(id);
    if (this.convs.has(id)) await this.openConversation(id);
    else if (members?.includes(this.me)) await this.startDirect(members[0] === this.me ? members[1] : members[0]);
    else this.options.onOpen?.(undefined);
  }

  async loadOlder(): Promise<void> {
    const open = this.open;
    if (!open || open.loading || !open.hasMore) return;
    const oldest = Math.min(...open.items.keys());
    if (!Number.isFinite(oldest)) return;
    open.loading = true;
    try {
      const page = await this.client.history(open.id, { beforeSeq: oldest, limit: PAGE });
      if (this.open !== open) return;
      for (const m of page.messages) this.addItem(open, m);
      void this.learnNames(page.messages.map((m) => m.fromUser).filter((u) => u !== '' && u !== this.me));
      open.hasMore = page.hasMore;
      this.renderMessages('keep');
    } catch (err) {
      this.errorNotice('Could not load older messages', err);
    } finally {
      open.loading = false;
    }
  }

  send(text: string): void {
    const open = this.open;
    const conv = open && this.convs.get(open.id);
    if (!open || !conv || text.trim() === '') return;
    const target = conv.kind === 'group' ? { groupId: conv.groupId ?? groupIdOf(conv.id) ?? '' } : { to: conv.peer ?? '' };
    const send: StoredSend = { ...target, text, clientMsgId: `web-${randomId()}`, createdAtMs: Date.now() };
    this.addPending(send);
    this.renderMessages('bottom');
    // Its outcome comes as a 'sent' or 'failed' event; the promise rejects also when we log out, which needs nothing.
    this.client.send(sendOptions(send)).catch(() => undefined);
  }

  /** Upload a file the user picked (with progress) and send it to the open conversation, with `caption` as its text. */
  async sendFile(file: File, caption: string): Promise<void> {
    const open = this.open;
    const conv = open && this.convs.get(open.id);
    if (!open || !conv) return;
    const target = conv.kind === 'group' ? { groupId: conv.groupId ?? groupIdOf(conv.id) ?? '' } : { to: conv.peer ?? '' };
    const info = await this.files.upload(file);
    if (!info) return;
    const send: StoredSend = { ...target, text: caption, clientMsgId: `web-${randomId()}`, createdAtMs: Date.now(), content: { attachments: [info.fileId] } };
    this.addPending(send);
    if (this.open?.id === conv.id) this.renderMessages('bottom');
    this.client.send(sendOptions(send)).catch(() => undefined);
  }

  /** A conversation's title as the list shows it (a search result's). */
  conversationTitle(id: string): string {
    const conv = this.convs.get(id);
    if (conv) return this.titleOf(conv);
    const members = directMembers(id);
    if (members) return this.nameOf(members[0] === this.me ? members[1] : members[0]);
    return groupIdOf(id) ?? id;
  }

  /** Open a conversation at one of its messages (a search result): older pages are loaded until it is there. */
  async openAt(id: string, seq: number): Promise<void> {
    if (!this.convs.has(id)) {
      const members = directMembers(id);
      const groupId = groupIdOf(id);
      if (members?.includes(this.me)) this.convs.set(id, this.newConv(id, { kind: 'direct', title: members[0] === this.me ? members[1] : members[0], peer: members[0] === this.me ? members[1] : members[0] }));
      else if (groupId !== undefined) this.convs.set(id, this.newConv(id, { kind: 'group', title: groupId, groupId }));
      else return;
      this.scheduleRefresh(0);
    }
    await this.openConversation(id);
    const open = this.open;
    if (open?.id !== id) return;
    // At most 20 pages back (600 messages): a message further back stays where it is.
    for (let i = 0; i < 20 && this.open === open && !open.items.has(seq) && open.hasMore; i++) await this.loadOlder();
    if (this.open !== open) return;
    open.found = seq;
    this.renderMessages('keep');
    this.el.messages.querySelector(`[data-seq="${seq}"]`)?.scrollIntoView({ block: 'center' });
  }

  /**
   * Messages a closed tab of this user never got through (see devices.ts):
   * sent again with their client_msg_id (the server stores each once) and
   * shown as pending like ours. Resolves true when each was stored or refused
   * for good, false when some still wait (the client was closed first).
   */
  adopt(sends: StoredSend[]): Promise<boolean> {
    for (const s of sends) this.addPending(s);
    if (this.open) this.renderMessages('auto');
    return Promise.all(sends.map((s) => this.client.send(sendOptions(s)).then(
      () => true,
      // Refused for good ('failed': it left the outbox), or still queued (the client closed or was
      // kicked first: the closed tab's store must stay until it got through).
      () => !this.client.getPendingSends().some((p) => p.clientMsgId === s.clientMsgId),
    ))).then((done) => done.every(Boolean));
  }

  /** The user types in the composer: tell the others, at most every 2 s. */
  typed(): void {
    const open = this.open;
    if (!open || this.client.state !== 'online' || this.el.text.value === '') return;
    const now = Date.now();
    if (now - this.lastTypingSent < TYPING_SENT_EVERY_MS) return;
    this.lastTypingSent = now;
    this.client.typing(open.id);
  }

  async recall(seq: number): Promise<void> {
    const open = this.open;
    if (!open) return;
    try {
      await this.client.recall(open.id, seq);
      this.onRecall(open.id, seq);
    } catch (err) {
      this.errorNotice('Could not recall', err);
    }
  }

  /** Add (or, if it is there, take back) this user's emoji on a message of the open conversation. */
  async react(seq: number, emoji: string): Promise<void> {
    const open = this.open;
    if (!open) return;
    const mine = open.items.get(seq)?.reactions?.find((r) => r.emoji === emoji)?.users.includes(this.me) === true;
    try {
      if (mine) await this.client.unreact(open.id, seq, emoji);
      else await this.client.react(open.id, seq, emoji);
    } catch (err) {
      this.errorNotice('Could not react', err);
    }
  }

  /** Open (or start) the 1:1 conversation with a user. */
  async startDirect(userId: string): Promise<void> {
    if (userId === this.me) {
      this.notice('Pick someone else to chat with.');
      return;
    }
    const id = directConversationId(this.me, userId);
    if (!this.convs.has(id)) {
      this.convs.set(id, this.newConv(id, { kind: 'direct', title: userId, peer: userId }));
      this.watchPeers();
    }
    await this.openConversation(id);
  }

  /** Create a group with these (already checked, see members.ts) member ids, and open it. */
  async createGroup(name: string, members: string[]): Promise<void> {
    try {
      const g = await this.client.createGroup(name, members);
      if (!this.convs.has(g.conversationId)) {
        this.convs.set(g.conversationId, this.newConv(g.conversationId, { kind: 'group', title: g.name, groupId: g.groupId }));
      }
      await this.openConversation(g.conversationId);
      this.scheduleRefresh(0);
    } catch (err) {
      this.errorNotice('Could not create the group', err);
    }
  }

  /** Load the conversation list from the server (after login and after every sync). */
  refreshConversations(): Promise<void> {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.refreshAgain = false;
        try {
          this.merge(await this.client.conversations());
        } catch (err) {
          if (this.client.state === 'online') this.errorNotice('Could not load conversations', err);
        }
      } while (this.refreshAgain);
    })().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  /** The page became visible again: read what arrived meanwhile. */
  visible(): void {
    this.readOpenSoon();
  }

  // ---- client events -------------------------------------------------------------

  private onMessage(m: ChatMessage): void {
    const conv = this.convs.get(m.conversationId);
    if (!conv) {
      // A conversation this page does not know yet (a new chat, a new group): the server's list has it.
      this.scheduleRefresh(50);
    } else {
      const fresh = m.seq > conv.baseSeq && !conv.counted.has(m.seq);
      if (fresh) conv.counted.add(m.seq);
      const isOpen = this.open?.id === conv.id && document.visibilityState === 'visible';
      if (fresh && m.fromUser !== this.me && m.event === undefined && !isOpen) conv.unread++;
      if (m.seq >= conv.lastSeq) {
        conv.lastSeq = m.seq;
        conv.lastText = this.preview(m);
        conv.lastAtMs = m.sentAtMs;
      }
      this.renderList();
    }
    this.typing.get(m.conversationId)?.delete(m.fromUser);
    if (this.open?.id === m.conversationId) {
      this.addItem(this.open, m);
      this.renderMessages('auto');
      this.renderTyping();
      this.readOpenSoon();
    }
  }

  private onReceipt(r: ReceiptInfo): void {
    const conv = this.convs.get(r.conversationId);
    if (!conv) return;
    if (r.userId === this.me) {
      // This user read it on another device: follow its unread count.
      conv.markedSeq = Math.max(conv.markedSeq, r.seq);
      conv.readSeq = Math.max(conv.readSeq, r.seq);
      if (r.seq >= conv.lastSeq) conv.unread = 0;
      else this.scheduleRefresh(100);
    } else if (conv.kind === 'direct') {
      conv.peerReadSeq = Math.max(conv.peerReadSeq, r.seq);
    } else {
      conv.readers.set(r.userId, Math.max(conv.readers.get(r.userId) ?? 0, r.seq));
    }
    this.renderList();
    if (this.open?.id === conv.id) this.renderMessages('auto');
  }

  /** The peer's devices received a direct conversation up to seq: our messages there are delivered. */
  private onDelivered(d: DeliveryInfo): void {
    const conv = this.convs.get(d.conversationId);
    if (!conv || conv.kind !== 'direct' || d.userId === this.me || d.seq <= conv.deliveredSeq) return;
    conv.deliveredSeq = d.seq;
    if (this.open?.id === conv.id) this.renderMessages('auto');
  }

  private onRecall(conversationId: string, seq: number): void {
    const conv = this.convs.get(conversationId);
    if (conv && conv.lastSeq === seq) conv.lastText = 'message recalled';
    const item = this.open?.id === conversationId ? this.open.items.get(seq) : undefined;
    if (item) {
      item.recalled = true;
      item.text = '';
      this.renderMessages('auto');
    }
    this.renderList();
  }

  private onReactions(r: ReactionsInfo): void {
    const item = this.open?.id === r.conversationId ? this.open.items.get(r.seq) : undefined;
    if (!item) return;
    item.reactions = r.reactions;
    this.renderMessages('auto');
  }

  private onTyping(conversationId: string, userId: string): void {
    if (userId === this.me) return;
    let who = this.typing.get(conversationId);
    if (!who) this.typing.set(conversationId, (who = new Map()));
    who.set(userId, Date.now() + TYPING_SHOWN_MS);
    this.renderList();
    this.renderTyping();
  }

  private expireTyping(): void {
    const now = Date.now();
    let changed = false;
    for (const who of this.typing.values()) {
      for (const [user, until] of who) {
        if (until <= now) {
          who.delete(user);
          changed = true;
        }
      }
    }
    if (changed) {
      this.renderList();
      this.renderTyping();
    }
  }

  private onPresence(p: PresenceInfo): void {
    this.online.set(p.userId, p.online);
    this.renderList();
    this.renderPane();
  }

  /** Sends an earlier load of this page left in the store: pending again, and shown so. */
  private onRestored(sends: PendingSend[]): void {
    for (const s of sends) this.addPending(s);
    if (this.open) this.renderMessages('auto');
  }

  /** The server stored one of our sends: it leaves the pending ones and takes its place by seq. */
  private onSent(r: SendResult, s: PendingSend): void {
    const item: Item = this.pending.get(s.clientMsgId) ?? this.itemOf(s);
    this.pending.delete(s.clientMsgId);
    item.seq = r.seq;
    item.sentAtMs = r.sentAtMs;
    item.status = 'sent';
    const conv = this.convs.get(r.conversationId);
    if (conv) {
      if (r.seq > conv.lastSeq) {
        conv.lastSeq = r.seq;
        const file = item.files?.[0];
        conv.lastText = `You: ${s.text || (file ? fileLabel(file) : '')}`;
        conv.lastAtMs = r.sentAtMs;
      }
      // The server counts what we wrote, and what came before it, as read by us.
      conv.readSeq = Math.max(conv.readSeq, r.seq);
    } else {
      this.scheduleRefresh(50); // a conversation the list does not have yet
    }
    const open = this.open;
    if (open?.id === r.conversationId && !open.items.has(r.seq)) open.items.set(r.seq, item);
    this.renderList();
    if (open?.id === r.conversationId) this.renderMessages('auto');
  }

  /** The server refused one of our sends for good: it stays on screen, marked failed. */
  private onFailed(err: LonglinkError, s: PendingSend): void {
    const item = this.addPending(s);
    item.status = 'failed';
    item.error = describe(err);
    if (this.open?.id === item.conversationId) this.renderMessages('auto');
  }

  private onKick(err: LonglinkError, reconnect: boolean): void {
    if (reconnect) {
      // Shown with the connection state, and gone once the client is connected again.
      this.kickReason = `Disconnected by the server: ${describe(err)}.`;
      this.showState(this.client.state);
    } else {
      this.notice(`Signed out by the server: ${describe(err)}`);
    }
  }

  private showState(state: ClientState, retryInMs?: number): void {
    clearInterval(this.stateTimer);
    this.stateTimer = undefined;
    const conn = this.el.conn;
    const wasOnline = conn.dataset.state === 'online';
    conn.dataset.state = state;
    this.el.composer.classList.toggle('offline', state !== 'online');
    if (state === 'online') {
      this.kickReason = '';
      this.connNotice('');
      if (this.noticeUntilOnline) this.notice('');
      // The conversation opened while offline could not load: load it now.
      if (this.open?.failed) void this.loadFirstPage(this.open);
    } else {
      // Nobody's presence is known while we are not connected (the client watches again when back).
      this.online.clear();
    }
    if (state === 'reconnecting' && retryInMs !== undefined) {
      const at = Date.now() + retryInMs;
      const tick = (): void => {
        const s = Math.ceil((at - Date.now()) / 1000);
        const when = s > 0 ? `in ${s} s` : '…';
        conn.textContent = `reconnecting${s > 0 ? ' ' : ''}${when}`;
        this.connNotice(`${this.kickReason || 'Connection lost.'} Reconnecting${s > 0 ? ' ' : ''}${when} — what you write is kept and sent when it is back.`);
        if (s <= 0) clearInterval(this.stateTimer);
      };
      tick();
      this.stateTimer = setInterval(tick, 250);
    } else {
      conn.textContent = state === 'idle' ? '' : state === 'connecting' ? 'connecting…' : state === 'reconnecting' ? 'reconnecting…' : state;
      if (state === 'reconnecting') this.connNotice(`${this.kickReason || 'Connection lost.'} Reconnecting…`);
      if (state === 'offline' && wasOnline) this.connNotice('Not connected. What you write is kept and sent at the next login.');
    }
    if (wasOnline !== (state === 'online')) {
      this.renderList();
      this.renderPane();
    }
  }

  // ---- state helpers -------------------------------------------------------------------

  private newConv(id: string, init: Pick<Conv, 'kind' | 'title'> & Partial<Conv>): Conv {
    return {
      id, lastSeq: 0, lastText: '', lastAtMs: Date.now(), markedSeq: 0, readSeq: 0, unread: 0, baseSeq: 0, counted: new Set(),
      peerReadSeq: 0, deliveredSeq: 0, readers: new Map(), ...init,
    };
  }

  private merge(list: ConversationInfo[]): void {
    for (const c of list) {
      const known = this.convs.get(c.conversationId);
      const title = c.kind === 'group' ? (c.name || c.groupId || c.conversationId) : (c.peerUser ?? c.conversationId);
      if (known && known.lastSeq > c.lastSeq) {
        known.title = title; // ours is newer than the server's answer: keep the counts
        continue;
      }
      const conv = known ?? this.newConv(c.conversationId, { kind: c.kind, title });
      conv.title = title;
      conv.kind = c.kind;
      if (c.peerUser !== undefined) conv.peer = c.peerUser;
      if (c.groupId !== undefined) conv.groupId = c.groupId;
      conv.lastSeq = c.lastSeq;
      conv.baseSeq = c.lastSeq;
      conv.counted.clear();
      conv.lastText = c.lastMessage ? this.preview(c.lastMessage) : '';
      conv.lastAtMs = c.lastAtMs;
      conv.unread = c.unread;
      conv.readSeq = Math.max(conv.readSeq, c.readSeq);
      conv.peerReadSeq = Math.max(conv.peerReadSeq, c.peerReadSeq ?? 0);
      // Read implies received; otherwise only the server's delivery cursor says a message arrived.
      conv.deliveredSeq = Math.max(conv.deliveredSeq, c.peerDeliveredSeq ?? 0, conv.peerReadSeq);
      this.convs.set(conv.id, conv);
    }
    this.watchPeers();
    void this.learnNames([...this.convs.values()].flatMap((c) => (c.peer !== undefined ? [c.peer] : [])));
    this.renderList();
    if (this.open) {
      this.renderPane();
      this.renderMessages('auto');
      this.readOpenSoon();
    }
  }

  /** Read the profiles of users not asked for yet (at most 100 at a time), then redraw with their names. */
  private async learnNames(userIds: readonly string[]): Promise<void> {
    const unknown = [...new Set(userIds)].filter((u) => !this.names.has(u)).slice(0, 100);
    if (unknown.length === 0) return;
    for (const u of unknown) this.names.set(u, '');
    try {
      for (const p of await this.client.profiles(unknown)) this.names.set(p.userId, p.name);
    } catch (err) {
      for (const u of unknown) this.names.delete(u);
      console.warn('[longlink] profiles', describe(err));
      return;
    }
    if (!unknown.some((u) => this.names.get(u))) return;
    this.renderList();
    if (this.open) {
      this.renderPane();
      this.renderMessages('keep');
    }
  }

  /** A user as shown: its display name, else its id. */
  private nameOf(userId: string): string {
    return this.names.get(userId) || userId;
  }

  /** A conversation as shown: a 1:1 by its peer's name. */
  private titleOf(c: Conv): string {
    return c.peer !== undefined ? this.nameOf(c.peer) : c.title;
  }

  /** A conversation's last message in the list: "You: …" for ours, "bob: …" in groups. */
  private preview(m: ChatMessage): string {
    if (m.event) return eventText(m.event);
    if (m.recalledBy !== undefined) return 'message recalled';
    if (m.deletedBy !== undefined) return 'message deleted';
    const file = m.content?.attachments?.[0];
    const text = m.text !== '' ? m.text : file ? fileLabel(file) : m.content?.type !== undefined ? `[${m.content.type}]` : '';
    if (m.fromUser === this.me) return `You: ${text}`;
    return isGroupConversation(m.conversationId) ? `${m.fromUser}: ${text}` : text;
  }

  private conversationOf(s: StoredSend): string {
    if (s.conversationId !== undefined) return s.conversationId;
    if (s.groupId !== undefined) return groupConversationId(s.groupId);
    return directConversationId(this.me, s.to ?? '');
  }

  private itemOf(s: StoredSend): PendingItem {
    const item: PendingItem = {
      conversationId: this.conversationOf(s), clientMsgId: s.clientMsgId, from: this.me, text: s.text,
      sentAtMs: s.createdAtMs, status: 'pending', order: this.order++,
    };
    // Files uploaded by this page are shown at once; those of an earlier load, once the server has the message.
    const files = (s.content?.attachments ?? []).map((id) => this.files.known(id)).filter((f) => f !== undefined);
    if (files.length > 0) item.files = files;
    return item;
  }

  /** A send to show as pending until its 'sent' or 'failed' event (the same item if already shown). */
  private addPending(s: StoredSend): PendingItem {
    let item = this.pending.get(s.clientMsgId);
    if (!item) {
      item = this.itemOf(s);
      this.pending.set(s.clientMsgId, item);
    }
    return item;
  }

  private async loadFirstPage(open: Open): Promise<void> {
    open.loading = true;
    try {
      const page = await this.client.history(open.id, { limit: PAGE });
      if (this.open !== open) return;
      for (const m of page.messages) this.addItem(open, m);
      open.hasMore = page.hasMore;
      open.failed = false;
    } catch (err) {
      if (this.open !== open) return;
      // A conversation with no message yet has no history: start empty.
      if (!(err instanceof LonglinkError && errorName(err.code) === 'FORBIDDEN' && this.convs.get(open.id)?.lastSeq === 0)) {
        open.failed = true;
        this.errorNotice('Could not load messages', err);
      }
    } finally {
      open.loading = false;
    }
    if (this.open === open) this.renderMessages(open.unreadAfter !== undefined ? 'divider' : 'bottom');
  }

  /** Groups: how far each other member has read, for "read by N" (receipts keep it current). */
  private async loadReaders(conv: Conv): Promise<void> {
    const groupId = conv.groupId ?? groupIdOf(conv.id);
    if (groupId === undefined) return;
    try {
      const g = await this.client.groupInfo(groupId);
      for (const m of g.members) {
        if (m.userId !== this.me) conv.readers.set(m.userId, Math.max(conv.readers.get(m.userId) ?? 0, m.readSeq));
      }
      if (this.open?.id === conv.id) this.renderMessages('auto');
    } catch (err) {
      console.warn('[longlink] groupInfo', describe(err));
    }
  }

  private addItem(open: Open, m: ChatMessage): void {
    const e = m.event;
    if (m.hidden || e?.type === 'hidden') return; // deleted for this user: nothing shown
    if (e?.type === 'recalled' || e?.type === 'deleted' || e?.type === 'edited') {
      // A recall, delete or edit is a timeline entry: show its effect on the message, not a line.
      const target = e.targetSeq !== undefined ? open.items.get(e.targetSeq) : undefined;
      if (!target) return;
      if (e.type === 'edited') {
        target.text = e.text ?? '';
        target.edited = true;
        const reply = target.content?.replyToSeq;
        target.content = e.content;
        if (reply !== undefined) target.content = { ...e.content, replyToSeq: reply };
      } else {
        target.text = '';
        delete target.content;
        delete target.reply;
        if (e.type === 'recalled') target.recalled = true;
        else target.deleted = true;
      }
      return;
    }
    // Ours, still pending here (its ack not processed yet): the server has it, so it is shown by seq from now on.
    const pending = m.fromUser === this.me ? this.pending.get(m.clientMsgId) : undefined;
    if (pending) this.pending.delete(m.clientMsgId);
    const item: Item = open.items.get(m.seq) ?? pending ?? {
      clientMsgId: m.clientMsgId, from: m.fromUser, text: m.text, sentAtMs: m.sentAtMs, status: 'sent', order: 0,
    };
    item.seq = m.seq;
    item.status = 'sent';
    if (m.event) item.event = m.event;
    if (m.content) item.content = m.content;
    if (m.reply) item.reply = m.reply;
    if (m.editedAtMs !== undefined) item.edited = true;
    if (m.reactions) item.reactions = m.reactions;
    if (m.recalledBy !== undefined) {
      item.recalled = true;
      item.text = '';
    }
    if (m.deletedBy !== undefined) {
      item.deleted = true;
      item.text = '';
    }
    open.items.set(m.seq, item);
  }

  /** Mark the open conversation read (debounced), while the page is visible. */
  private readOpenSoon(): void {
    if (this.readTimer !== undefined) return;
    this.readTimer = setTimeout(() => {
      this.readTimer = undefined;
      const open = this.open;
      const conv = open && this.convs.get(open.id);
      if (!open || !conv || document.visibilityState !== 'visible' || this.client.state !== 'online') return;
      // Read up to the newest message of others on screen (or everything, when the server counts unread).
      let upTo = conv.unread > 0 ? conv.lastSeq : 0;
      for (const item of open.items.values()) if (item.from !== this.me && item.seq !== undefined && item.seq > upTo) upTo = item.seq;
      if (upTo <= conv.markedSeq) return;
      const before = conv.markedSeq;
      conv.markedSeq = upTo;
      conv.readSeq = Math.max(conv.readSeq, upTo);
      conv.unread = 0;
      this.renderList();
      this.client.markRead(conv.id, upTo).catch((err: unknown) => {
        // Not told: try again at the next chance (the list reloads after every sync, and reads the open conversation).
        if (conv.markedSeq === upTo) conv.markedSeq = before;
        console.warn('[longlink] markRead', describe(err));
      });
    }, 100);
  }

  private scheduleRefresh(delayMs: number): void {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      void this.refreshConversations();
    }, delayMs);
  }

  /** Watch the presence of every 1:1 peer (the server allows 100). */
  private watchPeers(): void {
    const peers = [...new Set([...this.convs.values()].map((c) => c.peer).filter((p): p is string => p !== undefined))].sort().slice(0, 100);
    const key = peers.join(',');
    if (key === this.watched || this.client.state !== 'online') return;
    this.watched = key;
    this.client.watchPresence(peers).then((states) => {
      for (const p of states) this.onPresence(p);
    }, (err: unknown) => {
      this.watched = '';
      console.warn('[longlink] watchPresence', describe(err));
    });
  }

  private notice(text: string): void {
    this.el.notice.textContent = text;
    this.el.notice.hidden = text === '';
    this.noticeUntilOnline = false;
  }

  /** An error worth showing; one that happened while not connected goes away when the connection is back. */
  private errorNotice(what: string, err: unknown): void {
    this.notice(`${what}: ${describe(err)}`);
    this.noticeUntilOnline = this.client.state !== 'online';
  }

  /** The banner about the connection, above both the list and the chat; '' hides it. */
  private connNotice(text: string): void {
    this.el.connNotice.textContent = text;
    this.el.connNotice.hidden = text === '';
  }

  // ---- rendering ---------------------------------------------------------------------------

  private typingText(conversationId: string): string {
    const who = [...(this.typing.get(conversationId)?.keys() ?? [])];
    if (who.length === 0) return '';
    return `${who.join(', ')} ${who.length === 1 ? 'is' : 'are'} typing…`;
  }

  /** A presence dot: green online, grey offline, hollow grey unknown (not yet told, or we are not connected). */
  private dot(conv: Conv): HTMLElement {
    if (conv.kind === 'group') return h('span', { class: 'dot group', title: 'group' });
    const online = this.client.state === 'online' && conv.peer !== undefined ? this.online.get(conv.peer) : undefined;
    if (online === undefined) {
      const why = this.client.state === 'online' ? 'presence not known yet' : 'presence unknown while not connected';
      return h('span', { class: 'dot', 'data-online': 'unknown', title: why });
    }
    return h('span', { class: 'dot', 'data-online': String(online), title: online ? 'online' : 'offline' });
  }

  private renderList(): void {
    const convs = [...this.convs.values()].sort((a, b) => b.lastAtMs - a.lastAtMs || a.title.localeCompare(b.title));
    const rows = convs.map((c) => this.listRow(c));
    // The rows stay in the page (so do focus, hover and a click in progress); they move only when the order changed.
    const shown = this.el.list.children;
    if (rows.length !== shown.length || rows.some((row, i) => row !== shown[i])) this.el.list.replaceChildren(...rows);
    this.renderTitle(convs);
  }

  /** The list's row of a conversation: made once, its content redrawn. */
  private listRow(c: Conv): HTMLLIElement {
    let row = this.rows.get(c.id);
    if (!row) {
      row = h('li', { 'data-conv': c.id, tabindex: 0 });
      this.rows.set(c.id, row);
    }
    row.className = `conv${this.open?.id === c.id ? ' active' : ''}`;
    row.dataset.title = c.title;
    const typing = this.typingText(c.id);
    row.replaceChildren(
      this.dot(c),
      h('span', { class: 'title' }, this.titleOf(c)),
      c.unread > 0 ? h('span', { class: 'unread', 'data-unread': c.unread, title: `${c.unread} unread` }, String(c.unread)) : h('span'),
      h('span', { class: `preview${typing ? ' typing' : ''}` }, typing || c.lastText));
    return row;
  }

  /** The tab's title counts what is unread, so it shows from other tabs: "(3) Longlink". */
  private renderTitle(convs: Conv[]): void {
    const unread = convs.reduce((sum, c) => sum + c.unread, 0);
    document.title = unread > 0 ? `(${unread}) ${TITLE}` : TITLE;
  }

  private renderPane(): void {
    const conv = this.open && this.convs.get(this.open.id);
    this.el.composer.hidden = !conv;
    this.el.paneDot.hidden = !conv;
    if (!conv) {
      this.el.title.textContent = 'Pick a conversation';
      this.el.typing.textContent = '';
      return;
    }
    this.el.title.textContent = conv.peer !== undefined && this.names.get(conv.peer) ? `${this.titleOf(conv)} (${conv.peer})` : conv.title;
    const dot = this.dot(conv);
    this.el.paneDot.className = dot.className;
    this.el.paneDot.title = dot.title;
    if (dot.dataset.online !== undefined) this.el.paneDot.dataset.online = dot.dataset.online;
    else delete this.el.paneDot.dataset.online;
    this.renderTyping();
  }

  private renderTyping(): void {
    this.el.typing.textContent = this.open ? this.typingText(this.open.id) : '';
  }

  /**
   * The mark of one of our messages: pending, failed, sent; in 1:1 delivered
   * (a device of the peer received it: the server's delivery cursor) and read;
   * in groups "read by N" (other members whose read cursor passed it).
   */
  private mark(conv: Conv, item: Item): HTMLElement {
    if (item.status === 'pending') return h('span', { class: 'mark', 'data-mark': 'pending', title: 'sending' }, '…');
    if (item.status === 'failed') return h('span', { class: 'mark', 'data-mark': 'failed', title: `not sent: ${item.error ?? ''}` }, '!');
    const seq = item.seq ?? 0;
    if (conv.kind === 'group') {
      const readers = [...conv.readers].filter(([, s]) => s >= seq).map(([u]) => u).sort();
      return readers.length > 0
        ? h('span', { class: 'mark', 'data-mark': 'read', 'data-readers': readers.length, title: `read by ${readers.join(', ')}` }, `✓✓ read by ${readers.length}`)
        : h('span', { class: 'mark', 'data-mark': 'sent', title: 'sent' }, '✓');
    }
    if (conv.peerReadSeq >= seq) return h('span', { class: 'mark', 'data-mark': 'read', title: 'read' }, '✓✓ read');
    if (conv.deliveredSeq >= seq) return h('span', { class: 'mark', 'data-mark': 'delivered', title: `delivered to ${conv.peer ?? 'them'}` }, '✓✓');
    return h('span', { class: 'mark', 'data-mark': 'sent', title: 'sent' }, '✓');
  }

  private messageItem(conv: Conv, item: Item): HTMLElement {
    if (item.event) return h('li', { class: 'msg system', 'data-seq': item.seq }, eventText(item.event));
    const own = item.from === this.me;
    const gone = item.recalled === true || item.deleted === true;
    const c = gone ? undefined : item.content;
    const mentionsMe = c?.mentionAll === true || c?.mentions?.includes(this.me) === true;
    const found = item.seq !== undefined && this.open?.found === item.seq;
    return h('li', {
      class: `msg ${own ? 'own' : 'theirs'}${gone ? ' recalled' : ''}${mentionsMe ? ' mentioned' : ''}${found ? ' found' : ''}`,
      'data-seq': item.seq, 'data-from': item.from, 'data-type': c?.type,
    },
    h('div', { class: 'bubble' },
      conv.kind === 'group' && !own && h('span', { class: 'from', title: item.from }, this.nameOf(item.from)),
      c?.forward && h('span', { class: 'forwarded' }, `Forwarded from ${c.forward.fromUser}`),
      !gone && item.reply && h('blockquote', { class: 'quote', 'data-reply-to': item.reply.seq },
        item.reply.gone ? 'message no longer available' : `${item.reply.fromUser}: ${item.reply.text || (item.reply.type ? `[${item.reply.type}]` : '')}`),
      c?.type !== undefined && h('span', { class: 'custom', 'data-content-type': c.type }, `[${c.type}] ${payloadPreview(c.payload)}`),
      h('span', { class: 'text' }, item.recalled ? 'message recalled' : item.deleted ? 'message deleted' : item.text),
      !gone && this.files.render(c?.attachments ?? item.files ?? []),
      item.edited && !gone && h('span', { class: 'edited' }, ' (edited)')),
    !gone && item.reactions && item.reactions.length > 0 && h('div', { class: 'reactions' },
      ...item.reactions.map((r) => h('button', {
        type: 'button', class: `reaction${r.users.includes(this.me) ? ' mine' : ''}`, 'data-react': item.seq, 'data-emoji': r.emoji,
        title: r.users.join(', ') + (r.count > r.users.length ? ` and ${r.count - r.users.length} more` : ''),
      }, `${r.emoji} ${r.count}`))),
    h('div', { class: 'meta' },
      h('time', { datetime: new Date(item.sentAtMs).toISOString() }, clockTime(item.sentAtMs)),
      own && this.mark(conv, item),
      item.seq !== undefined && !gone && h('button', { type: 'button', class: 'link react', 'data-react': item.seq, 'data-emoji': '👍', title: 'React 👍' }, '👍'),
      own && item.seq !== undefined && !gone && h('button', { type: 'button', class: 'link recall', 'data-recall': item.seq }, 'Recall')));
  }

  /**
   * Redraw the open conversation. `bottom` scrolls down; `keep` keeps the view
   * where it is (older loaded above); `auto` follows the bottom if it was
   * there; `divider` shows the first unread message (or the bottom).
   */
  private renderMessages(scroll: 'bottom' | 'keep' | 'auto' | 'divider'): void {
    const open = this.open;
    const conv = open && this.convs.get(open.id);
    const s = this.el.scroller;
    const fromBottom = s.scrollHeight - s.scrollTop;
    const atBottom = fromBottom - s.clientHeight < 40;
    if (!open || !conv) {
      this.el.messages.replaceChildren();
      this.el.older.hidden = true;
      return;
    }
    this.el.older.hidden = !open.hasMore;
    const pending = [...this.pending.values()].filter((p) => p.conversationId === open.id);
    const items = [...open.items.values(), ...pending].sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity) || a.order - b.order);
    const rows: HTMLElement[] = [];
    let divider: HTMLElement | undefined;
    for (const item of items) {
      const unread = open.unreadAfter !== undefined && item.seq !== undefined && item.seq > open.unreadAfter && item.from !== this.me && !item.event;
      if (unread && !divider) {
        divider = h('li', { class: 'divider', role: 'separator' }, h('span', {}, 'New messages'));
        rows.push(divider);
      }
      rows.push(this.messageItem(conv, item));
    }
    this.el.messages.replaceChildren(...rows);
    if (scroll === 'divider' && divider) s.scrollTop = Math.max(0, divider.offsetTop - 8);
    else if (scroll === 'bottom' || scroll === 'divider' || (scroll === 'auto' && atBottom)) s.scrollTop = s.scrollHeight;
    else if (scroll === 'keep') s.scrollTop = s.scrollHeight - fromBottom;
  }
}
