// The storage service's reads: what a device missed (sync, paged from its
// cursors) and older history. Each page is bounded in messages and bytes.
//
// Retention (store.ts) may have removed a conversation's oldest messages: a
// cursor below what is still held resumes at the first message held (the page
// jumps over the expired seqs, as over seqs of another membership; clients
// take the seq before a conversation's first message in a page as their
// base), and a window whose messages are all gone reaches its end, so a sync
// over an expired range completes. History ends at the oldest message held.
//
// A sync of all the user's conversations reads only those that changed since
// the client's sync token (the store's change index, store.ts "Sync"), a
// bounded number of them per page; one of conversation_ids reads those named.
//
// Sync tokens. A client that keeps its own cursors sets sync_token in its
// requests (empty when it has none) and gets one back from each page of a
// full sync, to keep with the cursors that page leaves it with. A token is
// a place in the user's change order and a floor:
// - the floor: every membership whose change number is below it was read to
//   its end (by the client's cursors, or the pages) when the pass of pages
//   the token belongs to began, and has not changed since, nor will a change
//   still committing give it a lower number (the store's horizon, taken by
//   the pass's first page);
// - the place: in a pass that has more pages, where the next one resumes:
//   the first conversation this page did not read to its end (those before
//   it were, by this pass). At the end of a pass it is the floor itself.
// A page resumes at the token's place; a pass ends with a token at its
// floor, so the next sync reads again everything from there: what changed
// while the pass paged, in conversations it had read already, comes then
// (or by push). A token from another database (its floor past this one's
// horizon) or not one of ours counts as none. A request without sync_token
// (a client before tokens) reads every conversation every page, from its
// cursors or else the device's delivered cursors, and gets no token.
import {
  ErrorCode, LonglinkError, MAX_SYNC_TOKEN, QUOTE_CHARS, cursorToWire, directMembers, groupIdOf, isGroupConversation, isValidId, messageToWire,
  type BodyOf, type ChatMessage, type FrameBodyInit,
} from '../protocol/index.js';
import type { Origin } from '../engines/bus.js';
import type { Store, SyncConversation, SyncPosition } from '../engines/store.js';
import { requireView } from './access.js';
import { fillQuotes, seqsByConversation } from './content.js';
import { fillReactions } from './reactions.js';

/** What a reader deleted for itself is read back as `hidden`, with nothing of it (changed in place; one read per conversation). */
export async function fillHidden(store: Store, userId: string, messages: ChatMessage[]): Promise<void> {
  const hidden = new Map<string, Set<number>>();
  await Promise.all([...seqsByConversation(messages)].map(async ([id, seqs]) => hidden.set(id, await store.hiddenSeqs(userId, id, seqs))));
  for (const m of messages) {
    if (!hidden.get(m.conversationId)?.has(m.seq)) continue;
    m.hidden = true;
    m.text = '';
    delete m.content;
    delete m.reactions;
    delete m.reply;
  }
}
import { seqOf } from './seq.js';

export interface ReadOptions {
  /** Messages per sync page when the client asks for 0 or more than this. */
  syncPageLimit: number;
  /** Messages per history page, likewise. */
  historyPageLimit: number;
  /** A page stops at about this many bytes of messages (always at least one message). */
  maxBytes: number;
}

/** What a message costs in a reply besides its text (ids, numbers, framing), roughly. */
const MESSAGE_OVERHEAD = 128;

export function messageBytes(m: ChatMessage): number {
  // A reply's quote (up to QUOTE_CHARS), a payload, an edit's new text and content count too.
  const quote = m.content?.replyToSeq ? QUOTE_CHARS * 4 : 0;
  const event = m.event?.text ? Buffer.byteLength(m.event.text, 'utf8') + (m.event.content?.payload?.length ?? 0) : 0;
  let reactions = 0;
  for (const r of m.reactions ?? []) reactions += r.emoji.length + 8 + r.users.reduce((n, u) => n + u.length + 2, 0);
  return Buffer.byteLength(m.text, 'utf8') + (m.content?.payload?.length ?? 0) + quote + event + reactions + MESSAGE_OVERHEAD;
}

/** A sync token, decoded (see the top of this file). */
interface SyncToken {
  floor: number;
  place: SyncPosition;
}

const TOKEN_VERSION = 't1';

/** `t1.<floor>.<place's change number>.<place's conversation id, base64url>`: opaque to clients. */
export function encodeSyncToken(t: SyncToken): string {
  return [TOKEN_VERSION, t.floor, t.place.changeNo, Buffer.from(t.place.conversationId, 'utf8').toString('base64url')].join('.');
}

/** The token, or undefined when it is empty or not one this server makes (any text: a client's, or garbage). */
export function decodeSyncToken(text: string): SyncToken | undefined {
  if (text.length > MAX_SYNC_TOKEN) return undefined;
  const parts = text.split('.');
  if (parts.length !== 4 || parts[0] !== TOKEN_VERSION) return undefined;
  if (!/^\d{1,16}$/.test(parts[1]!) || !/^\d{1,16}$/.test(parts[2]!) || !/^[A-Za-z0-9_-]*$/.test(parts[3]!)) return undefined;
  const [floor, changeNo] = [Number(parts[1]), Number(parts[2])];
  if (!Number.isSafeInteger(floor) || !Number.isSafeInteger(changeNo)) return undefined;
  const conversationId = Buffer.from(parts[3]!, 'base64url').toString('utf8');
  // A place is a conversation's (a pass under way), or none ('': a pass's end, at its floor).
  const groupId = groupIdOf(conversationId);
  const place = conversationId === '' || directMembers(conversationId) !== undefined || (groupId !== undefined && isValidId(groupId));
  if (!place || Buffer.from(conversationId, 'utf8').toString('base64url') !== parts[3]) return undefined;
  return { floor, place: { changeNo, conversationId } };
}

export class Reads {
  constructor(
    private readonly options: ReadOptions,
    private readonly deps: { store: Store },
  ) {}

  /** What a device missed, from its cursors, one page of at most `limit` messages. */
  async sync(origin: Origin, req: BodyOf<'sync'>): Promise<FrameBodyInit> {
    const store = this.deps.store;
    const limit = req.limit > 0 ? Math.min(req.limit, this.options.syncPageLimit) : this.options.syncPageLimit;
    const given = new Map<string, number>();
    for (const c of req.cursors) given.set(c.conversationId, Math.max(0, seqOf(c.seq)));
    const only = new Set(req.conversationIds);
    for (const conversationId of only) await requireView(store, conversationId, origin.userId);
    // A client that sets sync_token keeps its own cursors: a conversation it names none for is read from its start.
    // One before tokens: from the device's delivered cursor.
    const tokens = req.syncToken !== undefined;
    // Longer than any of ours: a client bug, said so (a token merely not recognized counts as none, below).
    if (tokens && req.syncToken!.length > MAX_SYNC_TOKEN) {
      throw new LonglinkError(ErrorCode.BAD_REQUEST, `sync_token must be at most ${MAX_SYNC_TOKEN} characters (send back the one a SyncResult gave, or '')`);
    }
    const reading = { delivered: !tokens };
    // Those named; or those changed since the token (every one without), at most limit + 1 with something to read.
    let conversations: SyncConversation[];
    let cut = false;
    let token = tokens && only.size === 0 ? decodeSyncToken(req.syncToken!) : undefined;
    let horizon = 0;
    if (only.size > 0) conversations = await store.syncStates(origin.userId, origin.deviceId, [...only], given, reading);
    else {
      let scan = await store.syncScan(origin.userId, origin.deviceId, given, limit, { ...reading, ...(token ? { from: token.place } : {}) });
      if (token && token.floor > scan.horizon) {
        // Not a token of this database (restored, replaced): as without one.
        token = undefined;
        scan = await store.syncScan(origin.userId, origin.deviceId, given, limit, reading);
      }
      ({ conversations, cut, horizon } = scan);
    }
    const reached = new Map<string, number>();
    // A named conversation stands where the device does (a conversation never written to yet has no state: where the
    // request says) until this page reads it.
    for (const conversationId of only) reached.set(conversationId, given.get(conversationId) ?? 0);
    for (const c of conversations) if (only.has(c.conversationId)) reached.set(c.conversationId, c.from);
    const messages = [];
    let remaining = limit;
    let hasMore = false;
    let bytes = 0;
    /** The first conversation with something to read that this page did not read to its end (change order). */
    let unfinished: SyncConversation | undefined;
    for (const c of conversations) {
      // Below the retained floor nothing is left to read: resume there.
      const from = Math.max(c.from, (c.retainedFromSeq ?? 1) - 1);
      const windows = await this.windowsAfter(c, origin.userId, from);
      const last = windows.at(-1)!;
      if (last.toSeq <= last.after) {
        // Nothing to read: a conversation named (in conversation_ids or cursors) gets where the device stands;
        // a group member stands at least just before its join event.
        if (only.has(c.conversationId) || c.named) reached.set(c.conversationId, last.after);
        continue;
      }
      if (remaining === 0) {
        hasMore = true;
        unfinished = c;
        break;
      }
      for (const w of windows) {
        if (w.toSeq <= w.after) continue;
        const asked = remaining;
        let page = remaining > 0 ? await store.after(c.conversationId, w.after, remaining, w.toSeq) : [];
        await fillReactions(store, page); // before the page's bytes are counted: they count
        // Fewer than asked: the window holds nothing more (what is missing of it expired meanwhile).
        const exhausted = page.length < asked;
        // Stop a page at about maxBytes (always at least one message).
        let fits = page.length;
        for (let i = 0; i < page.length; i++) {
          bytes += messageBytes(page[i]!);
          if (bytes > this.options.maxBytes && messages.length + i > 0) {
            fits = i;
            break;
          }
        }
        const whole = fits === page.length;
        if (!whole) {
          page = page.slice(0, fits);
          remaining = 0;
        } else remaining -= page.length;
        messages.push(...page);
        const at = exhausted && whole ? w.toSeq : page.length > 0 ? page[page.length - 1]!.seq : w.after;
        reached.set(c.conversationId, at);
        if (at < w.toSeq) {
          hasMore = true;
          unfinished = c;
          break; // the rest of this conversation (and the windows after) next page
        }
      }
      if (unfinished) break;
    }
    // The scan stopped at limit + 1 conversations with something to read: more may follow them. (This page cannot
    // have read them all, unless some held less than they said, expired meanwhile: the next page goes on.)
    if (cut) hasMore = true;
    let syncToken = '';
    if (tokens && only.size === 0) {
      // A pass's floor is its first page's horizon; a page with more after it resumes at what it did not finish (or,
      // cut with everything it found read, at the last of those: the scan returns them last, in change order); a pass
      // ends at its floor.
      const floor = token && token.place.conversationId !== '' ? token.floor : horizon;
      const at = unfinished ?? (hasMore ? conversations.at(-1) : undefined);
      const place = at ? { changeNo: at.changeNo, conversationId: at.conversationId } : { changeNo: floor, conversationId: '' };
      syncToken = encodeSyncToken({ floor, place });
    }
    await fillQuotes(this.deps.store, messages);
    await fillHidden(this.deps.store, origin.userId, messages);
    return {
      case: 'syncResult',
      value: {
        messages: messages.map(messageToWire),
        cursors: [...reached].map(([conversationId, seq]) => cursorToWire(conversationId, seq)),
        hasMore,
        syncToken,
      },
    };
  }

  /**
   * What a user may read of a conversation past `from` (a device's cursor), as
   * windows (after, toSeq], ascending: its current one from its join event on,
   * preceded, when it left the group and joined again, by what is left of its
   * earlier windows, so a device that had not synced them yet gets what was
   * stored while it was a member (and nothing from when it was not).
   */
  private async windowsAfter(c: SyncConversation, userId: string, from: number): Promise<{ after: number; toSeq: number }[]> {
    const current = { after: Math.max(from, c.joinedSeq - 1), toSeq: c.lastSeq };
    if (!c.rejoined || from >= c.joinedSeq - 1) return [current];
    const past = (await this.deps.store.pastWindows(c.conversationId, userId)).filter((w) => w.toSeq > from);
    return [...past.map((w) => ({ after: Math.max(from, w.fromSeq - 1), toSeq: w.toSeq })), current];
  }

  async history(origin: Origin, req: BodyOf<'history'>): Promise<FrameBodyInit> {
    const view = await requireView(this.deps.store, req.conversationId, origin.userId);
    const limit = req.limit > 0 ? Math.min(req.limit, this.options.historyPageLimit) : this.options.historyPageLimit;
    let before = seqOf(req.beforeSeq);
    if (view.toSeq !== undefined && (before <= 0 || before > view.toSeq + 1)) before = view.toSeq + 1;
    let page = await this.deps.store.before(req.conversationId, before, limit + 1, view.fromSeq);
    if (page.length <= limit && isGroupConversation(req.conversationId)) {
      // The current membership window is read to its start: go on into earlier ones, if the user left and came back.
      const start = page[0]?.seq ?? Math.min(before > 0 ? before : Number.MAX_SAFE_INTEGER, view.fromSeq);
      const past = (await this.deps.store.pastWindows(req.conversationId, origin.userId)).filter((w) => w.fromSeq < start).reverse();
      for (const w of past) {
        if (page.length > limit) break;
        const older = await this.deps.store.before(req.conversationId, Math.min(start, w.toSeq + 1), limit + 1 - page.length, w.fromSeq);
        page = [...older, ...page];
      }
    }
    let hasMore = page.length > limit;
    let messages = hasMore ? page.slice(page.length - limit) : page;
    await fillReactions(this.deps.store, messages); // before the page's bytes are counted: they count
    // Stop the page at about maxBytes, keeping its newest messages (always at least one).
    let bytes = 0;
    for (let i = messages.length - 1; i >= 0; i--) {
      bytes += messageBytes(messages[i]!);
      if (bytes > this.options.maxBytes && i < messages.length - 1) {
        messages = messages.slice(i + 1);
        hasMore = true;
        break;
      }
    }
    await fillQuotes(this.deps.store, messages);
    await fillHidden(this.deps.store, origin.userId, messages);
    return { case: 'historyResult', value: { conversationId: req.conversationId, messages: messages.map(messageToWire), hasMore } };
  }
}

