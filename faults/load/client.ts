// One simulated device of the fault suite. It keeps the client's half of the
// promises the way the SDK does (src/client/client.ts), and nothing more:
// - reconnect after any loss with full-jitter backoff, to a live gateway from
//   the API's list, avoiding the one just lost;
// - an outbox: each send is written again on every login and when it waited
//   an ack too long, with its client message id (the server dedupes): the
//   SDK's own Outbox;
// - after every login a full sync from its cursors (paged), and a sync of a
//   conversation whose pushes show a gap: the SDK's own sync loop (Sync);
// - in-order delivery by seq (the SDK's Receiver), cumulative PushAcks;
// - group requests carry a request id and are written again with it until
//   answered (the server applies each once).
// The ledger sees what an app would see: messages released in seq order.
import net from 'node:net';
import WebSocket from 'ws';
import {
  ErrorCode, LengthPrefixedReader, LonglinkError, decodeFrame, encodeFrame, errorName, lengthPrefixed, makeFrame, messageFromWire,
  type ChatMessage, type Frame, type FrameBodyInit, type Group,
} from '../../src/protocol/index.js';
import { Receiver } from '../../src/client/receiver.js';
import { Sync } from '../../src/client/sync.js';
import { Outbox, sendResultOf } from '../../src/client/outbox.js';

/** Errors after which the SDK writes a request again (as src/client/outbox.ts does for sends). */
const RETRYABLE = new Set<number>([ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL, ErrorCode.RATE_LIMITED]);
const ACK_DELAY_MS = 30;
/**
 * Login and sync timeout. Longer than the SDK's 15 s, and a failed sync is
 * retried with a doubling delay: a crowd that logs in at once queues its syncs
 * behind each other in logic, and timing them out and asking again only makes
 * the queue longer (see faults/README.md, reconnect-crowd).
 */
const REQUEST_TIMEOUT_MS = 45_000;

export interface ClientEnv {
  /** A gateway URL for this transport (tcp:// or ws://), not `avoid` if another is live. */
  pickGateway(transport: 'tcp' | 'ws', avoid: string | undefined): Promise<string>;
  token: string;
  resendAfterMs: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
}

/** The op of a GroupRequest (create, add, remove, …). */
export type GroupOp = Extract<NonNullable<FrameBodyInit>, { case: 'group' }>['value']['op'];

export interface ClientHooks {
  /** A message from another user (or a timeline event), released in seq order. */
  deliver(m: ChatMessage): void;
  acked(clientMsgId: string, conversationId: string, seq: number): void;
  refused(clientMsgId: string, code: string): void;
  /** A send written again (a new connection, or no ack in time). */
  resent(): void;
  online(reconnect: boolean): void;
  offline(reason: string): void;
}

interface Wire {
  write(bytes: Uint8Array): void;
  close(): void;
  pause(): void;
  resume(): void;
}

export class LoadClient {
  state: 'offline' | 'connecting' | 'online' = 'offline';
  /** When the current outage began (0 when online). */
  offlineSinceMs = Date.now();
  /** The SDK's outbox (src/client/outbox.ts): every send until acked, written again at login and when stale. */
  private readonly outbox: Outbox;
  /** Sends written at least once (a second write is counted as a resend). */
  private readonly written = new Set<string>();
  /** Reading stopped on purpose (the slow-consumer fault). */
  stalled = false;
  /** Whether the server closed the connection while it was stalled. */
  droppedWhileStalled = false;
  lastLossReason = '';
  private readonly receiver = new Receiver();
  private readonly acked = new Map<string, number>();
  /** The sync token the last full-sync page left (src/client/sync.ts): kept with the receiver's cursors, for the run. */
  private syncToken: string | undefined;
  private wire: Wire | undefined;
  private generation = 0;
  private nextId = 1;
  /** Requests waiting for their reply; `raw`: an Error frame is the reply (resolved), not a failure. */
  private readonly pending = new Map<number, { resolve: (f: Frame) => void; reject: (e: Error) => void; timer: NodeJS.Timeout; raw?: boolean }>();
  private attempt = 0;
  private lostUrl: string | undefined;
  private closed = false;
  private everOnline = false;
  private ackTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  /** The SDK's sync loop (src/client/sync.ts), fed by this client's receiver. */
  private readonly sync = new Sync({
    // The receiver's cursors live as long as this client (the whole run): its syncs carry tokens.
    keepsCursors: true,
    link: this.link(),
    inbox: {
      cursors: () => this.receiver.cursors(),
      stuck: () => this.receiver.stuck(),
      advance: (conversationId, seq) => this.release(this.receiver.advance(conversationId, seq), conversationId),
      receive: (m) => this.offer(m, m.conversationId),
      syncToken: () => this.syncToken,
      setSyncToken: (token) => {
        if (token !== '') this.syncToken = token;
      },
    },
    request: (body) => this.request(body),
    emit: () => undefined, // the ledger sees deliveries; a failed sync is retried by the loop itself
  });
  private lastFrameMs = 0;
  private pingIntervalMs = 25_000;
  private lastPingMs = 0;

  constructor(
    readonly userId: string,
    readonly transport: 'tcp' | 'ws',
    private readonly env: ClientEnv,
    private readonly hooks: ClientHooks,
    /** The gateway of the first connection (else one from the list). */
    private readonly firstUrl?: string,
  ) {
    this.outbox = new Outbox({
      link: this.outboxLink(),
      newId: () => this.nextId++,
      resendAfterMs: env.resendAfterMs,
      emit: () => undefined, // the ledger hears of acks and refusals through send()'s promise
      changed: () => undefined, // nothing is persisted: a load device lives for one run
      queued: () => undefined,
    });
  }

  /** Connect and log in (rejects on failure; the caller may retry or let reconnect() do it). */
  async connect(): Promise<void> {
    await this.open();
  }

  /** Send to a user (1:1), or with `to` empty into a conversation (a group). */
  send(clientMsgId: string, to: string, text: string, conversationId = ''): void {
    const options = to !== '' ? { clientMsgId, to, text } : { clientMsgId, conversationId, text };
    this.outbox.send(options).then(
      (r) => {
        this.written.delete(clientMsgId);
        this.hooks.acked(clientMsgId, r.conversationId, r.seq);
      },
      (err: unknown) => {
        this.written.delete(clientMsgId);
        this.hooks.refused(clientMsgId, err instanceof LonglinkError ? err.codeName : String(err));
      },
    );
  }

  /**
   * A group request under `requestId`, written again with the same id after a
   * lost connection, a timeout or a retryable error, until the server answers
   * (it applies the request once however often it arrives). Resolves with the
   * group, or the error code that refused it for good.
   */
  async groupRequest(requestId: string, op: GroupOp, timeoutMs = 10_000): Promise<{ group?: Group; error?: string }> {
    let written = 0;
    for (;;) {
      if (this.closed) return { error: 'CLOSED' };
      if (this.state !== 'online' || this.stalled) {
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (written++ > 0) this.hooks.resent();
      let reply: Frame;
      try {
        reply = await this.request({ case: 'group', value: { op } }, { requestId, timeoutMs, raw: true });
      } catch {
        continue; // the connection was lost, or no answer in time: write it again
      }
      if (reply.body.case === 'groupResult') return { group: reply.body.value.group };
      if (reply.body.case === 'error' && !RETRYABLE.has(reply.body.value.code)) return { error: errorName(reply.body.value.code) };
      if (reply.body.case !== 'error') return { error: `unexpected reply ${reply.body.case ?? 'empty'}` };
      await new Promise((r) => setTimeout(r, 200 + Math.random() * 300));
    }
  }

  /** Called about every 100 ms by the worker: heartbeats, resends, a silent server. */
  tick(now: number): void {
    if (this.state !== 'online' || this.stalled) return;
    if (now - this.lastFrameMs > this.pingIntervalMs * 3) {
      this.lost('server silent');
      return;
    }
    if (now - this.lastPingMs >= this.pingIntervalMs) {
      this.lastPingMs = now;
      this.frame(this.nextId++, { case: 'ping', value: {} });
    }
    this.outbox.resendStale();
  }

  /** Stop reading (and writing) as an app that hangs; the gateway should drop it as SLOW_CONSUMER. */
  stall(): void {
    this.stalled = true;
    this.droppedWhileStalled = false;
    this.wire?.pause();
  }

  /** Read again: whatever was buffered, then (if the server dropped it) reconnect and sync. */
  unstall(): void {
    this.stalled = false;
    this.wire?.resume();
    if (this.state === 'offline' && !this.reconnectTimer && !this.closed) this.scheduleReconnect();
  }

  /** A full sync now (the end of a fault row: everything missed is fetched). */
  syncAll(): Promise<void> {
    if (this.state !== 'online') return Promise.resolve();
    return this.sync.full();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.ackTimer);
    this.teardown('closed');
    this.state = 'offline';
  }

  // ---- connection -----------------------------------------------------------

  private async open(): Promise<void> {
    this.state = 'connecting';
    const generation = ++this.generation;
    const url = !this.everOnline && this.firstUrl && this.attempt === 0 ? this.firstUrl : await this.env.pickGateway(this.transport, this.lostUrl);
    let wire: Wire;
    try {
      wire = await this.dial(url, generation);
    } catch (err) {
      this.lostUrl = url;
      this.state = 'offline';
      throw err;
    }
    if (generation !== this.generation || this.closed) {
      wire.close();
      throw new Error('superseded');
    }
    this.wire = wire;
    this.lastFrameMs = Date.now();
    let reply: Frame;
    try {
      reply = await this.request({ case: 'login', value: { token: this.env.token, clientVersion: 'faults' } });
    } catch (err) {
      this.lostUrl = url;
      this.teardown('login failed');
      this.state = 'offline';
      throw err;
    }
    if (reply.body.case !== 'loginResult') throw new Error('unexpected login reply');
    this.pingIntervalMs = reply.body.value.pingIntervalMs || 25_000;
    this.lastPingMs = Date.now();
    this.attempt = 0;
    this.state = 'online';
    this.offlineSinceMs = 0;
    const reconnect = this.everOnline;
    this.everOnline = true;
    this.hooks.online(reconnect);
    this.outbox.writeAll();
    this.sync.loggedIn(true);
  }

  private dial(url: string, generation: number): Promise<Wire> {
    const u = new URL(url);
    const onBytes = (b: Uint8Array) => {
      if (generation === this.generation) this.onFrame(b);
    };
    const onClose = (reason: string) => {
      if (generation !== this.generation) return;
      this.lostUrl = url;
      if (this.stalled) this.droppedWhileStalled = true;
      this.lost(reason);
    };
    return new Promise((resolve, reject) => {
      let opened = false;
      if (u.protocol === 'tcp:') {
        const socket = net.connect({ host: u.hostname, port: Number(u.port) });
        socket.setNoDelay(true);
        const reader = new LengthPrefixedReader(64 * 1024 * 1024);
        socket.on('connect', () => {
          opened = true;
          resolve({
            write: (b) => socket.write(lengthPrefixed(b)), close: () => socket.destroy(), pause: () => socket.pause(), resume: () => socket.resume(),
          });
        });
        socket.on('data', (chunk: Buffer) => {
          reader.push(chunk);
          for (let p = reader.next(); p; p = reader.next()) onBytes(p);
        });
        socket.on('error', (e) => (opened ? undefined : reject(e)));
        socket.on('close', () => (opened ? onClose('connection closed') : reject(new Error('closed before open'))));
      } else {
        const ws = new WebSocket(u, { perMessageDeflate: false });
        ws.on('open', () => {
          opened = true;
          // ws reads through its socket: pausing the socket stops reading altogether.
          const raw = (ws as unknown as { _socket: net.Socket })._socket;
          resolve({ write: (b) => ws.send(b), close: () => ws.terminate(), pause: () => raw.pause(), resume: () => raw.resume() });
        });
        ws.on('message', (data: Buffer) => onBytes(data));
        ws.on('error', (e) => (opened ? undefined : reject(e)));
        ws.on('close', (code) => (opened ? onClose(`connection closed (${code})`) : reject(new Error(`closed before open (${code})`))));
      }
    });
  }

  private lost(reason: string): void {
    if (this.state === 'offline' && !this.wire) return;
    this.teardown(reason);
    this.state = 'offline';
    this.offlineSinceMs = Date.now();
    this.lastLossReason = reason;
    this.hooks.offline(reason);
    if (!this.closed && !this.stalled) this.scheduleReconnect();
  }

  private teardown(reason: string): void {
    this.generation++;
    const wire = this.wire;
    this.wire = undefined;
    wire?.close();
    this.sync.connectionLost();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error(reason));
    }
    this.pending.clear();
    this.outbox.connectionLost();
  }

  /** Full jitter: a random delay below a cap that doubles per failed attempt. */
  private scheduleReconnect(): void {
    if (this.reconnectTimer || this.closed) return;
    const cap = Math.min(this.env.maxBackoffMs, this.env.initialBackoffMs * 2 ** this.attempt);
    this.attempt++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.closed || this.stalled) return;
      this.open().catch(() => {
        if (this.state !== 'online') this.scheduleReconnect();
      });
    }, Math.floor(Math.random() * cap));
  }

  // ---- frames ---------------------------------------------------------------

  private frame(id: number, body: FrameBodyInit, requestId = ''): void {
    const f = makeFrame(id, body);
    f.requestId = requestId;
    this.wire?.write(encodeFrame(f));
  }

  /** What the SDK's outbox sees of the connection; it writes a send only while reading (not stalled). */
  private outboxLink(): { readonly generation: number; readonly online: boolean; write(frame: Frame): boolean } {
    const generation = () => this.generation;
    const online = () => this.state === 'online';
    const write = (f: Frame): boolean => {
      if (!this.wire || this.stalled) return false;
      if (f.body.case === 'send') {
        const id = f.body.value.clientMsgId;
        if (this.written.has(id)) this.hooks.resent();
        else this.written.add(id);
      }
      this.wire.write(encodeFrame(f));
      return true;
    };
    return {
      get generation() {
        return generation();
      },
      get online() {
        return online();
      },
      write,
    };
  }

  private request(body: FrameBodyInit, o: { requestId?: string; timeoutMs?: number; raw?: boolean } = {}): Promise<Frame> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${body?.case ?? 'request'} timed out`));
      }, o.timeoutMs ?? REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer, raw: o.raw });
      this.frame(id, body, o.requestId);
    });
  }

  private onFrame(bytes: Uint8Array): void {
    this.lastFrameMs = Date.now();
    let frame: Frame;
    try {
      frame = decodeFrame(bytes);
    } catch {
      this.lost('undecodable frame');
      return;
    }
    const body = frame.body;
    const waiter = this.pending.get(frame.id);
    if (waiter && (body.case !== 'error' || waiter.raw)) {
      this.pending.delete(frame.id);
      clearTimeout(waiter.timer);
      waiter.resolve(frame);
      return;
    }
    switch (body.case) {
      case 'sendAck': {
        const a = body.value;
        const seq = Number(a.seq);
        // Our own message has this seq: step past it without showing it (as the SDK does).
        this.offer({
          conversationId: a.conversationId, seq, serverMsgId: a.serverMsgId, fromUser: this.userId, fromDevice: '',
          clientMsgId: a.clientMsgId, text: '', sentAtMs: Number(a.sentAtMs),
        }, a.conversationId);
        if (this.receiver.base(a.conversationId) === undefined) this.sync.syncStuck();
        const entry = this.outbox.acked(frame.id, a.clientMsgId);
        if (entry) this.outbox.settle(entry, sendResultOf(a));
        return;
      }
      case 'push':
        for (const m of body.value.messages) this.offer(messageFromWire(m), m.conversationId);
        this.sync.syncStuck();
        return;
      case 'error': {
        const e = body.value;
        if (this.outbox.refused(frame.id, e.code, new LonglinkError(e.code, e.message))) return;
        if (waiter) {
          this.pending.delete(frame.id);
          clearTimeout(waiter.timer);
          waiter.reject(new Error(`${errorName(e.code)}: ${e.message}`));
          return;
        }
        if (e.fatal) this.lost(`error ${errorName(e.code)}`);
        return;
      }
      case 'kick':
        this.lost(`kick ${errorName(body.value.code)}`);
        return;
      default:
        return;
    }
  }

  // ---- receive, sync, ack -----------------------------------------------------

  private offer(m: ChatMessage, conversationId: string): void {
    const own = m.fromUser === this.userId;
    this.release(this.receiver.offer(m, own), conversationId);
  }

  private release(ready: ChatMessage[], conversationId: string): void {
    for (const m of ready) this.hooks.deliver(m);
    const base = this.receiver.base(conversationId);
    if (base !== undefined && base > (this.acked.get(conversationId) ?? 0)) this.ackTimer ??= setTimeout(() => this.flushAcks(), ACK_DELAY_MS);
  }

  private flushAcks(): void {
    this.ackTimer = undefined;
    if (this.state !== 'online' || this.stalled) return;
    for (const [conversationId, base] of this.receiver.cursors()) {
      if (base > (this.acked.get(conversationId) ?? 0)) {
        this.frame(0, { case: 'pushAck', value: { conversationId, seq: BigInt(base) } });
        this.acked.set(conversationId, base);
      }
    }
  }

  /** What the SDK's sync sees of the connection: its generation (a loop ends with it) and whether it is up. */
  private link(): { readonly generation: number; readonly connected: boolean } {
    const generation = () => this.generation;
    const connected = () => this.state === 'online';
    return {
      get generation() {
        return generation();
      },
      get connected() {
        return connected();
      },
    };
  }
}
