// A raw protocol client for tests: frames in and out over a real TCP or
// WebSocket connection, with no SDK logic in between, so tests see exactly
// what the server sends. The socket is exposed so a test can stop reading.
import net from 'node:net';
import WebSocket from 'ws';
import {
  LengthPrefixedReader, decodeFrame, encodeFrame, lengthPrefixed, makeFrame,
  type Frame, type FrameBodyInit, type FrameCase,
} from '../../src/protocol/index.js';

export class RawClient {
  readonly frames: Frame[] = [];
  closed = false;
  closeCode: number | undefined;
  /** Set when bytes from the server did not decode (the server sent garbage). */
  decodeError: Error | undefined;
  /** The TCP socket (TCP clients) — pause() it to stop reading. */
  socket: net.Socket | undefined;
  /** The WebSocket (WebSocket clients), for protocol-level pings and text messages. */
  ws: WebSocket | undefined;
  private waiters: (() => void)[] = [];
  private nextId = 1;

  private constructor(readonly transport: 'tcp' | 'ws') {}

  static connect(url: string): Promise<RawClient> {
    const u = new URL(url);
    if (u.protocol === 'tcp:') {
      return new Promise((resolve, reject) => {
        const client = new RawClient('tcp');
        const socket = net.connect({ host: u.hostname, port: Number(u.port) });
        client.socket = socket;
        const reader = new LengthPrefixedReader(64 * 1024 * 1024);
        socket.on('connect', () => resolve(client));
        socket.on('error', (e) => reject(e));
        socket.on('data', (chunk: Buffer) => {
          reader.push(chunk);
          for (let p = reader.next(); p; p = reader.next()) client.onPayload(p);
        });
        socket.on('close', () => client.onClose(undefined));
      });
    }
    return new Promise((resolve, reject) => {
      const client = new RawClient('ws');
      const ws = new WebSocket(url, { perMessageDeflate: false });
      client.ws = ws;
      ws.on('open', () => resolve(client));
      ws.on('error', (e) => reject(e));
      ws.on('message', (data: Buffer) => client.onPayload(data));
      ws.on('close', (code) => client.onClose(code));
    });
  }

  private onPayload(bytes: Uint8Array): void {
    try {
      this.frames.push(decodeFrame(bytes));
    } catch (err) {
      this.decodeError = err as Error;
    }
    this.wake();
  }

  private onClose(code: number | undefined): void {
    this.closed = true;
    this.closeCode = code;
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Send a frame (with a request id, when given); returns its id. */
  send(body: FrameBodyInit, id = this.nextId++, requestId = ''): number {
    const frame = makeFrame(id, body);
    frame.requestId = requestId;
    this.sendPayload(encodeFrame(frame));
    return id;
  }

  /** Send bytes as one frame payload (TCP: with a correct length prefix; WS: one binary message). */
  sendPayload(bytes: Uint8Array): void {
    if (this.socket) this.socket.write(lengthPrefixed(bytes));
    else this.ws!.send(bytes, { binary: true });
  }

  /** Send many frame payloads at once (TCP: one write of them all; WS: one message each, back to back). */
  sendPayloads(payloads: readonly Uint8Array[]): void {
    if (this.socket) this.socket.write(Buffer.concat(payloads.map(lengthPrefixed)));
    else for (const p of payloads) this.ws!.send(p, { binary: true });
  }

  /** Write bytes as they are (TCP: no prefix; WS: one binary message). */
  sendRaw(bytes: Buffer): void {
    if (this.socket) this.socket.write(bytes);
    else this.ws!.send(bytes, { binary: true });
  }

  close(): void {
    clearInterval(this.pinger);
    if (this.socket) this.socket.destroy();
    else this.ws!.terminate();
  }

  private pinger: NodeJS.Timeout | undefined;

  /**
   * Ping every `ms`, as a real client does: a client that only listens is
   * otherwise closed HEARTBEAT_TIMEOUT after 3 ping intervals of silence (1 s
   * each in the cluster tests), and a slow machine makes a test run that long.
   */
  keepAlive(ms = 500): this {
    clearInterval(this.pinger);
    this.pinger = setInterval(() => {
      if (this.closed) clearInterval(this.pinger);
      else this.send({ case: 'ping', value: {} });
    }, ms);
    this.pinger.unref();
    return this;
  }

  /** Wait for the first received frame (from index `from`) matching. */
  async next(match: (f: Frame) => boolean, timeoutMs = 5000, from = 0): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.frames.slice(from).find(match);
      if (found) return found;
      if (this.closed) throw new Error(`connection closed before a matching frame; got ${this.describe()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for a frame; got ${this.describe()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  nextOf(kind: FrameCase, timeoutMs = 5000): Promise<Frame> {
    return this.next((f) => f.body.case === kind, timeoutMs);
  }

  /** Resolves when the connection is closed. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error(`connection still open after ${timeoutMs} ms; got ${this.describe()}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Log in and wait for the result; throws with the error frame if refused. */
  async login(token: string): Promise<Frame> {
    const id = this.send({ case: 'login', value: { token } });
    const reply = await this.next((f) => f.id === id);
    if (reply.body.case !== 'loginResult') throw new Error(`login refused: ${this.describe()}`);
    return reply;
  }

  describe(): string {
    const list = this.frames.map((f) => f.body.case + (f.body.case === 'error' || f.body.case === 'kick' ? `(${f.body.value.code})` : ''));
    if (list.length > 20) list.splice(10, list.length - 20, `…${list.length - 20} more…`);
    return (list.join(',') || 'nothing') + (this.closed ? ' [closed]' : '');
  }
}
