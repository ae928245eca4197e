// Full-text search over the messages a user may read (SearchRequest).
//
// Indexing is a consumer group of the committed stream (SEARCH_GROUP), beside
// the send path: a message is findable shortly after its ack (the group's
// lag), and a send never waits for the index. Each committed message is
// indexed as the store holds it then; an edit, a recall or a delete indexes
// its target again (the new text, or out of the index).
//
// A query is split into words (letters and digits; anything else separates
// them), lower-cased; every word must match, the last as a prefix ("lun"
// finds "lunch"). Results are what the store's search gives (store.ts,
// SearchStore: only what the asker may read), ranked, then paged by an
// opaque cursor; a search gives at most MAX_HITS hits in all and each page is
// bounded in hits and bytes, like a history page.
import {
  ErrorCode, LonglinkError, messageToWire,
  type BodyOf, type ChatMessage, type FrameBodyInit,
} from '../protocol/index.js';
import { messageFromWire } from '../protocol/convert.js';
import type { Committed, Origin } from '../engines/bus.js';
import type { Store } from '../engines/store.js';
import { requireView } from './access.js';
import { fillQuotes } from './content.js';
import { fillReactions } from './reactions.js';
import { fillHidden, messageBytes } from './reads.js';

/** A query's length, in characters. */
export const MAX_QUERY_CHARS = 200;
/** Words a query may have. */
export const MAX_QUERY_WORDS = 8;
/** Hits per page: the default and the most. */
export const DEFAULT_SEARCH_LIMIT = 20;
export const MAX_SEARCH_LIMIT = 50;
/** Hits one search gives over all its pages. */
export const MAX_HITS = 200;
/** Characters of context on each side of the first matched word in a snippet. */
const SNIPPET_CONTEXT = 40;

const WORD = /[\p{L}\p{N}]+/gu;

/** The query's words, lower-cased (each at most 64 characters), or a coded refusal. */
export function queryWords(query: string): string[] {
  if ([...query].length > MAX_QUERY_CHARS) throw new LonglinkError(ErrorCode.BAD_REQUEST, `a search query is at most ${MAX_QUERY_CHARS} characters`);
  const words = [...query.normalize('NFKC').toLowerCase().matchAll(WORD)].map((m) => [...m[0]].slice(0, 64).join(''));
  if (words.length === 0) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'a search query needs a word (letters or digits)');
  if (words.length > MAX_QUERY_WORDS) throw new LonglinkError(ErrorCode.BAD_REQUEST, `a search query has at most ${MAX_QUERY_WORDS} words`);
  return words;
}

/**
 * The text around the first word that matches, with every matching word
 * between [ and ] (a word matches when it starts with a query word).
 */
export function snippetOf(text: string, words: readonly string[]): string {
  const marks: { start: number; end: number }[] = [];
  for (const m of text.matchAll(WORD)) {
    const w = m[0].normalize('NFKC').toLowerCase();
    if (words.some((q) => w.startsWith(q))) marks.push({ start: m.index, end: m.index + m[0].length });
  }
  const first = marks[0];
  const from = first ? Math.max(0, first.start - SNIPPET_CONTEXT) : 0;
  const to = Math.min(text.length, (first?.end ?? 0) + SNIPPET_CONTEXT * 2);
  let out = from > 0 ? '…' : '';
  let at = from;
  for (const m of marks) {
    if (m.start < from || m.end > to) continue;
    out += `${text.slice(at, m.start)}[${text.slice(m.start, m.end)}]`;
    at = m.end;
  }
  out += text.slice(at, to) + (to < text.length ? '…' : '');
  return out;
}

/** The cursor of the page after `offset` hits: opaque to clients. */
function cursorAt(offset: number): string {
  return `s1.${offset}`;
}

function offsetOf(cursor: string): number {
  if (cursor === '') return 0;
  const m = /^s1\.(\d{1,4})$/.exec(cursor);
  if (!m || Number(m[1]) > MAX_HITS) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'cursor: give back the next_cursor of a SearchResult');
  return Number(m[1]);
}

/** What a committed message changes in the index: itself, or the message an edit, a recall or a delete is about. */
export function searchTargets(batch: readonly Committed[]): { conversationId: string; seq: number }[] {
  const out: { conversationId: string; seq: number }[] = [];
  for (const c of batch) {
    if (!c.message) continue;
    const m = messageFromWire(c.message);
    const type = m.event?.type;
    if (type === undefined) out.push({ conversationId: m.conversationId, seq: m.seq });
    else if ((type === 'edited' || type === 'recalled' || type === 'deleted') && m.event?.targetSeq) out.push({ conversationId: m.conversationId, seq: m.event.targetSeq });
  }
  return out;
}

export class SearchService {
  constructor(
    /** `enabled` false (LONGLINK_SEARCH=0): nothing is indexed and searches are refused. */
    private readonly options: { maxBytes: number; enabled?: boolean },
    private readonly deps: { store: Store },
  ) {}

  get enabled(): boolean {
    return this.options.enabled !== false;
  }

  /** The committed stream's search group: index what was stored (and again what was edited, recalled or deleted). */
  async index(batch: readonly Committed[]): Promise<void> {
    const targets = searchTargets(batch);
    if (targets.length > 0) await this.deps.store.indexForSearch(targets);
  }

  async search(origin: Origin, req: BodyOf<'search'>): Promise<FrameBodyInit> {
    if (!this.enabled) throw new LonglinkError(ErrorCode.FORBIDDEN, 'search is turned off on this server');
    const words = queryWords(req.query);
    const offset = offsetOf(req.cursor);
    const limit = Math.min(req.limit > 0 ? Math.min(req.limit, MAX_SEARCH_LIMIT) : DEFAULT_SEARCH_LIMIT, MAX_HITS - offset);
    if (req.conversationId !== '') await requireView(this.deps.store, req.conversationId, origin.userId);
    if (limit <= 0) return { case: 'searchResult', value: { hits: [], nextCursor: '' } };
    const found = await this.deps.store.search({
      userId: origin.userId, words, offset, limit: limit + 1, ...(req.conversationId !== '' ? { conversationId: req.conversationId } : {}),
    });
    let more = found.length > limit && offset + limit < MAX_HITS;
    let hits: ChatMessage[] = found.slice(0, limit);
    await fillReactions(this.deps.store, hits);
    // Stop the page at about maxBytes (always at least one hit).
    let bytes = 0;
    for (let i = 0; i < hits.length; i++) {
      bytes += messageBytes(hits[i]!) * 2; // the text again, in the snippet
      if (bytes > this.options.maxBytes && i > 0) {
        hits = hits.slice(0, i);
        more = true;
        break;
      }
    }
    await fillQuotes(this.deps.store, hits);
    await fillHidden(this.deps.store, origin.userId, hits);
    return {
      case: 'searchResult',
      value: {
        hits: hits.map((m) => ({ message: messageToWire(m), snippet: snippetOf(m.text, words) })),
        nextCursor: more ? cursorAt(offset + hits.length) : '',
      },
    };
  }
}
