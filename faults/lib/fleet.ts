// The load processes of the fault suite, driven together over IPC (the
// benchmarks' forkTs): connect, set the traffic, sample status, and add up
// the ledger of a fault row.
import { forkTs, type Child, type Msg } from '../../bench/lib/procs.js';
import { LogHistogram } from '../../bench/lib/ledger.js';
import type { InitMsg } from '../load/worker.js';

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
}

interface LedgerMsg extends Msg {
  acked: number[];
  delivered: number[];
  duplicated: number;
  reordered: number;
  refused: number;
  ackHist: [number, number][];
  refusedCodes: [string, number][];
}

export class Fleet {
  private constructor(readonly workers: Child[], readonly options: FleetOptions) {}

  static async start(options: FleetOptions): Promise<Fleet> {
    const workers: Child[] = [];
    let first = 0;
    for (let i = 0; i < options.processes; i++) {
      const count = Math.floor(options.users / options.processes) + (i < options.users % options.processes ? 1 : 0);
      const w = forkTs(`${options.prefix}load-${i + 1}`, '../faults/load/worker.ts', []);
      workers.push(w);
      const init: InitMsg = {
        type: 'init', prefix: options.prefix, first, count, users: options.users, apiUrls: options.apiUrls,
        tokenSecret: options.tokenSecret, transports: options.transports, pinUrl: options.pinUrl,
        slow: options.slow === true && i === 0, concurrency: options.concurrency ?? 100, resendAfterMs: options.resendAfterMs ?? 10_000,
      };
      await w.ask({ ...init }, 'ready', 30_000);
      first += count;
    }
    return new Fleet(workers, options);
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

  /** The ledger of one phase, added up over every process (recipients may live in another process). */
  async tally(phase: number, others: Fleet[] = []): Promise<Tally> {
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
    return {
      acked, delivered: deliveredCount, lost,
      duplicated: all.reduce((s, l) => s + l.duplicated, 0),
      reordered: all.reduce((s, l) => s + l.reordered, 0),
      refused: mine.reduce((s, l) => s + l.refused, 0),
      ackP99Ms: hist.total > 0 ? hist.percentile(99) / 1000 : 0,
      refusedCodes, lostSamples,
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.ask({ type: 'close' }, 'closed', 30_000).catch(() => undefined)));
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop(5000)));
  }
}
