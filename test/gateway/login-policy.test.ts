// Multi-login policies over real sockets (TCP and WebSocket): `multi` keeps
// every device; `platform` keeps one device per platform (a new login kicks
// the older device on the same platform with Kick LOGIN_POLICY); `single`
// keeps one device in all. Under every policy a login of the same device
// replaces its older connection with Kick REPLACED.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, type ClientState, type LonglinkError } from '../../src/client/index.js';
import { ErrorCode, errorName, type BodyOf } from '../../src/protocol/index.js';
import { RawClient } from '../helpers/raw.js';
import type { TestServer } from '../helpers/server.js';
import { barrier, pushed, request, sendOk, sleep, syncAll, until, urlOf, withServer, type Transport } from '../logic/support.js';

/** No test may hang the suite. */
const T = { timeout: 120_000 };

const AB = 'u:alice:bob';

/** A raw connection logged in as user/device on a platform. */
async function device(s: TestServer, t: Transport, user: string, deviceId: string, platform: string): Promise<RawClient> {
  const c = await RawClient.connect(urlOf(s, t));
  const r = await c.login(await s.token(user, deviceId, 3600, platform));
  assert.equal(r.body.case === 'loginResult' ? r.body.value.platform : undefined, platform);
  return c;
}

function kicks(c: RawClient): BodyOf<'kick'>[] {
  return c.frames.filter((f) => f.body.case === 'kick').map((f) => f.body.value as BodyOf<'kick'>);
}

/** The connection gets exactly one Kick with `code` (a reason, no reconnect), then is closed by the server. */
async function assertKicked(c: RawClient, code: ErrorCode, what: string): Promise<void> {
  await c.next((f) => f.body.case === 'kick', 10_000).catch(() => assert.fail(`${what}: no kick; got ${c.describe()}`));
  const [k, ...more] = kicks(c);
  assert.deepEqual(more, [], `${what}: one kick`);
  assert.equal(errorName(k!.code), errorName(code), `${what}: ${k!.reason}`);
  assert.ok(k!.reason.length > 0, `${what}: the kick says why`);
  assert.equal(k!.reconnect, false, `${what}: do not reconnect`);
  await c.waitClosed(10_000);
}

/** Polls presence until bob's platforms are `want`. */
async function platformsOf(asker: RawClient, user: string, want: string[]): Promise<void> {
  let got: string[] = [];
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = await request(asker, { case: 'presenceQuery', value: { userIds: [user] } });
    got = r.body.case === 'presenceResult' ? [...r.body.value.users[0]!.platforms] : [];
    if (got.join() === want.join() || Date.now() > deadline) break;
    await sleep(50);
  }
  assert.deepEqual(got, want, `${user}'s platforms`);
}

/**
 * alice sends bob one message; exactly the `live` devices get it pushed and
 * none of them was kicked; every other device is closed.
 */
async function assertLive(alice: RawClient, all: Record<string, RawClient>, live: string[], text: string): Promise<void> {
  await sendOk(alice, { toUser: 'bob', text });
  for (const name of live) {
    const c = all[name]!;
    await until(() => pushed(c).some((m) => m.text === text), 10_000, () => `${name} gets "${text}": ${c.describe()}`);
  }
  for (const name of live) await barrier(all[name]!);
  await sleep(200);
  for (const [name, c] of Object.entries(all)) {
    if (live.includes(name)) {
      assert.equal(c.closed, false, `${name} stays connected`);
      assert.deepEqual(kicks(c), [], `${name} was not kicked`);
    } else {
      assert.equal(c.closed, true, `${name} is gone`);
      assert.equal(pushed(c).some((m) => m.text === text), false, `${name} got nothing after its kick`);
    }
  }
}

const closeAll = (cs: Iterable<RawClient>) => {
  for (const c of cs) c.close();
};

describe('login policy: multi (the default)', () => {
  for (const [label, overrides] of [['explicit multi', { 'login-policy': 'multi' }], ['default', {}]] as const) {
    test(`${label}: every device stays, whatever its platform; the same device again is REPLACED`, T, async () => {
      await withServer(async (s) => {
        const alice = await device(s, 'tcp', 'alice', 'a1', 'web');
        const d: Record<string, RawClient> = {};
        d.ios1 = await device(s, 'tcp', 'bob', 'ios1', 'ios');
        d.ios2 = await device(s, 'ws', 'bob', 'ios2', 'ios');
        d.android = await device(s, 'tcp', 'bob', 'android', 'android');
        d.web = await device(s, 'ws', 'bob', 'web', 'web');
        await assertLive(alice, d, ['ios1', 'ios2', 'android', 'web'], 'to all four');
        await platformsOf(alice, 'bob', ['android', 'ios', 'web']);

        const old = d.ios1;
        d.ios1 = await device(s, 'ws', 'bob', 'ios1', 'ios');
        await assertKicked(old, ErrorCode.REPLACED, 'ios1 logged in again');
        await assertLive(alice, { ...d, old }, ['ios1', 'ios2', 'android', 'web'], 'after the relogin');
        closeAll([alice, ...Object.values(d)]);
      }, overrides);
    });
  }
});

describe('login policy: platform', () => {
  test('a new login kicks the older device on the same platform (LOGIN_POLICY); other platforms and users stay', T, async () => {
    await withServer(async (s) => {
      const alice = await device(s, 'ws', 'alice', 'a1', 'ios');
      const d: Record<string, RawClient> = {};
      d.phone1 = await device(s, 'tcp', 'bob', 'phone1', 'ios');
      d.tablet = await device(s, 'ws', 'bob', 'tablet', 'android');
      await assertLive(alice, d, ['phone1', 'tablet'], 'ios and android');

      d.phone2 = await device(s, 'ws', 'bob', 'phone2', 'ios');
      await assertKicked(d.phone1, ErrorCode.LOGIN_POLICY, 'phone1 after phone2 (ios)');
      await assertLive(alice, d, ['tablet', 'phone2'], 'after phone2');
      await platformsOf(alice, 'bob', ['android', 'ios']);

      d.phone3 = await device(s, 'tcp', 'bob', 'phone3', 'ios');
      await assertKicked(d.phone2, ErrorCode.LOGIN_POLICY, 'phone2 after phone3 (ios, over tcp)');
      await assertLive(alice, d, ['tablet', 'phone3'], 'after phone3');

      // The same device again: REPLACED, not LOGIN_POLICY; nothing else changes.
      const oldTablet = d.tablet;
      d.tablet = await device(s, 'tcp', 'bob', 'tablet', 'android');
      await assertKicked(oldTablet, ErrorCode.REPLACED, 'tablet logged in again');
      await assertLive(alice, { ...d, oldTablet }, ['tablet', 'phone3'], 'after the tablet relogin');
      assert.equal(alice.closed, false, 'alice, also on ios, is another user: untouched');
      assert.deepEqual(kicks(alice), []);
      closeAll([alice, ...Object.values(d)]);
    }, { 'login-policy': 'platform' });
  });
});

describe('login policy: single', () => {
  test('a new login kicks every other device (LOGIN_POLICY); the kicked device gets what it missed at its next login', T, async () => {
    await withServer(async (s) => {
      const alice = await device(s, 'tcp', 'alice', 'a1', 'web');
      const d: Record<string, RawClient> = {};
      d.d1 = await device(s, 'tcp', 'bob', 'd1', 'ios');
      await assertLive(alice, d, ['d1'], 'one device');
      assert.equal(alice.closed, false);

      d.d2 = await device(s, 'ws', 'bob', 'd2', 'android');
      await assertKicked(d.d1, ErrorCode.LOGIN_POLICY, 'd1 after d2 (another platform)');
      await assertLive(alice, d, ['d2'], 'after d2');
      d.d3 = await device(s, 'tcp', 'bob', 'd3', 'web');
      await assertKicked(d.d2, ErrorCode.LOGIN_POLICY, 'd2 after d3');
      await assertLive(alice, d, ['d3'], 'after d3');
      await platformsOf(alice, 'bob', ['web']);

      const oldD3 = d.d3;
      d.d3 = await device(s, 'ws', 'bob', 'd3', 'web');
      await assertKicked(oldD3, ErrorCode.REPLACED, 'd3 logged in again');
      await assertLive(alice, { ...d, oldD3 }, ['d3'], 'after the d3 relogin');

      // d1 comes back: it kicks d3 and syncs everything it missed.
      d.d1 = await device(s, 'ws', 'bob', 'd1', 'ios');
      await assertKicked(d.d3, ErrorCode.LOGIN_POLICY, 'd3 after d1 is back');
      const synced = await syncAll(d.d1);
      assert.deepEqual(synced.messages.map((m) => m.text), ['one device', 'after d2', 'after d3', 'after the d3 relogin']);
      assert.ok(synced.messages.every((m) => m.conversationId === AB));
      // Policies apply per user: alice was never touched.
      assert.equal(alice.closed, false);
      assert.deepEqual(kicks(alice), []);
      closeAll([alice, ...Object.values(d)]);
    }, { 'login-policy': 'single' });
  });

  test('SDK: the kicked client reports the kick with its reason and code, and stays offline (no reconnect loop)', T, async () => {
    await withServer(async (s) => {
      for (const t of ['tcp', 'ws'] as const) {
        const old = createClient({ url: urlOf(s, t), token: await s.token('bob', `old-${t}`, 3600, 'ios') });
        const kicked: LonglinkError[] = [];
        const states: ClientState[] = [];
        let logins = 0;
        old.on('kick', (e) => kicked.push(e));
        old.on('state', (st) => states.push(st));
        old.on('login', () => logins++);
        await old.connect();
        const fresh = createClient({ url: urlOf(s, t === 'tcp' ? 'ws' : 'tcp'), token: await s.token('bob', `new-${t}`, 3600, 'android') });
        await fresh.connect();
        await until(() => kicked.length > 0, 10_000, () => `${t}: kick reported`);
        assert.equal(errorName(kicked[0]!.code), 'LOGIN_POLICY');
        assert.ok(kicked[0]!.message.length > 0);
        await until(() => old.state === 'offline', 10_000, () => `${t}: offline, now ${old.state}`);
        await sleep(1500);
        assert.equal(logins, 1, `${t}: no reconnect after a policy kick (states ${states.join(' → ')})`);
        assert.equal(fresh.state, 'online', `${t}: the new device stays`);
        await old.close();
        await fresh.close();
      }
    }, { 'login-policy': 'single' });
  });
});
