// A raw protocol client over TLS for these tests: frames in and out over
// node:tls (tls://) or ws (wss://), trusting the given CA, with no SDK code in
// between (test/helpers/raw.ts speaks plain tcp:// and ws:// only).
import tls from 'node:tls';
import WebSocket from 'ws';
import {
  LengthPrefixedReader, decodeFrame, encodeFrame, lengthPrefixed, makeFrame,
  type Frame, type FrameBodyInit,
} from '../../src/protocol/index.js';

export class RawTlsClient {
  readonly frames: Frame[] = [];
  closed = false;
  private nextId = 1;

  private constructor(private readonly write: (bytes: Uint8Array) => void, private readonly end: () => void) {}

  /** Connects to tls://host:port or wss://host:port/ws, verifying the server against `ca`. */
  static connect(url: string, ca: string): Promise<RawTlsClient> {
    const u = new URL(url);
    return new Promise((resolve, reject) => {
      if (u.protocol === 'tls:') {
        const socket = tls.connect({ host: u.hostname, port: Number(u.port), ca });
        const client = new RawTlsClient((b) => socket.write(lengthPrefixed(b)), () => socket.destroy());
        const reader = new LengthPrefixedReader(16 * 1024 * 1024);
        socket.on('secureConnect', () => resolve(client));
        socket.on('error', reject);
        socket.on('data', (chunk: Buffer) => {
          reader.push(chunk);
          for (let p = reader.next(); p; p = reader.next()) client.frames.push(decodeFrame(p));
        });
        socket.on('close', () => (client.closed = true));
      } else {
        const ws = new WebSocket(url, { ca, perMessageDeflate: false });
        const client = new RawTlsClient((b) => ws.send(b, { binary: true }), () => ws.terminate());
        ws.on('open', () => resolve(client));
        ws.on('error', reject);
        ws.on('message', (data: Buffer) => client.frames.push(decodeFrame(data)));
        ws.on('close', () => (client.closed = true));
      }
    });
  }

  send(body: FrameBodyInit): number {
    const id = this.nextId++;
    this.write(encodeFrame(makeFrame(id, body)));
    return id;
  }

  /** The first frame matching, polling up to timeoutMs. */
  async next(match: (f: Frame) => boolean, timeoutMs = 5000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.frames.find(match);
      if (found) return found;
      const got = this.frames.map((f) => f.body.case).join(',') || 'nothing';
      if (this.closed) throw new Error(`closed before a matching frame; got ${got}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for a frame; got ${got}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async login(token: string): Promise<Frame> {
    const id = this.send({ case: 'login', value: { token } });
    const reply = await this.next((f) => f.id === id);
    if (reply.body.case !== 'loginResult') throw new Error(`login refused: ${reply.body.case}`);
    return reply;
  }

  close(): void {
    this.end();
  }
}
