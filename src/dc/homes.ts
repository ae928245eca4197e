// Homes: which datacenter assigns a conversation's seqs. One writer per
// conversation across datacenters: a write to a conversation homed elsewhere
// is forwarded there (src/dc/forward.ts) and acked once its home committed.
//
// - A conversation's home is chosen when it is created, and stored with it
//   (conversations.home_dc; copied by the sync service with the messages):
//   - a 1:1 conversation is homed by a hash of its id over the datacenters'
//     names (directHome), so both members' datacenters agree on it without
//     asking each other, even before it exists;
//   - a group is homed where it was created (the datacenter of the process
//     that handled its create).
// - A conversation another datacenter has not copied here yet is treated by
//   those rules: a 1:1 by the hash, an unknown group as local (its requests
//   are answered NOT_FOUND here until its creation is copied).
//
// Who serves a datacenter's homes (Serving below): the datacenter itself,
// unless another took them over (`longlink dc failover a`, src/dc/failover.ts)
// under a higher epoch; the records are kept in every datacenter's store and
// each process merges its own store's with every reachable peer's (the
// highest epoch wins), every REFRESH_MS. A process serves nothing homed here
// before it has compared records with every peer once (or STARTUP_HOLD_MS
// passed with one unreachable): a datacenter that returns after a takeover
// learns of it before it could assign a conflicting seq. With a witness
// (src/dc/witness.ts), a datacenter serves its homes only while it holds
// their lease there or has just heard every peer, and acts on a takeover of
// another's homes only after a grace.
import { directMembers } from '../protocol/ids.js';
import type { DatacenterStore, HomeRecord, ReplicaStore } from '../engines/store.js';
import { log as rootLog } from '../observability/log.js';
import { within } from './within.js';
import { Periodic } from '../periodic.js';
import { TAKEOVER_GRACE_MS, type Witness } from './witness.js';

const log = rootLog.child({ component: 'dc-homes' });

/**
 * FNV-1a over UTF-16 code units, then MurmurHash3's finalizer (FNV's low bits
 * alone are the parity of the text's: a modulo 2 of them would home every
 * `u:x1:y1`-like id alike). The same number in every process and version.
 */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The home of a 1:1 conversation: its id's hash over the datacenters' names, sorted. */
export function directHome(conversationId: string, dcs: readonly string[]): string {
  const sorted = [...dcs].sort();
  return sorted[hash(conversationId) % sorted.length]!;
}

/** Homes known here, kept at most this many (homes change only by takeover, which is not cached here). */
const KEPT = 100_000;

/** Where a write goes: a datacenter that serves its conversation, or `hold` (its batch waits and is handed again: the home is moving, or not certainly served here). */
export type Route = string | 'hold';

export const REFRESH_MS = 500;
export const STARTUP_HOLD_MS = 15_000;
/** With a witness, a home whose lease is not certainly held is served only if every peer was read from within this long. */
export const HEARD_FRESH_MS = 1500;

/** Who serves each datacenter's homes, as this process last merged it. */
export class Serving {
  private records = new Map<string, HomeRecord>();
  /** Merging the records, one refresh at a time (a slower earlier one finishing last would put back an older view). */
  private readonly refreshes: Periodic;
  /** With a witness: renewing leases, on a timer of their own (a witness slow to answer never delays reading the peers, what "heard" rests on). */
  private readonly renewals: Periodic | undefined;
  private readonly startedAt = Date.now();
  /** Per peer: when the last read of its records that succeeded started (what it said is known as of then; performance.now()). */
  private readonly heardAt = new Map<string, number>();
  private ready = false;
  /** With a witness: per home served here, until when its lease is certainly held (performance.now(): a clock that never steps). */
  private readonly leaseUntil = new Map<string, number>();
  /** Per datacenter's homes: when this process first saw the record in force (performance.now()); a takeover's grace runs from it. */
  private readonly firstSeen = new Map<string, { epoch: number; at: number }>();

  constructor(
    readonly dc: string,
    private readonly deps: {
      store: Pick<DatacenterStore, 'dcHomes'>;
      peers: readonly { name: string; store(): Promise<Pick<DatacenterStore, 'dcHomes'>> }[];
      /** Leases of the homes served here (src/dc/witness.ts). @default none: failover by the operator only */
      witness?: Pick<Witness, 'renew' | 'release'>;
    },
    private readonly options: { refreshMs?: number; startupHoldMs?: number } = {},
  ) {
    const every = options.refreshMs ?? REFRESH_MS;
    // A refresh never fails (it logs and keeps the last view); a renewal neither (each lease runs out on its own).
    this.refreshes = new Periodic(every, () => this.refreshOnce(), () => undefined);
    const witness = deps.witness;
    this.renewals = witness ? new Periodic(every, () => this.renewLeases(witness), () => undefined) : undefined;
  }

  start(): void {
    void this.refresh();
    this.refreshes.start();
    this.renewals?.start();
  }

  stop(): void {
    void this.refreshes.stop();
    void this.renewals?.stop();
  }

  /** Merge the records of this datacenter's store and of every peer that answers within a second (or join the merge running). */
  refresh(): Promise<void> {
    return this.refreshes.now();
  }

  private async refreshOnce(): Promise<void> {
    const merged = new Map<string, HomeRecord>();
    const take = (records: Map<string, HomeRecord>) => {
      for (const [dc, r] of records) {
        const had = merged.get(dc);
        if (!had || r.epoch > had.epoch) merged.set(dc, r);
      }
    };
    try {
      take(await this.deps.store.dcHomes());
    } catch (err) {
      log.warn({ err }, 'could not read who serves which homes here; keeping the last view');
      return;
    }
    const heard = new Map<string, number>();
    await Promise.all(this.deps.peers.map(async (peer) => {
      const started = performance.now();
      try {
        take(await within(1000, async () => (await peer.store()).dcHomes()));
        heard.set(peer.name, started);
      } catch {
        /* unreachable now: its records are merged once it answers */
      }
    }));
    // The records and when each peer was heard move together: a peer heard as of a time, with what it said then.
    this.records = merged;
    for (const [peer, at] of heard) this.heardAt.set(peer, at);
    const seenAt = performance.now();
    for (const [dc, r] of merged) if (this.firstSeen.get(dc)?.epoch !== r.epoch) this.firstSeen.set(dc, { epoch: r.epoch, at: seenAt });
    if (!this.ready && (this.heardAt.size === this.deps.peers.length || Date.now() - this.startedAt >= (this.options.startupHoldMs ?? STARTUP_HOLD_MS))) {
      this.ready = true;
      log.info({ heard: [...this.heardAt.keys()], served: Object.fromEntries(merged) }, 'serving homes');
    }
  }

  /** Renew the lease of every home served here; let go of those no longer served here. */
  private async renewLeases(witness: NonNullable<Serving['deps']['witness']>): Promise<void> {
    const homes = [this.dc, ...this.deps.peers.map((p) => p.name)];
    await Promise.all(homes.map(async (home) => {
      if (this.recordOf(home).servedBy !== this.dc) {
        if (this.leaseUntil.delete(home)) await witness.release(home, this.dc);
        return;
      }
      try {
        const until = await witness.renew(home, this.dc, this.recordOf(home).epoch);
        if (until === undefined) this.leaseUntil.delete(home);
        else this.leaseUntil.set(home, until);
      } catch {
        /* the witness does not answer: the lease runs out, unless every peer is heard meanwhile */
      }
    }));
  }

  /** When a peer's records were last read (the start of that read, performance.now()), or undefined if never. */
  heardFrom(peer: string): number | undefined {
    return this.heardAt.get(peer);
  }

  /** With a witness: whether a home served here may be written now (its lease held, or every peer just heard). */
  private safeToServe(home: string, now: number): boolean {
    if (!this.deps.witness) return true;
    if ((this.leaseUntil.get(home) ?? 0) > now) return true;
    return this.deps.peers.every((p) => now - (this.heardAt.get(p.name) ?? 0) < HEARD_FRESH_MS);
  }

  /** The record in force for a datacenter's homes (epoch 0, itself, when none was ever written). */
  recordOf(home: string): HomeRecord {
    return this.records.get(home) ?? { servedBy: home, epoch: 0, state: 'serving', changedAtMs: 0 };
  }

  /** Where writes to a conversation homed in `home` go now. */
  route(home: string): Route {
    const r = this.recordOf(home);
    if (r.servedBy !== this.dc) return r.servedBy;
    // Served here: once this process has compared records with its peers, and not while being handed back.
    if (!this.ready || r.state !== 'serving') return 'hold';
    const now = performance.now();
    // Another's homes taken over: once the grace passed since this process saw the record (a peer still reading this
    // datacenter's store has seen it too, and stopped; measured here, not from another host's clock).
    if (home !== this.dc && now - (this.firstSeen.get(home)?.at ?? now) < TAKEOVER_GRACE_MS) return 'hold';
    return this.safeToServe(home, now) ? this.dc : 'hold';
  }

  /** Every record in force. */
  all(): Map<string, HomeRecord> {
    return new Map(this.records);
  }
}

export class Homes {
  private readonly known = new Map<string, string>();
  readonly dcs: readonly string[];

  constructor(
    /** This datacenter. */
    readonly dc: string,
    peers: readonly string[],
    private readonly store: Pick<ReplicaStore, 'heads'>,
    /** Who serves which homes (absent: every datacenter its own). */
    readonly serving?: Serving,
  ) {
    this.dcs = [dc, ...peers];
  }

  /** Where each partition's homed writes go now: the datacenter serving its home, or `hold`. */
  async routesOf(partitions: readonly string[]): Promise<Map<string, Route>> {
    const homes = await this.homesOf(partitions);
    const out = new Map<string, Route>();
    for (const [p, home] of homes) out.set(p, this.serving ? this.serving.route(home) : home);
    return out;
  }

  /** The home of each partition that is a conversation (a user's partition has none: absent). */
  async homesOf(partitions: readonly string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const unknown: string[] = [];
    for (const p of new Set(partitions)) {
      const home = this.known.get(p);
      if (home !== undefined) out.set(p, home);
      else if (p.startsWith('u:') || p.startsWith('g:')) unknown.push(p);
    }
    if (unknown.length === 0) return out;
    const heads = await this.store.heads(unknown);
    for (const p of unknown) {
      const head = heads.get(p);
      if (directMembers(p)) {
        // By the hash, always: a 1:1 conversation made by a datacenter serving another's homes is still homed there.
        const home = directHome(p, this.dcs);
        this.remember(p, home);
        out.set(p, home);
      } else if (head) {
        const home = head.homeDc === '' ? this.dc : head.homeDc;
        this.remember(p, home);
        out.set(p, home);
      } else {
        out.set(p, this.dc); // a group not copied here (yet): its create is handled here, or it is NOT_FOUND here
      }
    }
    return out;
  }

  /** The home of one conversation as this datacenter names it ('' in the store is this one). */
  async homeOf(conversationId: string): Promise<string> {
    return (await this.homesOf([conversationId])).get(conversationId) ?? this.dc;
  }

  private remember(conversationId: string, home: string): void {
    if (this.known.size >= KEPT) this.known.delete(this.known.keys().next().value!);
    this.known.set(conversationId, home);
  }
}
