// The login handshake, heartbeats and session replacement, over real TCP and
// WebSocket connections to a real embedded server. Each test starts its own.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SignJWT, jwtVerify } from 'jose';
import { TokenService } from '../../src/auth/tokens.js';
import { ErrorCode } from '../../src/protocol/index.js';
import { TOKEN_SECRET } from '../helpers/server.js';
import {
  TRANSPORTS, expectError, expectFatal, pingPong, sendText, sleep, waitConnections, withServer,
} from './gw-helpers.js';

const secretKey = new TextEncoder().encode(TOKEN_SECRET);

/** A JWT signed with the server's secret, with claims chosen by the test. */
function signJwt(claims: { sub?: string; dev?: string; plt?: string; iss?: string; exp?: number; iat?: number }): Promise<string> {
  const nowS = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({ dev: claims.dev ?? 'd1', plt: claims.plt ?? 'other' })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer(claims.iss ?? 'longlink')
    .setIssuedAt(claims.iat ?? nowS)
    .setExpirationTime(claims.exp ?? nowS + 3600);
  if (claims.sub !== undefined) jwt.setSubject(claims.sub);
  return jwt.sign(secretKey);
}

for (const kind of TRANSPORTS) {
  describe(`login over ${kind}`, () => {
    test('a valid token logs in and the LoginResult describes the session and its limits', () =>
      withServer({ 'node-id': 'gw-login-7', 'ping-interval-ms': '12345', 'max-text-bytes': '4000' }, async (ctx) => {
        const c = await ctx.connect(kind);
        const before = Date.now();
        const id = c.send({ case: 'login', value: { token: await ctx.server.token('alice', 'phone-1', 3600, 'ios'), clientVersion: 'test/1' } }, 42);
        const reply = await c.next((f) => f.id === id);
        const after = Date.now();
        assert.equal(reply.id, 42);
        assert.equal(reply.body.case, 'loginResult', c.describe());
        const r = reply.body.value;
        assert.equal(r.userId, 'alice');
        assert.equal(r.deviceId, 'phone-1');
        assert.equal(r.platform, 'ios');
        assert.equal(r.pingIntervalMs, 12345);
        assert.equal(r.nodeId, 'gw-login-7');
        assert.equal(r.maxFrameBytes, 65536);
        assert.equal(r.maxTextBytes, 4000);
        const serverTime = Number(r.serverTimeMs);
        assert.ok(serverTime >= before - 1000 && serverTime <= after + 1000, `server time ${serverTime} not within [${before}, ${after}]`);
        // Nothing but the result, and the connection is usable.
        assert.equal(c.frames.length, 1, c.describe());
        await pingPong(c);
        assert.equal(c.closed, false);
      }));

    test('frames pipelined right behind the login are answered after the LoginResult, in order', () =>
      withServer({}, async (ctx) => {
        const c = await ctx.connect(kind);
        const loginId = c.send({ case: 'login', value: { token: await ctx.server.token('alice') } });
        const pings = [c.send({ case: 'ping', value: {} }), c.send({ case: 'ping', value: {} }), c.send({ case: 'ping', value: {} })];
        await c.next((f) => f.id === pings[2]);
        assert.deepEqual(c.frames.map((f) => [f.id, f.body.case]), [
          [loginId, 'loginResult'], [pings[0], 'pong'], [pings[1], 'pong'], [pings[2], 'pong'],
        ]);
      }));

    test('a token signed with another secret is refused: TOKEN_INVALID, fatal, then close', () =>
      withServer({}, async (ctx) => {
        const forged = await new TokenService('some-other-secret-0123456789abcdef').issue('alice', 'd1', 'other', 3600);
        const c = await ctx.connect(kind);
        const id = c.send({ case: 'login', value: { token: forged.token } });
        const frame = await expectFatal(c, ErrorCode.TOKEN_INVALID, id);
        assert.equal(frame.body.case === 'error' && frame.body.value.reconnect, false, 'a forged token is not worth reconnecting with');
        assert.ok(!c.frames.some((f) => f.body.case === 'loginResult'));
        await ctx.assertHealthy(kind);
      }));

    test('garbage tokens are refused with TOKEN_INVALID and close', () =>
      withServer({}, async (ctx) => {
        const valid = await ctx.server.token('alice');
        const [h, p] = valid.split('.');
        const garbage = [
          'not-a-jwt',
          'a.b.c',
          `${h}.${p}.`, // signature stripped
          `${h}.${p}.${'A'.repeat(43)}`, // wrong signature
          `${h}.${Buffer.from(JSON.stringify({ sub: 'mallory', dev: 'd1', plt: 'other', iss: 'longlink', exp: 9999999999 })).toString('base64url')}.${valid.split('.')[2]}`, // swapped payload
          '\u0000\u0001\u0002 ☃',
          // Only HS256 is accepted, whatever the header says: no "none", no other HMAC with the same secret.
          `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${p}.`,
          await new SignJWT({ sub: 'alice', dev: 'd1', plt: 'other', iat: Math.floor(Date.now() / 1000) })
            .setProtectedHeader({ alg: 'HS384' }).setIssuer('longlink').setExpirationTime('1h').sign(secretKey),
          `${h}.${p}.${valid.split('.')[2]}.extra`,
        ];
        for (const token of garbage) {
          const c = await ctx.connect(kind);
          const id = c.send({ case: 'login', value: { token } });
          await expectFatal(c, ErrorCode.TOKEN_INVALID, id);
        }
        await ctx.assertHealthy(kind);
      }));

    test('well-signed tokens with bad claims are refused with TOKEN_INVALID', () =>
      withServer({}, async (ctx) => {
        const tokens = [
          await signJwt({ sub: 'alice', iss: 'someone-else' }), // wrong issuer
          await signJwt({}), // no subject
          await signJwt({ sub: 'al:ice' }), // not a valid user id
          await signJwt({ sub: 'alice', dev: '' }), // no device
        ];
        for (const token of tokens) {
          const c = await ctx.connect(kind);
          const id = c.send({ case: 'login', value: { token } });
          await expectFatal(c, ErrorCode.TOKEN_INVALID, id);
        }
        await ctx.assertHealthy(kind);
      }));

    test('tokens of any HS256 signer (here jose\'s) log in; the server\'s own tokens verify with it', () =>
      withServer({}, async (ctx) => {
        const c = await ctx.connect(kind);
        const id = c.send({ case: 'login', value: { token: await signJwt({ sub: 'alice' }) } });
        const r = await c.next((f) => f.id === id);
        assert.equal(r.body.case, 'loginResult');
        const { payload } = await jwtVerify(await ctx.server.token('bob'), secretKey, { issuer: 'longlink', algorithms: ['HS256'] });
        assert.equal(payload.sub, 'bob');
      }));

    test('an expired token is refused with TOKEN_EXPIRED and close', () =>
      withServer({}, async (ctx) => {
        const nowS = Math.floor(Date.now() / 1000);
        const expired = await signJwt({ sub: 'alice', iat: nowS - 7200, exp: nowS - 60 });
        const c = await ctx.connect(kind);
        const id = c.send({ case: 'login', value: { token: expired } });
        await expectFatal(c, ErrorCode.TOKEN_EXPIRED, id);
        // Also one issued by the server's own token service with a ttl already past.
        const c2 = await ctx.connect(kind);
        const id2 = c2.send({ case: 'login', value: { token: await ctx.server.token('alice', 'd1', -5) } });
        await expectFatal(c2, ErrorCode.TOKEN_EXPIRED, id2);
        await ctx.assertHealthy(kind);
      }));

    test('a login without a token is refused with TOKEN_MISSING and close', () =>
      withServer({}, async (ctx) => {
        const c = await ctx.connect(kind);
        const id = c.send({ case: 'login', value: { clientVersion: 'test/1' } });
        await expectFatal(c, ErrorCode.TOKEN_MISSING, id);
        await ctx.assertHealthy(kind);
      }));

    test('a first frame that is not a login gets NOT_LOGGED_IN and close', () =>
      withServer({}, async (ctx) => {
        const firsts = [
          { case: 'ping', value: {} },
          { case: 'send', value: { clientMsgId: 'm1', toUser: 'bob', text: 'hi' } },
          { case: 'sync', value: {} },
          { case: 'pushAck', value: { conversationId: 'u:alice:bob', seq: 1n } },
        ] as const;
        for (const body of firsts) {
          const c = await ctx.connect(kind);
          const id = c.send(body);
          await expectFatal(c, ErrorCode.NOT_LOGGED_IN, id);
          // The login that follows on the closed connection is never answered.
          assert.ok(!c.frames.some((f) => f.body.case === 'loginResult' || f.body.case === 'pong'));
        }
        // The refused send was not delivered: bob has nothing to sync.
        const bob = await ctx.login(kind, 'bob');
        const syncId = bob.send({ case: 'sync', value: {} });
        const sync = await bob.next((f) => f.id === syncId);
        assert.equal(sync.body.case, 'syncResult');
        assert.equal(sync.body.value.messages.length, 0);
        await ctx.assertHealthy(kind);
      }));

    test('a second login on the same connection gets ALREADY_LOGGED_IN, not fatal; the connection keeps its identity', () =>
      withServer({}, async (ctx) => {
        const c = await ctx.login(kind, 'alice');
        const bob = await ctx.login(kind, 'bob');
        const id = c.send({ case: 'login', value: { token: await ctx.server.token('mallory', 'd9') } });
        await expectError(c, ErrorCode.ALREADY_LOGGED_IN, { id, fatal: false });
        await pingPong(c);
        assert.equal(c.closed, false);
        // Still alice: a message sent now is from alice.
        await sendText(c, 'bob', 'still me', 'm-1');
        const push = await bob.nextOf('push');
        assert.equal(push.body.case === 'push' && push.body.value.messages[0]?.fromUser, 'alice');
      }));

    test('no login within the deadline: LOGIN_TIMEOUT and close; a connection that logged in is unaffected', () =>
      withServer({ 'login-timeout-ms': '300' }, async (ctx) => {
        const t0 = Date.now();
        const silent = await ctx.connect(kind);
        const good = await ctx.login(kind, 'alice');
        await expectFatal(silent, ErrorCode.LOGIN_TIMEOUT, 0, 5000);
        const elapsed = Date.now() - t0;
        assert.ok(elapsed >= 290, `LOGIN_TIMEOUT came after ${elapsed} ms, before the 300 ms deadline`);
        assert.ok(!silent.frames.some((f) => f.body.case !== 'error'), silent.describe());
        await sleep(400);
        await pingPong(good);
        assert.equal(good.closed, false);
      }));

    test('after the heartbeat deadline a silent connection gets HEARTBEAT_TIMEOUT and is closed; its session is cleaned', () =>
      withServer({ 'ping-interval-ms': '200' }, async (ctx) => {
        const alice = await ctx.login(kind, 'alice');
        const t0 = Date.now();
        await expectFatal(alice, ErrorCode.HEARTBEAT_TIMEOUT, 0, 5000);
        const elapsed = Date.now() - t0;
        assert.ok(elapsed >= 500, `timed out after ${elapsed} ms of silence; 3 intervals are 600 ms`);
        assert.ok(elapsed < 3000, `timed out only after ${elapsed} ms`);
        const error = alice.frames.find((f) => f.body.case === 'error');
        assert.equal(error?.body.case === 'error' && error.body.value.reconnect, true, 'HEARTBEAT_TIMEOUT invites a reconnect');
        await waitConnections(ctx.server, 0);

        // A message to alice now reaches no connection, but it is stored.
        const bob = await ctx.login(kind, 'bob');
        await sendText(bob, 'alice', 'while you were away', 'away-1');
        const framesBefore = alice.frames.length;
        await sleep(100);
        assert.equal(alice.frames.length, framesBefore, 'the timed-out connection received something');

        const again = await ctx.login(kind, 'alice');
        const syncId = again.send({ case: 'sync', value: {} });
        const sync = await again.next((f) => f.id === syncId);
        assert.equal(sync.body.case, 'syncResult');
        assert.deepEqual(sync.body.value.messages.map((m) => [m.fromUser, m.text]), [['bob', 'while you were away']]);
        assert.ok(!again.frames.some((f) => f.body.case === 'push' || f.body.case === 'kick'), again.describe());
      }));

    test('a connection that pings stays alive past 3 intervals (and a silent one beside it does not)', () =>
      withServer({ 'ping-interval-ms': '200' }, async (ctx) => {
        const alive = await ctx.login(kind, 'alice');
        const silent = await ctx.login(kind, 'bob');
        const stop = Date.now() + 1500; // 7.5 intervals
        while (Date.now() < stop) {
          alive.send({ case: 'ping', value: {} });
          await sleep(100);
        }
        await expectFatal(silent, ErrorCode.HEARTBEAT_TIMEOUT, 0);
        assert.equal(alive.closed, false, alive.describe());
        assert.ok(!alive.frames.some((f) => f.body.case === 'error' || f.body.case === 'kick'), alive.describe());
        await pingPong(alive);
      }));

    if (kind === 'ws') {
      test('WebSocket protocol-level pings alone keep a connection alive', () =>
        withServer({ 'ping-interval-ms': '200' }, async (ctx) => {
          const alive = await ctx.login(kind, 'alice');
          const silent = await ctx.login(kind, 'bob');
          const stop = Date.now() + 1500;
          while (Date.now() < stop) {
            alive.ws!.ping();
            await sleep(100);
          }
          await expectFatal(silent, ErrorCode.HEARTBEAT_TIMEOUT, 0);
          assert.equal(alive.closed, false, alive.describe());
          assert.deepEqual(alive.frames.map((f) => f.body.case), ['loginResult'], 'no frames beyond the LoginResult');
          await pingPong(alive);
        }));
    }

    test('a client that sends its login and vanishes leaves no session behind', () =>
      withServer({}, async (ctx) => {
        for (let i = 0; i < 5; i++) {
          const c = await ctx.connect(kind);
          c.send({ case: 'login', value: { token: await ctx.server.token('alice', 'phone') } });
          if (i % 2 === 1) await sleep(5);
          c.close();
        }
        await waitConnections(ctx.server, 0);
        // The device logs in for real: nothing to replace, and pushes reach it.
        const alice = await ctx.login(kind, 'alice', 'phone');
        const bob = await ctx.login(kind, 'bob');
        await sendText(bob, 'alice', 'are you there', 'v-1');
        const push = await alice.nextOf('push');
        assert.equal(push.body.case === 'push' && push.body.value.messages[0]?.text, 'are you there');
        assert.ok(!alice.frames.some((f) => f.body.case === 'kick' || f.body.case === 'error'), alice.describe());
        await waitConnections(ctx.server, 2);
      }));

    test('the same device logging in again: the old connection gets Kick REPLACED then closes; the new one works', () =>
      withServer({}, async (ctx) => {
        const old = await ctx.login(kind, 'alice', 'phone');
        const bob = await ctx.login(kind, 'bob');
        const fresh = await ctx.login(kind, 'alice', 'phone');
        const kick = await old.nextOf('kick');
        assert.equal(kick.id, 0);
        assert.equal(kick.body.case === 'kick' && kick.body.value.code, ErrorCode.REPLACED);
        assert.equal(kick.body.case === 'kick' && kick.body.value.reconnect, false, 'a replaced device must not reconnect');
        await old.waitClosed();
        assert.ok(!old.frames.some((f) => f.body.case === 'error'), old.describe());
        assert.ok(!fresh.frames.some((f) => f.body.case === 'kick' || f.body.case === 'error'), fresh.describe());
        await pingPong(fresh);
        await waitConnections(ctx.server, 2);

        // Messages for alice now reach the new connection only.
        await sendText(bob, 'alice', 'to the new one', 'r-1');
        const push = await fresh.nextOf('push');
        assert.equal(push.body.case === 'push' && push.body.value.messages[0]?.text, 'to the new one');
        // And alice's messages come from the new connection's identity.
        await sendText(fresh, 'bob', 'hello from the new one', 'r-2');
        const back = await bob.nextOf('push');
        assert.equal(back.body.case === 'push' && back.body.value.messages[0]?.fromDevice, 'phone');
      }));

    test('replacing works across transports too (old on the other transport)', () =>
      withServer({}, async (ctx) => {
        const other = kind === 'tcp' ? 'ws' : 'tcp';
        const old = await ctx.login(other, 'alice', 'phone');
        const fresh = await ctx.login(kind, 'alice', 'phone');
        const kick = await old.nextOf('kick');
        assert.equal(kick.body.case === 'kick' && kick.body.value.code, ErrorCode.REPLACED);
        await old.waitClosed();
        await pingPong(fresh);
      }));

    test('two different devices of one user both stay online and both get pushes', () =>
      withServer({}, async (ctx) => {
        const phone = await ctx.login(kind, 'alice', 'phone');
        const laptop = await ctx.login(kind, 'alice', 'laptop');
        const bob = await ctx.login(kind, 'bob');
        await sendText(bob, 'alice', 'to both', 'b-1');
        for (const c of [phone, laptop]) {
          const push = await c.nextOf('push');
          assert.equal(push.body.case === 'push' && push.body.value.messages[0]?.text, 'to both');
        }
        // A message from one device reaches the other device of the same user, not itself.
        await sendText(phone, 'bob', 'from the phone', 'p-1');
        const echo = await laptop.next((f) => f.body.case === 'push' && f.body.value.messages[0]?.text === 'from the phone');
        assert.equal(echo.body.case === 'push' && echo.body.value.messages[0]?.fromDevice, 'phone');
        await sleep(100);
        assert.ok(!phone.frames.some((f) => f.body.case === 'push' && f.body.value.messages[0]?.text === 'from the phone'));
        for (const c of [phone, laptop]) {
          assert.ok(!c.frames.some((f) => f.body.case === 'kick' || f.body.case === 'error'), c.describe());
          await pingPong(c);
        }
        await waitConnections(ctx.server, 3);
      }));
  });
}
