// Moving a datacenter's homes (the conversations whose seqs it assigns):
//
// - failover(a → b): when a is gone. b serves a's conversations from its copy
//   of them under a higher epoch, written to every store reachable (b's, and
//   a's own if it answers, so a live a stops at once). A datacenter that
//   comes back compares records with its peers before it serves anything
//   homed there (Serving, homes.ts), so it never assigns a conflicting seq.
//   What a committed and b had not copied yet (the replication lag, in
//   `local` acknowledgement mode; nothing acked in `replicated` mode) is not
//   in b's copy: b's next seqs are given to other messages.
// - failback(a): by command, once a is back. The record goes to `returning`
//   (a higher epoch): b stops serving a's conversations and a does not serve
//   them yet (writes are answered UNAVAILABLE and resent); after the processes
//   saw it (two refreshes), a catches up from b's store: every conversation
//   homed in a that b changed since the takeover is compared from the end,
//   a's rows that differ (its loss window, which b never had) are set aside
//   as orphans, and b's are copied in; then the record goes back to
//   `serving` and a serves its homes again.
import type { DatacenterStore, HomeRecord, MessageStore, ReplicaStore } from '../engines/store.js';
import type { ChatMessage } from '../protocol/index.js';
import { directHome, REFRESH_MS, type Serving } from './homes.js';
import type { Witness } from './witness.js';
import { log as rootLog } from '../observability/log.js';
import { within } from './within.js';
import { Periodic } from '../periodic.js';

const log = rootLog.child({ component: 'dc-failover' });

type DcStore = DatacenterStore & ReplicaStore & Pick<MessageStore, 'after' | 'before'>;

export interface FailoverDeps {
  /** This datacenter. */
  dc: string;
  store: DcStore;
  /** Every other datacenter's store, opened on demand. */
  peers: ReadonlyMap<string, () => Promise<DcStore>>;
}

/** How far back a catch-up looks before the takeover (clocks of the datacenters may differ this much). */
const CLOCK_MARGIN_MS = 60_000;
/** Rows compared from the end of each conversation: a loss window longer than this is not repaired. */
const COMPARE_ROWS = 1000;
const PAGE = 500;
/** Conversations a catch-up looks at, at most. */
const CHANGED_MAX = 1_000_000;

/** Each datacenter's store that answers within 2 s (this one always), by name. */
async function reachable(deps: FailoverDeps): Promise<Map<string, DcStore>> {
  const out = new Map<string, DcStore>([[deps.dc, deps.store]]);
  await Promise.all([...deps.peers].map(async ([name, open]) => {
    try {
      const store = await within(2000, open);
      await within(2000, () => store.dcHomes());
      out.set(name, store);
    } catch {
      /* unreachable: it learns the record from the others when it is back */
    }
  }));
  return out;
}

/** The record in force for `home` across these stores (highest epoch). */
async function current(stores: Map<string, DcStore>, home: string): Promise<HomeRecord> {
  let best: HomeRecord = { servedBy: home, epoch: 0, state: 'serving', changedAtMs: 0 };
  for (const s of stores.values()) {
    const r = (await s.dcHomes()).get(home);
    if (r && r.epoch > best.epoch) best = r;
  }
  return best;
}

async function putEverywhere(stores: Map<string, DcStore>, home: string, record: HomeRecord): Promise<void> {
  await Promise.all([...stores.values()].map((s) => s.putDcHome(home, record)));
}

export interface MoveResult {
  dc: string;
  servedBy: string;
  epoch: number;
  /** The datacenters the record was written to (the others learn it when they are back). */
  writtenTo: string[];
}

/**
 * `home`'s conversations are served by `to` from now on (default: this
 * datacenter). `claim`, given the new record's epoch, must say yes before the
 * record is written (the witness's lease, for an automatic failover).
 */
export async function failover(deps: FailoverDeps, home: string, to = deps.dc, claim?: (epoch: number) => Promise<boolean>): Promise<MoveResult> {
  const stores = await reachable(deps);
  if (!stores.has(to)) throw new Error(`datacenter ${to} is not reachable from ${deps.dc}; it cannot take ${home}'s homes over`);
  const was = await current(stores, home);
  if (was.servedBy === to && was.state === 'serving') return { dc: home, servedBy: to, epoch: was.epoch, writtenTo: [] };
  const record: HomeRecord = { servedBy: to, epoch: was.epoch + 1, state: 'serving', changedAtMs: Date.now() };
  if (claim && !(await claim(record.epoch))) return { dc: home, servedBy: was.servedBy, epoch: was.epoch, writtenTo: [] };
  await putEverywhere(stores, home, record);
  log.warn({ home, servedBy: to, epoch: record.epoch, writtenTo: [...stores.keys()] }, 'homes taken over');
  return { dc: home, servedBy: to, epoch: record.epoch, writtenTo: [...stores.keys()] };
}

export interface FailbackResult extends MoveResult {
  /** Conversations compared, messages copied back, messages of the returning datacenter set aside as orphans. */
  conversations: number;
  copied: number;
  orphaned: number;
}

/** `home` serves its own conversations again, after catching up from the datacenter that served them. */
export async function failback(deps: FailoverDeps, home: string, dcs: readonly string[]): Promise<FailbackResult> {
  const stores = await reachable(deps);
  const homeStore = stores.get(home);
  if (!homeStore) throw new Error(`datacenter ${home} is not reachable from ${deps.dc}; it must be back before it takes its homes back`);
  const was = await current(stores, home);
  if (was.servedBy === home && was.state === 'serving') return { dc: home, servedBy: home, epoch: was.epoch, writtenTo: [], conversations: 0, copied: 0, orphaned: 0 };
  const server = was.state === 'returning' ? undefined : was.servedBy;
  const serverStore = server === undefined ? undefined : stores.get(server);
  if (server !== undefined && !serverStore) throw new Error(`datacenter ${server}, which serves ${home}'s homes, is not reachable: it must stop serving them first`);
  const since = was.changedAtMs - CLOCK_MARGIN_MS;
  // 1. Nobody serves them: the server stops, the returning one waits.
  const returning: HomeRecord = { servedBy: home, epoch: was.epoch + 1, state: 'returning', changedAtMs: was.changedAtMs };
  await putEverywhere(stores, home, returning);
  await new Promise((r) => setTimeout(r, REFRESH_MS * 2 + 1000));
  // 2. Catch up from the server's store (every server since the takeover wrote there, or copied there): every conversation
  // homed there that either side changed since the takeover.
  let conversations = 0;
  let copied = 0;
  let orphaned = 0;
  const source = serverStore ?? [...stores.values()].find((s) => s !== homeStore);
  if (source) {
    const ids = new Set<string>();
    for (const side of [source, homeStore]) {
      for (const c of await changedSince(side, since)) {
        if (c.id.startsWith('u:') ? directHome(c.id, dcs) === home : c.homeDc === home || (side === homeStore && c.homeDc === '')) ids.add(c.id);
      }
    }
    const heads = await source.heads([...ids]);
    for (const id of ids) {
      conversations++;
      const r = await catchUp(homeStore, source, id, heads.get(id)?.lastSeq ?? 0, home);
      copied += r.copied;
      orphaned += r.orphaned;
    }
  }
  // 3. Served by its home again.
  const serving: HomeRecord = { servedBy: home, epoch: returning.epoch + 1, state: 'serving', changedAtMs: Date.now() };
  await putEverywhere(stores, home, serving);
  log.warn({ home, epoch: serving.epoch, conversations, copied, orphaned }, 'homes handed back');
  return { dc: home, servedBy: home, epoch: serving.epoch, writtenTo: [...stores.keys()], conversations, copied, orphaned };
}

/** Every conversation changed since `sinceMs` (paged by activity time; CHANGED_MAX at most). */
async function changedSince(store: DcStore, sinceMs: number): Promise<{ id: string; homeDc: string }[]> {
  const out = new Map<string, { id: string; homeDc: string }>();
  for (let after = sinceMs; out.size < CHANGED_MAX;) {
    const page = await store.changedSince(after, PAGE);
    for (const c of page) out.set(c.id, c);
    if (page.length < PAGE) break;
    const last = page.at(-1)!.lastAtMs;
    // A page of one instant: the next instant (rows of that instant past the page are missed, and logged).
    if (last === after) log.warn({ at: after }, 'more conversations changed in one millisecond than a page holds; some are not caught up');
    after = last === after ? last + 1 : last;
  }
  return [...out.values()];
}

/** Make `target`'s copy of a conversation what `source` holds up to `upTo`: set a diverged tail aside, copy what is missing. */
async function catchUp(target: DcStore, source: DcStore, conversationId: string, upTo: number, home: string): Promise<{ copied: number; orphaned: number }> {
  const [mine, theirs] = await Promise.all([target.before(conversationId, 0, COMPARE_ROWS), source.before(conversationId, upTo + 1, COMPARE_ROWS)]);
  const mineBySeq = new Map<number, ChatMessage>(mine.map((m) => [m.seq, m]));
  const oldestMine = mine[0]?.seq ?? 1;
  let orphaned = 0;
  // The first seq (in the window compared) where this copy differs from the served one: another message there, a hole
  // here, or a row here past the served head.
  const differs = theirs.find((t) => t.seq >= oldestMine && mineBySeq.get(t.seq)?.serverMsgId !== t.serverMsgId)?.seq;
  const beyond = mine.find((m) => m.seq > upTo)?.seq;
  const diverged = differs !== undefined || beyond !== undefined ? { seq: Math.min(differs ?? Infinity, beyond ?? Infinity) } : undefined;
  if (diverged) orphaned = await target.orphanFrom(conversationId, diverged.seq, Date.now());
  let copied = 0;
  let head = (await target.heads([conversationId])).get(conversationId)?.lastSeq ?? 0;
  while (head < upTo) {
    const page = await source.after(conversationId, head, PAGE, upTo);
    if (page.length === 0) break;
    const stored = await target.replicate(page.map((message) => ({ message, homeDc: home })));
    copied += stored.filter(Boolean).length;
    head = page.at(-1)!.seq;
  }
  return { copied, orphaned };
}

/**
 * Failover on a timeout (with a witness, src/dc/witness.ts): run by each
 * datacenter's sync service. A peer not heard for `afterMs` whose lease at
 * the witness, held before, has expired (nobody renews it: the peer is gone,
 * or cut off from the witness and from here alike) has its homes taken over by this
 * datacenter: the lease first (one taker), then the record. Failback is
 * the operator's, once the peer is back.
 */
export class AutoFailover {
  private readonly checks: Periodic;
  private readonly startedAt = performance.now();
  /** Takeovers done by this process. */
  taken = 0;

  constructor(
    private readonly deps: FailoverDeps & {
      serving: Pick<Serving, 'heardFrom' | 'recordOf'>;
      witness: Pick<Witness, 'holder' | 'take' | 'everServed' | 'leaseMs'>;
    },
    private readonly options: { afterMs: number; checkMs?: number },
  ) {
    this.checks = new Periodic(options.checkMs ?? 1000, () => this.check(), (err) => {
      log.warn({ reason: (err as Error).message }, 'automatic failover check failed; tried again');
    });
  }

  start(): void {
    this.checks.start();
  }

  stop(): Promise<void> {
    return this.checks.stop();
  }

  private async check(): Promise<void> {
    const now = performance.now(); // the clock of Serving's heardFrom
    if (now - this.startedAt < this.options.afterMs) return; // not long enough up to tell a peer gone from one not heard yet
    for (const peer of this.deps.peers.keys()) {
      if (this.deps.serving.recordOf(peer).servedBy !== peer) continue; // served elsewhere already
      const heard = this.deps.serving.heardFrom(peer) ?? this.startedAt;
      if (now - heard < this.options.afterMs) continue;
      if ((await this.deps.witness.holder(peer)) !== undefined) continue; // its lease is renewed: alive, only cut off from here
      if (!(await this.deps.witness.everServed(peer))) continue; // never up yet: starting, not lost
      log.warn({ peer, unheardMs: now - heard }, 'a datacenter unheard past its lease: taking its homes over');
      // The lease first, under the new record's epoch (one taker; never renewed again under an older record), then the
      // record; all of it well within the lease, so that the lease taken is still held when the record is written.
      const moved = await within(this.deps.witness.leaseMs / 2, () => failover(this.deps, peer, this.deps.dc, (epoch) => this.deps.witness.take(peer, this.deps.dc, epoch)));
      if (moved.servedBy === this.deps.dc && moved.writtenTo.length > 0) this.taken++;
    }
  }
}
