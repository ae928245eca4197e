// Helpers for the gateway tests: servers per test, logged-in raw clients,
// error-frame assertions, and low-level sockets the GwClient does not cover
// (a hand-made WebSocket upgrade).
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { ErrorCode, decodeFrame, encodeFrame, errorName, makeFrame, type Frame } from '../../src/protocol/index.js';
import { RawClient as GwClient } from '../helpers/raw.js';
import { gatewayUrl, startTestServer, waitFor, type TestServer } from '../helpers/server.js';

export type Kind = 'tcp' | 'ws';
export const TRANSPORTS: readonly Kind[] = ['tcp', 'ws'];

/**
 * Run `fn` against a fresh server; every client made through the context is
 * closed and the server stopped afterwards, whatever happened.
 */
export async function withServer(
  overrides: Record<string, string>,
  fn: (ctx: Ctx) => Promise<void>,
): Promise<void> {
  const server = await startTestServer(overrides);
  const ctx = new Ctx(server);
  try {
    await fn(ctx);
  } finally {
    ctx.cleanup();
    await server.close();
  }
}

export class Ctx {
  private readonly clients: GwClient[] = [];
  private readonly sockets: net.Socket[] = [];

  constructor(readonly server: TestServer) {}

  async connect(kind: Kind): Promise<GwClient> {
    const c = await GwClient.connect(gatewayUrl(this.server, kind));
    this.clients.push(c);
    return c;
  }

  /** A connection logged in as (user, device); returns it with its LoginResult. */
  async login(kind: Kind, user: string, device = 'd1'): Promise<GwClient> {
    const c = await this.connect(kind);
    await c.login(await this.server.token(user, device));
    return c;
  }

  /** Track a socket made by hand so cleanup destroys it. */
  track(socket: net.Socket): net.Socket {
    this.sockets.push(socket);
    return socket;
  }

  /** A brand-new honest client can still log in and get a Pong. */
  async assertHealthy(kind: Kind, user = 'healthcheck'): Promise<void> {
    const c = await this.login(kind, user, `hc-${randomBytes(3).toString('hex')}`);
    const t0 = Date.now();
    await pingPong(c);
    assert.ok(Date.now() - t0 < 2000, 'a fresh client got its pong slowly');
    c.close();
  }

  cleanup(): void {
    for (const c of this.clients) c.close();
    for (const s of this.sockets) s.destroy();
  }
}

/** Send a Ping and wait for the Pong that answers it. */
export async function pingPong(c: GwClient, timeoutMs = 5000): Promise<Frame> {
  const id = c.send({ case: 'ping', value: {} });
  const reply = await c.next((f) => f.id === id, timeoutMs);
  assert.equal(reply.body.case, 'pong', `expected a pong for ping ${id}, got ${c.describe()}`);
  return reply;
}

/** Wait for an Error frame with `code`, and check its id and fatal flag. */
export async function expectError(
  c: GwClient,
  code: ErrorCode,
  opts: { id?: number; fatal: boolean; timeoutMs?: number; from?: number },
): Promise<Frame> {
  const frame = await c.next((f) => f.body.case === 'error' || f.body.case === 'kick', opts.timeoutMs ?? 5000, opts.from ?? 0);
  assert.equal(frame.body.case, 'error', `expected an Error ${errorName(code)}, got ${c.describe()}`);
  const err = frame.body.value;
  assert.equal(errorName(err.code), errorName(code), `error code (message: ${err.message})`);
  assert.equal(err.fatal, opts.fatal, `fatal flag of ${errorName(code)}`);
  if (opts.id !== undefined) assert.equal(frame.id, opts.id, `id of the ${errorName(code)} error`);
  return frame;
}

/** A fatal error must be followed by the server closing the connection. */
export async function expectFatal(c: GwClient, code: ErrorCode, id?: number, timeoutMs = 5000, from = 0): Promise<Frame> {
  const frame = await expectError(c, code, { id, fatal: true, timeoutMs, from });
  await c.waitClosed(timeoutMs);
  return frame;
}

/** Send a 1:1 message and wait for its SendAck. */
export async function sendText(c: GwClient, toUser: string, text: string, clientMsgId: string): Promise<Frame> {
  const id = c.send({ case: 'send', value: { clientMsgId, toUser, text } });
  const reply = await c.next((f) => f.id === id, 10_000);
  assert.equal(reply.body.case, 'sendAck', `expected a SendAck for ${clientMsgId}, got ${c.describe()}`);
  return reply;
}

/** Waits until the gateway holds exactly `n` connections. */
export function waitConnections(server: TestServer, n: number, timeoutMs = 5000): Promise<void> {
  return waitFor(() => server.gateway.connectionCount === n, timeoutMs, `gateway to hold ${n} connections (holds ${server.gateway.connectionCount})`);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- low-level sockets ---------------------------------------------------

/**
 * A hand-made WebSocket upgrade to /ws over a plain TCP socket, so a test can
 * write partial or malformed WebSocket frames. Resolves after the 101.
 */
export async function rawWebSocket(ctx: Ctx): Promise<net.Socket> {
  const u = new URL(ctx.server.httpUrl);
  const socket = ctx.track(net.connect({ host: u.hostname, port: Number(u.port) }));
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  const key = randomBytes(16).toString('base64');
  socket.write(
    `GET /ws HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  await new Promise<void>((resolve, reject) => {
    let head = '';
    const onData = (chunk: Buffer) => {
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      if (!head.startsWith('HTTP/1.1 101')) reject(new Error(`upgrade refused: ${head.split('\r\n')[0]}`));
      else resolve();
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error('closed during the upgrade')));
  });
  return socket;
}

/** A client-to-server (masked) WebSocket binary frame header for `length` payload bytes, plus the mask key. */
export function wsFrameHeader(length: number, opcode = 0x2): { header: Buffer; mask: Buffer } {
  const mask = randomBytes(4);
  let header: Buffer;
  if (length < 126) {
    header = Buffer.from([0x80 | opcode, 0x80 | length]);
  } else if (length < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode;
    header[1] = 0x80 | 126;
    header.writeUInt16BE(length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  return { header: Buffer.concat([header, mask]), mask };
}

export function maskPayload(payload: Buffer, mask: Buffer): Buffer {
  const out = Buffer.alloc(payload.length);
  for (let i = 0; i < payload.length; i++) out[i] = payload[i]! ^ mask[i % 4]!;
  return out;
}

/** A Send frame whose encoding is exactly `size` bytes. */
export function sendFrameOfSize(size: number, id = 7): Uint8Array {
  let textLen = size;
  for (let i = 0; i < 10; i++) {
    const bytes = encodeFrame(makeFrame(id, { case: 'send', value: { clientMsgId: 'big', toUser: 'bob', text: 'x'.repeat(textLen) } }));
    if (bytes.length === size) return bytes;
    textLen -= bytes.length - size;
  }
  throw new Error(`could not build a frame of ${size} bytes`);
}

/**
 * Server → client WebSocket frames read off a raw socket (unmasked), decoded
 * as Longlink frames where binary; `closed` resolves when the socket closes.
 */
export function readWsFrames(socket: net.Socket): { frames: Frame[]; closed: Promise<void>; isClosed: () => boolean } {
  const frames: Frame[] = [];
  let buf = Buffer.alloc(0);
  let isClosed = false;
  socket.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      let len = buf[1]! & 0x7f;
      let at = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        at = 10;
      }
      if (buf.length < at + len) return;
      if ((buf[0]! & 0x0f) === 0x2) {
        try {
          frames.push(decodeFrame(buf.subarray(at, at + len)));
        } catch {
          /* not ours to judge here: counted as no frame */
        }
      }
      buf = buf.subarray(at + len);
    }
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => {
    isClosed = true;
    resolve();
  }));
  return { frames, closed, isClosed: () => isClosed };
}
