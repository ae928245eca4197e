// Sync: fetch what this device missed, page by page, from its cursors. A full
// sync runs after every login (and on `sync()`); a conversation that is stuck
// (a gap before held messages, or a first message with no known base) is
// synced alone. One loop at a time per connection; a failed sync is retried
// with backoff, because nothing missed may stay missed.
//
// A client given a store keeps its cursors across runs: its requests carry
// the sync token (empty without one: a new client, or one whose store was lost,
// reads every conversation again, from the cursors it has), which also tells
// the server that this client keeps its own cursors. A full sync's pages each
// answer with the next token, kept (and stored) with the cursors once the page
// is delivered: the next full sync reads only what changed since. A client
// without a store leaves the field out: the server resumes where it acked.
import { ErrorCode, LonglinkError, cursorToWire, messageFromWire, type Frame } from '../protocol/index.js';
import type { Emit } from './client-types.js';
import type { Inbox } from './inbox.js';
import type { RequestBody } from './requests.js';

/** What sync needs of the rest of the client. */
export interface SyncHost {
  link: { readonly generation: number; readonly connected: boolean };
  inbox: Pick<Inbox, 'cursors' | 'stuck' | 'advance' | 'receive' | 'syncToken' | 'setSyncToken'>;
  request(body: RequestBody): Promise<Frame>;
  emit: Emit;
  /**
   * The client keeps its cursors across runs (a store was given): its full
   * syncs carry a sync token and read from its cursors. Without one (the
   * default in-memory store) a new run knows nothing, so the field is left
   * out and the server resumes where this device acked.
   */
  keepsCursors: boolean;
}

export class Sync {
  /** The sync loop in progress on this connection, if any. */
  private loop: Promise<void> | undefined;
  private fullWanted = false;
  private readonly wanted = new Set<string>();
  /** Syncs that failed in a row (the retry backs off; a new connection starts again at 1-2 s). */
  private failures = 0;

  constructor(private readonly host: SyncHost) {}

  /**
   * Everything missed, now; resolves when it was delivered (a sync in
   * progress goes on to a full one).
   */
  async full(): Promise<void> {
    this.fullWanted = true;
    await this.run();
    if (this.fullWanted) await this.run(); // the loop was just finishing when asked
  }

  /** Logged in: start over (backoff included) with a full sync when `autoSync`. */
  loggedIn(autoSync: boolean): void {
    this.failures = 0;
    if (!autoSync) return;
    this.fullWanted = true;
    void this.run();
  }

  /** The connection is gone: its loop ends with it (it checks the generation). */
  connectionLost(): void {
    this.loop = undefined;
  }

  /** Sync the conversations that are stuck, if any. */
  syncStuck(): void {
    for (const id of this.host.inbox.stuck()) this.wanted.add(id);
    if (this.wanted.size > 0) void this.run();
  }

  /** One sync loop at a time: a full sync when wanted, else the conversations that are stuck. */
  private run(): Promise<void> {
    if (this.loop) return this.loop;
    if (!this.host.link.connected) return Promise.resolve();
    const loop = this.loopBody().finally(() => {
      if (this.loop === loop) this.loop = undefined;
    });
    this.loop = loop;
    return loop;
  }

  private async loopBody(): Promise<void> {
    const generation = this.host.link.generation;
    try {
      while (generation === this.host.link.generation && (this.fullWanted || this.wanted.size > 0)) {
        const full = this.fullWanted;
        const only = full ? [] : [...this.wanted];
        this.fullWanted = false;
        this.wanted.clear();
        await this.pages(only);
        this.failures = 0;
        if (full) this.host.emit('synced');
        for (const id of this.host.inbox.stuck()) if (!only.includes(id) || full) this.wanted.add(id);
      }
    } catch (err) {
      if (generation === this.host.link.generation) {
        this.host.emit('error', err instanceof LonglinkError ? err : new LonglinkError(ErrorCode.INTERNAL, String(err)));
        // Nothing missed may stay missed: try again (a new connection syncs anyway), backing
        // off while it keeps failing (1-2 s, then 2-4 s, ... up to 30 s), so a server busy with a
        // reconnecting crowd is not answered with a storm of repeated syncs.
        this.fullWanted = true;
        const base = Math.min(30_000, 1000 * 2 ** Math.min(this.failures++, 5));
        setTimeout(() => {
          if (generation === this.host.link.generation) void this.run();
        }, base + Math.floor(Math.random() * base));
      }
    }
  }

  /** The sync token a request carries: none without a store; the kept one (or empty) on a full sync; empty on a sync of some conversations. */
  private tokenFor(only: readonly string[]): string | undefined {
    if (!this.host.keepsCursors) return undefined;
    return only.length === 0 ? this.host.inbox.syncToken() ?? '' : '';
  }

  private async pages(only: string[]): Promise<void> {
    const inbox = this.host.inbox;
    for (let page = 0; page < 100_000; page++) {
      const known = new Map(inbox.cursors());
      const reply = await this.host.request({
        case: 'sync',
        value: {
          cursors: [...known].filter(([id]) => only.length === 0 || only.includes(id)).map(([id, seq]) => cursorToWire(id, seq)),
          conversationIds: only,
          limit: 0,
          syncToken: this.tokenFor(only),
        },
      });
      if (reply.body.case !== 'syncResult') throw new LonglinkError(ErrorCode.INTERNAL, 'unexpected sync reply');
      const result = reply.body.value;
      const messages = result.messages.map(messageFromWire);
      const firstSeq = new Map<string, number>();
      for (const m of messages) if (!firstSeq.has(m.conversationId)) firstSeq.set(m.conversationId, m.seq);
      // The server resumed each conversation right before its first message here (or, with none,
      // at its cursor): anything earlier is either had or not this user's to see.
      for (const [id, seq] of firstSeq) inbox.advance(id, seq - 1);
      for (const c of result.cursors) {
        if (!firstSeq.has(c.conversationId)) inbox.advance(c.conversationId, Number(c.seq));
      }
      for (const m of messages) inbox.receive(m);
      // Delivered: the token goes with the cursors the page left (a sync of some conversations has none).
      if (only.length === 0) inbox.setSyncToken(result.syncToken);
      if (!result.hasMore) return;
    }
  }
}
