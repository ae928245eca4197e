// Helpers for the abuse tests (test/abuse/*.test.ts): an attacker connection
// that pipelines frames and only counts what comes back (so the test process,
// which also runs the embedded server, does not hold hundreds of megabytes of
// decoded replies), honest pairs that chat one message at a time and measure
// SendAck and Pong round trips, forged tokens, frames padded with unknown
// protobuf fields, and memory readings.
import net from 'node:net';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { SignJWT } from 'jose';
import {
  ErrorCode, LengthPrefixedReader, decodeFrame, encodeFrame, errorName, lengthPrefixed, makeFrame,
  type Frame, type FrameBodyInit,
} from '../../src/protocol/index.js';
import { RawClient } from '../helpers/raw.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- statistics -----------------------------------------------------------

export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))]!;
}

export interface Stats { n: number; p50: number; p99: number; max: number }

export function stats(xs: readonly number[]): Stats {
  return { n: xs.length, p50: percentile(xs, 0.5), p99: percentile(xs, 0.99), max: xs.length ? Math.max(...xs) : NaN };
}

export function fmtStats(s: Stats): string {
  return `n=${s.n} p50=${s.p50.toFixed(1)} ms p99=${s.p99.toFixed(1)} ms max=${s.max.toFixed(1)} ms`;
}

export const MiB = 1024 * 1024;
export const mib = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`;

// ---- protobuf bytes by hand -------------------------------------------------

function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** A length-delimited field (wire type 2) with `size` bytes of filler: tag, length, bytes. */
export function unknownField(fieldNumber: number, size: number): Buffer {
  return Buffer.concat([varint(fieldNumber * 8 + 2), varint(size), Buffer.alloc(size, 0x61)]);
}

/** A valid encoded frame with an unknown length-delimited field appended at the Frame level. */
export function paddedFrame(id: number, body: FrameBodyInit, padBytes: number, fieldNumber = 1000): Buffer {
  return Buffer.concat([Buffer.from(encodeFrame(makeFrame(id, body))), unknownField(fieldNumber, padBytes)]);
}

/**
 * A ConversationsRequest frame whose (empty) body message carries an unknown
 * field of `padBytes`: the padding is nested inside the body, not at the top.
 */
export function paddedConversationsBody(id: number, padBytes: number, fieldNumber = 1000): Buffer {
  const inner = unknownField(fieldNumber, padBytes);
  return Buffer.concat([Buffer.from([0x08]), varint(id), varint(30 * 8 + 2), varint(inner.length), inner]);
}

function readVarint(buf: Uint8Array, at: number): [number, number] {
  let result = 0;
  let mul = 1;
  for (let i = at; i < buf.length && i < at + 10; i++) {
    const b = buf[i]!;
    result += (b & 0x7f) * mul;
    if ((b & 0x80) === 0) return [result, i + 1];
    mul *= 128;
  }
  throw new Error('bad varint');
}

/** Field numbers of Frame.body (longlink.proto) → case names, for the replies an attacker counts. */
const BODY_FIELDS: Record<number, string> = {
  11: 'loginResult', 13: 'pong', 15: 'sendAck', 16: 'push', 19: 'syncResult', 21: 'historyResult', 22: 'kick', 23: 'error',
  25: 'done', 29: 'presenceResult', 31: 'conversationsResult', 33: 'groupResult', 35: 'event',
};

/** id and body kind of an encoded Frame, read without decoding the (possibly megabytes of) body. */
export function peekFrame(buf: Uint8Array): { id: number; kind: string } {
  let at = 0;
  let id = 0;
  let kind = 'unknown';
  while (at < buf.length) {
    const [tag, next] = readVarint(buf, at);
    at = next;
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (wire === 0) {
      const [v, n2] = readVarint(buf, at);
      at = n2;
      if (field === 1) id = v;
    } else if (wire === 2) {
      const [len, n2] = readVarint(buf, at);
      at = n2 + len;
      if (BODY_FIELDS[field]) kind = BODY_FIELDS[field]!;
    } else if (wire === 5) at += 4;
    else if (wire === 1) at += 8;
    else break;
  }
  return { id, kind };
}

// ---- the attacker's connection ----------------------------------------------

export interface Reply { kind: string; code?: ErrorCode; atMs: number }

/**
 * A TCP connection that writes frames in bulk and keeps only a tally of what
 * comes back: replies by frame id (kind, error code, arrival time), notices
 * (id 0 errors), the closing code (a fatal Error or a Kick) and byte counts.
 */
export class Attacker {
  readonly replies = new Map<number, Reply[]>();
  readonly notices: ErrorCode[] = [];
  /** The code of a fatal Error or Kick, when the server closed us with one. */
  closingCode: ErrorCode | undefined;
  closed = false;
  closedAtMs = 0;
  bytesIn = 0;
  framesIn = 0;
  private nextId = 1;

  private constructor(readonly socket: net.Socket) {}

  static async open(tcpUrl: string, token: string, timeoutMs = 10_000): Promise<Attacker> {
    const u = new URL(tcpUrl);
    const socket = net.connect({ host: u.hostname, port: Number(u.port) });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    const a = new Attacker(socket);
    const reader = new LengthPrefixedReader(64 * 1024 * 1024);
    socket.on('data', (chunk: Buffer) => {
      a.bytesIn += chunk.length;
      reader.push(chunk);
      for (let p = reader.next(); p; p = reader.next()) a.onPayload(p);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      a.closed = true;
      a.closedAtMs = Date.now();
    });
    const id = a.send({ case: 'login', value: { token } });
    await a.until(() => a.replies.has(id) || a.closed, timeoutMs);
    const r = a.replies.get(id)?.[0];
    if (r?.kind !== 'loginResult') throw new Error(`attacker login refused: ${r ? `${r.kind}(${r.code === undefined ? '' : errorName(r.code)})` : 'no reply'}`);
    a.replies.delete(id);
    return a;
  }

  private onPayload(p: Uint8Array): void {
    this.framesIn++;
    const { id, kind } = peekFrame(p);
    let code: ErrorCode | undefined;
    if (kind === 'error' || kind === 'kick') {
      try {
        const f = decodeFrame(p);
        if (f.body.case === 'error') {
          code = f.body.value.code;
          if (f.body.value.fatal) this.closingCode = code;
        } else if (f.body.case === 'kick') {
          code = f.body.value.code;
          this.closingCode = code;
        }
      } catch {
        /* counted as an unknown reply */
      }
    }
    if (id === 0) {
      if (code !== undefined) this.notices.push(code);
      return;
    }
    const list = this.replies.get(id) ?? [];
    list.push({ kind, code, atMs: Date.now() });
    this.replies.set(id, list);
  }

  /** Encode one frame (with the next id unless given) and write it now; returns its id. */
  send(body: FrameBodyInit, id = this.nextId++): number {
    this.socket.write(lengthPrefixed(encodeFrame(makeFrame(id, body))));
    return id;
  }

  /** Frame ids for `n` frames made by `make`, all written in ONE socket write (a pipeline). */
  pipeline(n: number, make: (id: number) => FrameBodyInit): number[] {
    const ids: number[] = [];
    const parts: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const id = this.nextId++;
      ids.push(id);
      parts.push(lengthPrefixed(encodeFrame(makeFrame(id, make(id)))));
    }
    this.socket.write(Buffer.concat(parts));
    return ids;
  }

  /** Write already-encoded frame payloads in one write, each with its length prefix. */
  writePayloads(payloads: readonly Uint8Array[]): void {
    this.socket.write(Buffer.concat(payloads.map((p) => lengthPrefixed(p))));
  }

  takeId(): number {
    return this.nextId++;
  }

  /** Every id in `ids` has a reply, or the connection is closed. */
  answeredOrClosed(ids: readonly number[]): boolean {
    return this.closed || ids.every((id) => this.replies.has(id));
  }

  async until(check: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (Date.now() > deadline) return false;
      await sleep(10);
    }
    return true;
  }

  /**
   * What happened to pipelined requests: each id must have exactly one reply
   * (of `resultKind` or an Error with a code), or the connection must have been
   * closed with a code. Returns the problems (empty: fine) and a summary.
   */
  judge(ids: readonly number[], resultKind: string | ((id: number) => string)): { problems: string[]; summary: string } {
    const expected = typeof resultKind === 'string' ? () => resultKind : resultKind;
    const problems: string[] = [];
    const kinds = new Map<string, number>();
    let unanswered = 0;
    for (const id of ids) {
      const list = this.replies.get(id) ?? [];
      if (list.length === 0) {
        unanswered++;
        continue;
      }
      if (list.length > 1) problems.push(`request ${id} got ${list.length} replies`);
      for (const r of list) {
        const key = r.kind === 'error' ? `error(${r.code === undefined ? '?' : errorName(r.code)})` : r.kind;
        kinds.set(key, (kinds.get(key) ?? 0) + 1);
        if (r.kind === 'error' && (r.code === undefined || r.code === ErrorCode.ERROR_CODE_UNSPECIFIED)) problems.push(`request ${id}: error without a code`);
        else if (r.kind !== 'error' && r.kind !== expected(id)) problems.push(`request ${id}: unexpected reply ${r.kind} (expected ${expected(id)})`);
      }
    }
    if (unanswered > 0) {
      if (!this.closed) problems.push(`${unanswered} of ${ids.length} requests unanswered and the connection is still open`);
      else if (this.closingCode === undefined) problems.push(`${unanswered} of ${ids.length} requests unanswered and the connection was closed without a code`);
    }
    const summary = `${[...kinds].map(([k, n]) => `${k}×${n}`).join(', ') || 'no replies'}; unanswered ${unanswered}; `
      + `notices ${this.notices.map(errorName).join(',') || 'none'}; ${this.closed ? `closed (${this.closingCode === undefined ? 'no code' : errorName(this.closingCode)})` : 'open'}; `
      + `${mib(this.bytesIn)} read`;
    return { problems, summary };
  }

  close(): void {
    this.socket.destroy();
  }
}

// ---- honest users -------------------------------------------------------------

export interface HonestPair {
  sender: RawClient;
  receiver: RawClient;
  to: string;
  name: string;
}

/** Why an honest connection is unhealthy (kicked, closed, or sent a fatal error), or undefined. */
export function trouble(c: RawClient, who: string): string | undefined {
  const bad = c.frames.filter((f) => f.body.case === 'kick' || (f.body.case === 'error' && f.body.value.fatal));
  if (bad.length > 0 || c.closed) return `${who}: ${c.closed ? 'closed' : 'open'}; ${c.describe()}`;
  return undefined;
}

/**
 * Honest pairs chatting: each sender sends one 1:1 message, waits for its
 * SendAck, then pings and waits for the Pong, and goes on; the pairs run at
 * once. Round trips in ms are collected into `send` and `ping`. A reply that
 * does not come within `replyTimeoutMs` is counted at that time (so a stall
 * shows in p99) and the loop goes on.
 */
export class HonestTraffic {
  send: number[] = [];
  ping: number[] = [];
  timeouts = 0;
  sent = new Map<string, string[]>();
  private seq = 0;

  constructor(readonly pairs: readonly HonestPair[], readonly replyTimeoutMs = 10_000) {}

  private async rtt(c: RawClient, body: FrameBodyInit, expect: string): Promise<number> {
    const from = c.frames.length;
    const t0 = performance.now();
    const id = c.send(body);
    try {
      const reply = await c.next((f: Frame) => f.id === id, this.replyTimeoutMs, from);
      if (reply.body.case !== expect) throw new Error(`expected ${expect}, got ${c.describe()}`);
      return performance.now() - t0;
    } catch (err) {
      if (c.closed) throw err;
      this.timeouts++;
      return performance.now() - t0;
    }
  }

  /** One exchange for one pair; false when its connection is gone (problems() tells why). */
  async once(p: HonestPair): Promise<boolean> {
    try {
      await this.exchange(p);
      return true;
    } catch {
      return false;
    }
  }

  private async exchange(p: HonestPair): Promise<void> {
    const clientMsgId = `${p.name}-${this.seq++}`;
    this.send.push(await this.rtt(p.sender, { case: 'send', value: { clientMsgId, toUser: p.to, text: `hello ${clientMsgId}` } }, 'sendAck'));
    const list = this.sent.get(p.name) ?? [];
    list.push(clientMsgId);
    this.sent.set(p.name, list);
    this.ping.push(await this.rtt(p.sender, { case: 'ping', value: {} }, 'pong'));
  }

  /** `rounds` exchanges per pair, the pairs at once. */
  async rounds(rounds: number): Promise<void> {
    await Promise.all(this.pairs.map(async (p) => {
      for (let i = 0; i < rounds; i++) if (!(await this.once(p))) return;
    }));
  }

  /** Exchanges per pair until `done()` and at least `minRounds` each, at most `maxMs`. */
  async until(done: () => boolean, minRounds: number, maxMs: number): Promise<void> {
    const deadline = Date.now() + maxMs;
    await Promise.all(this.pairs.map(async (p) => {
      for (let i = 0; (i < minRounds || !done()) && Date.now() < deadline; i++) {
        if (!(await this.once(p))) return;
        await sleep(5);
      }
    }));
  }

  /** Fresh sample arrays (keep `sent`). */
  reset(): void {
    this.send = [];
    this.ping = [];
    this.timeouts = 0;
  }

  problems(): string[] {
    const out: string[] = [];
    for (const p of this.pairs) {
      for (const [c, who] of [[p.sender, `${p.name} sender`], [p.receiver, `${p.name} receiver`]] as const) {
        const t = trouble(c, who);
        if (t) out.push(t);
      }
    }
    return out;
  }

  /** Clients message ids the receiver of each pair has not had pushed. */
  undelivered(): string[] {
    const out: string[] = [];
    for (const p of this.pairs) {
      const got = new Set<string>();
      for (const f of p.receiver.frames) if (f.body.case === 'push') for (const m of f.body.value.messages) got.add(m.clientMsgId);
      for (const id of this.sent.get(p.name) ?? []) if (!got.has(id)) out.push(id);
    }
    return out;
  }
}

// ---- tokens -------------------------------------------------------------------

/** An HS256 login token for `userId` signed with `secret` (a wrong secret makes a forgery). */
export async function forgeToken(userId: string, secret: string, deviceId = 'd1', platform = 'other'): Promise<string> {
  const nowMs = Date.now();
  return new SignJWT({ dev: deviceId, plt: platform, iatms: nowMs })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer('longlink')
    .setSubject(userId)
    .setIssuedAt(Math.floor(nowMs / 1000))
    .setExpirationTime(Math.floor(nowMs / 1000) + 3600)
    .sign(new TextEncoder().encode(secret));
}

// ---- memory -------------------------------------------------------------------

let gcFn: (() => void) | undefined | null = null;

/**
 * A full GC if one can be had: the tests run without --expose-gc, so this
 * tries V8's flag at run time (works on Node 20, not guaranteed); returns
 * false when no GC could be forced.
 */
export function tryGc(): boolean {
  if (gcFn === null) {
    try {
      v8.setFlagsFromString('--expose-gc');
      gcFn = runInNewContext('gc') as () => void;
    } catch {
      gcFn = undefined;
    }
  }
  if (!gcFn) return false;
  gcFn();
  return true;
}

/** RSS after a settle (and a forced GC when possible): the lowest of a few readings over `ms`. */
export async function settledRss(ms = 1500): Promise<number> {
  let low = Infinity;
  const deadline = Date.now() + ms;
  do {
    tryGc();
    await sleep(100);
    low = Math.min(low, process.memoryUsage().rss);
  } while (Date.now() < deadline);
  return low;
}

/** Samples RSS every `everyMs` until stopped; `peak` is the highest. */
export function rssSampler(everyMs = 50): { peak: () => number; stop: () => void } {
  let peak = process.memoryUsage().rss;
  const t = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, everyMs);
  return { peak: () => peak, stop: () => clearInterval(t) };
}

/** The event loop's longest stall while running, measured by a timer's lateness. */
export function loopStallMeter(everyMs = 20): { max: () => number; stop: () => void } {
  let max = 0;
  let last = performance.now();
  const t = setInterval(() => {
    const now = performance.now();
    max = Math.max(max, now - last - everyMs);
    last = now;
  }, everyMs);
  return { max: () => max, stop: () => clearInterval(t) };
}

/** Redis's `used_memory` (bytes) from INFO memory. */
export function usedMemory(info: string): number {
  const m = /^used_memory:(\d+)/m.exec(info);
  if (!m) throw new Error('INFO memory has no used_memory');
  return Number(m[1]);
}
