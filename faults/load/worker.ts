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
// Beside the 1:1 traffic, when the harness sets them up:
// - group traffic: members of a few groups send into them (a group message
//   counts as a send of its sender, so still one waiting per sender); the
//   owner's process changes the membership (removes one member, adds it back)
//   with request ids, written again until answered; the ledger keeps each
//   group message's acked seq and each delivery's seq, which the harness
//   checks against the membership the store recorded (lib/groups.ts);
// - HTTP business pushes (POST /api/v1/messages with the admin key) from one
//   process, into 1:1 conversations that also carry client traffic: one
//   request at a time per conversation, retried with the same client_msg_id
//   on errors and timeouts; the ledger keeps each answered seq.
import { TokenService } from '../../src/auth/tokens.js';
import type { ChatMessage } from '../../src/protocol/index.js';
import { LogHistogram, Seen, msgKey } from '../../bench/lib/ledger.js';
import { LoadClient, type ClientEnv, type GroupOp } from './client.js';

/** Ledger sender index of HTTP push pair i (its messages' `g`): far above any user index. */
const HTTP_SENDER_BASE = 1_000_000;
/** Longer than the server's own wait for the partition owner (15 s), so its 503 usually comes first. */
const HTTP_TIMEOUT_MS = 20_000;

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
  /** Group messages per second, all groups and processes together (each process its senders' share). */
  groupRate: number;
  /** A membership change in each group every this many ms while traffic runs (0: none). */
  churnMs: number;
  /** HTTP business pushes from this process: the admin key, (sender, recipient) pairs of global indices, pushes per second. */
  http?: { adminKey: string; pairs: [number, number][]; rate: number };
}

/** A group of the traffic (global user indices). */
export interface GroupSpec {
  index: number;
  groupId: string;
  conversationId: string;
  /** Owner first; every member but `target` sends into the group. */
  members: number[];
  owner: number;
  /** The member the churn removes and adds back (never sends into the group). */
  target: number;
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
/** Per local sender: its waiting message (key, recipient or group, phase, first sent at). */
const waiting = new Map<number, { key: number; r: number; group?: number; phase: number; at: number }>();
let nextDueMs = 0;
let turn = 0;

// Groups.
let groups: GroupSpec[] = [];
const groupIndex = new Map<string, number>();
/** Group timeline events released to local devices (all phases): r, group index, seq, … */
const groupEvents: number[] = [];
/** Local senders into groups: [local, group index]. */
let groupSenders: [number, number][] = [];
let groupTurn = 0;
let groupDueMs = 0;
/** The membership churn of the groups whose owner is local. */
interface Churn {
  spec: GroupSpec;
  ownerLocal: number;
  targetIn: boolean;
  n: number;
  nextAt: number;
  inflight?: { phase: number; at: number };
}
let churns: Churn[] = [];

// HTTP pushes.
interface PushPair {
  index: number;
  from: number;
  to: number;
  n: number;
  inflight?: { phase: number; at: number };
}
let pairs: PushPair[] = [];
let pairTurn = 0;
let httpDueMs = 0;
let apiTurn = 0;
/** A logic API that refused a connection (or did not answer) is skipped until then. */
const apiDownUntil = new Map<string, number>();

// The ledger, per phase.
interface PhaseLedger {
  /** 1:1 sends and HTTP pushes: key, r, key, r, … */
  acked: number[];
  delivered: number[];
  duplicated: number;
  reordered: number;
  refused: number;
  ackLatency: LogHistogram;
  /** Group messages: key, group index, acked seq, … */
  groupAcked: number[];
  /** Group deliveries: key, r, seq, group index, … */
  groupDelivered: number[];
  groupDuplicated: number;
  groupReordered: number;
  /** Membership changes answered (their request ids). */
  ops: string[];
  /** HTTP pushes answered: key, seq, …; and the seq each was released at: key, seq, … */
  httpAcked: number[];
  httpDelivered: number[];
  httpRetries: number;
  /** Answers with duplicate: true (a retry of a push an earlier attempt had stored). */
  httpDuplicateAnswers: number;
}
const ledgers = new Map<number, PhaseLedger>();
const seen: Map<number, Seen>[] = []; // per local device: sender -> k's seen
const lastK: Map<string, number>[] = []; // per local device: conversation + sender -> last k released
let reconnects = 0;
let resent = 0;
let unparsable = 0;
const refusedCodes = new Map<string, number>();

function ledger(p: number): PhaseLedger {
  let l = ledgers.get(p);
  if (!l) {
    ledgers.set(p, (l = {
      acked: [], delivered: [], duplicated: 0, reordered: 0, refused: 0, ackLatency: new LogHistogram(),
      groupAcked: [], groupDelivered: [], groupDuplicated: 0, groupReordered: 0, ops: [],
      httpAcked: [], httpDelivered: [], httpRetries: 0, httpDuplicateAnswers: 0,
    }));
  }
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
  // Timeline events (membership): not the ledger's (membership is read from the store's timeline at the
  // tally); which group events each device was given is kept to explain a loss.
  if (m.event) {
    const index = groupIndex.get(m.conversationId);
    if (index !== undefined) groupEvents.push(r, index, m.seq);
    return;
  }
  const [g, k, p] = m.text.split(':', 3).map(Number) as [number, number, number];
  if (!Number.isInteger(g) || !Number.isInteger(k) || !Number.isInteger(p)) {
    unparsable++;
    return;
  }
  const l = ledger(p);
  const group = m.conversationId.startsWith('g:');
  let s = seen[local]!.get(g);
  if (!s) seen[local]!.set(g, (s = new Seen()));
  if (!s.mark(k)) {
    if (group) l.groupDuplicated++;
    else l.duplicated++;
    return;
  }
  // Several senders share a conversation (a group; a 1:1 with HTTP pushes): the order is per sender.
  const order = `${m.conversationId} ${g}`;
  const before = lastK[local]!.get(order) ?? -1;
  if (k < before) {
    if (group) l.groupReordered++;
    else l.reordered++;
  } else lastK[local]!.set(order, k);
  const key = msgKey(g, k);
  if (group) {
    l.groupDelivered.push(key, r, m.seq, groupIndex.get(m.conversationId) ?? -1);
    return;
  }
  l.delivered.push(key, r);
  if (g >= HTTP_SENDER_BASE) l.httpDelivered.push(key, m.seq);
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
        acked: (id, _conversationId, seq) => onAcked(local, id, seq),
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

function onAcked(local: number, clientMsgId: string, seq: number): void {
  const w = waiting.get(local);
  if (!w || clientMsgId !== String(w.key)) return;
  waiting.delete(local);
  const l = ledger(w.phase);
  if (w.group !== undefined) l.groupAcked.push(w.key, w.group, seq);
  else l.acked.push(w.key, w.r);
  l.ackLatency.record((Date.now() - w.at) * 1000);
}

function onRefused(local: number, clientMsgId: string, code: string): void {
  const w = waiting.get(local);
  if (!w || clientMsgId !== String(w.key)) return;
  waiting.delete(local);
  refuse(w.phase, w.group !== undefined ? `group send ${code}` : code);
}

function refuse(p: number, code: string): void {
  ledger(p).refused++;
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

// ---- groups ---------------------------------------------------------------------

/** Create a group whose owner is local (request id `create-{index}`, written again until answered). */
async function createGroup(index: number, members: number[]): Promise<Record<string, unknown>> {
  const owner = members[0]!;
  const client = clients[owner - init.first];
  if (!client) return { type: 'group-created', index, error: `owner ${owner} is not in this process` };
  const res = await client.groupRequest(`create-${index}`, {
    case: 'create', value: { name: `faults-${index}`, memberIds: members.slice(1).map(userOf) },
  }, 15_000);
  if (!res.group) return { type: 'group-created', index, error: res.error ?? 'no group in the reply' };
  return { type: 'group-created', index, groupId: res.group.groupId, conversationId: res.group.conversationId };
}

function setGroups(list: GroupSpec[]): void {
  groups = list;
  for (const spec of list) groupIndex.set(spec.conversationId, spec.index);
  groupSenders = [];
  churns = [];
  for (const spec of list) {
    for (const g of spec.members) {
      const local = g - init.first;
      if (local < 0 || local >= init.count || g === spec.target) continue;
      groupSenders.push([local, spec.index]);
    }
    const ownerLocal = spec.owner - init.first;
    if (ownerLocal >= 0 && ownerLocal < init.count) churns.push({ spec, ownerLocal, targetIn: true, n: 0, nextAt: 0 });
  }
}

/** This process's share of the group rate: by its senders. */
function localGroupRate(): number {
  const all = groups.reduce((s, spec) => s + spec.members.length - 1, 0);
  return all > 0 ? (init.groupRate * groupSenders.length) / all : 0;
}

/** Round robin over this process's group senders; one with a message waiting (1:1 or group) is skipped. */
function groupTick(now: number): void {
  const perSecond = localGroupRate();
  if (rate <= 0 || perSecond <= 0 || groupSenders.length === 0) return;
  if (groupDueMs === 0) groupDueMs = now;
  for (let guard = 0; groupDueMs <= now && guard < groupSenders.length; guard++) {
    const [local, index] = groupSenders[groupTurn]!;
    groupTurn = (groupTurn + 1) % groupSenders.length;
    if (waiting.has(local) || clients[local]?.state !== 'online') continue;
    const g = init.first + local;
    const k = nextK[local] ?? 0;
    nextK[local] = k + 1;
    const key = msgKey(g, k);
    waiting.set(local, { key, r: -1, group: index, phase, at: Date.now() });
    clients[local]!.send(String(key), '', payload(g, k, phase, payloadBytes), groups[index]!.conversationId);
    groupDueMs += 1000 / perSecond;
  }
  if (groupDueMs < now - 1000) groupDueMs = now;
}

/** Each local owner removes its group's target, then adds it back, one change at a time, every churnMs. */
function churnTick(now: number): void {
  if (rate <= 0 || init.churnMs <= 0) return;
  for (const c of churns) {
    if (c.inflight || now < c.nextAt || clients[c.ownerLocal]?.state !== 'online') continue;
    const requestId = `churn-${c.spec.index}-${c.n++}`;
    const userIds = [userOf(c.spec.target)];
    const op: GroupOp = c.targetIn
      ? { case: 'remove', value: { groupId: c.spec.groupId, userIds } }
      : { case: 'add', value: { groupId: c.spec.groupId, userIds } };
    const f = { phase, at: now };
    c.inflight = f;
    void clients[c.ownerLocal]!.groupRequest(requestId, op).then((res) => {
      c.inflight = undefined;
      c.nextAt = Date.now() + init.churnMs;
      if (!res.group) {
        refuse(f.phase, `group.${op.case} ${res.error ?? 'no group'}`);
        return;
      }
      c.targetIn = res.group.members.some((m) => m.userId === userIds[0]);
      ledger(f.phase).ops.push(requestId);
    });
  }
}

// ---- HTTP business pushes -----------------------------------------------------------

function httpTick(now: number): void {
  const http = init.http;
  if (!http || rate <= 0 || http.rate <= 0 || pairs.length === 0) return;
  if (httpDueMs === 0) httpDueMs = now;
  for (let guard = 0; httpDueMs <= now && guard < pairs.length; guard++) {
    const p = pairs[pairTurn]!;
    pairTurn = (pairTurn + 1) % pairs.length;
    if (p.inflight) continue;
    void push(p, http.adminKey);
    httpDueMs += 1000 / http.rate;
  }
  if (httpDueMs < now - 1000) httpDueMs = now;
}

/** The next logic API in turn that is not known to be down (any, if all are). */
function pickApi(): string {
  const now = Date.now();
  for (let i = 0; i < init.apiUrls.length; i++) {
    const url = init.apiUrls[apiTurn++ % init.apiUrls.length]!;
    if ((apiDownUntil.get(url) ?? 0) <= now) return url;
  }
  return init.apiUrls[apiTurn++ % init.apiUrls.length]!;
}

/**
 * One business push, written again (same client_msg_id) until answered or
 * refused: at once to another logic API when one cannot be reached (as a
 * business backend with a list of endpoints would), else after a backoff.
 */
async function push(p: PushPair, adminKey: string): Promise<void> {
  const n = p.n++;
  const g = HTTP_SENDER_BASE + p.index;
  const key = msgKey(g, n);
  const f = { phase, at: Date.now() };
  p.inflight = f;
  const body = JSON.stringify({ from: userOf(p.from), to: userOf(p.to), text: payload(g, n, phase, payloadBytes), client_msg_id: `http-${p.index}-${n}` });
  try {
    for (let attempt = 0, backoff = false; ; attempt++) {
      if (attempt > 0) {
        ledger(f.phase).httpRetries++;
        if (backoff) await new Promise((r) => setTimeout(r, Math.min(2000, 200 * 2 ** Math.min(attempt, 4)) * (0.5 + Math.random() / 2)));
      }
      const api = pickApi();
      let status: number;
      let answer: { seq?: unknown; duplicate?: unknown; error?: { code?: string } } | undefined;
      try {
        const res = await fetch(`${api}/api/v1/messages`, {
          method: 'POST', body, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
          headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
        });
        status = res.status;
        answer = (await res.json().catch(() => undefined)) as typeof answer;
      } catch {
        // Refused, reset or timed out: the push may have been stored; the same id is applied once.
        apiDownUntil.set(api, Date.now() + 1000);
        backoff = init.apiUrls.every((u) => (apiDownUntil.get(u) ?? 0) > Date.now());
        continue;
      }
      if (status === 200 && typeof answer?.seq === 'number') {
        const l = ledger(f.phase);
        l.acked.push(key, p.to);
        l.httpAcked.push(key, answer.seq);
        if (answer.duplicate === true) l.httpDuplicateAnswers++;
        l.ackLatency.record((Date.now() - f.at) * 1000);
        return;
      }
      backoff = true;
      if (status >= 500 || status === 429 || status === 408) continue;
      refuse(f.phase, `http ${status} ${answer?.error?.code ?? ''}`.trim());
      return;
    }
  } finally {
    p.inflight = undefined;
  }
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
  // Membership changes and business pushes waiting for their answer count as sends waiting.
  let others = 0;
  for (const x of [...churns, ...pairs]) {
    if (!x.inflight) continue;
    others++;
    oldest = Math.max(oldest, now - x.inflight.at);
  }
  let offlineFor = 0;
  for (const c of clients) if (c && c.state !== 'online' && !c.stalled) offlineFor = Math.max(offlineFor, now - c.offlineSinceMs);
  return {
    type: 'status', online, total: clients.length, oldestWaitMs: oldest, offlineForMs: offlineFor, waiting: waiting.size + others,
    reconnects, resent, slowDropped: slowClient?.droppedWhileStalled ?? false, slowOnline: slowClient?.state === 'online',
    slowReason: slowClient?.lastLossReason ?? '',
  };
}

setInterval(() => {
  const now = Date.now();
  sendTick();
  groupTick(now);
  churnTick(now);
  httpTick(now);
  for (const c of clients) c?.tick(now);
}, 20).unref();

process.on('message', (m: { type: string } & Record<string, unknown>) => {
  void (async () => {
    try {
      switch (m.type) {
        case 'init':
          init = m as unknown as InitMsg;
          pairs = (init.http?.pairs ?? []).map(([from, to], index) => ({ index, from, to, n: 0 }));
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
          groupDueMs = 0;
          httpDueMs = 0;
          reply({ type: 'traffic-set' });
          break;
        }
        case 'group-create':
          reply(await createGroup(m.index as number, m.members as number[]));
          break;
        case 'groups':
          setGroups(m.groups as GroupSpec[]);
          reply({ type: 'groups-set' });
          break;
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
            groupAcked: l.groupAcked, groupDelivered: l.groupDelivered, groupDuplicated: l.groupDuplicated, groupReordered: l.groupReordered,
            ops: l.ops, groupEvents, httpAcked: l.httpAcked, httpDelivered: l.httpDelivered, httpRetries: l.httpRetries,
            httpDuplicateAnswers: l.httpDuplicateAnswers,
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
