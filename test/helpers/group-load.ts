// A load process for the large-group cluster test (test/cluster/big-group.test.ts):
// it holds a range of users' connections (TCP, raw frames: the SDK's outbox
// and store would cost more than the test can spend on 20,000 of them), and
// keeps each connection's ledger of what it was pushed in the conversations
// it is told to expect. Driven by its parent over IPC:
//
//   init    {first, count, prefix, urls, tokenSecret, sends} → connected {connected, failed, errors}
//           (user first+i is `${prefix}${first+i}` on urls[(first+i) % urls.length]; with `sends`, user
//           `first` is the sender)
//   expect  {conversationId, texts}                     → expecting
//   send    {conversationId, texts, window}             → sent {acks: seq[] in text order, refused}
//           (from this process's first user; `window` sends in flight at most)
//   status  {conversationId}                            → status (see Status)
//   close                                               → closed, then exits
//
// Each connection acks what it was pushed as the SDK does (a cumulative
// PushAck per conversation, 100 ms after a push) and pings every 20 s. A
// process holds one socket per connection: keep `count` under ~18,000 (the
// file limit here is 20,000 a process).
import net from 'node:net';
import { createHmac } from 'node:crypto';
import {
  LengthPrefixedReader, decodeFrame, encodeFrame, lengthPrefixed, makeFrame, type Frame, type FrameBodyInit,
} from '../../src/protocol/index.js';
import { TokenService } from '../../src/auth/tokens.js';

const LOGIN_ID = 0xffff_ffff;
const PING_ID = 0xffff_fffe;
const ACK_DELAY_MS = 100;
const HEARTBEAT_MS = 20_000;
const CONCURRENCY = 200;
const ATTEMPT_MS = 30_000;

export interface Status {
  type: 'status';
  /** Connections (the sender's excluded) that got every expected text once, in order. */
  complete: number;
  /** Connections (the sender's excluded) still short of the last text, with nothing wrong so far. */
  behind: number;
  /** Connections that got a text twice, out of order, or one not expected, or seqs not increasing. */
  wrong: number;
  /** Up to 5 of those, described. */
  samples: string[];
  /** Pushes of this conversation to the sender's own device (its own messages must not come back to it). */
  toSender: number;
  /** Messages pushed in this conversation to all connections here. */
  received: number;
  /** Connections closed by the server or failed since they logged in. */
  dropped: number;
}

/** HS256 like TokenService.issue, signed synchronously (jose's async signing costs a login more than the server's share). */
function tokenFor(secret: string, userId: string): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64url');
  const nowMs = Date.now();
  const iat = Math.floor(nowMs / 1000);
  const signed = `${b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64(JSON.stringify({
    dev: 'd1', plt: 'other', iatms: nowMs, iss: 'longlink', sub: userId, iat, exp: iat + 3600,
  }))}`;
  return `${signed}.${createHmac('sha256', Buffer.from(secret, 'utf8')).update(signed).digest('base64url')}`;
}

/** A connection's ledger in one conversation. */
interface Ledger {
  next: number;
  lastSeq: bigint;
  wrong?: string;
}

class Conn {
  readonly ledgers = new Map<string, Ledger>();
  private readonly received = new Map<string, bigint>();
  private readonly acked = new Map<string, bigint>();
  private ackTimer: NodeJS.Timeout | undefined;
  private socket: net.Socket | undefined;
  open = false;
  closedByUs = false;
  onReply: ((frame: Frame) => void) | undefined;

  constructor(readonly user: string) {}

  connect(url: URL, token: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: url.hostname, port: Number(url.port) });
      this.socket = socket;
      socket.setNoDelay(true);
      const reader = new LengthPrefixedReader(16 * 1024 * 1024);
      const timer = setTimeout(() => fail(new Error(`not logged in within ${ATTEMPT_MS} ms`)), ATTEMPT_MS);
      let settled = false;
      const fail = (err: Error) => {
        if (settled) {
          if (this.open && !this.closedByUs) {
            this.open = false;
            dropped++;
          }
          return;
        }
        settled = true;
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      socket.on('connect', () => this.write(LOGIN_ID, { case: 'login', value: { token } }));
      socket.on('data', (chunk: Buffer) => {
        reader.push(chunk);
        for (let p = reader.next(); p; p = reader.next()) {
          const frame = decodeFrame(p);
          if (!settled && frame.id === LOGIN_ID) {
            settled = true;
            clearTimeout(timer);
            if (frame.body.case === 'loginResult') {
              this.open = true;
              resolve();
            } else {
              socket.destroy();
              reject(new Error(`login refused: ${frame.body.case === 'error' ? frame.body.value.code : frame.body.case}`));
            }
            continue;
          }
          this.onFrame(frame);
        }
      });
      socket.on('error', (e) => fail(e));
      socket.on('close', () => fail(new Error('closed by the server')));
    });
  }

  write(id: number, body: FrameBodyInit): void {
    this.socket?.write(lengthPrefixed(encodeFrame(makeFrame(id, body))));
  }

  /** Writes frame bytes as they are (the heartbeat, encoded once). */
  raw(frame: Uint8Array): void {
    this.socket?.write(lengthPrefixed(frame));
  }

  close(): void {
    this.closedByUs = true;
    clearTimeout(this.ackTimer);
    this.socket?.destroy();
  }

  private onFrame(frame: Frame): void {
    const body = frame.body;
    if (body.case === 'push') {
      for (const m of body.value.messages) {
        if (m.seq > (this.received.get(m.conversationId) ?? 0n)) this.received.set(m.conversationId, m.seq);
        if (m.event !== undefined) continue;
        const ledger = this.ledgers.get(m.conversationId);
        if (!ledger) continue;
        received.set(m.conversationId, (received.get(m.conversationId) ?? 0) + 1);
        if (this === sender) {
          ledger.wrong ??= `${this.user} (the sender) was pushed its own "${m.text}"`;
          continue;
        }
        const index = expected.get(m.conversationId)?.get(m.text);
        if (ledger.wrong) continue;
        if (index === undefined) ledger.wrong = `${this.user}: "${m.text}" was not sent`;
        else if (index < ledger.next) ledger.wrong = `${this.user}: "${m.text}" again (had ${ledger.next} texts)`;
        else if (index > ledger.next) ledger.wrong = `${this.user}: "${m.text}" while waiting for text ${ledger.next + 1}`;
        else if (m.seq <= ledger.lastSeq) ledger.wrong = `${this.user}: seq ${m.seq} after ${ledger.lastSeq}`;
        else {
          ledger.next++;
          ledger.lastSeq = m.seq;
        }
      }
      this.ackTimer ??= setTimeout(() => this.flushAcks(), ACK_DELAY_MS);
      return;
    }
    if (frame.id !== 0 && frame.id !== PING_ID) this.onReply?.(frame);
  }

  private flushAcks(): void {
    this.ackTimer = undefined;
    if (!this.open) return;
    for (const [conversationId, seq] of this.received) {
      if ((this.acked.get(conversationId) ?? 0n) >= seq) continue;
      this.acked.set(conversationId, seq);
      this.write(0, { case: 'pushAck', value: { conversationId, seq } });
    }
  }
}

const conns: Conn[] = [];
let sender: Conn | undefined;
let dropped = 0;
const expected = new Map<string, Map<string, number>>();
const received = new Map<string, number>();
let heartbeat: NodeJS.Timeout | undefined;

function reply(m: Record<string, unknown>): void {
  process.send?.(m);
}

async function init(m: { first: number; count: number; prefix: string; urls: string[]; tokenSecret: string; sends: boolean }): Promise<void> {
  // A token format that drifted from the server's fails here, not as 10,000 refused logins.
  const claims = await new TokenService(m.tokenSecret).verify(tokenFor(m.tokenSecret, `${m.prefix}${m.first}`));
  if (claims.userId !== `${m.prefix}${m.first}`) throw new Error(`token read as ${JSON.stringify(claims)}`);
  let next = 0;
  let failed = 0;
  const errors = new Map<string, number>();
  const one = async () => {
    while (next < m.count) {
      const g = m.first + next++;
      const conn = new Conn(`${m.prefix}${g}`);
      try {
        await conn.connect(new URL(m.urls[g % m.urls.length]!), tokenFor(m.tokenSecret, conn.user));
        conns.push(conn);
        if (m.sends && g === m.first) sender = conn;
      } catch (err) {
        failed++;
        const reason = (err as Error).message.slice(0, 100);
        errors.set(reason, (errors.get(reason) ?? 0) + 1);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, m.count) }, one));
  // Heartbeats, spread over the interval (the server closes a connection silent for 3 of its ping intervals).
  const ping = encodeFrame(makeFrame(PING_ID, { case: 'ping', value: {} }));
  let turn = 0;
  const slices = 20;
  heartbeat = setInterval(() => {
    for (let i = turn; i < conns.length; i += slices) if (conns[i]!.open) conns[i]!.raw(ping);
    turn = (turn + 1) % slices;
  }, HEARTBEAT_MS / slices);
  reply({ type: 'connected', connected: conns.length, failed, errors: [...errors] });
}

function expect(m: { conversationId: string; texts: string[] }): void {
  expected.set(m.conversationId, new Map(m.texts.map((t, i) => [t, i])));
  for (const c of conns) c.ledgers.set(m.conversationId, { next: 0, lastSeq: 0n });
  reply({ type: 'expecting' });
}

async function send(m: { conversationId: string; texts: string[]; window: number }): Promise<void> {
  const from = sender;
  if (!from) throw new Error('this process holds no sender');
  const acks: number[] = new Array<number>(m.texts.length).fill(0);
  const refused: string[] = [];
  const waiting = new Map<number, (frame: Frame) => void>();
  from.onReply = (frame) => waiting.get(frame.id)?.(frame);
  let next = 0;
  const one = async () => {
    while (next < m.texts.length) {
      const i = next++;
      const id = i + 1;
      await new Promise<void>((resolve) => {
        waiting.set(id, (frame) => {
          waiting.delete(id);
          if (frame.body.case === 'sendAck') acks[i] = Number(frame.body.value.seq);
          else refused.push(`${m.texts[i]}: ${frame.body.case === 'error' ? frame.body.value.code : frame.body.case}`);
          resolve();
        });
        from.write(id, { case: 'send', value: { clientMsgId: `${m.conversationId}/${m.texts[i]}`, conversationId: m.conversationId, text: m.texts[i]! } });
      });
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, m.window) }, one));
  from.onReply = undefined;
  reply({ type: 'sent', acks, refused });
}

function status(m: { conversationId: string }): void {
  const last = expected.get(m.conversationId)?.size ?? 0;
  const out: Status = { type: 'status', complete: 0, behind: 0, wrong: 0, samples: [], toSender: 0, received: received.get(m.conversationId) ?? 0, dropped };
  for (const c of conns) {
    const ledger = c.ledgers.get(m.conversationId);
    if (!ledger) continue;
    if (c === sender) {
      if (ledger.wrong) out.toSender++;
      continue;
    }
    if (ledger.wrong) {
      out.wrong++;
      if (out.samples.length < 5) out.samples.push(ledger.wrong);
    } else if (ledger.next === last) out.complete++;
    else out.behind++;
  }
  reply({ ...out });
}

process.on('message', (m: { type: string } & Record<string, unknown>) => {
  const run = async () => {
    switch (m.type) {
      case 'init':
        return init(m as unknown as Parameters<typeof init>[0]);
      case 'expect':
        return expect(m as unknown as Parameters<typeof expect>[0]);
      case 'send':
        return send(m as unknown as Parameters<typeof send>[0]);
      case 'status':
        return status(m as unknown as Parameters<typeof status>[0]);
      case 'close':
        clearInterval(heartbeat);
        for (const c of conns) c.close();
        reply({ type: 'closed' });
        setTimeout(() => process.exit(0), 100);
        return undefined;
      default:
        throw new Error(`unknown command ${m.type}`);
    }
  };
  run().catch((err: unknown) => reply({ type: 'error', message: (err as Error).stack ?? String(err) }));
});
process.on('disconnect', () => process.exit(0));
