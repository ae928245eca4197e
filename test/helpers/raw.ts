// A raw protocol client for tests: frames in and out over a real TCP or
// WebSocket connection, with no SDK logic in between, so tests see exactly
// what the server sends.
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
  private waiters: (() => void)[] = [];
  private nextId = 1;

  private constructor(
    private readonly writeBytes: (b: Uint8Array) => void,
    private readonly writeRaw: (b: Buffer) => void,
    private readonly end: () => void,
    readonly transport: 'tcp' | 'ws',
  ) {}

  static connect(url: string): Promise<RawClient> {
    const u = new URL(url);
    if (u.protocol === 'tcp:') {
      return new Promise((resolve, reject) => {
        const socket = net.connect({ host: u.hostname, port: Number(u.port) });
        const reader = new LengthPrefixedReader(64 * 1024 * 1024);
        const client = new RawClient(
          (b) => socket.write(lengthPrefixed(b)),
          (b) => socket.write(b),
          () => socket.destroy(),
          'tcp',
        );
        socket.on('connect', () => resolve(client));
        socket.on('error', (e) => reject(e));
        socket.on('data', (chunk: Buffer) => {
          reader.push(chunk);
          for (let p = reader.next(); p; p = reader.next()) client.onFrame(decodeFrame(p));
        });
        socket.on('close', () => client.onClose(undefined));
      });
    }
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false });
      const client = new RawClient(
        (b) => ws.send(b, { binary: true }),
        (b) => ws.send(b, { binary: true }),
        () => ws.terminate(),
        'ws',
      );
      ws.on('open', () => resolve(client));
      ws.on('error', (e) => reject(e));
      ws.on('message', (data: Buffer) => client.onFrame(decodeFrame(data)));
      ws.on('close', (code) => client.onClose(code));
      client.ws = ws;
    });
  }

  /** The underlying ws (WebSocket clients only), for protocol-level pings. */
  ws: WebSocket | undefined;

  private onFrame(frame: Frame): void {
    this.frames.push(frame);
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

  /** Send a frame; returns its id. */
  send(body: FrameBodyInit, id = this.nextId++): number {
    this.writeBytes(encodeFrame(makeFrame(id, body)));
    return id;
  }

  /** Send bytes as one frame payload (TCP: with a correct length prefix; WS: one message). */
  sendPayload(bytes: Uint8Array): void {
    this.writeBytes(bytes);
  }

  /** Write bytes to the stream as they are (TCP: no prefix added). */
  sendRaw(bytes: Buffer): void {
    this.writeRaw(bytes);
  }

  close(): void {
    this.end();
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

  /** Resolves when the server has closed the connection. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('connection still open');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Log in and wait for the result; throws with the error frame if refused. */
  async login(token: string): Promise<Frame> {
    const id = this.send({ case: 'login', value: { token } });
    const reply = await this.next((f) => f.id === id);
    if (reply.body.case !== 'loginResult') throw new Error(`login refused: ${JSON.stringify(reply.body.value)}`);
    return reply;
  }

  describe(): string {
    return this.frames.map((f) => f.body.case + (f.body.case === 'error' || f.body.case === 'kick' ? `(${f.body.value.code})` : '')).join(',') || 'nothing';
  }
}
