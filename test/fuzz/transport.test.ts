// Property-based fuzzing of the gateway's transport adapters over real
// loopback sockets: the TCP framing (src/gateway/tcp.ts) fed valid
// length-prefixed streams cut at arbitrary points, with oversized frames
// among them, and the WebSocket adapter (src/gateway/ws.ts) fed binary and
// text messages of every size; the sink pauses delivery at random, as the
// gateway does for logins and rate limits. Every payload arrives whole, once,
// in order; the first bad frame is reported once with its code and nothing
// after it is delivered; nothing hangs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import WebSocket, { WebSocketServer } from 'ws';
import { ErrorCode, errorName, lengthPrefixed } from '../../src/protocol/index.js';
import { TcpTransport } from '../../src/gateway/tcp.js';
import { WsTransport } from '../../src/gateway/ws.js';
import type { Transport, TransportSink } from '../../src/gateway/transport.js';
import { cutAt, runs } from './arbitraries.js';

/** The smallest frame limit the configuration allows: payloads at, under and over it are all cheap. */
const LIMIT = 1024;

/** What a sink saw, and a promise for when it saw what it should. */
class RecordingSink implements TransportSink {
  readonly payloads: Buffer[] = [];
  readonly errors: { code: number; message: string }[] = [];
  private count = 0;
  private waiters: (() => void)[] = [];
  transport: Transport | undefined;

  /** `pauses[i]`: the sink returns false for the i-th payload and resumes after `pauseMs`. */
  constructor(private readonly pauses: readonly number[]) {}

  onPayload(payload: Uint8Array): boolean {
    this.payloads.push(Buffer.from(payload));
    const pauseMs = this.pauses[this.count++ % Math.max(1, this.pauses.length)] ?? -1;
    this.wake();
    if (pauseMs < 0) return true;
    setTimeout(() => this.transport?.resume(), pauseMs);
    return false;
  }

  onFramingError(code: number, message: string): void {
    this.errors.push({ code, message });
    this.transport?.end(); // as the gateway does: the stream is unusable
    this.wake();
  }

  onActivity(): void {}
  onClose(): void {}

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  async until(done: () => boolean, timeoutMs: number, what: () => string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`timed out: ${what()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 50));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

/** Sizes around the limit, and small ones. */
const payloadSize = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 64 }) },
  { weight: 2, arbitrary: fc.integer({ min: LIMIT - 8, max: LIMIT }) },
  { weight: 1, arbitrary: fc.integer({ min: LIMIT + 1, max: LIMIT + 8 }) },
  { weight: 1, arbitrary: fc.integer({ min: 65, max: 3 * LIMIT }) },
);

/** Per payload: -1 keeps reading, else pause for that many ms. */
const pausePattern = fc.array(fc.oneof({ weight: 3, arbitrary: fc.constant(-1) }, fc.integer({ min: 0, max: 5 })), { maxLength: 6 });

function payloadOf(size: number, i: number): Buffer {
  const b = Buffer.alloc(size, i & 0xff);
  if (size > 0) b[0] = i >> 8; // payloads differ even at equal sizes
  return b;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('transport fuzz', () => {
  let tcpServer: net.Server;
  let wss: WebSocketServer;
  /** The sink the next accepted connection gets. */
  let nextSink: RecordingSink | undefined;
  const transports: Transport[] = [];

  before(async () => {
    tcpServer = net.createServer((socket) => {
      const t = new TcpTransport(socket, LIMIT);
      transports.push(t);
      nextSink!.transport = t;
      t.attach(nextSink!);
    });
    await new Promise<void>((r) => tcpServer.listen(0, '127.0.0.1', r));
    wss = new WebSocketServer({ port: 0, host: '127.0.0.1', maxPayload: LIMIT * 4, perMessageDeflate: false });
    wss.on('connection', (ws, request) => {
      const t = new WsTransport(ws, request, LIMIT);
      transports.push(t);
      nextSink!.transport = t;
      t.attach(nextSink!);
    });
    await new Promise<void>((r) => wss.once('listening', r));
  });

  after(async () => {
    for (const t of transports) t.destroy();
    await new Promise((r) => tcpServer.close(r));
    await new Promise((r) => wss.close(r));
  });

  test('TCP: a length-prefixed stream cut anywhere arrives whole and in order; the first oversized frame stops it with FRAME_TOO_LARGE', async () => {
    const port = (tcpServer.address() as AddressInfo).port;
    await fc.assert(fc.asyncProperty(
      fc.array(payloadSize, { maxLength: 10 }),
      fc.array(fc.nat(), { maxLength: 30 }),
      pausePattern,
      fc.boolean(),
      async (sizes, cuts, pauses, yieldBetweenChunks) => {
        const payloads = sizes.map(payloadOf);
        const firstOver = payloads.findIndex((p) => p.length > LIMIT);
        const expected = firstOver < 0 ? payloads : payloads.slice(0, firstOver);
        const sink = new RecordingSink(pauses);
        nextSink = sink;
        const socket = net.connect({ port, host: '127.0.0.1' });
        socket.on('error', () => undefined); // the server may close mid-write after an oversized frame
        await new Promise((r) => socket.once('connect', r));
        try {
          for (const chunk of cutAt(Buffer.concat(payloads.map(lengthPrefixed)), cuts)) {
            if (socket.destroyed) break;
            socket.write(chunk);
            if (yieldBetweenChunks) await sleep(0);
          }
          const done = () => sink.payloads.length >= expected.length && (firstOver < 0 || sink.errors.length > 0);
          await sink.until(done, 5000, () => `${sink.payloads.length}/${expected.length} payloads, ${sink.errors.length} errors`);
          await sleep(5); // anything extra that would arrive
          assert.equal(sink.payloads.length, expected.length, 'payload count');
          sink.payloads.forEach((p, i) => assert.ok(p.equals(expected[i]!), `payload ${i} differs`));
          if (firstOver < 0) assert.equal(sink.errors.length, 0);
          else {
            assert.equal(sink.errors.length, 1, 'one framing error');
            assert.equal(errorName(sink.errors[0]!.code), 'FRAME_TOO_LARGE');
          }
        } finally {
          socket.destroy();
        }
      },
    ), { numRuns: runs(80) });
  });

  test('WebSocket: binary messages arrive whole and in order; the first oversized or text message stops it with its code', async () => {
    const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`;
    const message = fc.oneof(
      { weight: 6, arbitrary: payloadSize.map((size) => ({ text: false, size })) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 32 }).map((size) => ({ text: true, size })) },
    );
    await fc.assert(fc.asyncProperty(fc.array(message, { maxLength: 10 }), pausePattern, async (messages, pauses) => {
      const bytes = messages.map((m, i) => payloadOf(m.size, i));
      const firstBad = messages.findIndex((m) => m.text || m.size > LIMIT);
      const expected = firstBad < 0 ? bytes : bytes.slice(0, firstBad);
      const sink = new RecordingSink(pauses);
      nextSink = sink;
      const ws = new WebSocket(url, { perMessageDeflate: false });
      ws.on('error', () => undefined);
      await new Promise((r) => ws.once('open', r));
      try {
        messages.forEach((m, i) => {
          if (m.text) ws.send('x'.repeat(m.size), { binary: false });
          else ws.send(bytes[i]!, { binary: true });
        });
        const done = () => sink.payloads.length >= expected.length && (firstBad < 0 || sink.errors.length > 0);
        await sink.until(done, 5000, () => `${sink.payloads.length}/${expected.length} payloads, ${sink.errors.length} errors`);
        await sleep(5);
        assert.equal(sink.payloads.length, expected.length, 'payload count');
        sink.payloads.forEach((p, i) => assert.ok(p.equals(expected[i]!), `payload ${i} differs`));
        if (firstBad < 0) assert.equal(sink.errors.length, 0);
        else {
          // Reported in stream order, after the messages before it, even while delivery was paused; then nothing more.
          assert.equal(sink.errors.length, 1, 'one framing error');
          const want = messages[firstBad]!.text ? ErrorCode.BAD_FRAME : ErrorCode.FRAME_TOO_LARGE;
          assert.equal(errorName(sink.errors[0]!.code), errorName(want));
        }
      } finally {
        ws.terminate();
      }
    }), { numRuns: runs(80) });
  });
});
