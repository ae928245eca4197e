// What the sync service copies besides messages: read marks, delivered
// cursors and token revocations. They are not in the timeline (a read mark
// moves a member's row, a revocation lives in the sessions), so they are
// read from each peer's store, where every change is stamped with the time
// it was made there (store.marksSince), and merged here forward only and
// unstamped (store.mergeMarks: nothing is copied back, so nothing loops).
//
// - Per peer, a progress time kept in this datacenter's store: a restart
//   resumes from it. A poll reads the changes from it up to the peer's now
//   less SETTLE_MS (a change stamped before that has committed there), at
//   most PAGE of each kind, and moves the progress to where every kind was
//   read to; a change read twice merges to the same result.
// - A mark whose member or conversation is not here yet (its copy by the
//   message sync is on its way) is tried again at the next polls, for a
//   minute at most (WAITING_MS).
// - A read mark that moved here is told to the conversation's members
//   connected here (a receipt, as the home told its own); a revocation is
//   applied to this datacenter's sessions and its gateways kick what it
//   covers, as revokeTokens does at home.
import { encodeFrame, makeFrame } from '../protocol/index.js';
import { directMembers } from '../protocol/ids.js';
import { ALL_GATEWAYS, down, type Bus } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { ConversationStore, DatacenterStore, MarkChanges } from '../engines/store.js';
import { MAX_TOKEN_TTL_MS } from '../auth/revocation.js';
import { deliverToUsers } from '../logic/fanout.js';
import { log as rootLog } from '../observability/log.js';
import { Periodic } from '../periodic.js';

const log = rootLog.child({ component: 'dc-marks' });

/** How often each peer is asked. */
export const MARKS_POLL_MS = 1000;
/** A change is read once it is this old on the peer's clock (its transaction has committed by then). */
export const SETTLE_MS = 1000;
/** Changes of each kind read per poll. */
export const PAGE = 2000;
/** A group's receipt goes to its members connected here up to this size (as at home), else to the reader's devices only. */
const RECEIPT_FANOUT_MAX = 200;

/** Marks whose member or conversation is not held here yet are tried again for this long, this many per peer at most. */
const WAITING_MS = 60_000;
const WAITING_MAX = 10_000;

/** Marks waiting for their row's copy, with when they first found none. */
interface Waiting {
  reads: (MarkChanges['reads'][number] & { firstMissedMs?: number })[];
  cursors: (MarkChanges['cursors'][number] & { firstMissedMs?: number })[];
}

export interface MarksPeer {
  name: string;
  store(): Promise<Pick<DatacenterStore, 'marksSince'>>;
}

export interface MarksProgress {
  /** Read marks, cursors and revocations merged here from this peer since start. */
  merged: number;
  /** The peer's time this datacenter has copied its changes up to (ms on its clock). */
  upToMs: number;
}

export class MarksCopier {
  /** One poll of every peer at a time (a slow one does not overlap the next). */
  private readonly polls: Periodic;
  private readonly since = new Map<string, number>();
  private readonly waiting = new Map<string, Waiting>();
  readonly progress = new Map<string, MarksProgress>();

  constructor(
    private readonly deps: {
      store: Pick<DatacenterStore, 'mergeMarks' | 'dcState' | 'putDcState'> & Pick<ConversationStore, 'members'>;
      sessions: Sessions;
      bus: Bus;
      peers: readonly MarksPeer[];
    },
    private readonly options: { pollMs?: number; page?: number; settleMs?: number } = {},
  ) {
    for (const p of deps.peers) this.progress.set(p.name, { merged: 0, upToMs: 0 });
    this.polls = new Periodic(options.pollMs ?? MARKS_POLL_MS, async () => {
      await Promise.all(deps.peers.map((peer) => this.poll(peer).catch((err: unknown) => {
        log.debug({ peer: peer.name, reason: (err as Error).message }, 'could not copy marks now; the next poll tries again');
      })));
    }, () => undefined);
  }

  start(): void {
    this.polls.start();
  }

  stop(): Promise<void> {
    return this.polls.stop();
  }

  /** One poll of every peer now (or the one running). */
  pollAll(): Promise<void> {
    return this.polls.now();
  }

  private async poll(peer: MarksPeer): Promise<void> {
    const key = `marks:${peer.name}`;
    let since = this.since.get(peer.name);
    if (since === undefined) since = Number(await this.deps.store.dcState(key) ?? 0);
    const page = this.options.page ?? PAGE;
    const changes = await (await peer.store()).marksSince(since, page, this.options.settleMs ?? SETTLE_MS);
    const count = changes.reads.length + changes.cursors.length + changes.revocations.length;
    // Marks whose member or conversation was not copied here yet when read: tried again with the next polls.
    const waiting = this.waiting.get(peer.name) ?? { reads: [], cursors: [] };
    if (count > 0 || waiting.reads.length + waiting.cursors.length > 0) {
      const { moved, missing } = await this.deps.store.mergeMarks({
        reads: [...waiting.reads, ...changes.reads], cursors: [...waiting.cursors, ...changes.cursors], revocations: changes.revocations,
      });
      const now = Date.now();
      // Kept with when each first found no row (the store hands back the objects it was given), a minute and WAITING_MAX at most.
      const age = <T extends object>(list: readonly T[]): (T & { firstMissedMs: number })[] => list
        .map((x) => ({ ...x, firstMissedMs: (x as { firstMissedMs?: number }).firstMissedMs ?? now }))
        .filter((x) => now - x.firstMissedMs < WAITING_MS)
        .slice(-WAITING_MAX);
      this.waiting.set(peer.name, { reads: age(missing.reads), cursors: age(missing.cursors) });
      await this.revoke(changes.revocations);
      await this.receipts(moved);
    }
    // Read to untilMs, except a kind whose page was full: from its last change on (read again; merging twice is harmless).
    let upTo = changes.untilMs;
    for (const list of [changes.reads, changes.cursors, changes.revocations]) {
      if (list.length >= page && list.length > 0) upTo = Math.min(upTo, list.at(-1)!.atMs);
    }
    if (upTo === since && count >= page) {
      upTo = since + 1; // a page of changes all in one millisecond: the rest of that millisecond is skipped (logged)
      log.warn({ peer: peer.name, atMs: since, page }, 'more marks changed in one millisecond than a page holds; some of them are not copied');
    }
    const next = Math.max(since, upTo);
    if (next !== since) await this.deps.store.putDcState(key, String(next));
    this.since.set(peer.name, next);
    const p = this.progress.get(peer.name)!;
    p.merged += count;
    p.upToMs = next;
  }

  /** Applied here as at home: refused at login from now on, and what is connected with such a token is kicked. */
  private async revoke(revocations: MarkChanges['revocations']): Promise<void> {
    for (const r of revocations) {
      await this.deps.sessions.revoke(r.userId, r.deviceId === '' ? undefined : r.deviceId, r.beforeMs, MAX_TOKEN_TTL_MS);
      await this.deps.bus.publishDown(ALL_GATEWAYS, down({ case: 'revoke', value: { userId: r.userId, deviceId: r.deviceId, beforeMs: BigInt(r.beforeMs) } }));
    }
  }

  /** A read mark that moved here: its receipt to the members connected here. */
  private async receipts(moved: MarkChanges['reads']): Promise<void> {
    for (const r of moved) {
      const members = directMembers(r.conversationId) ?? await this.deps.store.members(r.conversationId);
      const audience = members.length <= RECEIPT_FANOUT_MAX ? members : [r.userId];
      const frame = encodeFrame(makeFrame(0, {
        case: 'event',
        value: { body: { case: 'receipt', value: { conversationId: r.conversationId, userId: r.userId, seq: BigInt(r.seq) } } },
      }));
      await deliverToUsers(this.deps, audience.includes(r.userId) ? audience : [...audience, r.userId], frame);
    }
  }
}
