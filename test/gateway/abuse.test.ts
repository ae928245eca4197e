// Abuse in bulk, at TCP and WebSocket at once, while honest clients chat:
// hundreds of connections sending random bytes (raw TCP garbage, random
// WebSocket messages, broken WebSocket framing), slow-loris connections that
// never log in and trickle a byte now and then, and oversized frames (before
// and after login, over the limit and past what the WebSocket server reads at
// all). Honest latency (send → push at the peer) is measured before the
// abuse and during it, in the same test; every abuser must get a coded error
// or a close, each slow-loris LOGIN_TIMEOUT right after the login deadline,
// and the gateway must end up holding the honest connections only.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  ErrorCode, encodeFrame, errorName, lengthPrefixed, makeFrame,
} from '../../src/protocol/index.js';
import { RawClient } from '../helpers/raw.js';
import { gatewayUrl, startTestServer, type TestServer } from '../helpers/server.js';
import { Ctx, maskPayload, rawWebSocket, readWsFrames, sleep, waitConnections, wsFrameHeader, type Kind } from './gw-helpers.js';

const LOGIN_TIMEOUT_MS = 1500;
/** The gateway checks login deadlines on a sweep of at most 1 s: an abuser is evicted by then, plus slack for a busy machine. */
const EVICTED_WITHIN_MS = LOGIN_TIMEOUT_MS + 1000 + 3000;
const LIMIT = 64 * 1024;

const PAIRS = 4;
/** Abusers per kind and transport. */
const RANDOM_BYTES = 120;
const SLOW_LORIS = 100;
const OVERSIZED = 40;
/** Abusers connected at once, per kind (bounds file descriptors; the slow-loris all hang on together). */
const WAVE = 60;

/** What happened to one abuser. */
interface Outcome {
  what: string;
  /** Error codes it got in Error frames (empty if it was only closed). */
  codes: ErrorCode[];
  closed: boolean;
  /** ms from connect to close. */
  closedAfterMs: number;
  /** A frame had to come (false: a close alone is the expected answer, e.g. broken WebSocket framing). */
  needsError: boolean;
  /** The code it must have got, when known. */
  expected?: ErrorCode;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))]!;
}

/** Run `tasks` with at most `limit` in flight. */
async function pool<T>(count: number, limit: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array<T>(count);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, count) }, async () => {
    while (next < count) {
      const i = next++;
      out[i] = await task(i);
    }
  }));
  return out;
}

/** Wait until the RawClient is closed (bounded), and what it got. */
async function outcomeOf(c: RawClient, what: string, t0: number, needsError: boolean, expected?: ErrorCode): Promise<Outcome> {
  await c.waitClosed(EVICTED_WITHIN_MS).catch(() => undefined);
  const closedAfterMs = Date.now() - t0;
  c.close();
  return {
    what, needsError, expected, closed: c.closed, closedAfterMs,
    codes: c.frames.filter((f) => f.body.case === 'error').map((f) => (f.body.case === 'error' ? f.body.value.code : 0)),
  };
}

describe('abuse in bulk over TCP and WebSocket', () => {
  let server: TestServer;
  let ctx: Ctx;
  const honest: { sender: RawClient; receiver: RawClient; to: string }[] = [];

  before(async () => {
    server = await startTestServer({
      'login-timeout-ms': String(LOGIN_TIMEOUT_MS),
      // Every abuser comes from 127.0.0.1: the per-address login limit would (rightly) stop them first.
      'login-attempts-per-minute': '1000000',
    });
    ctx = new Ctx(server);
    for (let i = 0; i < PAIRS; i++) {
      const a: Kind = i % 2 === 0 ? 'tcp' : 'ws';
      const b: Kind = a === 'tcp' ? 'ws' : 'tcp';
      const sender = await ctx.login(a, `honest-a${i}`);
      const receiver = await ctx.login(b, `honest-b${i}`);
      honest.push({ sender, receiver, to: `honest-b${i}` });
    }
  });

  after(async () => {
    ctx?.cleanup();
    await server?.close();
  });

  let seq = 0;
  /** One message per pair, all pairs at once; the latency of each (send → push at the peer). */
  async function honestRound(): Promise<number[]> {
    return Promise.all(honest.map(async ({ sender, receiver, to }) => {
      const clientMsgId = `h-${seq++}`;
      const from = receiver.frames.length;
      const t0 = performance.now();
      sender.send({ case: 'send', value: { clientMsgId, toUser: to, text: `hello ${clientMsgId}` } });
      await receiver.next((f) => f.body.case === 'push' && f.body.value.messages.some((m) => m.clientMsgId === clientMsgId), 5000, from)
        .catch((err: Error) => assert.fail(`honest message ${clientMsgId} not delivered within 5 s: ${err.message}`));
      return performance.now() - t0;
    }));
  }

  // ---- abusers -----------------------------------------------------------

  async function randomBytesTcp(i: number): Promise<Outcome> {
    const c = await RawClient.connect(gatewayUrl(server, 'tcp'));
    const t0 = Date.now();
    // Random bytes in one to three writes: their first 4 bytes read as a length prefix (almost
    // always over the limit); a short one waits for more and meets the login deadline.
    const bytes = randomBytes(1 + ((i * 37) % 1500));
    for (let at = 0; at < bytes.length; at += 600) c.sendRaw(bytes.subarray(at, at + 600));
    return outcomeOf(c, 'tcp random bytes', t0, true);
  }

  async function randomWsMessage(i: number): Promise<Outcome> {
    const c = await RawClient.connect(gatewayUrl(server, 'ws'));
    const t0 = Date.now();
    if (i % 3 === 0) c.ws!.send(randomBytes(1 + (i % 200)).toString('latin1'), { binary: false }); // text: BAD_FRAME
    else c.sendRaw(randomBytes(1 + ((i * 37) % 1500)));
    return outcomeOf(c, 'ws random message', t0, true);
  }

  /** Garbage where a WebSocket frame header should be: the ws library closes (1002), no Longlink frame. */
  async function brokenWsFraming(i: number): Promise<Outcome> {
    const socket = await rawWebSocket(ctx);
    const { frames, closed } = readWsFrames(socket);
    const t0 = Date.now();
    // An unmasked client frame, a reserved opcode, or random bytes.
    const variants = [Buffer.from([0x82, 0x05, 1, 2, 3, 4, 5]), Buffer.from([0x83, 0x80, 0, 0, 0, 0]), randomBytes(1 + (i % 64))];
    socket.write(variants[i % variants.length]!);
    const done = await Promise.race([closed.then(() => true), sleep(EVICTED_WITHIN_MS).then(() => false)]);
    socket.destroy();
    return {
      what: 'ws broken framing', needsError: false, closed: done, closedAfterMs: Date.now() - t0,
      codes: frames.flatMap((f) => (f.body.case === 'error' ? [f.body.value.code] : [])),
    };
  }

  /** TCP slow-loris: a login frame's bytes, one at a time, slower than the deadline allows. */
  async function slowLorisTcp(): Promise<Outcome> {
    const c = await RawClient.connect(gatewayUrl(server, 'tcp'));
    const t0 = Date.now();
    const bytes = lengthPrefixed(encodeFrame(makeFrame(1, { case: 'login', value: { token: 'x'.repeat(200) } })));
    for (let i = 0; i < bytes.length && !c.closed && Date.now() - t0 < EVICTED_WITHIN_MS; i++) {
      c.sendRaw(bytes.subarray(i, i + 1));
      await sleep(250);
    }
    const o = await outcomeOf(c, 'tcp slow-loris', t0, true, ErrorCode.LOGIN_TIMEOUT);
    return o;
  }

  /** WebSocket slow-loris: a binary frame's header and payload trickled a byte at a time. */
  async function slowLorisWs(): Promise<Outcome> {
    const socket = await rawWebSocket(ctx);
    const { frames, closed } = readWsFrames(socket);
    const t0 = Date.now();
    const payload = Buffer.from(encodeFrame(makeFrame(1, { case: 'login', value: { token: 'x'.repeat(100) } })));
    const { header, mask } = wsFrameHeader(payload.length);
    const bytes = Buffer.concat([header, maskPayload(payload, mask)]);
    let isClosed = false;
    void closed.then(() => (isClosed = true));
    for (let i = 0; i < bytes.length && !isClosed && Date.now() - t0 < EVICTED_WITHIN_MS; i++) {
      socket.write(bytes.subarray(i, i + 1));
      await sleep(250);
    }
    const done = await Promise.race([closed.then(() => true), sleep(Math.max(0, EVICTED_WITHIN_MS - (Date.now() - t0))).then(() => false)]);
    socket.destroy();
    return {
      what: 'ws slow-loris', needsError: true, expected: ErrorCode.LOGIN_TIMEOUT, closed: done, closedAfterMs: Date.now() - t0,
      codes: frames.flatMap((f) => (f.body.case === 'error' ? [f.body.value.code] : [])),
    };
  }

  async function oversized(kind: Kind, i: number): Promise<Outcome> {
    const c = await RawClient.connect(gatewayUrl(server, kind));
    const t0 = Date.now();
    const loggedIn = i % 4 === 0;
    if (loggedIn) await c.login(await server.token(`big-${kind}-${i}`, 'd1'));
    if (kind === 'tcp') {
      // A length prefix over the limit (up to 4 GiB), then a slice of what it announces.
      const length = LIMIT + 1 + ((i * 7919) % 2 ** 31);
      const head = Buffer.alloc(4);
      head.writeUInt32BE(length, 0);
      c.sendRaw(Buffer.concat([head, randomBytes(Math.min(length, 100_000))]));
      return outcomeOf(c, `tcp oversized${loggedIn ? ' (logged in)' : ''}`, t0, true, ErrorCode.FRAME_TOO_LARGE);
    }
    // Over the limit: FRAME_TOO_LARGE; past 4x the limit the ws library closes with 1009 first.
    const pastReadLimit = i % 5 === 1;
    c.sendRaw(randomBytes(pastReadLimit ? 4 * LIMIT + 1000 : LIMIT + 1 + (i % 1000)));
    const o = await outcomeOf(c, `ws oversized${loggedIn ? ' (logged in)' : ''}${pastReadLimit ? ' past the read limit' : ''}`, t0, !pastReadLimit, pastReadLimit ? undefined : ErrorCode.FRAME_TOO_LARGE);
    if (pastReadLimit) assert.equal(c.closeCode, 1009, 'ws closes a message past its read limit with 1009');
    return o;
  }

  test('honest clients keep their latency while abusers are evicted with coded errors', async () => {
    // Baseline, after a warm-up.
    for (let i = 0; i < 5; i++) await honestRound();
    const baseline: number[] = [];
    for (let i = 0; i < 30; i++) baseline.push(...await honestRound());

    // Abuse, every kind at both transports at once, while honest rounds go on.
    let abusing = true;
    const abuse = Promise.all([
      pool(RANDOM_BYTES, WAVE, randomBytesTcp),
      pool(RANDOM_BYTES, WAVE, randomWsMessage),
      pool(RANDOM_BYTES / 2, WAVE, brokenWsFraming),
      pool(SLOW_LORIS, SLOW_LORIS, () => slowLorisTcp()),
      pool(SLOW_LORIS, SLOW_LORIS, () => slowLorisWs()),
      pool(OVERSIZED, WAVE, (i) => oversized('tcp', i)),
      pool(OVERSIZED, WAVE, (i) => oversized('ws', i)),
    ]).finally(() => (abusing = false));
    const underAbuse: number[] = [];
    let peakConnections = 0;
    await sleep(200); // let the abusers connect
    while (abusing || underAbuse.length < 30 * PAIRS) {
      peakConnections = Math.max(peakConnections, server.gateway.connectionCount);
      underAbuse.push(...await honestRound());
    }
    const outcomes = (await abuse).flat();

    const loris = outcomes.filter((o) => o.expected === ErrorCode.LOGIN_TIMEOUT).map((o) => o.closedAfterMs);
    const base = median(baseline);
    const during = median(underAbuse);
    console.log(`honest latency: baseline median ${base.toFixed(2)} ms p95 ${percentile(baseline, 0.95).toFixed(2)} ms (${baseline.length} msgs); `
      + `under abuse median ${during.toFixed(2)} ms p95 ${percentile(underAbuse, 0.95).toFixed(2)} ms max ${Math.max(...underAbuse).toFixed(0)} ms `
      + `(${underAbuse.length} msgs); ${outcomes.length} abusers, peak ${peakConnections} connections; `
      + `slow-loris evicted after ${Math.min(...loris)}-${Math.max(...loris)} ms (deadline ${LOGIN_TIMEOUT_MS} ms)`);

    // Every abuser got a coded error (the one its abuse calls for, where known) and was closed in time.
    const problems: string[] = [];
    for (const o of outcomes) {
      const codes = o.codes.map(errorName);
      if (!o.closed) problems.push(`${o.what}: still open after ${o.closedAfterMs} ms (got ${codes.join(',') || 'nothing'})`);
      if (o.needsError && o.codes.length === 0) problems.push(`${o.what}: closed without an Error frame`);
      for (const c of o.codes) if (ErrorCode[c] === undefined || c === ErrorCode.ERROR_CODE_UNSPECIFIED) problems.push(`${o.what}: unknown code ${c}`);
      if (o.expected !== undefined && !o.codes.includes(o.expected)) problems.push(`${o.what}: expected ${errorName(o.expected)}, got ${codes.join(',') || 'nothing'}`);
      if (o.expected === ErrorCode.LOGIN_TIMEOUT && o.closedAfterMs < LOGIN_TIMEOUT_MS - 50) problems.push(`${o.what}: evicted after ${o.closedAfterMs} ms, before the login deadline`);
    }
    assert.deepEqual(problems.slice(0, 10), [], `${problems.length} abusers were not handled as they should be`);

    // Honest clients kept their latency: a generous factor over the baseline plus a margin
    // (a 2-core machine shared with the abusers' own work), yet far below a stall.
    const allowed = 4 * base + 50;
    assert.ok(during <= allowed, `median honest latency under abuse ${during.toFixed(1)} ms > ${allowed.toFixed(1)} ms (baseline ${base.toFixed(1)} ms)`);

    // The gateway holds the honest connections only, and they still work.
    await waitConnections(server, PAIRS * 2, 10_000);
    const after = await honestRound();
    assert.equal(after.length, PAIRS);
    for (const { sender, receiver } of honest) assert.equal(sender.closed || receiver.closed, false, 'an honest client was closed');
  });
});
