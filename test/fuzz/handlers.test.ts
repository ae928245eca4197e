// Property-based fuzzing of every request handler, over real TCP and
// WebSocket connections to a real embedded server. A logged-in client sends
// batches of random and hostile-but-valid frames of every type (the client
// requests, every group op, and frames only a server may send), with field
// values that refer to real users, groups and conversations it may or may
// not touch. The property, per batch:
// - each request gets its reply or an Error frame about it (a known code, a
//   message, not INTERNAL, not fatal) within a bound; fire-and-forget frames
//   (typing, pushAck) get nothing or such an Error;
// - a frame over the size limit gets FRAME_TOO_LARGE and a close, nothing else;
// - nothing else arrives but pushes and events, and the connection still
//   answers a ping.
// Afterwards well-behaved clients still send and receive. fast-check prints
// the seed and the shrunk batch of any failure.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { SignJWT } from 'jose';
import {
  ErrorCode, encodeFrame, errorName, makeFrame, type Frame, type FrameCase,
} from '../../src/protocol/index.js';
import { RawClient } from '../helpers/raw.js';
import { TOKEN_SECRET, startTestServer, type TestServer } from '../helpers/server.js';
import { online, request, sendOk, sleep, urlOf, waitPushed, type Transport } from '../logic/support.js';
import {
  ALL_CASES, CLIENT_CASES, abridged, describeFrame, frameOf, hostileString, plausibleFrame, runs, validId, type Pools,
} from './arbitraries.js';

/** The successful reply to each request; everything else a client sends is refused with the code given. */
const REPLY: Partial<Record<FrameCase, FrameCase>> = {
  ping: 'pong', send: 'sendAck', sync: 'syncResult', history: 'historyResult', markRead: 'done', recall: 'done', edit: 'done', delete: 'done', react: 'done', block: 'blockResult',
  hide: 'done', setProfile: 'profileResult', profileQuery: 'profileResult', search: 'searchResult', pushRegister: 'done', notifySettings: 'done',
  presenceQuery: 'presenceResult', presenceSubscribe: 'presenceResult', conversations: 'conversationsResult', group: 'groupResult',
};
const NO_REPLY = new Set<FrameCase>(['typing', 'pushAck']);
/** How long a request may take before it counts as a hang (generous: a busy 2-core machine). */
const REPLY_BOUND_MS = 10_000;
/** Errors a gateway sends on its own (id 0) without closing: the limits are set high here, but they are legal. */
const SERVER_NOTICES = new Set<ErrorCode>([ErrorCode.RATE_LIMITED, ErrorCode.USER_RATE_LIMITED]);

const FUZZER = 'fuzz';
/** The gateway's WebSocket server reads messages up to this many times the frame limit (and answers FRAME_TOO_LARGE); past it, ws closes with 1009. */
const WS_MAX_PAYLOAD_FACTOR = 4;

function isKnownCode(code: number): boolean {
  return code !== ErrorCode.ERROR_CODE_UNSPECIFIED && ErrorCode[code] !== undefined;
}

const show = describeFrame;

/** A coded, non-fatal, non-internal Error frame with a message. */
function assertCodedError(f: Frame, about: string): void {
  assert.equal(f.body.case, 'error');
  if (f.body.case !== 'error') return;
  const e = f.body.value;
  assert.ok(isKnownCode(e.code), `unknown error code ${e.code} for ${about}`);
  assert.notEqual(errorName(e.code), 'INTERNAL', `INTERNAL (an unhandled failure) for ${about}: ${e.message}`);
  assert.ok(e.message.length > 0, `empty error message for ${about}`);
  assert.equal(e.fatal, false, `fatal ${errorName(e.code)} for ${about}`);
}

describe('request handler fuzz', () => {
  let server: TestServer;
  let pools: Pools;
  /** Group ids in the pools: the seeded ones, then groups the fuzzer created (read as values are generated). */
  const liveGroups: string[] = [];
  const SEEDED_GROUPS = 6;
  const clients: RawClient[] = [];
  /** The fuzzing connection of each transport (replaced when a batch closes it). */
  const fuzzers = new Map<Transport, RawClient>();
  /** Fuzzed frames get ids from here up (RawClient numbers its own requests from 1). */
  const FIRST_ID = 1_000_000;
  let nextId = FIRST_ID;
  /** Every fuzzed frame sent, by id, and the ids answered so far (a late answer is checked when it comes). */
  const sentCase = new Map<number, FrameCase | undefined>();
  const answered = new Set<number>();
  /** How many of a connection's received frames were checked. */
  const checked = new Map<RawClient, number>();

  async function connectFuzzer(transport: Transport): Promise<RawClient> {
    const c = await online(server, transport, FUZZER, `fuzz-${transport}`);
    clients.push(c);
    fuzzers.set(transport, c);
    return c;
  }

  before(async () => {
    server = await startTestServer({
      'rate-limit': '1000000', 'rate-burst': '1000000', 'user-messages-per-second': '1000000',
      'login-attempts-per-minute': '1000000', 'max-connections-per-user': '1000',
    });
    // A small world: groups the fuzzer owns, administers, belongs to, left, or never joined;
    // a dismissed group; 1:1 conversations it is in and one it is not.
    const alice = await online(server, 'tcp', 'alice');
    const fuzz = await online(server, 'tcp', FUZZER, 'setup');
    clients.push(alice, fuzz);
    const group = async (c: RawClient, name: string, members: string[]): Promise<string> => {
      const r = await request(c, { case: 'group', value: { op: { case: 'create', value: { name, memberIds: members } } } });
      assert.equal(r.body.case, 'groupResult');
      return r.body.case === 'groupResult' ? r.body.value.group!.groupId : '';
    };
    const owned = await group(fuzz, 'fuzz owns', ['alice', 'bob']);
    const foreign = await group(alice, 'alice only', ['bob', 'carol']);
    const member = await group(alice, 'fuzz member', [FUZZER, 'bob']);
    const admin = await group(alice, 'fuzz admin', [FUZZER, 'carol']);
    const left = await group(alice, 'fuzz left', [FUZZER]);
    const dismissed = await group(alice, 'dismissed', [FUZZER]);
    const ok = async (body: Parameters<typeof request>[1]) => assert.notEqual((await request(alice, body)).body.case, 'error');
    await ok({ case: 'group', value: { op: { case: 'setRole', value: { groupId: admin, userId: FUZZER, role: 2 } } } });
    await ok({ case: 'group', value: { op: { case: 'dismiss', value: { groupId: dismissed } } } });
    assert.equal((await request(fuzz, { case: 'group', value: { op: { case: 'leave', value: { groupId: left } } } })).body.case, 'groupResult');
    const groups = [owned, foreign, member, admin, left, dismissed];
    for (const g of groups) if (g !== dismissed && g !== left) await sendOk(alice, { conversationId: `g:${g}`, text: `hello ${g}` }).catch(() => undefined);
    await sendOk(alice, { toUser: 'bob', text: 'not for fuzz' });
    await sendOk(alice, { toUser: FUZZER, text: 'for fuzz' });
    await sendOk(fuzz, { toUser: 'alice', text: 'from fuzz' });
    liveGroups.push(...groups);
    pools = {
      users: ['alice', 'bob', 'carol', FUZZER, 'system', 'nobody'],
      groups: liveGroups,
      conversations: ['u:alice:bob', 'u:alice:fuzz', 'u:fuzz:fuzz', 'u:bob:fuzz', ...groups.map((g) => `g:${g}`)],
      loneSurrogates: true,
    };
  });

  after(async () => {
    for (const c of clients) c.close();
    await server?.close();
  });

  /** Sends one batch on the transport's fuzzing connection and checks what comes back. */
  async function runBatch(transport: Transport, frames: Frame[]): Promise<void> {
    const c = fuzzers.get(transport) ?? await connectFuzzer(transport);
    const from = c.frames.length;
    const limit = server.config.limits.maxFrameBytes;
    const sent: { id: number; case: FrameCase | undefined; bytes: number }[] = [];
    for (const generated of frames) {
      const f: Frame = { ...generated, id: nextId++ }; // generated values are fast-check's: never mutate them
      const bytes = encodeFrame(f);
      c.sendPayload(bytes);
      sent.push({ id: f.id, case: f.body.case, bytes: bytes.length });
      sentCase.set(f.id, f.body.case);
      if (bytes.length > limit) break; // the stream ends here for the server
    }
    const oversized = sent.find((s) => s.bytes > limit);

    if (oversized) {
      fuzzers.delete(transport);
      if (transport === 'ws' && oversized.bytes > WS_MAX_PAYLOAD_FACTOR * limit) {
        // Past what the WebSocket server reads at all: it closes with 1009 (message too big) itself.
        await c.waitClosed(REPLY_BOUND_MS);
        assert.equal(c.closeCode, 1009, 'WebSocket close code for a message past the read limit');
      } else {
        // FRAME_TOO_LARGE about no particular request, then a close. Replies to the frames before it may or may not make it.
        const err = await c.next((f) => f.body.case === 'error' && f.body.value.code === ErrorCode.FRAME_TOO_LARGE, REPLY_BOUND_MS, from);
        assert.equal(err.body.case === 'error' && err.body.value.fatal, true, 'FRAME_TOO_LARGE is fatal');
        await c.waitClosed(REPLY_BOUND_MS);
      }
    } else {
      for (const s of sent) {
        if (s.case !== undefined && NO_REPLY.has(s.case)) continue;
        const reply = await c.next((f) => f.id === s.id, REPLY_BOUND_MS, from)
          .catch((err: Error) => assert.fail(`no reply to ${s.case} #${s.id} within ${REPLY_BOUND_MS} ms: ${err.message}`));
        const want = s.case === undefined ? undefined : REPLY[s.case];
        if (reply.body.case === 'error') {
          const code = errorName(reply.body.value.code);
          if (s.case === undefined || (want === undefined && s.case !== 'login')) assert.equal(code, 'UNKNOWN_FRAME', `${s.case ?? 'no body'} from a client`);
          if (s.case === 'login') assert.equal(code, 'ALREADY_LOGGED_IN');
        } else {
          assert.equal(reply.body.case, want, `reply to ${s.case} #${s.id}: ${show(reply)}`);
          // Groups the fuzzer creates join the pool, so later batches manage them (the first few stay: the seeded world).
          const created = reply.body.case === 'groupResult' ? reply.body.value.group?.groupId : undefined;
          if (created && !liveGroups.includes(created)) {
            liveGroups.push(created);
            if (liveGroups.length > 40) liveGroups.splice(SEEDED_GROUPS, 1);
          }
        }
      }
      const ping = await request(c, { case: 'ping', value: {} }, REPLY_BOUND_MS);
      assert.equal(ping.body.case, 'pong', 'the connection still answers a ping');
      assert.equal(c.closed, false, 'the connection stays open');
    }
    checkArrivals(c);
  }

  /**
   * Nothing arrives that should not: at most one answer per request, a coded
   * error or the request's own reply, and server-initiated frames only of the
   * kinds a client may get. Checks what arrived since the last call.
   */
  function checkArrivals(c: RawClient): void {
    const frames = c.frames.slice(checked.get(c) ?? 0);
    checked.set(c, c.frames.length);
    for (const f of frames) {
      if (f.id !== 0) {
        if (f.id < FIRST_ID) continue; // the checks' own pings
        assert.ok(sentCase.has(f.id), `an answer to #${f.id}, which was never sent: ${show(f)}`);
        assert.ok(!answered.has(f.id), `two answers to #${f.id}: ${show(f)}`);
        answered.add(f.id);
        const sentAs = sentCase.get(f.id);
        if (f.body.case === 'error') assertCodedError(f, `${sentAs ?? 'no body'} #${f.id}`);
        else assert.ok(sentAs !== undefined && !NO_REPLY.has(sentAs), `${sentAs ?? 'no body'} #${f.id} got ${show(f)}`);
        continue;
      }
      if (f.body.case === 'push' || f.body.case === 'event') continue;
      assert.equal(f.body.case, 'error', `unexpected server frame ${show(f)}`);
      if (f.body.case !== 'error') continue;
      const code = f.body.value.code;
      assert.ok(code === ErrorCode.FRAME_TOO_LARGE || SERVER_NOTICES.has(code), `unexpected error ${show(f)}`);
    }
    assert.equal(c.decodeError, undefined, 'the server sent bytes that do not decode');
  }

  /**
   * Batches of 1-6 frames: sensible requests with hostile values here and there, random client
   * requests, and frames of any type (built once the world, and so the pools, exist).
   */
  const batch = (p: Pools) => fc.array(fc.oneof(
    { weight: 4, arbitrary: plausibleFrame(p) },
    { weight: 3, arbitrary: frameOf(CLIENT_CASES, p) },
    { weight: 1, arbitrary: frameOf(ALL_CASES, p) },
  ), { minLength: 1, maxLength: 6 });

  for (const transport of ['tcp', 'ws'] as const) {
    test(`random and hostile requests over ${transport}: each gets its reply or a coded error; the connection keeps working`, async () => {
      // No shrinking: the server's state moved on since the failing batch, so a smaller batch proves
      // little (and each shrink step could wait out a timeout); the report has the batch and the error.
      await fc.assert(fc.asyncProperty(batch(pools), (frames) => runBatch(transport, frames)), { numRuns: runs(250), endOnFailure: true });
    });
  }

  test('random login tokens are refused with a coded error and a close, unless validly signed', async () => {
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v) ?? 'null').toString('base64url');
    const nowS = Math.floor(Date.now() / 1000);
    const claim = <T>(a: fc.Arbitrary<T>) => fc.option(fc.oneof(a, fc.jsonValue()), { nil: undefined, freq: 5 });
    const claims = fc.record({
      sub: claim(fc.oneof(validId, hostileString(pools))),
      dev: claim(fc.oneof(validId, hostileString(pools))),
      plt: claim(fc.oneof(fc.constantFrom('ios', 'web', 'other'), fc.string({ maxLength: 40 }))),
      exp: claim(fc.oneof(fc.integer({ min: nowS + 60, max: nowS + 86400 }), fc.integer({ min: 0, max: nowS - 60 }), fc.constantFrom(1e20, -1, 0))),
      iss: claim(fc.constantFrom('longlink', 'someone-else')),
      // The issue time (in ms, or in seconds): a token without one is refused.
      iatms: claim(fc.integer({ min: (nowS - 3600) * 1000, max: nowS * 1000 })),
      iat: claim(fc.integer({ min: nowS - 3600, max: nowS })),
      nbf: fc.option(fc.integer({ min: nowS + 600, max: nowS + 6000 }), { nil: undefined, freq: 8 }),
    }, { requiredKeys: [] });
    type Claims = typeof claims extends fc.Arbitrary<infer C> ? C : never;
    const OTHER_SECRET = 'not-the-server-secret-0123456789';
    type TokenCase =
      | { kind: 'garbage' | 'unsigned'; raw: string }
      | { kind: 'forged' | 'signed'; claims: Claims; secret: string; alg: string };
    // Plain data (so a counterexample prints what was sent), turned into a token below.
    const token = fc.oneof<fc.Arbitrary<TokenCase>[]>(
      hostileString(pools).map((raw) => ({ kind: 'garbage' as const, raw })),
      fc.tuple(fc.jsonValue(), fc.jsonValue(), fc.string({ maxLength: 50 })).map(([h, p, sig]) => ({ kind: 'garbage' as const, raw: `${b64(h)}.${b64(p)}.${sig}` })),
      claims.map((c) => ({ kind: 'unsigned' as const, raw: `${b64({ alg: 'none', typ: 'JWT' })}.${b64(c)}.` })),
      claims.map((c) => ({ kind: 'forged' as const, claims: c, secret: OTHER_SECRET, alg: 'HS256' })),
      claims.map((c) => ({ kind: 'forged' as const, claims: c, secret: TOKEN_SECRET, alg: 'HS512' })),
      claims.map((c) => ({ kind: 'signed' as const, claims: c, secret: TOKEN_SECRET, alg: 'HS256' })),
    );
    const make = (t: TokenCase): Promise<string> => {
      if ('raw' in t) return Promise.resolve(t.raw);
      const payload = Object.fromEntries(Object.entries(t.claims).filter(([, v]) => v !== undefined));
      return new SignJWT(payload).setProtectedHeader({ alg: t.alg }).sign(new TextEncoder().encode(t.secret));
    };
    const limit = server.config.limits.maxFrameBytes;
    // The first frame (the login) may be at most maxLoginFrameBytes.
    const loginLimit = server.config.limits.maxLoginFrameBytes;
    let round = 0;
    await fc.assert(fc.asyncProperty(token.map(abridged), fc.string({ maxLength: 300 }), async (t, clientVersion) => {
      const transport: Transport = round++ % 2 === 0 ? 'tcp' : 'ws';
      const c = await RawClient.connect(urlOf(server, transport));
      try {
        const login = makeFrame(1, { case: 'login', value: { token: await make(t), clientVersion } });
        const bytes = encodeFrame(login);
        c.sendPayload(bytes);
        if (transport === 'ws' && bytes.length > WS_MAX_PAYLOAD_FACTOR * limit) {
          await c.waitClosed(REPLY_BOUND_MS);
          assert.equal(c.closeCode, 1009, 'WebSocket close code for a message past the read limit');
          return;
        }
        if (bytes.length > loginLimit) {
          const e = await c.next((f) => f.body.case === 'error', REPLY_BOUND_MS);
          assert.equal(e.body.case === 'error' && errorName(e.body.value.code), 'FRAME_TOO_LARGE');
          await c.waitClosed(REPLY_BOUND_MS);
          return;
        }
        const reply = await c.next((f) => f.id === login.id, REPLY_BOUND_MS);
        if (reply.body.case === 'loginResult') {
          // Only a token signed with the server's secret, for a well-formed identity, logs in.
          assert.equal(t.kind, 'signed', `a ${t.kind} token logged in`);
          if (t.kind === 'signed') {
            assert.equal(reply.body.value.userId, t.claims.sub);
            assert.equal(reply.body.value.deviceId, t.claims.dev);
            assert.equal(t.claims.iss, 'longlink');
          }
          const pong = await request(c, { case: 'ping', value: {} });
          assert.equal(pong.body.case, 'pong');
          return;
        }
        assert.equal(reply.body.case, 'error', show(reply));
        if (reply.body.case !== 'error') return;
        const e = reply.body.value;
        assert.ok(['TOKEN_MISSING', 'TOKEN_INVALID', 'TOKEN_EXPIRED'].includes(errorName(e.code)), `login refused with ${errorName(e.code)}: ${e.message}`);
        assert.ok(e.message.length > 0);
        assert.equal(e.fatal, true);
        await c.waitClosed(REPLY_BOUND_MS);
      } finally {
        c.close();
      }
    }), { numRuns: runs(150) });
  });

  test('after the fuzzing, well-behaved clients still send, receive and log in', async () => {
    const alice = await online(server, 'tcp', 'alice', 'after');
    const bob = await online(server, 'ws', 'bob', 'after');
    clients.push(alice, bob);
    const ack = await sendOk(alice, { toUser: 'bob', text: 'still here?' });
    const got = await waitPushed(bob, 1);
    assert.ok(got.some((m) => m.seq === Number(ack.seq) && m.text === 'still here?'));
    // Answers to the last fire-and-forget frames (pushAcks go up within 100 ms) are checked too.
    await sleep(150);
    for (const transport of ['tcp', 'ws'] as const) {
      const c = fuzzers.get(transport) ?? await connectFuzzer(transport);
      assert.equal((await request(c, { case: 'conversations', value: {} })).body.case, 'conversationsResult');
      checkArrivals(c);
    }
  });
});
