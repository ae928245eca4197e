// The sync-storage service (`longlink sync`): copies what every other
// datacenter commits into this one, so recipients here are pushed by this
// datacenter's own gateways and read from its own store.
//
// - For each peer it is a consumer group (`sync-<this dc>`) on the peer's
//   committed stream: it resumes from the group's offset after a restart, and
//   several sync processes share the peer's shards.
// - It copies only what the peer committed itself (origin_dc = the peer, not
//   copied there from elsewhere: each datacenter reads every other's own
//   entries, so nothing loops).
// - Idempotent by (conversation, seq): a message held already is skipped
//   (store.replicate). A conversation's entries come in publish order, which
//   within a conversation may not be seq order (two services write a group's
//   timeline), so what is missing below an entry is read from the peer's
//   store first: the copy never has a gap.
// - What it stored is published to this datacenter's committed stream,
//   marked replicated: the push group pushes it here; risk, the webhooks and
//   the other datacenters' sync skip it.
import { messageFromWire, messageToWire, type ChatMessage } from '../protocol/index.js';
import { committed, type Bus, type Committed, type CommittedEffects, type Subscription } from '../engines/bus.js';
import { StoreUnavailableError, type MessageStore, type ReplicaStore } from '../engines/store.js';
import { log as rootLog } from '../observability/log.js';
import { copiedKey } from './replication.js';

const log = rootLog.child({ component: 'dc-sync' });

/** What the sync service reads in a peer: its committed stream (a bus) and, to fill a gap, its store. */
export interface SyncPeer {
  name: string;
  bus: Pick<Bus, 'consumeCommitted' | 'consumerLag'>;
  /** Opened on first use (the peer may be down when this process starts). */
  store(): Promise<Pick<MessageStore, 'after'>>;
  /** Tell the peer which of its messages this datacenter now holds (its `replicated` acks wait for it; best effort). */
  notify?(keys: readonly string[]): Promise<void>;
}

/** Messages read from a peer's store per page when filling a gap. */
const FILL_PAGE = 500;
/** Messages a batch fills at most (a gap after a long cut is filled over several tries, FILL_MAX at a time: memory stays bounded). */
const FILL_MAX = 5000;

export interface PeerProgress {
  /** Messages stored here from this peer since start. */
  applied: number;
  /** Messages read from the peer's store to fill gaps. */
  filled: number;
  /** Seconds between the last stored message's commit at its home and its copy here (0 once caught up). */
  lagSeconds: number;
  /** When the last batch from this peer was handled (ms). */
  lastBatchAtMs: number;
}

/** The consumer group a datacenter's sync service reads its peers' committed streams as. */
export function syncGroup(dc: string): string {
  return `sync-${dc}`;
}

export class SyncService {
  private readonly subs: Subscription[] = [];
  readonly progress = new Map<string, PeerProgress>();

  constructor(
    private readonly options: { dc: string },
    private readonly deps: { bus: Pick<Bus, 'publishCommitted'>; store: ReplicaStore; peers: readonly SyncPeer[] },
  ) {
    for (const p of deps.peers) this.progress.set(p.name, { applied: 0, filled: 0, lagSeconds: 0, lastBatchAtMs: 0 });
  }

  start(): void {
    for (const peer of this.deps.peers) {
      this.subs.push(peer.bus.consumeCommitted(syncGroup(this.options.dc), (batch) => this.copy(peer, batch)));
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.subs.map((s) => s.close()));
  }

  /** Entries of each peer's committed stream this datacenter has not copied yet (read but not acked, plus not read). */
  async lag(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    await Promise.all(this.deps.peers.map(async (peer) => {
      try {
        out.set(peer.name, (await peer.bus.consumerLag()).get(syncGroup(this.options.dc)) ?? 0);
      } catch {
        /* the peer is unreachable: its lag is unknown, not 0 */
      }
    }));
    return out;
  }

  /** One batch of a peer's committed stream: store what is new here (gaps filled first), then publish it here. */
  async copy(peer: SyncPeer, batch: readonly Committed[]): Promise<CommittedEffects> {
    const own = batch.filter((c) => c.message && !c.replicated && c.originDc === peer.name);
    const progress = this.progress.get(peer.name)!;
    progress.lastBatchAtMs = Date.now();
    if (own.length === 0) return {};
    // Per conversation, in the batch's order.
    const byConversation = new Map<string, Committed[]>();
    for (const c of own) {
      const id = c.message!.conversationId;
      const list = byConversation.get(id);
      if (list) list.push(c);
      else byConversation.set(id, [c]);
    }
    const heads = await this.deps.store.heads([...byConversation.keys()]);
    const toStore: { message: ChatMessage; alsoNotify: string[] }[] = [];
    let filling = 0;
    let unfinished = false;
    for (const [conversationId, entries] of byConversation) {
      let head = heads.get(conversationId)?.lastSeq ?? 0;
      for (const c of entries) {
        const message = messageFromWire(c.message!);
        if (message.seq <= head) continue; // held already (copied, or filled from the peer's store)
        if (message.seq > head + 1) {
          // Past FILL_MAX in this batch: what was filled is stored, and the batch is handed again to go on from there.
          const { messages: missing, complete } = await this.fill(peer, conversationId, head, message.seq - 1, FILL_MAX - filling);
          for (const m of missing) toStore.push({ message: m, alsoNotify: [] });
          filling += missing.length;
          progress.filled += missing.length;
          if (!complete) {
            unfinished = true;
            break;
          }
        }
        toStore.push({ message, alsoNotify: [...c.alsoNotify] });
        head = message.seq;
      }
    }
    const fresh = await this.storeAndPublish(peer.name, toStore);
    progress.applied += fresh;
    if (unfinished) throw new StoreUnavailableError(`filling a gap from ${peer.name}'s store, ${FILL_MAX} messages at a time; the batch goes on from there`);
    // Held here now, stored by this batch or before: the home's replicated acks wait for this.
    void peer.notify?.(own.map((c) => copiedKey(c.message!.conversationId, Number(c.message!.seq)))).catch(() => undefined);
    const last = toStore.at(-1)?.message.sentAtMs;
    progress.lagSeconds = last === undefined ? 0 : Math.max(0, (Date.now() - last) / 1000);
    return { counters: { copied: fresh } };
  }

  /** Store copies here, and publish those new here to this datacenter's committed stream (marked copies: pushed here, skipped by risk, webhooks, sync). */
  private async storeAndPublish(peer: string, toStore: readonly { message: ChatMessage; alsoNotify: string[] }[]): Promise<number> {
    const stored = await this.deps.store.replicate(toStore.map(({ message }) => ({ message, homeDc: peer })));
    const fresh = toStore.filter((_, i) => stored[i]);
    if (fresh.length > 0) {
      await this.deps.bus.publishCommitted(fresh.map(({ message, alsoNotify }) => committed({
        message: messageToWire(message), originDc: peer, replicated: true, alsoNotify,
      })));
    }
    return fresh.length;
  }

  /**
   * Messages afterSeq < seq ≤ upTo of a conversation held in the peer's store
   * (those it expired are skipped), at most `max` (paged); complete when
   * every one up to upTo was read.
   */
  private async fill(peer: SyncPeer, conversationId: string, afterSeq: number, upTo: number, max: number): Promise<{ messages: ChatMessage[]; complete: boolean }> {
    let store: Pick<MessageStore, 'after'>;
    try {
      store = await peer.store();
    } catch (err) {
      throw new StoreUnavailableError(`datacenter ${peer.name}'s store is unreachable; the gap is filled once it is`, { cause: err });
    }
    const out: ChatMessage[] = [];
    let complete = false;
    for (let from = afterSeq; ;) {
      if (from >= upTo) {
        complete = true;
        break;
      }
      if (out.length >= max) break;
      const page = await store.after(conversationId, from, Math.min(FILL_PAGE, max - out.length), upTo);
      if (page.length === 0) {
        complete = true; // nothing more held there below upTo (expired by retention): nothing older to copy
        break;
      }
      out.push(...page);
      from = page.at(-1)!.seq;
    }
    if (out.length > 0) log.debug({ peer: peer.name, conversationId, from: afterSeq + 1, to: upTo, read: out.length }, 'filled a gap');
    return { messages: out, complete };
  }
}
