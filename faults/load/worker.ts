// One load process of the fault suite (forked by faults/lib/fleet.ts; one
// process holds a few thousand devices, well under the ~20,000 files a
// process may open here). It connects a range of users, sends steady 1:1
// traffic, and keeps the ledger of what an app would see:
// - every send is tagged with its sender, the sender's message number k and
//   the fault row (phase) it was first sent in;
// - a sender has at most one message waiting for its ack (as a chat app's
//   user types), so any reordering the ledger sees is the server's doing;
// - every message released to the app is checked: once per device (a repeat
//   is a duplicate), and within a conversation in the sender's order (a k
//   lower than one seen before is a reorder).
import { TokenService } from '../../src/auth/tokens.js';
import type { ChatMessage } from '../../src/protocol/index.js';
import { LogHistogram, Seen, msgKey } from '../../bench/lib/ledger.js';
import { LoadClient, type ClientEnv } from './client.js';

export interface InitMsg {
  type: 'init';
  /** User ids are prefix + global index; this process holds first .. first+count-1. */
  prefix: string;
  first: number;
  count: number;
  /** Users of the traffic (recipients are among them). */
  users: number;
  /** Logic APIs (any live one answers where to connect). */
  apiUrls: string[];
  tokenSecret: string;
  /** User g uses transports[g % length]. */
  transports: ('tcp' | 'ws')[];
  /** First connection of every user to this gateway (the crowd of the reconnect fault). */
  pinUrl?: string;
  /** Also hold the slow-consumer device (global index `users`, always TCP, never sends). */
  slow?: boolean;
  concurrency: number;
  resendAfterMs: number;
}

export interface TrafficMsg {
  type: 'traffic';
  phase: number;
  /** Messages per second from this process; 0 stops new sends (waiting ones still go out). */
  rate: number;
  payloadBytes: number;
}

/** Sender g's k-th message goes to user (g + OFFSETS[k % 4]) % users: four conversations per sender. */
const OFFSETS = [1, 7, 31, 127];

let init: InitMsg;
const clients: LoadClient[] = [];
let slowClient: LoadClient | undefined;
let gatewayCache: { at: number; list: Promise<{ tcp: string[]; ws: string[]; load: Map<string, number> }> } | undefined;

// Sending state.
let phase = 0;
let rate = 0;
let payloadBytes = 64;
const nextK: number[] = [];
/** Per local sender: its waiting message (key, recipient, phase, first sent at). */
const waiting = new Map<number, { key: number; r: number; phase: number; at: number }>();
let nextDueMs = 0;
let turn = 0;

// The ledger, per phase.
interface PhaseLedger {
  acked: number[]; // key, r, key, r, …
  delivered: number[];
  duplicated: number;
  reordered: number;
  refused: number;
  ackLatency: LogHistogram;
}
const ledgers = new Map<number, PhaseLedger>();
const seen: Map<number, Seen>[] = []; // per local device: sender -> k's seen
const lastK: Map<string, number>[] = []; // per local device: conversation -> last k released
let reconnects = 0;
let resent = 0;
let unparsable = 0;
const refusedCodes = new Map<string, number>();

function ledger(p: number): PhaseLedger {
  let l = ledgers.get(p);
  if (!l) ledgers.set(p, (l = { acked: [], delivered: [], duplicated: 0, reordered: 0, refused: 0, ackLatency: new LogHistogram() }));
  return l;
}

function reply(m: Record<string, unknown>): void {
  process.send?.(m);
}

function userOf(g: number): string {
  return `${init.prefix}${g}`;
}

/** Payload: sender index, k, phase, then padding. */
function payload(g: number, k: number, p: number, bytes: number): string {
  const head = `${g}:${k}:${p}:`;
  return head.length >= bytes ? head : head + 'x'.repeat(bytes - head.length);
}

function onDeliver(local: number, r: number, m: ChatMessage): void {
  const [g, k, p] = m.text.split(':', 3).map(Number) as [number, number, number];
  if (!Number.isInteger(g) || !Number.isInteger(k) || !Number.isInteger(p)) {
    unparsable++;
    return;
  }
  const l = ledger(p);
  let s = seen[local]!.get(g);
  if (!s) seen[local]!.set(g, (s = new Seen()));
  if (!s.mark(k)) {
    l.duplicated++;
    return;
  }
  const before = lastK[local]!.get(m.conversationId) ?? -1;
  if (k < before) l.reordered++;
  else lastK[local]!.set(m.conversationId, k);
  l.delivered.push(msgKey(g, k), r);
}

// ---- where to connect ---------------------------------------------------------

async function fetchGateways(): Promise<{ tcp: string[]; ws: string[]; load: Map<string, number> }> {
  const start = Math.floor(Math.random() * init.apiUrls.length);
  let last: unknown;
  for (let i = 0; i < init.apiUrls.length; i++) {
    const api = init.apiUrls[(start + i) % init.apiUrls.length]!;
    try {
      const res = await fetch(`${api}/api/v1/gateways`, { signal: AbortSignal.timeout(3000) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const body = (await res.json()) as { gateways: { tcp_url: string | null; ws_url: string | null; load: number }[] };
      const load = new Map<string, number>();
      for (const g of body.gateways) {
        if (g.tcp_url) load.set(g.tcp_url, g.load);
        if (g.ws_url) load.set(g.ws_url, g.load);
      }
      return {
        tcp: body.gateways.flatMap((g) => (g.tcp_url ? [g.tcp_url] : [])),
        ws: body.gateways.flatMap((g) => (g.ws_url ? [g.ws_url] : [])),
        load,
      };
    } catch (err) {
      last = err;
    }
  }
  throw new Error(`no logic API answered: ${String(last)}`);
}

/** The less loaded of two random live gateways, not the one just lost (as the SDK's gatewayPicker). */
async function pickGateway(transport: 'tcp' | 'ws', avoid: string | undefined): Promise<string> {
  const now = Date.now();
  if (!gatewayCache || now - gatewayCache.at > 1000) {
    gatewayCache = { at: now, list: fetchGateways() };
    gatewayCache.list.catch(() => (gatewayCache = undefined));
  }
  const { load, ...urls } = await gatewayCache.list;
  const all = urls[transport];
  const choices = all.filter((u) => u !== avoid);
  const from = choices.length > 0 ? choices : all;
  if (from.length === 0) throw new Error('no live gateway');
  const a = from[Math.floor(Math.random() * from.length)]!;
  const b = from[Math.floor(Math.random() * from.length)]!;
  return (load.get(a) ?? 0) <= (load.get(b) ?? 0) ? a : b;
}

// ---- connecting -------------------------------------------------------------

async function connectAll(): Promise<void> {
  const tokens = new TokenService(init.tokenSecret);
  const total = init.count + (init.slow ? 1 : 0);
  let next = 0;
  let connected = 0;
  let failed = 0;
  const errors = new Map<string, number>();
  const tick = setInterval(() => reply({ type: 'progress', connected, failed }), 500);
  const one = async (): Promise<void> => {
    while (next < total) {
      const local = next++;
      const slow = local === init.count;
      const g = slow ? init.users : init.first + local;
      const user = slow ? `${init.prefix}slow` : userOf(g);
      const transport = slow ? 'tcp' : init.transports[g % init.transports.length]!;
      const { token } = await tokens.issue(user, 'd1', 'other', 24 * 3600);
      const env: ClientEnv = { pickGateway, token, resendAfterMs: init.resendAfterMs, initialBackoffMs: 300, maxBackoffMs: 5000 };
      seen[local] = new Map();
      lastK[local] = new Map();
      const client = new LoadClient(user, transport, env, {
        deliver: (m) => onDeliver(local, g, m),
        acked: (id) => onAcked(local, id),
        refused: (id, code) => onRefused(local, id, code),
        resent: () => resent++,
        online: (again) => {
          if (again) reconnects++;
        },
        offline: () => undefined,
      }, init.pinUrl);
      clients[local] = client;
      if (slow) slowClient = client;
      // A first connection that fails is retried like a reconnect (bounded).
      for (let attempt = 0; ; attempt++) {
        try {
          await client.connect();
          connected++;
          break;
        } catch (err) {
          if (attempt >= 20) {
            failed++;
            const reason = (err as Error).message.slice(0, 100);
            errors.set(reason, (errors.get(reason) ?? 0) + 1);
            break;
          }
          await new Promise((r) => setTimeout(r, 100 + Math.random() * 400));
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(init.concurrency, total) }, one));
  clearInterval(tick);
  reply({ type: 'connected', connected, failed, errors: [...errors].slice(0, 5) });
}

// ---- sending ------------------------------------------------------------------

function onAcked(local: number, clientMsgId: string): void {
  const w = waiting.get(local);
  if (!w || clientMsgId !== String(w.key)) return;
  waiting.delete(local);
  const l = ledger(w.phase);
  l.acked.push(w.key, w.r);
  l.ackLatency.record((Date.now() - w.at) * 1000);
}

function onRefused(local: number, clientMsgId: string, code: string): void {
  const w = waiting.get(local);
  if (!w || clientMsgId !== String(w.key)) return;
  waiting.delete(local);
  ledger(w.phase).refused++;
  refusedCodes.set(code, (refusedCodes.get(code) ?? 0) + 1);
}

/** One message from local sender `local` to global user `r` (the slow device when r === users). */
function sendOne(local: number, r: number, bytes: number): void {
  const g = init.first + local;
  const k = nextK[local] ?? 0;
  nextK[local] = k + 1;
  const key = msgKey(g, k);
  waiting.set(local, { key, r, phase, at: Date.now() });
  const to = r === init.users ? `${init.prefix}slow` : userOf(r);
  clients[local]!.send(String(key), to, payload(g, k, phase, bytes));
}

/** Round robin over this process's senders; a sender with a message waiting is skipped. */
function sendTick(): void {
  const now = Date.now();
  if (rate <= 0 || init.count === 0) return;
  if (nextDueMs === 0) nextDueMs = now;
  for (let guard = 0; nextDueMs <= now && guard < init.count; guard++) {
    const local = turn;
    turn = (turn + 1) % init.count;
    if (waiting.has(local) || clients[local]?.state !== 'online') continue;
    const g = init.first + local;
    const k = nextK[local] ?? 0;
    sendOne(local, (g + OFFSETS[k % OFFSETS.length]!) % init.users, payloadBytes);
    nextDueMs += 1000 / rate;
  }
  if (nextDueMs < now - 1000) nextDueMs = now; // do not catch up a backlog in one burst
}

/** Every sender that has nothing waiting sends one message of `bytes` to the slow device (up to `count`). */
function blast(count: number, bytes: number): number {
  let n = 0;
  for (let local = 0; local < init.count && n < count; local++) {
    if (waiting.has(local) || clients[local]?.state !== 'online') continue;
    sendOne(local, init.users, bytes);
    n++;
  }
  return n;
}

function status(): Record<string, unknown> {
  const now = Date.now();
  let online = 0;
  let oldest = 0;
  for (const c of clients) if (c?.state === 'online' || c?.stalled) online++;
  for (const w of waiting.values()) oldest = Math.max(oldest, now - w.at);
  let offlineFor = 0;
  for (const c of clients) if (c && c.state !== 'online' && !c.stalled) offlineFor = Math.max(offlineFor, now - c.offlineSinceMs);
  return {
    type: 'status', online, total: clients.length, oldestWaitMs: oldest, offlineForMs: offlineFor, waiting: waiting.size,
    reconnects, resent, slowDropped: slowClient?.droppedWhileStalled ?? false, slowOnline: slowClient?.state === 'online',
    slowReason: slowClient?.lastLossReason ?? '',
  };
}

setInterval(() => {
  const now = Date.now();
  sendTick();
  for (const c of clients) c?.tick(now);
}, 20).unref();

process.on('message', (m: { type: string } & Record<string, unknown>) => {
  void (async () => {
    try {
      switch (m.type) {
        case 'init':
          init = m as unknown as InitMsg;
          reply({ type: 'ready' });
          break;
        case 'connect':
          await connectAll();
          break;
        case 'traffic': {
          const t = m as unknown as TrafficMsg;
          phase = t.phase;
          rate = t.rate;
          payloadBytes = t.payloadBytes;
          nextDueMs = 0;
          reply({ type: 'traffic-set' });
          break;
        }
        case 'blast':
          reply({ type: 'blasted', sent: blast(m.count as number, m.bytes as number) });
          break;
        case 'status':
          reply(status());
          break;
        case 'sync':
          // Every device syncs in full (bounded): what a device gets at its next sync counts.
          await Promise.race([
            Promise.all(clients.map((c) => c?.syncAll().catch(() => undefined))),
            new Promise((r) => setTimeout(r, 30_000)),
          ]);
          reply({ type: 'synced' });
          break;
        case 'stall':
          slowClient?.stall();
          reply({ type: 'stalled' });
          break;
        case 'unstall':
          slowClient?.unstall();
          reply({ type: 'unstalled' });
          break;
        case 'ledger': {
          const l = ledger(m.phase as number);
          reply({
            type: 'ledger', acked: l.acked, delivered: l.delivered, duplicated: l.duplicated, reordered: l.reordered,
            refused: l.refused, ackHist: l.ackLatency.entries(), unparsable, refusedCodes: [...refusedCodes],
          });
          break;
        }
        case 'close':
          for (const c of clients) c?.close();
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
