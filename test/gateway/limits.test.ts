// Per-user and per-address limits at the gateway, over real sockets to a real
// embedded server: connections per user, failed logins per address, and the
// user's messages per second across its connections. Each breach is a coded
// error; nothing a client sent within the rules is lost.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode } from '../../src/protocol/index.js';
import { TRANSPORTS, expectFatal, pingPong, waitConnections, withServer } from './gw-helpers.js';

for (const kind of TRANSPORTS) {
  describe(`limits over ${kind}`, () => {
    test('connections per user: past the limit a new device gets TOO_MANY_CONNECTIONS; the same device may replace itself; a freed place is usable', () =>
      withServer({ 'max-connections-per-user': '3' }, async (ctx) => {
        const devices = [await ctx.login(kind, 'alice', 'd1'), await ctx.login(kind, 'alice', 'd2'), await ctx.login(kind, 'alice', 'd3')];
        const fourth = await ctx.connect(kind);
        const id = fourth.send({ case: 'login', value: { token: await ctx.server.token('alice', 'd4') } });
        await expectFatal(fourth, ErrorCode.TOO_MANY_CONNECTIONS, id);
        // Other users are not affected, and neither are alice's three devices.
        await pingPong(await ctx.login(kind, 'bob', 'd1'));
        for (const d of devices) await pingPong(d);
        // d3 logging in again replaces its own connection (the count does not grow).
        const again = await ctx.login(kind, 'alice', 'd3');
        await again.next((f) => f.body.case === 'loginResult');
        await devices[2]!.next((f) => f.body.case === 'kick');
        // d1 leaves: d4 now fits.
        devices[0]!.close();
        await waitConnections(ctx.server, 4); // d2, d3 (new), bob, and nothing else
        const d4 = await ctx.login(kind, 'alice', 'd4');
        await pingPong(d4);
      }));

    test('failed logins per address and claimed user: past the limit those logins get LOGIN_THROTTLED (fatal, reconnect later); successful logins and other users do not count', () =>
      withServer({ 'login-attempts-per-minute': '5' }, async (ctx) => {
        // Successful logins are never counted: ten in a row all pass.
        for (let i = 0; i < 10; i++) (await ctx.login(kind, `u${i}`)).close();
        for (let i = 0; i < 5; i++) {
          const c = await ctx.connect(kind);
          const id = c.send({ case: 'login', value: { token: `not-a-token-${i}` } });
          await expectFatal(c, ErrorCode.TOKEN_INVALID, id);
        }
        const c = await ctx.connect(kind);
        const id = c.send({ case: 'login', value: { token: 'not-a-token-either' } });
        const frame = await expectFatal(c, ErrorCode.LOGIN_THROTTLED, id);
        assert.equal(frame.body.case === 'error' && frame.body.value.reconnect, true, 'LOGIN_THROTTLED tells the client to reconnect later');
        // Keyed by the user a token claims: bad tokens for mallory throttle mallory's logins from
        // this address, not the other users behind it (a NAT, an office, a proxy).
        for (let i = 0; i < 5; i++) {
          const m = await ctx.connect(kind);
          const mid = m.send({ case: 'login', value: { token: await ctx.server.token('mallory', 'd1', -10) } });
          await expectFatal(m, ErrorCode.TOKEN_EXPIRED, mid);
        }
        const m = await ctx.connect(kind);
        await expectFatal(m, ErrorCode.LOGIN_THROTTLED, m.send({ case: 'login', value: { token: await ctx.server.token('mallory') } }));
        await pingPong(await ctx.login(kind, 'alice'));
      }));

    test("a user's messages per second count all its connections: over it, sends are slowed (USER_RATE_LIMITED notice), never refused or lost", () =>
      withServer({ 'user-messages-per-second': '10', 'rate-limit': '1000', 'rate-burst': '1000' }, async (ctx) => {
        const phone = await ctx.login(kind, 'alice', 'phone');
        const laptop = await ctx.login(kind, 'alice', 'laptop');
        const bob = await ctx.login(kind, 'bob', 'd1');
        const perDevice = 25; // 50 in all: the burst (20) at once, the other 30 at 10/s
        const started = Date.now();
        const ids: { c: typeof phone; id: number }[] = [];
        for (let i = 0; i < perDevice; i++) {
          for (const [c, name] of [[phone, 'p'], [laptop, 'l']] as const) {
            ids.push({ c, id: c.send({ case: 'send', value: { clientMsgId: `${name}-${i}`, toUser: 'bob', text: `${name} ${i}` } }) });
          }
        }
        for (const { c, id } of ids) {
          const reply = await c.next((f) => f.id === id, 20_000);
          assert.equal(reply.body.case, 'sendAck', c.describe());
        }
        const elapsedMs = Date.now() - started;
        // 30 messages past the burst at 10/s cannot take less than ~3 s (lower bound only: a slow machine is fine).
        assert.ok(elapsedMs >= 2500, `50 messages passed in ${elapsedMs} ms: the user limit did not hold`);
        const notices = [phone, laptop].flatMap((c) => c.frames.filter((f) => f.body.case === 'error' && f.body.value.code === ErrorCode.USER_RATE_LIMITED));
        assert.ok(notices.length >= 1, 'a USER_RATE_LIMITED notice was sent');
        for (const n of notices) assert.equal(n.body.case === 'error' && n.body.value.fatal, false);
        // Bob gets all 50, once each.
        const texts = (): string[] => bob.frames.flatMap((f) => (f.body.case === 'push' ? f.body.value.messages.map((m) => m.text) : []));
        await bob.next(() => texts().length >= 50, 10_000);
        assert.equal(texts().length, 50, 'bob got each message once');
        assert.equal(new Set(texts()).size, 50);
        // Another user is not slowed by alice's limit.
        await expectNoError(bob);
        await pingPong(phone);
      }));
  });
}

async function expectNoError(c: Parameters<typeof pingPong>[0]): Promise<void> {
  await pingPong(c);
  assert.ok(!c.frames.some((f) => f.body.case === 'error'), c.describe());
}
