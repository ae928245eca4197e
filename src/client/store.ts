// Local persistence for the client: the cursors it has delivered up to (with
// the sync token that goes with them) and the sends the server has not acked
// yet, so a restarted app syncs from where it was, reading only what changed
// since, and resends what never got through (with the same client_msg_id, so
// the server stores each message once).
//
// A store holds one small snapshot per client (one user's device). The client
// hands it a whole snapshot whenever something changed (coalesced); stores
// that write to slow media (a file, IndexedDB) debounce the writes themselves
// and write the latest snapshot only. This file has no Node or browser
// dependencies: the file store lives in store-file.ts (Node entry only) and
// the IndexedDB store in store-indexeddb.ts (browser entry only).
//
// How the client uses its store (option `store`, default `memoryStore()`):
// - `connect()` loads it before logging in (`restore()`; `send()` starts the
//   load too): the cursors seed the receiver, so the sync after login resumes
//   each conversation where this device was; the unacked sends become
//   pending again ('restored' event, `getPendingSends()`), go out at login
//   with their client_msg_id, and end as 'sent' or 'failed' events.
// - Every change (a send queued, acked or refused; a message delivered) is
//   saved, coalesced; the cursor saved is what was delivered to the app, never
//   more, so a crash can show a message again but never skip one.
// - `close()` rejects the waiting `send()` promises but keeps those sends in
//   the store, writes it and flushes it; the next `connect()` loads it again.
// - The snapshot records the user and device it belongs to: a client that
//   logs in as someone else drops it (its sends fail with FORBIDDEN).
import { MAX_SYNC_TOKEN } from '../protocol/index.js';

/** A send the server has not acked yet, as kept in a store. */
export interface StoredSend {
  clientMsgId: string;
  /** Exactly one target, as given to `send()`. */
  to?: string;
  groupId?: string;
  conversationId?: string;
  text: string;
  /** When `send()` was first called (ms since the epoch). */
  createdAtMs: number;
  /** Custom payload, mentions, reply, forward, as given to `send()` (the payload as base64). */
  content?: StoredContent;
}

/** A send's content as the store keeps it (plain JSON). */
export interface StoredContent {
  type?: string;
  /** base64 */
  payload?: string;
  mentions?: string[];
  mentionAll?: boolean;
  replyTo?: number;
  forward?: { conversationId: string; seq: number };
  /** File ids (uploaded with uploadFile). */
  attachments?: string[];
}

/** Everything a client persists. Plain JSON-able data. */
export interface ClientSnapshot {
  version: 1;
  /** Whom the state belongs to (set at the first login); state of another user or device is never used. */
  userId?: string;
  deviceId?: string;
  /**
   * Per conversation, the highest seq delivered to the app in order (the
   * receiver's base): a restarted client syncs each conversation from here.
   */
  cursors: Record<string, number>;
  /**
   * The sync token of the last full-sync page delivered: kept with the
   * cursors it goes with (the server reads only what changed since it, and
   * trusts these cursors for the rest). Absent: the next sync reads every
   * conversation again.
   */
  syncToken?: string;
  /** Unacked sends, in send order. */
  outbox: StoredSend[];
}

/**
 * Where a client keeps its snapshot. One client per store at a time (two live
 * clients on one store would overwrite each other's state).
 */
export interface ClientStore {
  /** The last saved snapshot, or undefined when there is none. */
  load(): Promise<ClientSnapshot | undefined>;
  /**
   * Keep this snapshot (replacing the previous one). May be debounced: the
   * promise may resolve before the snapshot is durable; `flush()` makes it so.
   */
  save(snapshot: ClientSnapshot): Promise<void>;
  /** Write any debounced snapshot now; resolves when it is durable. */
  flush(): Promise<void>;
}

export function emptySnapshot(): ClientSnapshot {
  return { version: 1, cursors: {}, outbox: [] };
}

/**
 * Checks data read back from a store (a file, IndexedDB, anything an older or
 * newer version may have written) and returns a well-formed snapshot, or
 * throws saying what is wrong.
 */
export function parseSnapshot(data: unknown): ClientSnapshot {
  const fail = (what: string): never => {
    throw new Error(`not a Longlink client snapshot: ${what}`);
  };
  if (typeof data !== 'object' || data === null) fail('not an object');
  const d = data as Record<string, unknown>;
  if (d.version !== 1) fail(`version ${String(d.version)}`);
  const out = emptySnapshot();
  if (d.userId !== undefined) {
    if (typeof d.userId !== 'string') fail('userId');
    out.userId = d.userId as string;
  }
  if (d.deviceId !== undefined) {
    if (typeof d.deviceId !== 'string') fail('deviceId');
    out.deviceId = d.deviceId as string;
  }
  if (typeof d.cursors !== 'object' || d.cursors === null || Array.isArray(d.cursors)) fail('cursors');
  for (const [id, seq] of Object.entries(d.cursors as Record<string, unknown>)) {
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) fail(`cursor of ${id}`);
    out.cursors[id] = seq as number;
  }
  if (d.syncToken !== undefined) {
    if (typeof d.syncToken !== 'string') fail('syncToken');
    // One longer than the server takes is none of its (the next sync reads every conversation again).
    if ((d.syncToken as string).length <= MAX_SYNC_TOKEN) out.syncToken = d.syncToken as string;
  }
  if (!Array.isArray(d.outbox)) fail('outbox');
  for (const e of d.outbox as unknown[]) {
    if (typeof e !== 'object' || e === null) fail('outbox entry');
    const s = e as Record<string, unknown>;
    if (typeof s.clientMsgId !== 'string' || s.clientMsgId === '') fail('outbox entry clientMsgId');
    if (typeof s.text !== 'string') fail('outbox entry text');
    const entry: StoredSend = {
      clientMsgId: s.clientMsgId as string,
      text: s.text as string,
      createdAtMs: typeof s.createdAtMs === 'number' ? s.createdAtMs : 0,
    };
    for (const key of ['to', 'groupId', 'conversationId'] as const) {
      if (s[key] === undefined) continue;
      if (typeof s[key] !== 'string') fail(`outbox entry ${key}`);
      entry[key] = s[key] as string;
    }
    if (s.content !== undefined) {
      if (typeof s.content !== 'object' || s.content === null) fail('outbox entry content');
      entry.content = s.content as StoredContent;
    }
    out.outbox.push(entry);
  }
  return out;
}

/** A deep copy, so what a store keeps never aliases the client's live state. */
export function copySnapshot(s: ClientSnapshot): ClientSnapshot {
  return parseSnapshot(JSON.parse(JSON.stringify(s)) as unknown);
}

/**
 * The default store: the snapshot in memory. State lives as long as the store
 * object, so a store shared by successive clients in one process carries
 * their cursors and outbox from one to the next.
 */
export function memoryStore(initial?: ClientSnapshot): ClientStore & { readonly snapshot: ClientSnapshot | undefined } {
  let kept = initial ? copySnapshot(initial) : undefined;
  return {
    get snapshot() {
      return kept ? copySnapshot(kept) : undefined;
    },
    load: () => Promise.resolve(kept ? copySnapshot(kept) : undefined),
    save: (snapshot) => {
      kept = copySnapshot(snapshot);
      return Promise.resolve();
    },
    flush: () => Promise.resolve(),
  };
}

/**
 * Debounces writes of whole snapshots: `save` keeps the latest and schedules
 * one write `delayMs` later; writes never overlap and always go out in order,
 * the last one being the latest snapshot. For store implementations.
 */
export class DebouncedWriter {
  private latest: ClientSnapshot | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private running: Promise<void> | undefined;
  /** Settles when everything saved so far is written (or failed). */
  private waiters: { resolve: () => void; reject: (err: unknown) => void }[] = [];

  constructor(
    private readonly write: (snapshot: ClientSnapshot) => Promise<void>,
    private readonly delayMs: number,
  ) {}

  save(snapshot: ClientSnapshot): Promise<void> {
    this.latest = copySnapshot(snapshot);
    if (this.timer === undefined && this.running === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        void this.drain();
      }, this.delayMs);
    }
    return Promise.resolve();
  }

  /** Write the latest snapshot now (after a write in progress); rejects if that write fails. */
  flush(): Promise<void> {
    if (this.latest === undefined && this.running === undefined) return Promise.resolve();
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.running === undefined) void this.drain();
    return done;
  }

  private async drain(): Promise<void> {
    let error: unknown;
    const run = (async () => {
      while (this.latest !== undefined) {
        const snapshot = this.latest;
        this.latest = undefined;
        try {
          await this.write(snapshot);
          error = undefined;
        } catch (err) {
          // Keep it to write again at the next save or flush, unless something newer came.
          this.latest ??= snapshot;
          error = err;
          break;
        }
      }
    })();
    this.running = run;
    await run;
    this.running = undefined;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) {
      if (error === undefined) w.resolve();
      else w.reject(error);
    }
    if (error !== undefined && waiters.length === 0) console.error('[longlink] client store write failed', error);
  }
}
