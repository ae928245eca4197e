// What a connection that has not logged in may cost the gateway: memory for
// one login frame (maxLoginFrameBytes) and no more, however its bytes come
// (one big message, WebSocket fragments, a trickle); and how many such
// connections there may be: per client address (maxConnectionsPerAddress) and
// in all (maxPendingLogins). Past each bound the client gets a coded error
// and a close, and longlink_limit_breaches_total{limit} counts it.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { toBinary } from '@bufbuild/protobuf';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { ErrorCode, LengthPrefixedReader, decodeFrame, encodeFrame, errorName, lengthPrefixed, makeFrame, type Frame } from '../../src/protocol/index.js';
import { FrameReader } from '../../src/gateway/tcp.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { gatewayOptions } from '../../src/roles/wiring.js';
import { loadServerConfig } from '../../src/config.js';
import { TokenService } from '../../src/auth/tokens.js';
import { MemoryBus } from '../../src/engines/bus-memory.js';
import { MemorySessions } from '../../src/engines/sessions-memory.js';
import { MemoryRegistry } from '../../src/engines/registry-memory.js';
import type { UpEnvelope } from '../../src/engines/bus.js';
import { UpEnvelopeSchema } from '../../src/protocol/gen/longlink/internal/v1/envelope_pb.js';
import { RawClient } from '../helpers/raw.js';
import { TOKEN_SECRET } from '../helpers/server.js';
import {
  TRANSPORTS, expectError, expectFatal, pingPong, rawWebSocket, readWsFrames, sendFrameOfSize, sleep, waitConnections, withServer, type Ctx,
} from './gw-helpers.js';

const LIMIT = 64 * 1024;

/** A Login frame whose encoding is exactly `size` bytes (its token padded). */
function loginFrameOfSize(size: number): Uint8Array {
  let tokenLen = size;
  for (let i = 0; i < 10; i++) {
    const bytes = encodeFrame(makeFrame(1, { case: 'login', value: { token: 'x'.repeat(Math.max(0, tokenLen)) } }));
    if (bytes.length === size) return bytes;
    tokenLen -= bytes.length - size;
  }
  throw new Error(`could not build a login frame of ${size} bytes`);
}

/** A masked client WebSocket frame: `fin` false leaves the message unfinished (opcode 0 continues one). */
function wsFrame(payload: Buffer, opcode: number, fin: boolean): Buffer {
  const mask = randomBytes(4);
  let head: Buffer;
  if (payload.length < 126) head = Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | payload.length]);
  else {
    head = Buffer.alloc(4);
    head[0] = (fin ? 0x80 : 0) | opcode;
    head[1] = 0x80 | 126;
    head.writeUInt16BE(payload.length, 2);
  }
  const masked = Buffer.alloc(payload.length);
  for (let i = 0; i < payload.length; i++) masked[i] = payload[i]! ^ mask[i % 4]!;
  return Buffer.concat([head, mask, masked]);
}

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function errorCodes(frames: Frame[]): string[] {
  return frames.flatMap((f) => (f.body.case === 'error' ? [errorName(f.body.value.code)] : []));
}

/** The value of longlink_limit_breaches_total{limit} on the server's /metrics. */
async function breaches(ctx: Ctx, limit: string): Promise<number> {
  const text = await (await fetch(`${ctx.server.httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`longlink_limit_breaches_total{limit="${limit}"}`));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('the login frame limit', () => {
  for (const kind of TRANSPORTS) {
    test(`${kind}: a first frame at maxLoginFrameBytes is read as a login; one byte more is FRAME_TOO_LARGE; after login frames may be as large as maxFrameBytes`, () =>
      withServer({ 'max-login-frame-bytes': '2048' }, async (ctx) => {
        const at = await ctx.connect(kind);
        at.sendPayload(loginFrameOfSize(2048));
        await expectFatal(at, ErrorCode.TOKEN_INVALID, 1);
        const over = await ctx.connect(kind);
        over.sendPayload(loginFrameOfSize(2049));
        await expectFatal(over, ErrorCode.FRAME_TOO_LARGE, 0);
        // Logged in, the frame limit is the full one.
        const c = await ctx.login(kind, 'alice');
        c.sendPayload(sendFrameOfSize(LIMIT, 7));
        await expectError(c, ErrorCode.TEXT_TOO_LARGE, { id: 7, fatal: false });
        await pingPong(c);
        assert.equal(await breaches(ctx, 'frame_size'), 1);
      }));
  }

  test('the default login frame limit is 8 KiB', () =>
    withServer({}, async (ctx) => {
      assert.equal(ctx.server.config.limits.maxLoginFrameBytes, 8 * 1024);
      const c = await ctx.connect('tcp');
      c.sendPayload(loginFrameOfSize(8 * 1024 + 1));
      await expectFatal(c, ErrorCode.FRAME_TOO_LARGE, 0);
    }));

  test('ws: a message fragmented past the login limit before login is refused with FRAME_TOO_LARGE and closed (not buffered up to 4x the frame limit)', () =>
    withServer({}, async (ctx) => {
      const socket = await rawWebSocket(ctx);
      const { frames, isClosed: closed } = readWsFrames(socket);
      // Unfinished: 1 KiB fragments, never a final one. ws alone would buffer up to 256 KiB of them.
      socket.write(wsFrame(randomBytes(1024), 0x2, false));
      for (let i = 0; i < 11 && !closed(); i++) {
        await sleep(5);
        socket.write(wsFrame(randomBytes(1024), 0x0, false));
      }
      await until('an error frame and a close', () => closed() && frames.length > 0);
      assert.deepEqual(errorCodes(frames), ['FRAME_TOO_LARGE']);
    }));

  test('ws: a login trickled in many small pieces is refused (each piece costs the WebSocket reader memory)', () =>
    withServer({}, async (ctx) => {
      const socket = await rawWebSocket(ctx);
      const { frames, isClosed: closed } = readWsFrames(socket);
      const bytes = wsFrame(Buffer.from(loginFrameOfSize(400)), 0x2, true);
      for (let i = 0; i < bytes.length && !closed(); i++) {
        socket.write(bytes.subarray(i, i + 1));
        await sleep(2);
      }
      await until('an error frame and a close', () => closed() && frames.length > 0);
      assert.deepEqual(errorCodes(frames), ['FRAME_TOO_LARGE']);
    }));

  test('ws: a login sent whole, or in a few pieces, logs in', () =>
    withServer({}, async (ctx) => {
      const token = await ctx.server.token('alice');
      const bytes = wsFrame(Buffer.from(encodeFrame(makeFrame(5, { case: 'login', value: { token } }))), 0x2, true);
      const socket = await rawWebSocket(ctx);
      const { frames } = readWsFrames(socket);
      for (let at = 0; at < bytes.length; at += 40) {
        socket.write(bytes.subarray(at, at + 40));
        await sleep(2);
      }
      await until('the login result', () => frames.some((f) => f.id === 5));
      assert.equal(frames.find((f) => f.id === 5)!.body.case, 'loginResult');
    }));
});

describe('the TCP frame reader keeps one buffer, however the bytes trickle in', () => {
  const gc = (() => {
    v8.setFlagsFromString('--expose-gc');
    return vm.runInNewContext('gc') as () => void;
  })();
  const used = () => {
    gc();
    gc();
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };

  test('a 64 KiB frame a byte at a time: what it holds stays within the frame plus a constant; the frame comes out whole', () => {
    const payload = randomBytes(LIMIT);
    const bytes = lengthPrefixed(payload);
    const reader = new FrameReader(LIMIT);
    let most = 0;
    let out: Buffer | undefined;
    for (let i = 0; i < bytes.length; i++) {
      const chunk = Buffer.allocUnsafeSlow(1); // its own allocation, as a socket read's is
      chunk[0] = bytes[i]!;
      reader.push(chunk);
      most = Math.max(most, reader.retainedBytes);
      const next = reader.next();
      if (next) out = Buffer.from(next);
    }
    assert.ok(out && out.equals(payload), 'the frame came out whole');
    assert.ok(most <= 4 + LIMIT + 64, `held up to ${most} bytes for a ${LIMIT}-byte frame`);
    assert.equal(reader.pending, 0);
  });

  test('frames before login are held to the login limit, then to the frame limit', () => {
    const reader = new FrameReader(LIMIT, 100);
    reader.push(lengthPrefixed(Buffer.alloc(100)));
    assert.equal(reader.next()?.length, 100);
    reader.push(lengthPrefixed(Buffer.alloc(5000)));
    assert.equal(reader.next()?.length, 5000, 'after the first frame the full limit applies');
    const first = new FrameReader(LIMIT, 100);
    first.push(lengthPrefixed(Buffer.alloc(101)));
    assert.throws(() => first.next(), (err: Error & { code?: number }) => err.code === ErrorCode.FRAME_TOO_LARGE);
  });

  test('memory: 40 connections each trickling 8 KiB a byte at a time cost ~8 KiB each (the old reader: a Buffer per byte)', () => {
    const trickle = (push: (b: Buffer) => void, next: () => unknown) => {
      const bytes = lengthPrefixed(Buffer.alloc(8000, 7));
      for (let i = 0; i < bytes.length - 1; i++) { // all but the last byte: the frame stays pending
        const chunk = Buffer.allocUnsafeSlow(1);
        chunk[0] = bytes[i]!;
        push(chunk);
        next();
      }
    };
    const measure = (make: () => { push(b: Buffer): void; next(): unknown }): number => {
      const base = used();
      const readers = Array.from({ length: 40 }, make);
      for (const r of readers) trickle((b) => r.push(b), () => r.next());
      const per = (used() - base) / readers.length;
      assert.ok(readers.length === 40); // keep them alive past the measurement
      return per;
    };
    const perNew = measure(() => new FrameReader(LIMIT));
    const perOld = measure(() => new LengthPrefixedReader(LIMIT));
    console.log(`per connection pending 8 KiB trickled: FrameReader ${Math.round(perNew)} bytes, a Buffer per chunk ${Math.round(perOld)} bytes`);
    assert.ok(perNew < 16 * 1024, `the reader costs ${Math.round(perNew)} bytes per connection`);
  });
});

describe('connections per address and pending logins', () => {
  /** Open a connection of `kind`; resolves with the error code it is refused with, or 'open' if it stays open 300 ms. */
  async function open(ctx: Ctx, kind: 'tcp' | 'ws'): Promise<string> {
    const c = await ctx.connect(kind);
    const deadline = Date.now() + 300;
    while (Date.now() < deadline && !c.closed) await sleep(10);
    if (!c.closed) return 'open';
    const codes = errorCodes(c.frames);
    return codes[0] ?? 'closed without a frame';
  }

  test('past maxConnectionsPerAddress a new connection gets CONNECTION_LIMITED (retry later) and a close, TCP and WebSocket together; a freed place is usable', () =>
    withServer({ 'max-connections-per-address': '4' }, async (ctx) => {
      const alice = await ctx.login('tcp', 'alice');
      assert.equal(await open(ctx, 'ws'), 'open');
      assert.equal(await open(ctx, 'tcp'), 'open');
      assert.equal(await open(ctx, 'ws'), 'open');
      assert.equal(await open(ctx, 'tcp'), 'CONNECTION_LIMITED');
      assert.equal(await open(ctx, 'ws'), 'CONNECTION_LIMITED');
      await waitConnections(ctx.server, 4);
      alice.close();
      await waitConnections(ctx.server, 3);
      const bob = await ctx.login('ws', 'bob');
      await pingPong(bob);
      assert.equal(await breaches(ctx, 'connections_per_address'), 2);
    }));

  test('past maxPendingLogins a new connection is refused (CONNECTION_LIMITED, retry later); logged-in connections do not count', () =>
    withServer({ 'max-pending-logins': '3' }, async (ctx) => {
      for (let i = 0; i < 3; i++) assert.equal(await open(ctx, i % 2 === 0 ? 'tcp' : 'ws'), 'open');
      const refused = await ctx.connect('tcp');
      await expectFatal(refused, ErrorCode.CONNECTION_LIMITED, 0);
      const frame = refused.frames.find((f) => f.body.case === 'error');
      assert.equal(frame?.body.case === 'error' && frame.body.value.reconnect, true, 'the client is told to come back');
      assert.equal(await open(ctx, 'ws'), 'CONNECTION_LIMITED');
      ctx.cleanup();
      await waitConnections(ctx.server, 0);
      const users = [];
      for (let i = 0; i < 5; i++) users.push(await ctx.login(i % 2 === 0 ? 'tcp' : 'ws', `u${i}`));
      for (let i = 0; i < 3; i++) assert.equal(await open(ctx, 'tcp'), 'open');
      for (const u of users) await pingPong(u);
      assert.equal(await breaches(ctx, 'pending_logins'), 2);
    }));

  test('behind a trusted proxy each client address has its own count', () =>
    withServer({ 'max-connections-per-address': '2', 'trusted-proxies': '127.0.0.1' }, async (ctx) => {
      const sockets: WebSocket[] = [];
      const openAs = (xff: string) => new Promise<string>((resolve) => {
        const ws = new WebSocket(ctx.server.wsUrl, { headers: { 'x-forwarded-for': xff } });
        sockets.push(ws);
        let code = 'open';
        ws.on('message', (d: Buffer) => {
          const f = decodeFrame(d);
          if (f.body.case === 'error') code = errorName(f.body.value.code);
        });
        ws.on('close', () => resolve(code));
        ws.on('open', () => setTimeout(() => resolve(code), 300));
        ws.on('error', () => undefined);
      });
      try {
        assert.equal(await openAs('203.0.113.1'), 'open');
        assert.equal(await openAs('203.0.113.1'), 'open');
        assert.equal(await openAs('203.0.113.1'), 'CONNECTION_LIMITED');
        assert.equal(await openAs('203.0.113.2'), 'open');
      } finally {
        for (const ws of sockets) ws.terminate();
      }
    }));

  test('the defaults: 1000 per address, 2000 pending', () =>
    withServer({}, async (ctx) => {
      assert.equal(ctx.server.config.limits.maxConnectionsPerAddress, 1000);
      assert.equal(ctx.server.config.limits.maxPendingLogins, 2000);
    }));
});

describe('fields a client frame pads itself with go no further than the gateway', () => {
  for (const kind of TRANSPORTS) {
    test(`${kind}: unknown fields (top level and nested) are dropped before the frame is sent up the bus`, async () => {
      const config = loadServerConfig({ 'token-secret': TOKEN_SECRET, 'admin-key': 'test-admin-key-0123456789', 'node-id': 'gw-pad', 'log-level': 'warn' }, {});
      const bus = new MemoryBus();
      const up: UpEnvelope[] = [];
      const publishUp = bus.publishUp.bind(bus);
      bus.publishUp = (message: UpEnvelope) => {
        up.push(message);
        return publishUp(message);
      };
      const tokens = new TokenService(TOKEN_SECRET);
      const gateway = new Gateway(gatewayOptions(config), { bus, sessions: new MemorySessions(), registry: new MemoryRegistry(), tokens });
      const { port } = await gateway.listenTcp(0, '127.0.0.1');
      const { createServer } = await import('node:http');
      const http = createServer();
      await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
      const httpPort = (http.address() as net.AddressInfo).port;
      gateway.attachWebSocket(http, `ws://127.0.0.1:${httpPort}/ws`);
      await gateway.start();
      const c = await RawClient.connect(kind === 'tcp' ? `tcp://127.0.0.1:${port}` : `ws://127.0.0.1:${httpPort}/ws`);
      try {
        await c.login((await tokens.issue('alice', 'd1', 'other', 3600)).token);
        // An unknown length-delimited field's data is its length and bytes.
        const padding = new BinaryWriter().bytes(Buffer.alloc(20_000, 0x61)).finish();
        const frame = makeFrame(9, { case: 'send', value: { clientMsgId: 'pad-1', toUser: 'bob', text: 'hi' } });
        frame.$unknown = [{ no: 999, wireType: WireType.LengthDelimited, data: padding }];
        if (frame.body.case === 'send') frame.body.value.$unknown = [{ no: 998, wireType: WireType.LengthDelimited, data: padding }];
        const bytes = encodeFrame(frame);
        assert.ok(bytes.length > 40_000, 'the client frame carries its padding');
        c.sendPayload(bytes);
        await until('the frame sent up', () => up.some((e) => e.body.case === 'frame' && e.body.value.id === 9)).catch((err: Error) => assert.fail(`${err.message}: ${c.describe()} / up ${up.map((e) => e.body.case).join(',')}`));
        const sent = up.find((e) => e.body.case === 'frame' && e.body.value.id === 9)!;
        const forwarded = sent.body.case === 'frame' ? sent.body.value : undefined;
        assert.equal(forwarded?.body.case, 'send');
        assert.equal(forwarded?.body.case === 'send' && forwarded.body.value.text, 'hi');
        assert.equal(forwarded?.$unknown?.length ?? 0, 0, 'no unknown fields on the frame');
        assert.equal(forwarded?.body.case === 'send' ? (forwarded.body.value.$unknown?.length ?? 0) : -1, 0, 'none in its body');
        const onTheWire = toBinary(UpEnvelopeSchema, sent).length;
        assert.ok(onTheWire < 500, `the uplink entry is ${onTheWire} bytes`);
      } finally {
        c.close();
        await gateway.stop();
        await new Promise((r) => http.close(r));
        await bus.close();
      }
    });
  }
});
