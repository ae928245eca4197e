// The `replicated` acknowledgement mode (LONGLINK_DC_ACK=replicated): a write
// is acked only once it is stored in its home and in at least one other
// datacenter, so losing a whole datacenter loses no acked message.
//
// The home publishes what it committed to its committed stream (as always);
// each peer's sync service copies it and then says so on the home's Redis
// (PUBLISH on `<prefix>dc:copied`: the copied (conversation, seq)s). The
// home waits for one peer that serves its own homes (a datacenter whose homes
// were failed over is gone, and not waited for) to have said so for every
// message of the batch; a notice can be lost (pub/sub), so past NOTICE_MS it
// asks the peers' stores instead. Not copied within ASK_MS: the batch fails
// as if the store were unavailable, and the bus hands it again (its sends
// then find themselves stored, and are published and waited for again).
// With no peer serving its own homes left, writes are acked once stored here,
// and counted as acked unreplicated.
import { Redis } from 'ioredis';
import { StoreUnavailableError, type ReplicaStore } from '../engines/store.js';
import type { Serving } from './homes.js';
import { log as rootLog } from '../observability/log.js';

const log = rootLog.child({ component: 'dc-replication' });

/** How long a batch waits for a peer's notice before asking the peers' stores. */
const NOTICE_MS = 1500;
/** How long asking the peers' stores may take before the batch fails (and is handed again). */
const ASK_MS = 2000;

export function copiedChannel(prefix: string): string {
  return `${prefix}dc:copied`;
}

/** What a sync service publishes once it holds messages of the datacenter it read them from. */
export interface CopiedNotice {
  dc: string;
  keys: string[];
}

export function copiedKey(conversationId: string, seq: number): string {
  return `${conversationId}#${seq}`;
}

export interface ReplicationCounters {
  /** Batches confirmed copied by a peer's notice, or by asking its store. */
  confirmedByNotice: number;
  confirmedByAsking: number;
  /** Batches acked with no peer left to copy them (every other datacenter failed over). */
  unreplicated: number;
  /** Batches that failed (handed again): no peer had copied them in time. */
  failed: number;
}

interface Waiting {
  keys: Set<string>;
  /** Per peer, the keys it confirmed. */
  confirmed: Map<string, Set<string>>;
  done(): void;
}

/** Keys peers confirmed lately, kept so a wait that starts after its notice (the push group's) is answered at once. */
const CONFIRMED_KEPT = 100_000;

export class ReplicationWaiter {
  private readonly subscriber: Redis;
  private readonly waiting = new Set<Waiting>();
  /** key → the peers that confirmed it, recent ones only (insertion order: oldest first). */
  private readonly confirmedLately = new Map<string, Set<string>>();
  readonly counters: ReplicationCounters = { confirmedByNotice: 0, confirmedByAsking: 0, unreplicated: 0, failed: 0 };

  constructor(
    private readonly options: { redisUrl: string; prefix: string },
    private readonly deps: {
      serving: Serving;
      peers: readonly { name: string; store(): Promise<Pick<ReplicaStore, 'heads'>> }[];
    },
  ) {
    this.subscriber = new Redis(options.redisUrl, { maxRetriesPerRequest: null, lazyConnect: true });
    this.subscriber.on('error', () => undefined); // reconnects by itself; a lost notice is made up by asking
    this.subscriber.on('message', (_channel: string, text: string) => this.notice(text));
  }

  async start(): Promise<void> {
    await this.subscriber.connect().catch(() => undefined);
    await this.subscriber.subscribe(copiedChannel(this.options.prefix)).catch((err: unknown) => log.warn({ err }, 'could not subscribe to copy notices; asking peers instead'));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const w of this.waiting) w.done(); // ends the wait; a stopped waiter confirms nothing (see expect)
    this.subscriber.disconnect();
  }

  private stopped = false;

  /** The peers that must copy a write now: those serving their own homes (the others are gone). */
  private required(): string[] {
    return this.deps.peers.map((p) => p.name).filter((name) => this.deps.serving.recordOf(name).servedBy === name);
  }

  private notice(text: string): void {
    let n: CopiedNotice;
    try {
      n = JSON.parse(text) as CopiedNotice;
    } catch {
      return;
    }
    if (typeof n.dc !== 'string' || !Array.isArray(n.keys)) return;
    for (const k of n.keys) {
      if (typeof k !== 'string') continue;
      let by = this.confirmedLately.get(k);
      if (!by) {
        if (this.confirmedLately.size >= CONFIRMED_KEPT) this.confirmedLately.delete(this.confirmedLately.keys().next().value!);
        this.confirmedLately.set(k, (by = new Set()));
      }
      by.add(n.dc);
    }
    for (const w of this.waiting) {
      let mine = w.confirmed.get(n.dc);
      for (const k of n.keys) {
        if (!w.keys.has(k)) continue;
        if (!mine) w.confirmed.set(n.dc, (mine = new Set()));
        mine.add(k);
      }
      if (mine && mine.size === w.keys.size) w.done();
    }
  }

  /**
   * Call before publishing: resolves once one required peer holds every one
   * of `messages`; rejects StoreUnavailableError when none does in time.
   */
  expect(messages: readonly { conversationId: string; seq: number }[]): Promise<void> {
    if (messages.length === 0) return Promise.resolve();
    if (this.required().length === 0) {
      this.counters.unreplicated++;
      return Promise.resolve();
    }
    const keys = new Set(messages.map((m) => copiedKey(m.conversationId, m.seq)));
    const required = this.required();
    if (required.some((peer) => [...keys].every((k) => this.confirmedLately.get(k)?.has(peer)))) {
      this.counters.confirmedByNotice++;
      return Promise.resolve();
    }
    let resolveNotice!: () => void;
    const noticed = new Promise<void>((resolve) => (resolveNotice = resolve));
    const w: Waiting = { keys, confirmed: new Map(), done: () => resolveNotice() };
    this.waiting.add(w);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), NOTICE_MS)));
    return Promise.race([noticed.then(() => 'noticed' as const), late]).then(async (how) => {
      clearTimeout(timer);
      this.waiting.delete(w);
      if (how === 'noticed' && !this.stopped) {
        this.counters.confirmedByNotice++;
        return;
      }
      if (this.stopped) throw new StoreUnavailableError('stopping before another datacenter confirmed the copy: not acked; the sender resends');
      if (await this.askPeers(messages)) {
        this.counters.confirmedByAsking++;
        return;
      }
      this.counters.failed++;
      throw new StoreUnavailableError('not copied to another datacenter in time (LONGLINK_DC_ACK=replicated): not acked yet; handed again');
    });
  }

  /** Whether some required peer's store holds every message (its head at or past each one's seq). */
  private async askPeers(messages: readonly { conversationId: string; seq: number }[]): Promise<boolean> {
    const need = new Map<string, number>();
    for (const m of messages) need.set(m.conversationId, Math.max(need.get(m.conversationId) ?? 0, m.seq));
    const required = new Set(this.required());
    if (required.size === 0) return true;
    const answers = await Promise.all(this.deps.peers.filter((p) => required.has(p.name)).map(async (peer) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        const heads = await Promise.race([
          (async () => (await peer.store()).heads([...need.keys()]))(),
          new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('timeout')), ASK_MS))),
        ]);
        return [...need].every(([c, seq]) => (heads.get(c)?.lastSeq ?? 0) >= seq);
      } catch {
        return false;
      } finally {
        clearTimeout(timer);
      }
    }));
    return answers.some(Boolean);
  }
}
