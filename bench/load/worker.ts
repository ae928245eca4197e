// One load-generator process. The harness forks several (one process holds
// at most ~20,000 sockets here) and drives them over IPC: connect a range of
// users, hold them with heartbeats, send at a rate or at saturation, and
// report the ledger (what was acked, what arrived, how late, how often).
import { LogHistogram, Seen, makePayload, msgKey, nowUs, parsePayload } from '../lib/ledger.js';
import type { Adapter, BenchConn, SystemName } from './adapter.js';
import { longlinkAdapter } from './longlink.js';
import { rawNetAdapter, rawWsAdapter, socketioAdapter } from './baselines.js';
import { BenchTokens } from './tokens.js';

export interface InitMsg {
  type: 'init';
  system: SystemName;
  /** Global index of this worker's first user; its users are first .. first+count-1. */
  first: number;
  count: number;
  /** User ids are prefix + global index. */
  prefix: string;
  /** User g connects to urls[g % urls.length]. */
  urls: string[];
  /** Longlink: tokens are signed here with the run's secret. */
  tokenSecret?: string;
  /** Connection attempts in flight at once. */
  concurrency: number;
  /** Heartbeat every connection this often from when it opens (like a client); none when absent. */
  heartbeatMs?: number;
}

export type Pattern =
  /** 1:1: sender g's k-th message goes to user (g + offsets[k % offsets.length]) mod users. */
  | { kind: 'p2p'; users: number; offsets: number[] }
  /** Fan-out: every message goes to the group. */
  | { kind: 'group'; group: string };

export interface LoadMsg {
  type: 'load';
  mode: 'rate' | 'saturate';
  /** rate: messages per second from this worker. */
  rate: number;
  /** saturate: messages in flight (sent, not yet acked) from this worker. */
  window: number;
  durationMs: number;
  pattern: Pattern;
  /** How many of this worker's users send (the first ones); the rest only receive. */
  senders: number;
  payloadBytes: number;
}

const adapters: Record<SystemName, Adapter> = {
  longlink: longlinkAdapter, 'raw-ws': rawWsAdapter, 'raw-net': rawNetAdapter, socketio: socketioAdapter,
};

let init: InitMsg;
const conns: (BenchConn | undefined)[] = [];
let drops = 0;
const dropReasons = new Map<string, number>();
let heartbeat: NodeJS.Timeout | undefined;
/** Heartbeats sent so far (the server's CPU per heartbeat is read from it). */
let pings = 0;

// The ledger of this process.
const seenBy: Map<number, Seen>[] = []; // per local recipient: sender -> seen k's
const perMsg = new Map<number, number[]>(); // key -> [distinct deliveries, max latency µs, phase sent in]
let deliveries = 0;
let duplicated = 0;
let unparsable = 0;
// The current phase (each load command starts one: a warm-up, then the measured run).
let phase = 0;
let latency = new LogHistogram();
let phaseDeliveries = 0;
let firstDeliverUs = 0;
let lastDeliverUs = 0;

function reply(m: Record<string, unknown>): void {
  process.send?.(m);
}

function onDeliver(local: number, payload: string): void {
  const at = nowUs();
  const p = parsePayload(payload);
  if (!p) {
    unparsable++;
    return;
  }
  let seen = seenBy[local]!.get(p.sender);
  if (!seen) seenBy[local]!.set(p.sender, (seen = new Seen()));
  if (!seen.mark(p.k)) {
    duplicated++;
    return;
  }
  deliveries++;
  phaseDeliveries++;
  if (firstDeliverUs === 0) firstDeliverUs = at;
  lastDeliverUs = at;
  const late = Math.max(0, at - p.dueUs);
  latency.record(late);
  const key = msgKey(p.sender, p.k);
  const agg = perMsg.get(key);
  if (agg) {
    agg[0]!++;
    if (late > agg[1]!) agg[1] = late;
  } else perMsg.set(key, [1, late, phase]);
}

/**
 * An attempt not logged in by then is given up (counted as failed): the
 * server's own login deadline is 10 s from the accept, and an attempt whose
 * TCP or WebSocket handshake never completes would otherwise hold the end of
 * a connect phase (and the run) forever. A connection that opens later is
 * closed at once.
 */
const ATTEMPT_MS = 20_000;

function withTimeout(attempt: Promise<BenchConn>): Promise<BenchConn> {
  return new Promise((resolve, reject) => {
    let late = false;
    const t = setTimeout(() => {
      late = true;
      reject(new Error(`not logged in within ${ATTEMPT_MS} ms`));
    }, ATTEMPT_MS);
    attempt.then((c) => {
      clearTimeout(t);
      if (late) c.close();
      else resolve(c);
    }, (err: unknown) => {
      clearTimeout(t);
      reject(err instanceof Error ? err : new Error(String(err)));
    });
  });
}

/** Connect this worker's users, `concurrency` attempts at a time; none starts after `deadline` (epoch ms) when given. */
async function connectAll(deadline: number | undefined): Promise<void> {
  const adapter = adapters[init.system];
  const tokens = init.tokenSecret ? new BenchTokens(init.tokenSecret) : undefined;
  if (tokens) await tokens.checkToken(`${init.prefix}${init.first}`, 'd1', 'other');
  let next = 0;
  let connected = 0;
  let failed = 0;
  const errors = new Map<string, number>();
  const started = Date.now();
  const tick = setInterval(() => reply({ type: 'progress', connected, failed }), 500);
  if (init.heartbeatMs) startHeartbeat(init.heartbeatMs);
  const one = async (): Promise<void> => {
    while (next < init.count && (deadline === undefined || Date.now() < deadline)) {
      const local = next++;
      const g = init.first + local;
      const user = `${init.prefix}${g}`;
      seenBy[local] = new Map();
      try {
        const token = tokens?.issue(user, 'd1', 'other', 24 * 3600);
        conns[local] = await withTimeout(adapter.connect({ url: init.urls[g % init.urls.length]!, token }, user, {
          onAck: (id) => onAck(id),
          onRefused: (id, code) => onRefused(id, code),
          onDeliver: (payload) => onDeliver(local, payload),
          onDrop: (reason) => {
            drops++;
            dropReasons.set(reason, (dropReasons.get(reason) ?? 0) + 1);
          },
        }));
        connected++;
      } catch (err) {
        failed++;
        const reason = (err as Error).message.slice(0, 120);
        errors.set(reason, (errors.get(reason) ?? 0) + 1);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(init.concurrency, init.count) }, one));
  clearInterval(tick);
  reply({ type: 'connected', connected, failed, unstarted: init.count - next, ms: Date.now() - started, errors: [...errors].slice(0, 5) });
}

// Sending.
let sent = 0;
let acked = 0;
let refused = 0;
const refusedCodes = new Map<string, number>();
const ackedKeys: number[] = [];
const inFlight = new Map<number, number>(); // msgId -> ledger key
const sentAt = new Map<number, number>(); // msgId -> µs
let ackLatency = new LogHistogram();
let nextMsgId = 1;
const counters: number[] = []; // per local sender: next k
let onSettle: (() => void) | undefined;

function onAck(msgId: number): void {
  const key = inFlight.get(msgId);
  if (key === undefined) return;
  inFlight.delete(msgId);
  acked++;
  ackedKeys.push(key);
  ackLatency.record(nowUs() - sentAt.get(msgId)!);
  sentAt.delete(msgId);
  onSettle?.();
}

function onRefused(msgId: number, code: string): void {
  if (!inFlight.delete(msgId)) return;
  sentAt.delete(msgId);
  refused++;
  refusedCodes.set(code, (refusedCodes.get(code) ?? 0) + 1);
  onSettle?.();
}

function sendOne(load: LoadMsg, local: number, dueUs: number): void {
  const conn = conns[local];
  if (!conn) return;
  const g = init.first + local;
  const k = counters[local] ?? 0;
  counters[local] = k + 1;
  const p = load.pattern;
  const to = p.kind === 'group' ? p.group : `${init.prefix}${(g + p.offsets[k % p.offsets.length]!) % p.users}`;
  const id = nextMsgId++;
  inFlight.set(id, msgKey(g, k));
  sentAt.set(id, dueUs);
  sent++;
  conn.send(to, id, makePayload(g, k, dueUs, load.payloadBytes), p.kind === 'group');
}

async function runLoad(load: LoadMsg): Promise<void> {
  phase++;
  latency = new LogHistogram();
  ackLatency = new LogHistogram();
  phaseDeliveries = firstDeliverUs = lastDeliverUs = 0;
  const senders = Math.min(load.senders, init.count);
  let turn = 0;
  const nextSender = () => {
    const s = turn;
    turn = (turn + 1) % senders;
    return s;
  };
  const startUs = nowUs();
  const endUs = startUs + load.durationMs * 1000;
  if (load.mode === 'saturate') {
    await new Promise<void>((resolve) => {
      const fill = () => {
        while (inFlight.size < load.window && nowUs() < endUs) sendOne(load, nextSender(), nowUs());
        if (nowUs() >= endUs) {
          onSettle = undefined;
          clearInterval(timer);
          resolve();
        }
      };
      // Refill from acks in batches (per event-loop turn), and on a timer so the end is noticed.
      let scheduled = false;
      onSettle = () => {
        if (scheduled) return;
        scheduled = true;
        setImmediate(() => {
          scheduled = false;
          fill();
        });
      };
      const timer = setInterval(fill, 20);
      fill();
    });
  } else {
    const perUs = load.rate / 1e6;
    let due = 0;
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const now = Math.min(nowUs(), endUs);
        const target = Math.floor((now - startUs) * perUs);
        // Open loop: each message is stamped with the time it was due, so a stall shows in the latency.
        for (; due < target; due++) {
          if (inFlight.size >= 200_000) break;
          sendOne(load, nextSender(), startUs + due / perUs);
        }
        if (now >= endUs) {
          clearInterval(timer);
          resolve();
        }
      }, 1);
    });
  }
  // Drain: wait for every send to be acked or refused (bounded).
  const drainDeadline = Date.now() + 30_000;
  while (inFlight.size > 0 && Date.now() < drainDeadline) await new Promise((r) => setTimeout(r, 20));
  reply({
    type: 'loaded', sent, acked, refused, unanswered: inFlight.size, refusedCodes: [...refusedCodes],
    firstSendUs: startUs, ackHist: ackLatency.entries(), ackedKeys,
  });
}

function startHeartbeat(intervalMs: number): void {
  if (heartbeat) return;
  // Spread: every 100 ms of the clock is one slice of the connections, pinged in
  // turn (so a connection's first ping comes within one interval of its opening).
  // Slices are counted by the clock, not by ticks: a process short of CPU (a
  // machine busy opening 250,000 connections) runs its timers late and would
  // otherwise stretch every connection's interval, past the server's limit of
  // three intervals of silence. Late ticks catch up on the slices they missed.
  const sliceMs = 100;
  const slices = Math.max(1, Math.round(intervalMs / sliceMs));
  const startedAt = performance.now();
  let done = 0; // slices pinged so far, counted from startedAt
  heartbeat = setInterval(() => {
    const due = Math.floor((performance.now() - startedAt) / sliceMs) + 1;
    done = Math.max(done, due - slices); // after a stall longer than an interval: one round, not several
    for (; done < due; done++) {
      const slice = done % slices;
      for (let i = slice; i < conns.length; i += slices) {
        const c = conns[i];
        if (c) {
          c.ping();
          pings++;
        }
      }
    }
  }, sliceMs);
}

process.on('message', (m: { type: string } & Record<string, unknown>) => {
  void (async () => {
    try {
      switch (m.type) {
        case 'init':
          init = m as unknown as InitMsg;
          reply({ type: 'ready' });
          break;
        case 'connect':
          await connectAll(typeof m.deadline === 'number' ? m.deadline : undefined);
          break;
        case 'join': {
          const adapter = adapters[init.system];
          if (adapter.join) for (const c of conns) if (c) await adapter.join(c, m.group as string);
          reply({ type: 'joined' });
          break;
        }
        case 'load':
          await runLoad(m as unknown as LoadMsg);
          break;
        case 'ledger': {
          const msgs: number[] = [];
          if (m.full) for (const [key, [n, late, p]] of perMsg) msgs.push(key, n!, p === phase ? late! : -1);
          reply({
            type: 'ledger', deliveries, phaseDeliveries, duplicated, unparsable, firstDeliverUs, lastDeliverUs, drops, pings,
            dropReasons: [...dropReasons].slice(0, 5), hist: m.full ? latency.entries() : [], msgs,
          });
          break;
        }
        case 'close':
          if (heartbeat) clearInterval(heartbeat);
          for (const c of conns) c?.close();
          reply({ type: 'closed' });
          break;
        case 'stop':
          process.exit(0);
      }
    } catch (err) {
      reply({ type: 'failed', error: (err as Error).stack ?? String(err) });
    }
  })();
});
process.on('disconnect', () => process.exit(0));
