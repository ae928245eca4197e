// The load generators of one system: several worker processes (each below
// the per-process file limit), driven together. Counts from all of them are
// added up into one ledger: acked vs received, lost, duplicated, latency.
import type { SystemName } from '../load/adapter.js';
import type { InitMsg, LoadMsg } from '../load/worker.js';
import { LogHistogram, percentile } from './ledger.js';
import { forkTs, type Child, type Msg } from './procs.js';
import { progress } from './report.js';

/**
 * Connections one process holds at most, load process or server: the limit
 * here is 20,000 files per process (sockets included), and a process needs
 * some besides its connections (IPC, stdio, Redis clients, listeners, the
 * loader's pipes: ~30). 18,000 leaves 2,000 spare; at 250,000 connections
 * that is 14 gateways instead of 17 (15,000 each), and a login costs every
 * gateway some work (the presence event: see bench/CAPACITY.md).
 */
export const MAX_PER_PROCESS = 18_000;

interface Loaded extends Msg {
  sent: number;
  acked: number;
  refused: number;
  unanswered: number;
  refusedCodes: [string, number][];
  firstSendUs: number;
  ackHist: [number, number][];
  ackedKeys: number[];
}

interface Ledger extends Msg {
  deliveries: number;
  phaseDeliveries: number;
  duplicated: number;
  unparsable: number;
  firstDeliverUs: number;
  lastDeliverUs: number;
  drops: number;
  dropReasons: [string, number][];
  pings: number;
  hist: [number, number][];
  msgs: number[];
}

export interface FleetOptions {
  system: SystemName;
  users: number;
  urls: string[];
  tokenSecret?: string;
  /** Load processes; default: as few as hold `users` under MAX_PER_PROCESS, at least `minProcesses`. */
  minProcesses?: number;
  prefix?: string;
  concurrency?: number;
  /** Heartbeat from when each connection opens. */
  heartbeatMs?: number;
}

export interface LoadPlan {
  mode: 'rate' | 'saturate';
  /** Total messages per second (rate mode). */
  rate: number;
  /** Total messages in flight (saturate mode). */
  window: number;
  durationMs: number;
  pattern: LoadMsg['pattern'];
  /** Users that send, counted from user 0 (all users when absent). */
  senders?: number;
  payloadBytes: number;
  /** Deliveries each acked message should make (1:1: 1; a group of M online members: M - 1). */
  expectedPerMsg: number;
  /** After the acks, the count is read when no delivery arrived for this long (a fan-out may start late on a busy machine). @default 500 */
  settleMs?: number;
}

/**
 * sent, acked, refused, delivered, lost and duplicated count the whole run so
 * far (warm-up included: nothing escapes the ledger); msgs_per_s and the
 * latencies are the last phase's.
 */
export interface LoadOutcome {
  sent: number;
  acked: number;
  refused: number;
  delivered: number;
  lost: number;
  duplicated: number;
  /** Deliveries per second from the first send to the last delivery. */
  msgs_per_s: number;
  /** Delivery latency (due time to receipt): per delivery for 1:1, to the last member for fan-out. */
  p50_ms: number;
  p99_ms: number;
  ack_p99_ms: number;
  seconds: number;
  refusedCodes: Record<string, number>;
}

export class Fleet {
  private constructor(readonly workers: Child[], readonly sizes: number[], readonly options: FleetOptions) {}

  static async start(options: FleetOptions): Promise<Fleet> {
    const n = Math.max(options.minProcesses ?? 1, Math.ceil(options.users / MAX_PER_PROCESS));
    const workers: Child[] = [];
    const sizes: number[] = [];
    let first = 0;
    const inits: Promise<Msg>[] = [];
    for (let i = 0; i < n; i++) {
      const count = Math.floor(options.users / n) + (i < options.users % n ? 1 : 0);
      const w = forkTs(`load-${options.prefix ?? 'u'}${i + 1}`, 'load/worker.ts', []);
      workers.push(w);
      sizes.push(count);
      const init: InitMsg = {
        type: 'init', system: options.system, first, count, prefix: options.prefix ?? 'u', urls: options.urls,
        tokenSecret: options.tokenSecret, concurrency: options.concurrency ?? 100, heartbeatMs: options.heartbeatMs,
      };
      // Started together (each takes about a second to load): 9 per fleet at 250,000 connections.
      inits.push(w.ask({ ...init }, 'ready', 180_000));
      first += count;
    }
    try {
      await Promise.all(inits);
    } catch (err) {
      await Promise.all(workers.map((w) => w.stop(5000)));
      throw err;
    }
    return new Fleet(workers, sizes, options);
  }

  /**
   * Connect every user; resolves with the counts and how long it took. With
   * `withinMs`, no attempt starts after that long (those left are `unstarted`;
   * the attempts under way finish, bounded by the server's login deadline).
   */
  async connect(label: string, withinMs?: number): Promise<{ connected: number; failed: number; unstarted: number; seconds: number; errors: [string, number][] }> {
    const counts = this.workers.map(() => ({ connected: 0, failed: 0 }));
    this.workers.forEach((w, i) => w.on((m) => {
      if (m.type === 'progress') counts[i] = { connected: m.connected as number, failed: m.failed as number };
    }));
    const started = Date.now();
    const ticker = setInterval(() => {
      const c = counts.reduce((s, x) => s + x.connected, 0);
      const f = counts.reduce((s, x) => s + x.failed, 0);
      progress(`${label}: connected ${c}/${this.options.users}${f ? `, failed ${f}` : ''} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
    }, 1000);
    try {
      const deadline = withinMs === undefined ? undefined : started + withinMs;
      const done = await Promise.all(this.workers.map((w) => w.ask<Msg & { connected: number; failed: number; unstarted: number; errors: [string, number][] }>(
        { type: 'connect', deadline }, 'connected', (withinMs ?? 600_000) + 120_000)));
      const seconds = (Date.now() - started) / 1000;
      return {
        connected: done.reduce((s, d) => s + d.connected, 0),
        failed: done.reduce((s, d) => s + d.failed, 0),
        unstarted: done.reduce((s, d) => s + d.unstarted, 0),
        seconds,
        errors: done.flatMap((d) => d.errors),
      };
    } finally {
      clearInterval(ticker);
    }
  }

  async join(group: string): Promise<void> {
    await Promise.all(this.workers.map((w) => w.ask({ type: 'join', group }, 'joined', 120_000)));
  }

  /** Drops, deliveries and heartbeats sent so far (cheap: no per-message data). */
  async counts(): Promise<{ drops: number; deliveries: number; pings: number; dropReasons: [string, number][] }> {
    const ls = await Promise.all(this.workers.map((w) => w.ask<Ledger>({ type: 'ledger', full: false }, 'ledger')));
    return {
      drops: ls.reduce((s, l) => s + l.drops, 0),
      deliveries: ls.reduce((s, l) => s + l.deliveries, 0),
      pings: ls.reduce((s, l) => s + l.pings, 0),
      dropReasons: ls.flatMap((l) => l.dropReasons),
    };
  }

  /** Run a load, wait for the acks and for deliveries to stop arriving, then count the ledger. */
  async load(label: string, plan: LoadPlan): Promise<LoadOutcome> {
    const senders = plan.senders ?? this.options.users;
    // Senders are users 0..senders-1: give each worker its share from its own first users.
    const shares = this.sizes.map((size, i) => {
      const first = this.sizes.slice(0, i).reduce((s, x) => s + x, 0);
      return Math.max(0, Math.min(size, senders - first));
    });
    const active = shares.map((s) => s > 0);
    const weight = (i: number) => shares[i]! / senders;
    const started = Date.now();
    const ticker = setInterval(() => progress(`${label}: ${((Date.now() - started) / 1000).toFixed(0)} s of ${plan.durationMs / 1000} s`), 1000);
    let loaded: Loaded[];
    try {
      loaded = await Promise.all(this.workers.map((w, i) => {
        if (!active[i]) return Promise.resolve(undefined);
        const msg: LoadMsg = {
          type: 'load', mode: plan.mode, rate: plan.rate * weight(i), window: Math.max(1, Math.round(plan.window * weight(i))),
          durationMs: plan.durationMs, pattern: plan.pattern, senders: shares[i]!, payloadBytes: plan.payloadBytes,
        };
        return w.ask<Loaded>({ ...msg }, 'loaded', plan.durationMs + 120_000);
      })).then((xs) => xs.filter((x): x is Loaded => x !== undefined));
    } finally {
      clearInterval(ticker);
    }
    // Deliveries may still be on their way: wait until the count stops moving (bounded).
    let last = -1;
    const settleMs = plan.settleMs ?? 500;
    for (let i = 0; i < 100; i++) {
      const { deliveries } = await this.counts();
      if (deliveries === last) break;
      last = deliveries;
      await new Promise((r) => setTimeout(r, settleMs));
    }
    const ledgers = await Promise.all(this.workers.map((w) => w.ask<Ledger>({ type: 'ledger', full: true }, 'ledger')));
    return tally(plan, loaded, ledgers);
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.ask({ type: 'close' }, 'closed').catch(() => undefined)));
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop(5000)));
  }
}

function tally(plan: LoadPlan, loaded: Loaded[], ledgers: Ledger[]): LoadOutcome {
  const perMsg = new Map<number, [number, number]>();
  for (const l of ledgers) {
    for (let i = 0; i < l.msgs.length; i += 3) {
      const key = l.msgs[i]!;
      const n = l.msgs[i + 1]!;
      const late = l.msgs[i + 2]!;
      const agg = perMsg.get(key);
      if (agg) {
        agg[0] += n;
        agg[1] = late < 0 || agg[1] < 0 ? -1 : Math.max(agg[1], late);
      } else perMsg.set(key, [n, late]);
    }
  }
  let lost = 0;
  for (const w of loaded) {
    for (const key of w.ackedKeys) lost += Math.max(0, plan.expectedPerMsg - (perMsg.get(key)?.[0] ?? 0));
  }
  const delivered = ledgers.reduce((s, l) => s + l.deliveries, 0);
  const phaseDelivered = ledgers.reduce((s, l) => s + l.phaseDeliveries, 0);
  const firstSend = Math.min(...loaded.map((w) => w.firstSendUs));
  const lastDeliver = Math.max(...ledgers.map((l) => l.lastDeliverUs));
  const seconds = (lastDeliver - firstSend) / 1e6;
  let p50: number;
  let p99: number;
  if (plan.expectedPerMsg > 1) {
    // Fan-out: latency to the last member, per message.
    const lastMember = [...perMsg.values()].filter(([, late]) => late >= 0).map(([, late]) => late);
    p50 = percentile(lastMember, 50);
    p99 = percentile(lastMember, 99);
  } else {
    const h = new LogHistogram();
    for (const l of ledgers) h.merge(l.hist);
    p50 = h.percentile(50);
    p99 = h.percentile(99);
  }
  const acks = new LogHistogram();
  for (const w of loaded) acks.merge(w.ackHist);
  const refusedCodes: Record<string, number> = {};
  for (const w of loaded) for (const [c, n] of w.refusedCodes) refusedCodes[c] = (refusedCodes[c] ?? 0) + n;
  return {
    sent: loaded.reduce((s, w) => s + w.sent, 0),
    acked: loaded.reduce((s, w) => s + w.acked, 0),
    refused: loaded.reduce((s, w) => s + w.refused, 0),
    delivered,
    lost,
    duplicated: ledgers.reduce((s, l) => s + l.duplicated, 0),
    msgs_per_s: seconds > 0 ? phaseDelivered / seconds : 0,
    p50_ms: p50 / 1000,
    p99_ms: p99 / 1000,
    ack_p99_ms: acks.percentile(99) / 1000,
    seconds,
    refusedCodes,
  };
}
