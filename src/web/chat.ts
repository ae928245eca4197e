// The chat view: conversation list, one open conversation, the composer and
// the connection state, all driven by the SDK client's events.
import {
  directConversationId, LonglinkError, errorName, groupIdOf, isGroupConversation,
  type LonglinkClient, type ChatMessage, type ClientState, type ConversationInfo,
  type PresenceInfo, type ReceiptInfo, type TimelineEventData,
} from '../client/browser.js';
import { byId, clockTime, h, randomId } from './dom.js';

/** Messages per history page. */
const PAGE = 30;
const TYPING_SHOWN_MS = 4000;
const TYPING_SENT_EVERY_MS = 2000;

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
  unread: number;
  /** Seqs counted as unread here since the server's list was loaded (it counted up to baseSeq). */
  baseSeq: number;
  counted: Set<number>;
  /** Direct: how far the peer has read, and how far our messages reached an online device of theirs. */
  peerReadSeq: number;
  deliveredSeq: number;
  /** Groups: how far other members have read (from receipts seen). */
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
  event?: TimelineEventData;
  /** Order of pending items (no seq yet). */
  order: number;
}

interface Open {
  id: string;
  /** By `s{seq}`, or `c{clientMsgId}` while a send is pending. */
  items: Map<string, Item>;
  hasMore: boolean;
  loading: boolean;
}

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
  }
}

export class Chat {
  private readonly convs = new Map<string, Conv>();
  private readonly online = new Map<string, boolean>();
  /** conversation → who is typing, until when. */
  private readonly typing = new Map<string, Map<string, number>>();
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
  private readonly unsubscribe: (() => void)[] = [];
  private readonly el = {
    me: byId('me-name'),
    conn: byId('conn'),
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
    private readonly me: string,
  ) {
    this.el.me.textContent = me;
    const c = client;
    this.unsubscribe.push(
      c.on('state', (state, detail) => this.showState(state, detail.retryInMs)),
      c.on('message', (m) => this.onMessage(m)),
      c.on('receipt', (r) => this.onReceipt(r)),
      c.on('recall', (r) => this.onRecall(r.conversationId, r.seq)),
      c.on('typing', (t) => this.onTyping(t.conversationId, t.userId)),
      c.on('presence', (p) => this.onPresence(p)),
      c.on('synced', () => this.scheduleRefresh(0)),
      c.on('kick', (err, reconnect) => this.notice(`${reconnect ? 'Disconnected' : 'Signed out'} by the server: ${describe(err)}`)),
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
    this.el.list.replaceChildren();
    this.el.messages.replaceChildren();
    this.el.composer.hidden = true;
    this.el.older.hidden = true;
    this.el.paneDot.hidden = true;
    this.el.title.textContent = 'Pick a conversation';
    this.el.typing.textContent = '';
    this.notice('');
  }

  // ---- user actions ------------------------------------------------------------

  async openConversation(id: string): Promise<void> {
    if (this.open?.id === id) return;
    const open: Open = { id, items: new Map(), hasMore: false, loading: true };
    this.open = open;
    this.notice('');
    this.renderList();
    this.renderPane();
    this.renderMessages('bottom');
    try {
      const page = await this.client.history(id, { limit: PAGE });
      if (this.open !== open) return;
      for (const m of page.messages) this.addItem(open, m);
      open.hasMore = page.hasMore;
    } catch (err) {
      // A conversation with no message yet has no history: start empty.
      if (!(err instanceof LonglinkError && errorName(err.code) === 'FORBIDDEN' && this.convs.get(id)?.lastSeq === 0)) {
        this.notice(`Could not load messages: ${describe(err)}`);
      }
    } finally {
      open.loading = false;
    }
    if (this.open !== open) return;
    this.renderMessages('bottom');
    this.readOpenSoon();
    this.el.text.focus();
  }

  async loadOlder(): Promise<void> {
    const open = this.open;
    if (!open || open.loading || !open.hasMore) return;
    const oldest = Math.min(...[...open.items.values()].map((i) => i.seq ?? Infinity));
    if (!Number.isFinite(oldest)) return;
    open.loading = true;
    try {
      const page = await this.client.history(open.id, { beforeSeq: oldest, limit: PAGE });
      if (this.open !== open) return;
      for (const m of page.messages) this.addItem(open, m);
      open.hasMore = page.hasMore;
      this.renderMessages('keep');
    } catch (err) {
      this.notice(`Could not load older messages: ${describe(err)}`);
    } finally {
      open.loading = false;
    }
  }

  send(text: string): void {
    const open = this.open;
    const conv = open && this.convs.get(open.id);
    if (!open || !conv || text.trim() === '') return;
    const clientMsgId = `web-${randomId()}`;
    const item: Item = { clientMsgId, from: this.me, text, sentAtMs: Date.now(), status: 'pending', order: this.order++ };
    open.items.set(`c${clientMsgId}`, item);
    this.renderMessages('bottom');
    const target = conv.kind === 'group' ? { groupId: conv.groupId ?? groupIdOf(conv.id) ?? '' } : { to: conv.peer ?? '' };
    this.client.send({ ...target, text, clientMsgId }).then((r) => {
      item.seq = r.seq;
      item.sentAtMs = r.sentAtMs;
      item.status = 'sent';
      if (open.items.get(`c${clientMsgId}`) === item) {
        open.items.delete(`c${clientMsgId}`);
        open.items.set(`s${r.seq}`, item);
      }
      if (r.seq > conv.lastSeq) {
        conv.lastSeq = r.seq;
        conv.lastText = `You: ${text}`;
        conv.lastAtMs = r.sentAtMs;
      }
      if (conv.peer !== undefined && this.online.get(conv.peer) === true) conv.deliveredSeq = Math.max(conv.deliveredSeq, r.seq);
      this.renderList();
      if (this.open === open) this.renderMessages('auto');
    }, (err: unknown) => {
      item.status = 'failed';
      item.error = describe(err);
      if (this.open === open) this.renderMessages('auto');
    });
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
      this.notice(`Could not recall: ${describe(err)}`);
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

  async createGroup(name: string, members: string[]): Promise<void> {
    try {
      const g = await this.client.createGroup(name, members);
      if (!this.convs.has(g.conversationId)) {
        this.convs.set(g.conversationId, this.newConv(g.conversationId, { kind: 'group', title: g.name, groupId: g.groupId }));
      }
      await this.openConversation(g.conversationId);
      this.scheduleRefresh(0);
    } catch (err) {
      this.notice(`Could not create the group: ${describe(err)}`);
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
          if (this.client.state === 'online') this.notice(`Could not load conversations: ${describe(err)}`);
        }
      } while (this.refreshAgain);
    })().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
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

  private onRecall(conversationId: string, seq: number): void {
    const conv = this.convs.get(conversationId);
    if (conv && conv.lastSeq === seq) conv.lastText = 'message recalled';
    const item = this.open?.id === conversationId ? this.open.items.get(`s${seq}`) : undefined;
    if (item) {
      item.recalled = true;
      item.text = '';
      this.renderMessages('auto');
    }
    this.renderList();
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
    const was = this.online.get(p.userId);
    this.online.set(p.userId, p.online);
    if (p.online && was !== true) {
      // Online now: what we sent while they were away reaches them in their sync.
      for (const conv of this.convs.values()) if (conv.peer === p.userId) conv.deliveredSeq = conv.lastSeq;
    }
    this.renderList();
    this.renderPane();
    if (this.open) this.renderMessages('auto');
  }

  private showState(state: ClientState, retryInMs?: number): void {
    clearInterval(this.stateTimer);
    this.stateTimer = undefined;
    const conn = this.el.conn;
    conn.dataset.state = state;
    if (state === 'reconnecting' && retryInMs !== undefined) {
      const at = Date.now() + retryInMs;
      const tick = () => {
        const s = Math.ceil((at - Date.now()) / 1000);
        conn.textContent = s > 0 ? `reconnecting in ${s} s` : 'reconnecting…';
        if (s <= 0) clearInterval(this.stateTimer);
      };
      tick();
      this.stateTimer = setInterval(tick, 250);
    } else {
      conn.textContent = state === 'idle' ? '' : state === 'connecting' ? 'connecting…' : state === 'reconnecting' ? 'reconnecting…' : state;
    }
    this.el.composer.classList.toggle('offline', state !== 'online');
  }

  // ---- state helpers -------------------------------------------------------------------

  private newConv(id: string, init: Pick<Conv, 'kind' | 'title'> & Partial<Conv>): Conv {
    return {
      id, lastSeq: 0, lastText: '', lastAtMs: Date.now(), markedSeq: 0, unread: 0, baseSeq: 0, counted: new Set(),
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
      conv.peerReadSeq = Math.max(conv.peerReadSeq, c.peerReadSeq ?? 0);
      conv.deliveredSeq = Math.max(conv.deliveredSeq, conv.peerReadSeq);
      this.convs.set(conv.id, conv);
    }
    this.watchPeers();
    this.renderList();
    if (this.open) {
      this.renderPane();
      this.renderMessages('auto');
      this.readOpenSoon();
    }
  }

  /** A conversation's last message in the list: "You: …" for ours, "bob: …" in groups. */
  private preview(m: ChatMessage): string {
    if (m.event) return eventText(m.event);
    if (m.recalledBy !== undefined) return 'message recalled';
    if (m.fromUser === this.me) return `You: ${m.text}`;
    return isGroupConversation(m.conversationId) ? `${m.fromUser}: ${m.text}` : m.text;
  }

  private addItem(open: Open, m: ChatMessage): void {
    if (m.event?.type === 'recalled') {
      // The recall itself is a timeline entry: show its effect on the message, not a line.
      const target = m.event.targetSeq !== undefined ? open.items.get(`s${m.event.targetSeq}`) : undefined;
      if (target) {
        target.recalled = true;
        target.text = '';
      }
      return;
    }
    const key = `s${m.seq}`;
    const pendingKey = `c${m.clientMsgId}`;
    const pending = m.fromUser === this.me ? open.items.get(pendingKey) : undefined;
    if (pending) open.items.delete(pendingKey);
    const existing = open.items.get(key) ?? pending;
    const item: Item = existing ?? {
      clientMsgId: m.clientMsgId, from: m.fromUser, text: m.text, sentAtMs: m.sentAtMs, status: 'sent', order: 0,
    };
    item.seq = m.seq;
    item.status = 'sent';
    if (m.event) item.event = m.event;
    if (m.recalledBy !== undefined) {
      item.recalled = true;
      item.text = '';
    }
    open.items.set(key, item);
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
      conv.unread = 0;
      this.renderList();
      this.client.markRead(conv.id, upTo).catch((err: unknown) => {
        // Not told: try again at the next chance (the list reloads after every sync, and reads the open conversation).
        if (conv.markedSeq === upTo) conv.markedSeq = before;
        console.warn('[longlink] markRead', describe(err));
      });
    }, 100);
  }

  /** The page became visible again: read what arrived meanwhile. */
  visible(): void {
    this.readOpenSoon();
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
  }

  // ---- rendering ---------------------------------------------------------------------------

  private typingText(conversationId: string): string {
    const who = [...(this.typing.get(conversationId)?.keys() ?? [])];
    if (who.length === 0) return '';
    return `${who.join(', ')} ${who.length === 1 ? 'is' : 'are'} typing…`;
  }

  private dot(conv: Conv): HTMLElement {
    if (conv.kind === 'group') return h('span', { class: 'dot group', title: 'group' });
    const online = conv.peer !== undefined && this.online.get(conv.peer) === true;
    return h('span', { class: 'dot', 'data-online': String(online), title: online ? 'online' : 'offline' });
  }

  private renderList(): void {
    const convs = [...this.convs.values()].sort((a, b) => b.lastAtMs - a.lastAtMs || a.title.localeCompare(b.title));
    this.el.list.replaceChildren(...convs.map((c) => {
      const typing = this.typingText(c.id);
      return h('li', {
        class: `conv${this.open?.id === c.id ? ' active' : ''}`, 'data-conv': c.id, 'data-title': c.title, tabindex: 0,
      },
      this.dot(c),
      h('span', { class: 'title' }, c.title),
      c.unread > 0 ? h('span', { class: 'unread', 'data-unread': c.unread, title: `${c.unread} unread` }, String(c.unread)) : h('span'),
      h('span', { class: `preview${typing ? ' typing' : ''}` }, typing || c.lastText));
    }));
  }

  private renderPane(): void {
    const conv = this.open && this.convs.get(this.open.id);
    this.el.composer.hidden = !conv;
    if (!conv) return;
    this.el.title.textContent = conv.title;
    const dot = this.dot(conv);
    this.el.paneDot.className = dot.className;
    this.el.paneDot.title = dot.title;
    if (dot.dataset.online !== undefined) this.el.paneDot.dataset.online = dot.dataset.online;
    else delete this.el.paneDot.dataset.online;
    this.el.paneDot.hidden = false;
    this.renderTyping();
  }

  private renderTyping(): void {
    this.el.typing.textContent = this.open ? this.typingText(this.open.id) : '';
  }

  /** The mark of one of our messages: pending, failed, sent, delivered, read. */
  private mark(conv: Conv, item: Item): HTMLElement {
    if (item.status === 'pending') return h('span', { class: 'mark', 'data-mark': 'pending', title: 'sending' }, '…');
    if (item.status === 'failed') return h('span', { class: 'mark', 'data-mark': 'failed', title: `not sent: ${item.error ?? ''}` }, '!');
    const seq = item.seq ?? 0;
    if (conv.kind === 'group') {
      const readers = [...conv.readers].filter(([, s]) => s >= seq).map(([u]) => u);
      return readers.length > 0
        ? h('span', { class: 'mark', 'data-mark': 'read', title: `read by ${readers.join(', ')}` }, `✓✓ ${readers.length}`)
        : h('span', { class: 'mark', 'data-mark': 'sent', title: 'sent' }, '✓');
    }
    if (conv.peerReadSeq >= seq) return h('span', { class: 'mark', 'data-mark': 'read', title: 'read' }, '✓✓ read');
    if (conv.deliveredSeq >= seq) return h('span', { class: 'mark', 'data-mark': 'delivered', title: `delivered (${conv.peer ?? ''} is online)` }, '✓✓');
    return h('span', { class: 'mark', 'data-mark': 'sent', title: 'sent' }, '✓');
  }

  /** Redraw the open conversation; `bottom` scrolls down, `keep` keeps the view where it is (older loaded above), `auto` follows the bottom if it was there. */
  private renderMessages(scroll: 'bottom' | 'keep' | 'auto'): void {
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
    const items = [...open.items.values()].sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity) || a.order - b.order);
    this.el.messages.replaceChildren(...items.map((item) => {
      if (item.event) {
        return h('li', { class: 'msg system', 'data-seq': item.seq }, eventText(item.event));
      }
      const own = item.from === this.me;
      return h('li', {
        class: `msg ${own ? 'own' : 'theirs'}${item.recalled ? ' recalled' : ''}`,
        'data-seq': item.seq, 'data-from': item.from,
      },
      h('div', { class: 'bubble' },
        conv.kind === 'group' && !own && h('span', { class: 'from' }, item.from),
        h('span', { class: 'text' }, item.recalled ? 'message recalled' : item.text)),
      h('div', { class: 'meta' },
        h('time', { datetime: new Date(item.sentAtMs).toISOString() }, clockTime(item.sentAtMs)),
        own && this.mark(conv, item),
        own && item.seq !== undefined && !item.recalled && h('button', { type: 'button', class: 'link recall', 'data-recall': item.seq }, 'Recall')));
    }));
    if (scroll === 'bottom' || (scroll === 'auto' && atBottom)) s.scrollTop = s.scrollHeight;
    else if (scroll === 'keep') s.scrollTop = s.scrollHeight - fromBottom;
  }
}
