// The sidebar's search: a query goes to the server (client.search), which
// answers with the messages this user may read, best first, each with a
// snippet whose matched words are between [ and ]; they are shown marked. A
// click opens the conversation at that message. "More results" follows the
// server's cursor.
import { LonglinkError, errorName, type LonglinkClient, type SearchHit } from '../client/browser.js';
import { byId, clockTime, h } from './dom.js';

const PAGE = 20;

export interface SearchHost {
  /** A conversation's title as the list shows it. */
  titleOf(conversationId: string): string;
  /** Open a conversation at a message. */
  openAt(conversationId: string, seq: number): Promise<void>;
}

/** A snippet as text and <mark>s: the server puts each matched word (letters and digits) between [ and ]. */
export function snippetNodes(snippet: string): (string | HTMLElement)[] {
  const out: (string | HTMLElement)[] = [];
  let at = 0;
  for (const m of snippet.matchAll(/\[([\p{L}\p{N}]+)\]/gu)) {
    if (m.index > at) out.push(snippet.slice(at, m.index));
    out.push(h('mark', {}, m[1]!));
    at = m.index + m[0].length;
  }
  if (at < snippet.length) out.push(snippet.slice(at));
  return out;
}

export class Search {
  private query = '';
  private cursor = '';
  private hits: SearchHit[] = [];
  /** Bumped per search: an answer to an earlier one is dropped. */
  private generation = 0;
  private readonly el = {
    form: byId<HTMLFormElement>('search'),
    input: byId<HTMLInputElement>('search-query'),
    panel: byId('search-results'),
    summary: byId('search-summary'),
    list: byId<HTMLOListElement>('search-hits'),
    more: byId<HTMLButtonElement>('search-more'),
    conversations: byId('conversations'),
  };

  constructor(private readonly client: LonglinkClient, private readonly host: SearchHost) {}

  async run(query: string): Promise<void> {
    this.query = query.trim();
    this.cursor = '';
    this.hits = [];
    if (this.query === '') return this.close();
    this.show(`Searching for “${this.query}”…`);
    await this.page();
  }

  async more(): Promise<void> {
    if (this.cursor !== '') await this.page();
  }

  close(): void {
    this.generation++;
    this.query = '';
    this.hits = [];
    this.el.panel.hidden = true;
    this.el.conversations.hidden = false;
    this.el.list.replaceChildren();
  }

  /** A click in the results: open the conversation at that message. */
  async pick(conversationId: string, seq: number): Promise<void> {
    await this.host.openAt(conversationId, seq);
  }

  private async page(): Promise<void> {
    const generation = ++this.generation;
    try {
      const page = await this.client.search(this.query, { limit: PAGE, ...(this.cursor ? { cursor: this.cursor } : {}) });
      if (generation !== this.generation) return;
      this.hits.push(...page.hits);
      this.cursor = page.nextCursor;
      this.render();
    } catch (err) {
      if (generation !== this.generation) return;
      this.show(`Search failed: ${err instanceof LonglinkError ? `${errorName(err.code)}: ${err.message}` : String(err)}`);
    }
  }

  private show(summary: string): void {
    this.el.panel.hidden = false;
    this.el.conversations.hidden = true;
    this.el.summary.textContent = summary;
    this.el.more.hidden = true;
  }

  private render(): void {
    const n = this.hits.length;
    this.show(n === 0 ? `No messages match “${this.query}”.` : `${n}${this.cursor ? '+' : ''} ${n === 1 ? 'message' : 'messages'} for “${this.query}”`);
    this.el.more.hidden = this.cursor === '';
    this.el.list.replaceChildren(...this.hits.map((hit) => {
      const m = hit.message;
      return h('li', { class: 'hit', tabindex: 0, 'data-conv': m.conversationId, 'data-seq': m.seq },
        h('span', { class: 'hit-title' }, this.host.titleOf(m.conversationId)),
        h('time', { datetime: new Date(m.sentAtMs).toISOString() }, clockTime(m.sentAtMs)),
        h('span', { class: 'hit-from' }, m.fromUser),
        h('p', { class: 'snippet' }, ...snippetNodes(hit.snippet)));
    }));
  }
}
