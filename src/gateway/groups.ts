// Large groups at the gateway. Logic sends a large group's messages once per
// gateway, with no list of recipients (src/logic/fanout.ts, GroupDeliver);
// each gateway keeps, per group it has seen lately, who may see which seqs
// (every member's latest membership window) and which of them have a
// connection here, and writes each message to those.
//
// The membership is loaded once per group, on the first message that needs
// it, through the bus (GroupMembersRequest → GroupMembers, answered by
// src/logic/member-loads.ts): the windows of every current member and of
// those whose membership ended after the seq asked from, as of a seq the
// conversation had reached (`knownUpTo`: every change up to it is in them).
// From there the group's own timeline events, which reach every gateway the
// same way and in seq order, keep it current: one that comes right after
// `knownUpTo` is applied (members join or leave at its seq) and moves it on.
// So a member removed before a message never gets it, and one added after a
// message never gets it, whatever the gateway saw before.
//
// - While the load runs, the group's messages wait here (in seq order).
// - A message past knownUpTo + 1 (a seq this gateway has not seen: another
//   service published it later, or it was lost) waits GAP_HOLD_MS for the
//   seqs before it; if they do not come, the membership is loaded again.
// - A message at or below knownUpTo (late) is delivered by the windows.
// - A change goes to the members just before it and just after it (the
//   removed member gets its removal, the added one its addition).
// - Only a user's latest window is kept: one removed and added again does not
//   get a late message from its earlier stay (it syncs it).
// The store's membership windows stay the truth: whatever this misses,
// devices fetch at sync, which applies them.
//
// Memory is bounded: groups are kept least recently used first out, past
// `maxBytes` (estimated) of windows. A group dropped is loaded again when
// its next message comes.
import { upEnvelope, type Bus, type GroupDeliver, type GroupMembers } from '../engines/bus.js';
import { log as rootLog } from '../observability/log.js';
import type { Connection, SessionTable } from './connection.js';
import { OutFrame } from './transport.js';

const log = rootLog.child({ component: 'gateway-groups' });

/** How long a message past a gap waits for the seqs before it before the membership is loaded again. */
export const GAP_HOLD_MS = 500;
/** A load unanswered this long is asked again (its answer, should it come later, is ignored). */
export const LOAD_TIMEOUT_MS = 15_000;
/** Messages of one group waiting at most (a load that never answers); past it the oldest are dropped (devices sync them). */
export const MAX_HELD = 10_000;
/** Failed loads of one group in a row before its waiting messages are dropped (devices sync them) and the group forgotten. */
const MAX_ATTEMPTS = 4;
/** Ended windows kept per group (for late messages) before those ended longest ago are forgotten. */
const MAX_ENDED = 4096;

/** Estimated bytes of one window (the map entry, the object, the id's string). */
const windowBytes = (userId: string): number => 120 + 2 * userId.length;

export interface GroupIndexOptions {
  nodeId: string;
  /** Estimated bytes of membership kept, all groups together. @default 256 MiB */
  maxBytes?: number;
  gapHoldMs?: number;
  loadTimeoutMs?: number;
}

interface Window {
  joined: number;
  /** Infinity while a member. */
  left: number;
}

interface Load {
  requestId: number;
  sinceSeq: number;
  windows: { userId: string; joined: number; left: number }[];
  timer: NodeJS.Timeout;
}

class Group {
  readonly members = new Map<string, Window>();
  /** Users of `members` with a connection on this gateway. */
  readonly local = new Set<string>();
  /** Every membership change up to this seq is in `members`. */
  knownUpTo = 0;
  load: Load | undefined;
  /** Loads in a row that failed, or (gaps) did not get the group past what it waits for. */
  attempts = 0;
  /** Messages waiting (the load, or a gap), in seq order. */
  held: GroupDeliver[] = [];
  gapTimer: NodeJS.Timeout | undefined;
  retryTimer: NodeJS.Timeout | undefined;
  bytes = 0;
  ended = 0;

  constructor(readonly conversationId: string) {}
}

/** What the index holds, for metrics and tests. */
export interface GroupIndexStats {
  groups: number;
  bytes: number;
  loads: number;
  held: number;
  /** Loads asked for since start. */
  loadsAsked: number;
  /** Messages dropped unwritten (held past MAX_HELD, or their loads kept failing): their devices sync them. */
  dropped: number;
}

export class GroupIndex {
  /** Least recently used first. */
  private readonly groups = new Map<string, Group>();
  private readonly loads = new Map<number, Group>();
  private bytes = 0;
  private nextRequestId = Date.now() * 1000;
  private loadsAsked = 0;
  private dropped = 0;
  private readonly maxBytes: number;
  private readonly gapHoldMs: number;
  private readonly loadTimeoutMs: number;

  constructor(
    private readonly options: GroupIndexOptions,
    private readonly deps: { bus: Bus; table: SessionTable; send: (conn: Connection, out: OutFrame) => void },
  ) {
    this.maxBytes = options.maxBytes ?? 256 * 1024 * 1024;
    this.gapHoldMs = options.gapHoldMs ?? GAP_HOLD_MS;
    this.loadTimeoutMs = options.loadTimeoutMs ?? LOAD_TIMEOUT_MS;
  }

  stats(): GroupIndexStats {
    let held = 0;
    for (const g of this.groups.values()) held += g.held.length;
    return { groups: this.groups.size, bytes: this.bytes, loads: this.loads.size, held, loadsAsked: this.loadsAsked, dropped: this.dropped };
  }

  /** A large group's message came down. */
  onDeliver(d: GroupDeliver): void {
    let g = this.groups.get(d.conversationId);
    if (!g) {
      g = new Group(d.conversationId);
      this.groups.set(d.conversationId, g);
      this.hold(g, d);
      this.ask(g, Number(d.seq) - 1);
      return;
    }
    // Most recently used last.
    this.groups.delete(g.conversationId);
    this.groups.set(g.conversationId, g);
    if (g.load || g.held.length > 0) {
      this.hold(g, d);
      if (!g.load) this.drain(g);
      return;
    }
    this.take(g, d);
  }

  /** A part of a load's answer came down. */
  onMembers(m: GroupMembers): void {
    const id = Number(m.requestId);
    const g = this.loads.get(id);
    const load = g?.load;
    if (!g || !load || load.requestId !== id) return; // answered after its timeout, or for a group forgotten since
    if (m.error !== '') {
      this.failed(g, m.error);
      return;
    }
    for (const w of m.windows) load.windows.push({ userId: w.userId, joined: Number(w.joinedSeq), left: w.leftSeq === 0n ? Infinity : Number(w.leftSeq) });
    if (!m.done) return;
    clearTimeout(load.timer);
    this.loads.delete(id);
    g.load = undefined;
    this.bytes -= g.bytes;
    g.members.clear();
    g.local.clear();
    g.bytes = 0;
    g.ended = 0;
    for (const w of load.windows) {
      g.members.set(w.userId, { joined: w.joined, left: w.left });
      g.bytes += windowBytes(w.userId);
      if (w.left !== Infinity) g.ended++;
    }
    this.bytes += g.bytes;
    // Which of them are here: the smaller side is walked.
    if (g.members.size <= this.deps.table.users) {
      for (const u of g.members.keys()) if (this.deps.table.has(u)) g.local.add(u);
    } else {
      for (const u of this.deps.table.userIds()) if (g.members.has(u)) g.local.add(u);
    }
    g.knownUpTo = Number(m.lastSeq);
    this.drain(g);
    if (g.held.length === 0) g.attempts = 0;
    else if (++g.attempts >= MAX_ATTEMPTS) {
      // The store is behind what was pushed (it should never be): drop what waits rather than load again and again.
      log.warn({ conversation: g.conversationId, knownUpTo: g.knownUpTo, next: Number(g.held[0]!.seq) }, 'a large group\'s members stop short of its messages: its waiting messages are dropped (devices sync them)');
      this.dropped += g.held.length;
      this.remove(g);
    }
    this.evict();
  }

  /** A user's first connection on this gateway opened. */
  userOnline(userId: string): void {
    for (const g of this.groups.values()) if (g.members.has(userId)) g.local.add(userId);
  }

  /** A user's last connection on this gateway closed. */
  userOffline(userId: string): void {
    for (const g of this.groups.values()) g.local.delete(userId);
  }

  /**
   * This gateway may have missed downlink (its registry entry lapsed, or its
   * stream was trimmed unread): what it knows of every group is dropped, and
   * the groups with messages waiting are loaded again.
   */
  forget(): void {
    for (const g of [...this.groups.values()]) {
      if (g.held.length > 0) {
        this.cancelLoad(g);
        clearTimeout(g.gapTimer);
        g.gapTimer = undefined;
        this.ask(g, Number(g.held[0]!.seq) - 1);
      } else this.remove(g);
    }
  }

  stop(): void {
    for (const g of this.groups.values()) this.clearTimers(g);
    this.groups.clear();
    this.loads.clear();
    this.bytes = 0;
  }

  /** In order with what the group knows: delivered (a change applied first), or held behind a gap. */
  private take(g: Group, d: GroupDeliver): void {
    const seq = Number(d.seq);
    if (seq <= g.knownUpTo) {
      this.deliver(g, d, seq);
      return;
    }
    if (seq === g.knownUpTo + 1) {
      this.apply(g, d, seq);
      g.knownUpTo = seq;
      this.deliver(g, d, seq);
      return;
    }
    this.hold(g, d);
    this.armGap(g);
  }

  /** Messages that waited and may go now, in seq order; the rest wait on. */
  private drain(g: Group): void {
    while (!g.load && g.held.length > 0 && Number(g.held[0]!.seq) <= g.knownUpTo + 1) this.take(g, g.held.shift()!);
    if (g.held.length === 0) {
      clearTimeout(g.gapTimer);
      g.gapTimer = undefined;
    } else if (!g.load) this.armGap(g);
  }

  private hold(g: Group, d: GroupDeliver): void {
    const seq = d.seq;
    let i = g.held.length;
    while (i > 0 && g.held[i - 1]!.seq > seq) i--;
    if (i > 0 && g.held[i - 1]!.seq === seq) return; // the same seq again (a repeat): once is enough
    g.held.splice(i, 0, d);
    if (g.held.length > MAX_HELD) {
      g.held.shift();
      this.dropped++;
    }
  }

  private armGap(g: Group): void {
    if (g.gapTimer || g.load) return;
    g.gapTimer = setTimeout(() => {
      g.gapTimer = undefined;
      if (g.load || g.held.length === 0 || this.groups.get(g.conversationId) !== g) return;
      log.debug({ conversation: g.conversationId, knownUpTo: g.knownUpTo, next: Number(g.held[0]!.seq) }, 'a gap in a large group did not fill: loading its members again');
      this.ask(g, g.knownUpTo);
    }, this.gapHoldMs);
    g.gapTimer.unref();
  }

  /** Ask logic for the group's windows from sinceSeq on. */
  private ask(g: Group, sinceSeq: number): void {
    const requestId = this.nextRequestId++;
    const timer = setTimeout(() => this.failed(g, `no answer within ${this.loadTimeoutMs} ms`), this.loadTimeoutMs);
    timer.unref();
    g.load = { requestId, sinceSeq: Math.max(0, sinceSeq), windows: [], timer };
    this.loads.set(requestId, g);
    this.loadsAsked++;
    this.deps.bus.publishUp(upEnvelope({
      origin: { node: this.options.nodeId, connId: BigInt(requestId), userId: '', deviceId: '', platform: 'gateway' },
      partition: g.conversationId, requestId: `members:${this.options.nodeId}:${requestId}`, publishedAtMs: BigInt(Date.now()),
      body: { case: 'members', value: { conversationId: g.conversationId, sinceSeq: BigInt(Math.max(0, sinceSeq)) } },
    })).catch((err: unknown) => {
      if (g.load?.requestId === requestId) this.failed(g, (err as Error).message);
    });
  }

  /** A load failed: asked again after a backoff, or, after MAX_ATTEMPTS, its messages are dropped (devices sync them). */
  private failed(g: Group, why: string): void {
    const load = g.load;
    if (!load) return;
    this.cancelLoad(g);
    g.attempts++;
    if (g.attempts >= MAX_ATTEMPTS || this.groups.get(g.conversationId) !== g) {
      log.warn({ conversation: g.conversationId, why, dropped: g.held.length }, 'a large group\'s members could not be loaded: its waiting messages are dropped (devices sync them)');
      this.dropped += g.held.length;
      this.remove(g);
      return;
    }
    log.warn({ conversation: g.conversationId, why, attempt: g.attempts }, 'a large group\'s member load failed; asking again');
    g.retryTimer = setTimeout(() => {
      g.retryTimer = undefined;
      if (this.groups.get(g.conversationId) === g && !g.load) this.ask(g, load.sinceSeq);
    }, Math.min(8000, 500 * 2 ** g.attempts));
    g.retryTimer.unref();
  }

  private cancelLoad(g: Group): void {
    if (!g.load) return;
    clearTimeout(g.load.timer);
    this.loads.delete(g.load.requestId);
    g.load = undefined;
  }

  /** What a message at `seq` changes in the membership. */
  private apply(g: Group, d: GroupDeliver, seq: number): void {
    for (const u of d.joined) {
      const w = g.members.get(u);
      // Already there when the load read it (a later window too): nothing to do.
      if (w && (w.left === Infinity || w.left > seq)) continue;
      if (w) g.ended--;
      else {
        g.bytes += windowBytes(u);
        this.bytes += windowBytes(u);
      }
      g.members.set(u, { joined: seq, left: Infinity });
      if (this.deps.table.has(u)) g.local.add(u);
    }
    for (const u of d.left) {
      const w = g.members.get(u);
      if (w && w.left === Infinity && w.joined < seq) {
        w.left = seq;
        g.ended++;
      }
    }
    if (d.ended) {
      for (const w of g.members.values()) {
        if (w.left === Infinity && w.joined < seq) {
          w.left = seq;
          g.ended++;
        }
      }
    }
    if (g.ended > MAX_ENDED) this.pruneEnded(g);
  }

  /** Forget the windows that ended longest ago (only a late message could still need them). */
  private pruneEnded(g: Group): void {
    const ended = [...g.members].filter(([, w]) => w.left !== Infinity).sort((a, b) => a[1].left - b[1].left);
    for (const [u] of ended.slice(0, ended.length - MAX_ENDED / 2)) {
      g.members.delete(u);
      g.local.delete(u);
      g.bytes -= windowBytes(u);
      this.bytes -= windowBytes(u);
      g.ended--;
    }
  }

  /** Write the message to this gateway's connections of the users who may see `seq`. */
  private deliver(g: Group, d: GroupDeliver, seq: number): void {
    const change = d.joined.length > 0 || d.left.length > 0 || d.ended;
    let out: OutFrame | undefined;
    for (const u of g.local) {
      const w = g.members.get(u);
      if (!w || w.joined > seq || !(seq < w.left || (change && seq === w.left))) continue;
      for (const conn of this.deps.table.devices(u)) {
        if (conn.state !== 'open' || (u === d.exceptUser && conn.deviceId === d.exceptDevice)) continue;
        out ??= new OutFrame(d.frame);
        this.deps.send(conn, out);
      }
    }
  }

  /** Drop least recently used groups (none waiting on a load or holding messages, nor the one used last) past the byte bound. */
  private evict(): void {
    if (this.bytes <= this.maxBytes) return;
    for (const g of [...this.groups.values()].slice(0, -1)) {
      if (this.bytes <= this.maxBytes) return;
      if (g.load || g.held.length > 0) continue;
      this.remove(g);
    }
  }

  private remove(g: Group): void {
    this.clearTimers(g);
    this.cancelLoad(g);
    this.bytes -= g.bytes;
    if (this.groups.get(g.conversationId) === g) this.groups.delete(g.conversationId);
  }

  private clearTimers(g: Group): void {
    clearTimeout(g.gapTimer);
    clearTimeout(g.retryTimer);
    if (g.load) clearTimeout(g.load.timer);
    g.gapTimer = undefined;
    g.retryTimer = undefined;
  }
}
