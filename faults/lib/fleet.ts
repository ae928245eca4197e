// The load processes of the fault suite, driven together over IPC (the
// benchmarks' forkTs): connect, set the traffic, sample status, and add up
// the ledger of a fault row.
import { forkTs, type Child, type Msg } from '../../bench/lib/procs.js';
import { LogHistogram } from '../../bench/lib/ledger.js';
import type { GroupSpec, InitMsg } from '../load/worker.js';
import { pickGroups, tallyGroups, type GroupLedger, type GroupTally, type StoredRow } from './groups.js';

export interface FleetOptions {
  prefix: string;
  /** Devices (one per user). */
  users: number;
  processes: number;
  apiUrls: string[];
  tokenSecret: string;
  transports: ('tcp' | 'ws')[];
  pinUrl?: string;
  /** Hold the slow-consumer device too (in the first process). */
  slow?: boolean;
  concurrency?: number;
  resendAfterMs?: number;
  /** Group messages per second, all groups together (while traffic runs), and a membership change per group every churnMs (0: none). */
  groupRate?: number;
  churnMs?: number;
  /** HTTP business pushes (from the first process): the admin key, (sender, recipient) pairs, pushes per second. */
  http?: { adminKey: string; pairs: [number, number][]; rate: number };
}

export interface Status {
  online: number;
  total: number;
  /** The longest any sender has been waiting for an ack now. */
  oldestWaitMs: number;
  /** The longest any device has been offline now. */
  offlineForMs: number;
  waiting: number;
  reconnects: number;
  resent: number;
  slowDropped: boolean;
  slowOnline: boolean;
  slowReason: string;
}

export interface Tally {
  acked: number;
  delivered: number;
  lost: number;
  duplicated: number;
  reordered: number;
  refused: number;
  ackP99Ms: number;
  refusedCodes: Record<string, number>;
  /** A few lost messages (sender:k -> recipient), to look them up. */
  lostSamples: string[];
  /** HTTP business pushes answered (in acked), retried requests, answers that were duplicates, and deliveries at another seq than answered (in reordered). */
  http: number;
  httpRetries: number;
  httpDuplicateAnswers: number;
  httpSeqMismatch: number;
  /** The group traffic (undefined without groups). */
  groups?: GroupTally;
}

interface LedgerMsg extends Msg {
  acked: number[];
  delivered: number[];
  duplicated: number;
  reordered: number;
  refused: number;
  ackHist: [number, number][];
  refusedCodes: [string, number][];
  groupAcked: number[];
  groupDelivered: number[];
  groupDuplicated: number;
  groupReordered: number;
  ops: string[];
  groupEvents: number[];
  httpAcked: number[];
  httpDelivered: number[];
  httpRetries: number;
  httpDuplicateAnswers: number;
}

export class Fleet {
  /** The groups of the traffic, once set up. */
  groups: GroupSpec[] = [];

  private constructor(readonly workers: Child[], readonly options: FleetOptions, private readonly firsts: number[]) {}

  static async start(options: FleetOptions): Promise<Fleet> {
    const workers: Child[] = [];
    const firsts: number[] = [];
    let first = 0;
    for (let i = 0; i < options.processes; i++) {
      const count = Math.floor(options.users / options.processes) + (i < options.users % options.processes ? 1 : 0);
      const w = forkTs(`${options.prefix}load-${i + 1}`, '../faults/load/worker.ts', []);
      workers.push(w);
      const init: InitMsg = {
        type: 'init', prefix: options.prefix, first, count, users: options.users, apiUrls: options.apiUrls,
        tokenSecret: options.tokenSecret, transports: options.transports, pinUrl: options.pinUrl,
        slow: options.slow === true && i === 0, concurrency: options.concurrency ?? 100, resendAfterMs: options.resendAfterMs ?? 10_000,
        groupRate: options.groupRate ?? 0, churnMs: options.churnMs ?? 0, http: i === 0 ? options.http : undefined,
      };
      await w.ask({ ...init }, 'ready', 30_000);
      firsts.push(first);
      first += count;
    }
    return new Fleet(workers, options, firsts);
  }

  /** The process holding global user g. */
  private workerOf(g: number): Child {
    let i = 0;
    while (i + 1 < this.firsts.length && this.firsts[i + 1]! <= g) i++;
    return this.workers[i]!;
  }

  /**
   * Create `count` groups of `size` members (each by its owner, over the
   * protocol, written again until answered) and tell every process about
   * them. Call once, after connect().
   */
  async setupGroups(count: number, size: number): Promise<GroupSpec[]> {
    const specs: GroupSpec[] = [];
    for (const spec of pickGroups(this.options.users, count, size)) {
      const r = await this.workerOf(spec.owner).ask<Msg & { groupId?: string; conversationId?: string; error?: string }>(
        { type: 'group-create', index: spec.index, members: spec.members }, 'group-created', 120_000,
      );
      if (!r.groupId || !r.conversationId) throw new Error(`group ${spec.index} not created: ${r.error ?? 'no id'}`);
      specs.push({ ...spec, groupId: r.groupId, conversationId: r.conversationId });
    }
    await Promise.all(this.workers.map((w) => w.ask({ type: 'groups', groups: specs }, 'groups-set')));
    this.groups = specs;
    return specs;
  }

  async connect(onProgress: (connected: number) => void): Promise<{ connected: number; failed: number; errors: [string, number][] }> {
    const counts = this.workers.map(() => 0);
    this.workers.forEach((w, i) => w.on((m) => {
      if (m.type === 'progress') {
        counts[i] = m.connected as number;
        onProgress(counts.reduce((s, x) => s + x, 0));
      }
    }));
    const done = await Promise.all(this.workers.map((w) => w.ask<Msg & { connected: number; failed: number; errors: [string, number][] }>(
      { type: 'connect' }, 'connected', 600_000)));
    return {
      connected: done.reduce((s, d) => s + d.connected, 0),
      failed: done.reduce((s, d) => s + d.failed, 0),
      errors: done.flatMap((d) => d.errors),
    };
  }

  /** Tag new sends with `phase`, at `rate` messages per second in all (0: no new sends). */
  async traffic(phase: number, rate: number, payloadBytes: number): Promise<void> {
    const each = rate / this.workers.length;
    await Promise.all(this.workers.map((w) => w.ask({ type: 'traffic', phase, rate: each, payloadBytes }, 'traffic-set')));
  }

  async status(): Promise<Status> {
    const all = await Promise.all(this.workers.map((w) => w.ask<Msg & Status>({ type: 'status' }, 'status', 30_000)));
    return {
      online: all.reduce((s, x) => s + x.online, 0),
      total: all.reduce((s, x) => s + x.total, 0),
      oldestWaitMs: Math.max(...all.map((x) => x.oldestWaitMs)),
      offlineForMs: Math.max(...all.map((x) => x.offlineForMs)),
      waiting: all.reduce((s, x) => s + x.waiting, 0),
      reconnects: all.reduce((s, x) => s + x.reconnects, 0),
      resent: all.reduce((s, x) => s + x.resent, 0),
      slowDropped: all.some((x) => x.slowDropped),
      slowOnline: all.some((x) => x.slowOnline),
      slowReason: all.map((x) => x.slowReason).find((r) => r !== '') ?? '',
    };
  }

  /** The slow-consumer device (first process) stops or resumes reading. */
  async stall(on: boolean): Promise<void> {
    await this.workers[0]!.ask({ type: on ? 'stall' : 'unstall' }, on ? 'stalled' : 'unstalled');
  }

  /** Up to `count` idle senders each send one message of `bytes` to the slow device. */
  async blast(count: number, bytes: number): Promise<number> {
    const each = Math.ceil(count / this.workers.length);
    const sent = await Promise.all(this.workers.map((w) => w.ask<Msg & { sent: number }>({ type: 'blast', count: each, bytes }, 'blasted')));
    return sent.reduce((s, x) => s + x.sent, 0);
  }

  async syncAll(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.ask({ type: 'sync' }, 'synced', 60_000)));
  }

  /**
   * The ledger of one phase, added up over every process (recipients may live
   * in another process). `timelines`: the stored timelines of the groups (lib/groups.ts).
   */
  async tally(phase: number, others: Fleet[] = [], timelines?: Map<string, StoredRow[]>): Promise<Tally> {
    const ask = (w: Child) => w.ask<LedgerMsg>({ type: 'ledger', phase }, 'ledger', 60_000);
    const mine = await Promise.all(this.workers.map(ask));
    const theirs = await Promise.all(others.flatMap((f) => f.workers.map(ask)));
    const delivered = new Set<string>();
    let deliveredCount = 0;
    for (const l of [...mine, ...theirs]) {
      for (let i = 0; i < l.delivered.length; i += 2) delivered.add(`${l.delivered[i]}>${l.delivered[i + 1]}`);
      deliveredCount += l.delivered.length / 2;
    }
    let acked = 0;
    let lost = 0;
    const lostSamples: string[] = [];
    for (const l of mine) {
      for (let i = 0; i < l.acked.length; i += 2) {
        acked++;
        const id = `${l.acked[i]}>${l.acked[i + 1]}`;
        if (!delivered.has(id)) {
          lost++;
          if (lostSamples.length < 5) {
            const key = l.acked[i]!;
            lostSamples.push(`${Math.floor(key / 1_048_576)}:${key % 1_048_576}>${l.acked[i + 1]}`);
          }
        }
      }
    }
    const hist = new LogHistogram();
    const refusedCodes: Record<string, number> = {};
    for (const l of mine) {
      hist.merge(l.ackHist);
      for (const [c, n] of l.refusedCodes) refusedCodes[c] = (refusedCodes[c] ?? 0) + n;
    }
    const all = [...mine, ...theirs];
    // A business push must be released at the seq its answer named (in order with the conversation's other messages).
    const answered = new Map<number, number>();
    for (const l of mine) for (let i = 0; i < l.httpAcked.length; i += 2) answered.set(l.httpAcked[i]!, l.httpAcked[i + 1]!);
    let httpSeqMismatch = 0;
    for (const l of all) {
      for (let i = 0; i < l.httpDelivered.length; i += 2) {
        const seq = answered.get(l.httpDelivered[i]!);
        if (seq !== undefined && seq !== l.httpDelivered[i + 1]) httpSeqMismatch++;
      }
    }
    const groups = this.groups.length > 0 && timelines
      ? tallyGroups(all.map((l): GroupLedger => ({
        acked: l.groupAcked, delivered: l.groupDelivered, duplicated: l.groupDuplicated, reordered: l.groupReordered, ops: l.ops, events: l.groupEvents,
      })), this.groups, timelines, (g) => `${this.options.prefix}${g}`)
      : undefined;
    return {
      acked, delivered: deliveredCount, lost,
      duplicated: all.reduce((s, l) => s + l.duplicated, 0),
      reordered: all.reduce((s, l) => s + l.reordered, 0) + httpSeqMismatch,
      refused: mine.reduce((s, l) => s + l.refused, 0),
      ackP99Ms: hist.total > 0 ? hist.percentile(99) / 1000 : 0,
      refusedCodes, lostSamples,
      http: answered.size,
      httpRetries: mine.reduce((s, l) => s + l.httpRetries, 0),
      httpDuplicateAnswers: mine.reduce((s, l) => s + l.httpDuplicateAnswers, 0),
      httpSeqMismatch, groups,
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.ask({ type: 'close' }, 'closed', 30_000).catch(() => undefined)));
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop(5000)));
  }
}
