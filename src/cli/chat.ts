// `longlink chat`: an interactive terminal chat, built on the SDK like every
// other client command. On a terminal it has a prompt with line editing, tab
// completion and a typing indicator; with piped stdin it reads one command or
// message per line (how the tests drive it) and prints plain lines.
import * as readline from 'node:readline';
import {
  createClient, directConversationId, directMembers, groupIdOf, isGroupConversation, isValidId, LonglinkError,
  type ChatMessage, type ClientState, type ConversationInfo, type LonglinkClient, type ReactionData, type SendResult, type TimelineEventData,
} from '../client/index.js';
import { clientFlags, connectOptions, type ClientFlags } from './client-commands.js';

/** Messages per history page (on /open and /more). */
const PAGE = 20;
/** Send a typing event at most this often while the user types (the server drops more than one a second). */
const TYPING_SEND_EVERY_MS = 1500;
/** Show "X is typing" for this long after the peer's last typing event. */
const TYPING_SHOW_MS = 4000;
/** Notices of other conversations are gathered this long, so a burst prints one line per conversation. */
const NOTICE_DELAY_MS = 200;
/** Reads of the open conversation are batched this long before markRead. */
const READ_DELAY_MS = 150;
/** On quit, wait this long for the server to ack messages still being sent. */
const QUIT_SEND_WAIT_MS = 10_000;
/** On switching conversations, wait this long for the acks of what was just sent. */
const SWITCH_SEND_WAIT_MS = 2000;
/**
 * Reconnect backoff cap (the SDK's default is 30 s, for crowds of clients): a
 * person is waiting here, so once the server is back the chat is too within a
 * few seconds. Delays are still random under the cap (full jitter).
 */
const MAX_RECONNECT_DELAY_MS = 3000;

const COMMANDS = ['/list', '/open', '/to', '/more', '/group', '/recall', '/reply', '/edit', '/delete', '/react', '/block', '/unblock', '/name', '/help', '/quit'];
const HELP = `commands:
  /list                     conversations, with unread counts
  /open N | USER | g:GROUP  open a conversation (N from /list): recent history, marked read
  /to USER                  open the 1:1 conversation with USER
  /more                     older messages of the open conversation
  /group create NAME u1,u2  create a group and open it
  /group info | add u1,u2 | remove u1,u2 | leave      (the open group)
  /recall SEQ               recall message #SEQ of the open conversation
  /reply SEQ TEXT           reply to #SEQ (it is quoted)
  /edit SEQ TEXT            edit your message #SEQ
  /delete SEQ [me]          delete #SEQ for everyone (a tombstone), or with "me" for yourself only
  /react SEQ EMOJI          react to #SEQ (again: take it back)
  /block USER | /unblock USER
  /name NAME                your display name, shown to others
  /quit                     exit (also Ctrl-D, or the end of piped input)
anything else is sent to the open conversation (start it with // to send a leading /).`;

/** A problem with what the user typed: printed as is, the chat goes on. */
class InputError extends Error {}

interface OpenConversation {
  id: string;
  title: string;
  peer?: string;
  groupId?: string;
  /** History printed; until then incoming messages wait in `early`. */
  ready: boolean;
  early: ChatMessage[];
  /** Newest seq the history showed: incoming messages at or below it were printed already. */
  floor: number;
  /** Seqs printed besides the history (own sends, incoming). */
  shown: Set<number>;
  /** Oldest seq printed from history, for /more. */
  oldest?: number;
  hasMore: boolean;
  /** This user's newest message here, and the newest one already reported as seen. */
  mine: number;
  seenReported: number;
}

interface Known {
  lastSeq: number;
  unread: number;
}

export async function runChat(flags: Record<string, string | undefined>): Promise<number> {
  return new Chat(clientFlags(flags, 'chat')).run();
}

class Chat {
  private readonly me: string;
  private readonly client: LonglinkClient;
  private readonly tty: boolean;
  private rl: readline.Interface | undefined;
  private open: OpenConversation | undefined;
  /** Conversations as of the last list, moved on by messages that arrived since. */
  private readonly known = new Map<string, Known>();
  private listed: string[] = [];
  private listTaken = false;
  private readonly groupNames = new Map<string, string>();
  /** Display names read (empty: none set). */
  private readonly names = new Map<string, string>();
  /** The latest reactions seen per message (`conversation#seq`), for /react to take one back. */
  private readonly reactionsOf = new Map<string, ReactionData[]>();
  private readonly sending = new Set<Promise<void>>();
  private readonly notices = new Map<string, { last: ChatMessage; count: number }>();
  private noticeTimer: ReturnType<typeof setTimeout> | undefined;
  private readTarget: { id: string; seq: number } | undefined;
  private readTimer: ReturnType<typeof setTimeout> | undefined;
  /** Who types in the open conversation, until when. */
  private readonly typers = new Map<string, number>();
  private typingTimer: ReturnType<typeof setTimeout> | undefined;
  private lastTypingSent = 0;
  private readonly presence = new Map<string, boolean>();
  /** Lost the connection; 'reconnected' is news when it is back. */
  private down = false;
  /** Why the server closed the connection, when it said (a kick that allows reconnecting). */
  private lostBecause: string | undefined;
  /** Connected once: state changes are news from then on. */
  private started = false;
  private readonly queue: string[] = [];
  private pumping = false;
  private inputEnded = false;
  private quitting = false;
  private closing = false;
  private finish: (code: number) => void = () => undefined;
  private stopWaiting: () => void = () => undefined;

  constructor(private readonly f: ClientFlags) {
    this.me = f.user;
    this.tty = Boolean(process.stdin.isTTY && process.stdout.isTTY);
    this.client = createClient({
      ...connectOptions(f), autoSync: true, clientVersion: 'longlink-chat', maxBackoffMs: MAX_RECONNECT_DELAY_MS,
    });
  }

  async run(): Promise<number> {
    const c = this.client;
    c.on('message', (m) => this.onMessage(m));
    c.on('typing', (t) => this.onTyping(t.conversationId, t.userId));
    c.on('reactions', (r) => {
      this.reactionsOf.set(`${r.conversationId}#${r.seq}`, r.reactions);
      if (this.open?.id === r.conversationId) this.say(`* #${r.seq} reactions: ${r.reactions.length > 0 ? reactionsText(r.reactions) : 'none'}`);
    });
    c.on('receipt', (r) => this.onReceipt(r.conversationId, r.userId, r.seq));
    c.on('presence', (p) => this.onPresence(p.userId, p.online));
    c.on('state', (state) => this.onState(state));
    c.on('broadcast', (b) => this.say(`📢 ${clock(b.sentAtMs)} ${clean(b.text)}`));
    c.on('error', (err) => this.say(`! ${err.codeName}: ${err.message}`));
    c.on('kick', (err, reconnect) => {
      // A kick that allows reconnecting (the server shutting down, a gateway
      // handing its clients over) is a lost connection, said once by onState.
      if (reconnect) this.lostBecause = err.codeName;
      else {
        this.say(`! signed out by the server (${err.codeName}): ${err.message}`);
        void this.quit(1);
      }
    });
    try {
      await c.connect();
    } catch (err) {
      console.error(`longlink: cannot connect as ${this.me} (${this.f.gateway ?? this.f.server}): ${describe(err)}`);
      await c.close();
      return 1;
    }
    this.started = true;
    const done = new Promise<number>((resolve) => {
      this.finish = resolve;
    });
    this.say(`longlink chat: ${this.me} (device ${this.f.device}) on ${this.f.gateway ?? this.f.server}. /help for commands.`);
    try {
      await this.showList();
    } catch (err) {
      this.say(`! cannot list conversations: ${describe(err)}`);
    }
    this.startInput();
    return done;
  }

  // ---- output ----------------------------------------------------------------

  /** Print a line (on a terminal: above the prompt, keeping what the user is typing). */
  private say(text: string): void {
    if (this.rl && this.tty && !this.quitting) {
      readline.moveCursor(process.stdout, 0, -this.rl.getCursorPos().rows);
      readline.cursorTo(process.stdout, 0);
      readline.clearScreenDown(process.stdout);
      process.stdout.write(`${text}\n`);
      this.rl.prompt(true);
    } else {
      process.stdout.write(`${text}\n`);
    }
  }

  private promptText(): string {
    const now = Date.now();
    const typing = [...this.typers].filter(([, until]) => until > now).map(([u]) => u);
    const who = typing.length > 0 ? `(${typing.join(', ')} typing…) ` : '';
    const offline = this.down ? '(offline) ' : '';
    return `${offline}${who}${this.open ? this.open.title : ''}> `;
  }

  private refreshPrompt(): void {
    if (!this.rl || !this.tty || this.quitting) return;
    this.rl.setPrompt(this.promptText());
    this.rl.prompt(true);
  }

  private title(conversationId: string): string {
    if (isGroupConversation(conversationId)) {
      const name = this.groupNames.get(conversationId);
      return name ? `#${clean(name)}` : conversationId;
    }
    return this.peerOf(conversationId) ?? conversationId;
  }

  /** What to type after /open to get here. */
  private handle(conversationId: string): string {
    return this.peerOf(conversationId) ?? conversationId;
  }

  private peerOf(conversationId: string): string | undefined {
    const parts = conversationId.split(':');
    if (parts.length !== 3 || parts[0] !== 'u') return undefined;
    return parts[1] === this.me ? parts[2] : parts[1];
  }

  // ---- input -----------------------------------------------------------------

  private startInput(): void {
    const rl = readline.createInterface({
      input: process.stdin,
      output: this.tty ? process.stdout : undefined,
      terminal: this.tty,
      historySize: 200,
      completer: this.tty ? (line: string) => this.complete(line) : undefined,
    });
    this.rl = rl;
    rl.on('line', (line) => {
      if (this.quitting) return;
      if (this.tty && isMessage(line) && this.open) {
        // Replace the echoed input with the message as sent (printed on the server's ack).
        const columns = process.stdout.columns || 80;
        readline.moveCursor(process.stdout, 0, -Math.max(1, Math.ceil((rl.getPrompt().length + line.length) / columns)));
        readline.clearScreenDown(process.stdout);
      }
      this.queue.push(line);
      void this.pump();
    });
    rl.on('close', () => {
      this.inputEnded = true;
      void this.pump();
    });
    // Ctrl-C quits; a second one while quit waits for acks stops waiting.
    rl.on('SIGINT', () => this.interrupt());
    process.on('SIGINT', () => this.interrupt());
    process.on('SIGTERM', () => this.interrupt());
    if (this.tty) {
      process.stdin.on('keypress', (_s: string | undefined, key: { name?: string } | undefined) => this.onKey(key?.name));
      this.refreshPrompt();
    }
  }

  /** Lines are handled one at a time, in order: `/open bob` completes before the text after it is sent. */
  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    while (this.queue.length > 0 && !this.quitting) {
      const line = this.queue.shift()!;
      try {
        await this.handleLine(line);
      } catch (err) {
        this.say(err instanceof InputError ? err.message : `! ${describe(err)}`);
      }
      if (this.tty && !this.quitting) this.refreshPrompt();
    }
    this.pumping = false;
    if (this.inputEnded && this.queue.length === 0) await this.quit(0);
  }

  private async handleLine(raw: string): Promise<void> {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '') return;
    if (!isMessage(line)) return this.command(line.trim());
    this.sendText(line.startsWith('//') ? line.slice(1) : line);
  }

  private onKey(name: string | undefined): void {
    const o = this.open;
    const typed = this.rl?.line ?? '';
    if (!o || name === 'return' || name === 'enter' || typed === '' || !isMessage(typed)) return;
    const now = Date.now();
    if (now - this.lastTypingSent < TYPING_SEND_EVERY_MS || this.client.state !== 'online') return;
    this.lastTypingSent = now;
    this.client.typing(o.id);
  }

  private complete(line: string): [string[], string] {
    const m = /^(\/\S*)(\s+)?(\S*)$/.exec(line);
    if (!m) return [[], line];
    if (!m[2]) return [COMMANDS.filter((c) => c.startsWith(m[1]!)).map((c) => `${c} `), line];
    if (m[1] !== '/open' && m[1] !== '/to') return [[], line];
    const names = [...new Set([...this.known.keys()].map((id) => this.handle(id)))];
    const word = m[3] ?? '';
    return [names.filter((n) => n.startsWith(word)), word];
  }

  private async command(line: string): Promise<void> {
    const [name = '', ...args] = line.slice(1).split(/\s+/);
    switch (name.toLowerCase()) {
      case 'help':
      case 'h':
      case '?':
        this.say(HELP);
        return;
      case 'list':
      case 'ls':
      case 'l':
        return this.showList();
      case 'open':
      case 'o':
        if (!args[0]) throw new InputError('usage: /open N | USER | g:GROUP');
        return this.openConversation(this.resolve(args[0]));
      case 'to':
        if (!args[0] || !isValidId(args[0])) throw new InputError('usage: /to USER');
        return this.openConversation(directConversationId(this.me, args[0]));
      case 'more':
      case 'm':
        return this.more();
      case 'group':
      case 'g':
        return this.group(args);
      case 'recall': {
        const o = this.needOpen();
        const seq = Number(args[0]);
        if (!Number.isInteger(seq) || seq < 1) throw new InputError('usage: /recall SEQ (the #number before a message)');
        await this.client.recall(o.id, seq); // the "recalled" event prints when it comes back
        return;
      }
      case 'reply':
      case 'edit': {
        const o = this.needOpen();
        const seq = Number(args[0]);
        const text = args.slice(1).join(' ');
        if (!Number.isInteger(seq) || seq < 1 || text === '') throw new InputError(`usage: /${name} SEQ TEXT`);
        if (name === 'edit') await this.client.edit(o.id, seq, { text }); // the "edited" event prints when it comes back
        else this.sendText(text, seq);
        return;
      }
      case 'delete': {
        const o = this.needOpen();
        const seq = Number(args[0]);
        if (!Number.isInteger(seq) || seq < 1 || (args[1] !== undefined && args[1] !== 'me')) throw new InputError('usage: /delete SEQ [me]');
        if (args[1] === 'me') {
          await this.client.deleteForMe(o.id, seq);
          this.say(`* #${seq} deleted for you`);
        } else await this.client.deleteMessage(o.id, seq);
        return;
      }
      case 'react': {
        const o = this.needOpen();
        const seq = Number(args[0]);
        if (!Number.isInteger(seq) || seq < 1 || !args[1]) throw new InputError('usage: /react SEQ EMOJI');
        const mine = this.reactionsOf.get(`${o.id}#${seq}`)?.find((r) => r.emoji === args[1])?.users.includes(this.me) === true;
        if (mine) await this.client.unreact(o.id, seq, args[1]);
        else await this.client.react(o.id, seq, args[1]);
        return;
      }
      case 'block':
      case 'unblock': {
        if (!args[0] || !isValidId(args[0])) throw new InputError(`usage: /${name} USER`);
        const blocked = name === 'block' ? await this.client.block(args[0]) : await this.client.unblock(args[0]);
        this.say(`* you block: ${blocked.length > 0 ? blocked.join(', ') : 'nobody'}`);
        return;
      }
      case 'name': {
        const p = await this.client.setProfile({ name: args.join(' ') });
        this.say(`* your name: ${p.name || '(none)'}`);
        return;
      }
      case 'quit':
      case 'exit':
      case 'q':
        return this.quit(0);
      default:
        throw new InputError(`unknown command /${name}: /help lists them`);
    }
  }

  private needOpen(): OpenConversation {
    if (!this.open) throw new InputError('no conversation is open: /open N (from /list), /open USER or /to USER');
    return this.open;
  }

  private resolve(arg: string): string {
    if (/^\d+$/.test(arg)) {
      const id = this.listed[Number(arg) - 1];
      if (!id) throw new InputError(`no conversation ${arg} in the list: /list shows them`);
      return id;
    }
    if (arg.startsWith('g:')) {
      if (!isGroupConversation(arg)) throw new InputError(`not a group id: ${arg}`);
      return arg;
    }
    if (arg.startsWith('u:')) {
      const parts = arg.split(':'); // either order of the two users
      const pair = parts.length === 3 ? directMembers(directConversationId(parts[1]!, parts[2]!)) : undefined;
      if (!pair || !pair.includes(this.me)) throw new InputError(`not one of your conversations: ${arg}`);
      return directConversationId(pair[0], pair[1]);
    }
    if (arg.startsWith('#')) {
      const matches = [...this.groupNames].filter(([, n]) => n === arg.slice(1)).map(([id]) => id);
      if (matches.length === 1) return matches[0]!;
      throw new InputError(matches.length === 0 ? `no group named ${arg} in the list` : `several groups are named ${arg}: use /open g:ID`);
    }
    if (!isValidId(arg)) throw new InputError(`not a user id: ${arg}`);
    return directConversationId(this.me, arg);
  }

  // ---- conversations ---------------------------------------------------------

  private async showList(): Promise<void> {
    const list = await this.client.conversations();
    this.takeList(list);
    if (list.length === 0) {
      this.say('no conversations yet: /to USER starts one, /help lists the commands');
      return;
    }
    const rows = list.map((c, i) => ({
      index: `${String(i + 1).padStart(3)}.`,
      name: this.title(c.conversationId),
      unread: c.unread > 0 ? `${c.unread} unread` : '',
      last: c.lastMessage ? `${clock(c.lastMessage.sentAtMs)} ${oneLine(this.body(c.lastMessage), 60)}` : '',
    }));
    const nameWidth = Math.min(24, Math.max(...rows.map((r) => r.name.length)));
    const unreadWidth = Math.max(...rows.map((r) => r.unread.length));
    this.say(`conversations (${list.length}):`);
    for (const r of rows) this.say(`${r.index} ${r.name.padEnd(nameWidth)}  ${r.unread.padEnd(unreadWidth)}  ${r.last}`.trimEnd());
  }

  private takeList(list: ConversationInfo[]): void {
    this.listed = list.map((c) => c.conversationId);
    for (const c of list) {
      if (c.kind === 'group' && c.name) this.groupNames.set(c.conversationId, c.name);
      const k = this.known.get(c.conversationId);
      // Messages that arrived after the server made this list keep their count.
      if (!k || c.lastSeq >= k.lastSeq) this.known.set(c.conversationId, { lastSeq: c.lastSeq, unread: c.unread });
    }
    this.listTaken = true;
  }

  private async openConversation(id: string): Promise<void> {
    await this.settleSends();
    await this.flushRead();
    const peer = this.peerOf(id);
    const o: OpenConversation = {
      id, title: this.title(id), peer, groupId: groupIdOf(id),
      ready: false, early: [], floor: 0, shown: new Set(), hasMore: false, mine: 0, seenReported: 0,
    };
    const previous = this.open;
    this.open = o;
    this.notices.delete(id);
    this.typers.clear();
    const watching = peer !== undefined && peer !== this.me ? [peer] : [];
    const presence = previous?.peer !== undefined || watching.length > 0
      ? this.client.watchPresence(watching).catch(() => [])
      : Promise.resolve([]);
    let page: { messages: ChatMessage[]; hasMore: boolean };
    try {
      page = await this.client.history(id, { limit: PAGE });
    } catch (err) {
      if (err instanceof LonglinkError && (err.codeName === 'FORBIDDEN' || err.codeName === 'NOT_FOUND')) {
        this.open = previous?.id === id ? undefined : previous;
        throw new InputError(`cannot open ${o.title}: ${err.message}`);
      }
      this.say(`! history of ${o.title} is unavailable now (${describe(err)})`);
      page = { messages: [], hasMore: false };
    }
    // Display names of whoever wrote on this page (and the peer), read once each.
    const unnamed = [...new Set([...(peer !== undefined ? [peer] : []), ...page.messages.map((m) => m.fromUser)])]
      .filter((u) => u !== '' && !this.names.has(u)).slice(0, 100);
    if (unnamed.length > 0) {
      for (const prof of await this.client.profiles(unnamed).catch(() => [])) this.names.set(prof.userId, prof.name);
    }
    const p = (await presence).find((x) => x.userId === peer);
    if (p) this.presence.set(p.userId, p.online);
    this.say(`── ${o.title}${o.groupId ? ` (g:${o.groupId})` : ''}${p ? (p.online ? ' · online' : ' · offline') : ''} ──`);
    if (page.hasMore) this.say('   (earlier messages: /more)');
    if (page.messages.length === 0) this.say('   (no messages yet: type to send)');
    for (const m of page.messages) {
      this.say(this.format(m));
      if (m.fromUser === this.me && !m.event) o.mine = m.seq;
    }
    o.oldest = page.messages[0]?.seq;
    o.hasMore = page.hasMore;
    o.floor = page.messages.at(-1)?.seq ?? 0;
    o.ready = true;
    for (const m of o.early.sort((a, b) => a.seq - b.seq)) this.showInline(o, m);
    o.early = [];
    const k = this.known.get(id);
    if (k) k.unread = 0;
    if (o.floor > 0) {
      try {
        await this.client.markRead(id, 0);
      } catch {
        // Offline: it stays unread on the server; the next open marks it.
      }
    }
    this.refreshPrompt();
  }

  private async more(): Promise<void> {
    const o = this.needOpen();
    if (!o.hasMore || o.oldest === undefined) {
      this.say('   (no earlier messages)');
      return;
    }
    const page = await this.client.history(o.id, { beforeSeq: o.oldest, limit: PAGE });
    this.say(`── earlier in ${o.title} ──`);
    for (const m of page.messages) this.say(this.format(m));
    o.oldest = page.messages[0]?.seq ?? o.oldest;
    o.hasMore = page.hasMore && page.messages.length > 0;
    this.say(o.hasMore ? '   (more: /more)' : '   (the beginning of the conversation)');
  }

  private async group(args: string[]): Promise<void> {
    const [action = '', ...rest] = args;
    const users = (s: string | undefined) => (s ?? '').split(',').map((u) => u.trim()).filter(Boolean);
    if (action === 'create') {
      if (rest.length === 0) throw new InputError('usage: /group create NAME u1,u2');
      const members = rest.length > 1 ? users(rest.at(-1)) : [];
      const name = (rest.length > 1 ? rest.slice(0, -1) : rest).join(' ');
      const g = await this.client.createGroup(name, members);
      this.groupNames.set(g.conversationId, g.name);
      const others = g.members.map((m) => m.userId).filter((u) => u !== this.me);
      this.say(`created #${clean(g.name)} (g:${g.groupId})${others.length ? ` with ${others.join(', ')}` : ''}`);
      return this.openConversation(g.conversationId);
    }
    const o = this.needOpen();
    if (!o.groupId) throw new InputError('the open conversation is not a group');
    switch (action) {
      case 'info': {
        const g = await this.client.groupInfo(o.groupId);
        this.say(`#${clean(g.name)} (g:${g.groupId}), owner ${g.owner}${g.mutedAll ? ', everyone muted' : ''}${g.dismissed ? ', dismissed' : ''}`);
        for (const m of g.members) this.say(`   ${m.userId}${m.role !== 'member' ? ` (${m.role})` : ''}${m.muted ? ' muted' : ''}`);
        return;
      }
      case 'add':
      case 'remove': {
        const list = users(rest[0]);
        if (list.length === 0) throw new InputError(`usage: /group ${action} u1,u2`);
        await (action === 'add' ? this.client.addMembers(o.groupId, list) : this.client.removeMembers(o.groupId, list));
        return; // the members event prints when it comes back
      }
      case 'leave':
        await this.client.leaveGroup(o.groupId);
        return;
      default:
        throw new InputError('usage: /group create NAME u1,u2 | info | add u1,u2 | remove u1,u2 | leave');
    }
  }

  // ---- sending ---------------------------------------------------------------

  /** Send to the open conversation (`replyTo`: as a reply to that seq). */
  private sendText(text: string, replyTo?: number): void {
    const o = this.needOpen();
    const target = o.groupId !== undefined ? { groupId: o.groupId } : { to: o.peer! };
    if (this.client.state !== 'online') this.say(`… offline: "${oneLine(text, 40)}" is sent when the connection is back`);
    const p = this.client.send({ ...target, text, ...(replyTo !== undefined ? { replyTo } : {}) }).then(
      (ack) => this.onSent(ack, text, replyTo),
      (err: unknown) => {
        if (!this.closing) this.say(`! not sent (${describe(err)}): ${oneLine(text, 60)}`);
      },
    );
    this.sending.add(p);
    void p.finally(() => this.sending.delete(p));
  }

  /** Before switching conversations, let what was just sent show up where it was typed (bounded; not when offline). */
  private async settleSends(): Promise<void> {
    if (this.sending.size === 0 || this.client.state !== 'online') return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.allSettled([...this.sending]),
      new Promise((r) => {
        timer = setTimeout(r, SWITCH_SEND_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
  }

  private onSent(ack: SendResult, text: string, replyTo?: number): void {
    const m: ChatMessage = {
      conversationId: ack.conversationId, seq: ack.seq, serverMsgId: ack.serverMsgId, fromUser: this.me,
      fromDevice: this.f.device, clientMsgId: ack.clientMsgId, text: ack.text ?? text, sentAtMs: ack.sentAtMs,
    };
    if (replyTo !== undefined) m.content = { replyToSeq: replyTo };
    const o = this.open;
    if (o?.id === ack.conversationId) {
      o.shown.add(ack.seq);
      o.mine = Math.max(o.mine, ack.seq);
      this.say(this.format(m));
    } else {
      this.say(`(to ${this.title(ack.conversationId)}) ${this.format(m)}`);
    }
  }

  // ---- receiving -------------------------------------------------------------

  private onMessage(m: ChatMessage): void {
    if (m.event?.type === 'group_created' && m.event.name) this.groupNames.set(m.conversationId, m.event.name);
    // Before the first list, and up to its last seq, messages are counted in the list already.
    const k = this.known.get(m.conversationId) ?? { lastSeq: 0, unread: 0 };
    this.known.set(m.conversationId, k);
    const fresh = this.listTaken && m.seq > k.lastSeq;
    k.lastSeq = Math.max(k.lastSeq, m.seq);
    const o = this.open;
    if (o?.id === m.conversationId) {
      if (o.ready) this.showInline(o, m);
      else o.early.push(m);
      return;
    }
    if (!fresh) return;
    const from = m.event ? m.event.actor : m.fromUser;
    if (from === this.me) return;
    if (!m.event) k.unread++;
    const n = this.notices.get(m.conversationId);
    if (n) {
      n.last = m;
      n.count++;
    } else this.notices.set(m.conversationId, { last: m, count: 1 });
    this.noticeTimer ??= setTimeout(() => this.flushNotices(), NOTICE_DELAY_MS);
  }

  private flushNotices(): void {
    this.noticeTimer = undefined;
    for (const [id, n] of this.notices) {
      const unread = this.known.get(id)?.unread ?? 0;
      const where = isGroupConversation(id) ? `${this.title(id)} ` : '';
      const more = n.count > 1 ? ` (+${n.count - 1} more)` : '';
      this.say(`• ${where}${oneLine(this.body(n.last), 60)}${more}  [${unread > 0 ? `${unread} unread, ` : ''}/open ${this.handle(id)}]`);
    }
    this.notices.clear();
  }

  private showInline(o: OpenConversation, m: ChatMessage): void {
    if (m.seq <= o.floor || o.shown.has(m.seq)) return;
    o.shown.add(m.seq);
    if (this.typers.delete(m.fromUser)) this.refreshPrompt();
    this.say(this.format(m));
    if (m.fromUser !== this.me) this.scheduleRead(o.id, m.seq);
    else if (!m.event) o.mine = Math.max(o.mine, m.seq);
  }

  private scheduleRead(id: string, seq: number): void {
    if (this.readTarget && this.readTarget.id !== id) void this.flushRead();
    this.readTarget = { id, seq: Math.max(seq, this.readTarget?.seq ?? 0) };
    this.readTimer ??= setTimeout(() => void this.flushRead(), READ_DELAY_MS);
  }

  private async flushRead(): Promise<void> {
    clearTimeout(this.readTimer);
    this.readTimer = undefined;
    const t = this.readTarget;
    if (!t || this.client.state !== 'online') return; // kept until back online
    this.readTarget = undefined;
    try {
      await this.client.markRead(t.id, t.seq);
    } catch {
      // Lost with the connection: the next open marks the conversation read.
    }
  }

  private onTyping(conversationId: string, userId: string): void {
    if (userId === this.me || this.open?.id !== conversationId) return;
    const now = Date.now();
    const shownUntil = this.typers.get(userId) ?? 0;
    this.typers.set(userId, now + TYPING_SHOW_MS);
    if (this.tty) {
      this.refreshPrompt();
      clearTimeout(this.typingTimer);
      this.typingTimer = setTimeout(() => this.refreshPrompt(), TYPING_SHOW_MS + 50);
      this.typingTimer.unref();
    } else if (shownUntil < now) {
      this.say(`… ${userId} is typing`);
    }
  }

  private onReceipt(conversationId: string, userId: string, seq: number): void {
    if (userId === this.me) {
      const k = this.known.get(conversationId);
      if (k && seq >= k.lastSeq) k.unread = 0; // read on another device
      return;
    }
    const o = this.open;
    if (o?.id !== conversationId || o.mine === 0 || seq < o.mine || o.seenReported >= o.mine) return;
    o.seenReported = o.mine;
    this.say(`   ✓ seen by ${userId}`);
  }

  private onPresence(userId: string, online: boolean): void {
    const before = this.presence.get(userId);
    this.presence.set(userId, online);
    if (before === undefined || before === online || this.open?.peer !== userId) return;
    this.say(online ? `● ${userId} is online` : `○ ${userId} went offline`);
  }

  /**
   * One line per change of the connection, not per retry: the SDK reports
   * every retry it schedules as 'reconnecting', which would scroll away what
   * the user reads while the server is down.
   */
  private onState(state: ClientState): void {
    if (this.quitting || !this.started) return;
    if (state === 'reconnecting' && !this.down) {
      this.down = true;
      this.say(`! connection lost${this.lostBecause ? ` (${this.lostBecause})` : ''}, reconnecting…`);
      this.refreshPrompt();
    } else if (state === 'online' && this.down) {
      this.down = false;
      this.lostBecause = undefined;
      this.say('✓ reconnected');
      this.refreshPrompt();
      void this.flushRead();
    } else if (state === 'offline') {
      this.down = true;
      this.say('! offline: not reconnecting (/quit to exit)');
    }
  }

  // ---- formatting ------------------------------------------------------------

  private format(m: ChatMessage): string {
    return `#${m.seq} ${clock(m.sentAtMs)} ${this.body(m)}`;
  }

  private body(m: ChatMessage): string {
    if (m.event) return `* ${describeEvent(m.event)}`;
    const who = this.nameOf(m.fromUser);
    if (m.recalledBy !== undefined) return `${who}: (recalled${m.recalledBy !== m.fromUser ? ` by ${m.recalledBy}` : ''})`;
    if (m.deletedBy !== undefined) return `${who}: (deleted${m.deletedBy !== m.fromUser ? ` by ${m.deletedBy}` : ''})`;
    if (m.hidden) return `${who}: (deleted for you)`;
    const c = m.content;
    const parts: string[] = [];
    if (c?.forward) parts.push(`(forwarded from ${c.forward.fromUser})`);
    if (m.reply) parts.push(m.reply.gone ? `(↩ #${m.reply.seq}: gone)` : `(↩ #${m.reply.seq} ${m.reply.fromUser}: ${oneLine(clean(m.reply.text), 40)})`);
    if (c?.type) parts.push(`[${clean(c.type)}]${c.payload ? ` ${oneLine(clean(new TextDecoder().decode(c.payload)), 80)}` : ''}`);
    if (m.text !== '') parts.push(clean(m.text).replace(/\n/g, '\n      '));
    if (m.editedAtMs !== undefined) parts.push('(edited)');
    if (m.reactions && m.reactions.length > 0) parts.push(reactionsText(m.reactions));
    return `${who}: ${parts.join(' ')}`;
  }

  /** A user as shown: its display name and id once its profile is known and has a name, else the id. */
  private nameOf(userId: string): string {
    const name = this.names.get(userId);
    return name ? `${clean(name)} (${userId})` : userId;
  }

  // ---- exit ------------------------------------------------------------------

  private interrupt(): void {
    if (this.quitting) this.stopWaiting();
    else void this.quit(0);
  }

  /** Wait (bounded) for sends in flight, mark read what was shown, close, and report the exit code. */
  private async quit(code: number): Promise<void> {
    if (this.quitting) return;
    this.quitting = true;
    this.rl?.close();
    if (this.sending.size > 0) {
      if (this.client.state !== 'online') {
        process.stdout.write(`… ${this.sending.size} message(s) not sent yet: waiting up to ${QUIT_SEND_WAIT_MS / 1000} s (Ctrl-C to drop them)\n`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled([...this.sending]),
        new Promise<void>((r) => {
          timer = setTimeout(r, QUIT_SEND_WAIT_MS);
          this.stopWaiting = r;
        }),
      ]);
      clearTimeout(timer);
      const left = this.client.pendingSends;
      if (left > 0) process.stdout.write(`! ${left} message(s) not acked by the server in time: not sent\n`);
    }
    clearTimeout(this.noticeTimer);
    await this.flushRead();
    this.closing = true;
    await this.client.close();
    this.finish(code);
  }
}

function isMessage(line: string): boolean {
  return !line.trimStart().startsWith('/') || line.trimStart().startsWith('//');
}

function describe(err: unknown): string {
  if (err instanceof LonglinkError) return `${err.codeName}: ${err.message}`;
  if (err instanceof Error) return err.message;
  return String(err);
}

function reactionsText(reactions: readonly ReactionData[]): string {
  return `[${reactions.map((r) => `${clean(r.emoji)} ${r.count}`).join(', ')}]`;
}

function describeEvent(e: TimelineEventData): string {
  const users = (e.userIds ?? []).filter((u) => u !== e.actor || e.type === 'role_changed' || e.type === 'mute_changed');
  const who = users.join(', ');
  switch (e.type) {
    case 'group_created':
      return `${e.actor} created the group${e.name ? ` "${clean(e.name)}"` : ''}${who ? ` with ${who}` : ''}`;
    case 'members_added':
      return `${e.actor} added ${who}`;
    case 'members_removed':
      return `${e.actor} removed ${who}`;
    case 'member_left':
      return `${e.actor} left`;
    case 'dismissed':
      return `${e.actor} dismissed the group`;
    case 'role_changed':
      return `${e.actor} made ${who} ${e.role ?? 'member'}`;
    case 'mute_changed':
      return `${e.actor} ${e.muted ? 'muted' : 'unmuted'} ${who || 'everyone'}`;
    case 'recalled':
      return `${e.actor} recalled #${e.targetSeq ?? '?'}`;
    case 'edited':
      return `${e.actor} edited #${e.targetSeq ?? '?'}: ${clean(e.text ?? '')}`;
    case 'deleted':
      return `${e.actor} deleted #${e.targetSeq ?? '?'}`;
    case 'hidden':
      return `you deleted #${e.targetSeq ?? '?'} of ${e.targetConversationId ?? '?'} for yourself`;
  }
}

/** Text from others, safe for a terminal: no control characters (escape sequences), newlines kept. */
function clean(text: string): string {
  return text.replace(/\r\n?/g, '\n').split('\n').map((l) => l.replace(/\p{Cc}/gu, '\uFFFD')).join('\n');
}

function oneLine(text: string, max: number): string {
  const flat = text.replace(/\s*\n\s*/g, ' ↵ ');
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

function clock(ms: number): string {
  const d = new Date(ms);
  const now = new Date();
  const pad = (n: number) => String(n).padStart(2, '0');
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  const today = d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() && d.getDate() === now.getDate();
  return today ? hm : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}`;
}
