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
// the device's last sync (the store's change index, store.ts "Sync"), a
// bounded number of them per page; one of conversation_ids reads those named.
import {
  cursorToWire, isGroupConversation, messageToWire,
  type BodyOf, type FrameBodyInit,
} from '../protocol/index.js';
import type { Origin } from '../engines/bus.js';
import type { Store, SyncConversation } from '../engines/store.js';
import { requireView } from './access.js';
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

function messageBytes(m: { text: string }): number {
  return Buffer.byteLength(m.text, 'utf8') + MESSAGE_OVERHEAD;
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
    // Those named; or those changed since this device's last sync, at most limit + 1 with something to read.
    let conversations: SyncConversation[];
    let cut = false;
    if (only.size > 0) conversations = await store.syncStates(origin.userId, origin.deviceId, [...only], given);
    else ({ conversations, cut } = await store.syncScan(origin.userId, origin.deviceId, given, limit));
    const reached = new Map<string, number>();
    // A named conversation stands where the device does (a conversation never written to yet has no state: where the
    // request says) until this page reads it.
    for (const conversationId of only) reached.set(conversationId, given.get(conversationId) ?? 0);
    for (const c of conversations) if (only.has(c.conversationId)) reached.set(c.conversationId, c.from);
    const messages = [];
    let remaining = limit;
    let hasMore = false;
    let bytes = 0;
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
        break;
      }
      for (const w of windows) {
        if (w.toSeq <= w.after) continue;
        const asked = remaining;
        let page = remaining > 0 ? await store.after(c.conversationId, w.after, remaining, w.toSeq) : [];
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
          break; // the rest of this conversation (and the windows after) next page
        }
      }
    }
    // The scan stopped at limit + 1 conversations with something to read: more may follow them. (This page cannot
    // have read them all, unless some held less than they said, expired meanwhile: the next page goes on.)
    if (cut) hasMore = true;
    return {
      case: 'syncResult',
      value: {
        messages: messages.map(messageToWire),
        cursors: [...reached].map(([conversationId, seq]) => cursorToWire(conversationId, seq)),
        hasMore,
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
    return { case: 'historyResult', value: { conversationId: req.conversationId, messages: messages.map(messageToWire), hasMore } };
  }
}

