// Token lifecycle, from outside: expiry on reconnect, revocation (a user or
// one device logged out everywhere, on every gateway within a second), and
// secret rotation from a secrets file without dropping a connection.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TokenService } from '../../src/auth/tokens.js';
import { loadServerConfig } from '../../src/config.js';
import { ErrorCode, type Frame } from '../../src/protocol/index.js';
import { startGateway, type RunningGateway } from '../../src/roles/gateway.js';
import { startLogic, type RunningLogic } from '../../src/roles/logic.js';
import { RawClient } from '../helpers/raw.js';
import { ADMIN_KEY, TOKEN_SECRET } from '../helpers/server.js';
import { startPostgres, startRedis, type PostgresServer, type RedisServer } from '../helpers/services.js';
import { expectFatal, pingPong, sendText, sleep, withServer } from '../gateway/gw-helpers.js';

const T = { timeout: 60_000 };

async function post(baseUrl: string, path: string, body: unknown, key: string | null = ADMIN_KEY): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${baseUrl}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key !== null ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

async function apiToken(baseUrl: string, user: string, device: string): Promise<string> {
  const { status, json } = await post(baseUrl, '/api/v1/tokens', { user_id: user, device_id: device });
  assert.equal(status, 200, JSON.stringify(json));
  return json.token as string;
}

/** The Kick frame a client got, waiting for it. */
async function expectKick(c: RawClient, code: ErrorCode, timeoutMs: number): Promise<Frame> {
  const kick = await c.next((f) => f.body.case === 'kick', timeoutMs);
  assert.equal(kick.body.case, 'kick');
  assert.equal(kick.body.value.code, code, c.describe());
  assert.equal(kick.body.value.reconnect, false, 'a revoked client must not reconnect with the same token');
  await c.waitClosed(5000);
  return kick;
}

describe('revocation (embedded)', () => {
  test('a user logged out everywhere: every device is kicked with TOKEN_REVOKED at once, its old tokens are refused, new ones work; others are untouched', T, () =>
    withServer({}, async (ctx) => {
      const base = ctx.server.httpUrl;
      const phoneToken = await apiToken(base, 'alice', 'phone');
      const phone = await ctx.connect('tcp');
      await phone.login(phoneToken);
      const laptop = await ctx.connect('ws');
      await laptop.login(await apiToken(base, 'alice', 'laptop'));
      const bob = await ctx.login('tcp', 'bob');

      const started = Date.now();
      const { status, json } = await post(base, '/api/v1/revoke', { user_id: 'alice' });
      assert.equal(status, 200, JSON.stringify(json));
      assert.equal(typeof json.revoked_before_ms, 'number');
      await expectKick(phone, ErrorCode.TOKEN_REVOKED, 1000);
      await expectKick(laptop, ErrorCode.TOKEN_REVOKED, 1000);
      assert.ok(Date.now() - started < 1500, `kicks took ${Date.now() - started} ms`);

      // The old token no longer logs in, on either transport.
      for (const kind of ['tcp', 'ws'] as const) {
        const again = await ctx.connect(kind);
        const id = again.send({ case: 'login', value: { token: phoneToken } });
        await expectFatal(again, ErrorCode.TOKEN_REVOKED, id);
      }
      // A token issued after the revocation works; bob never noticed.
      await sleep(5); // tokens carry their issue time in ms
      const fresh = await ctx.connect('tcp');
      await fresh.login(await apiToken(base, 'alice', 'phone'));
      await sendText(fresh, 'bob', 'back', 'm1');
      await bob.next((f) => f.body.case === 'push');
      await pingPong(bob);
      assert.ok(!bob.frames.some((f) => f.body.case === 'kick' || f.body.case === 'error'), bob.describe());
    }));

  test('one device logged out: only that device is kicked and refused; the user\'s other devices stay', T, () =>
    withServer({}, async (ctx) => {
      const base = ctx.server.httpUrl;
      const phoneToken = await apiToken(base, 'alice', 'phone');
      const laptopToken = await apiToken(base, 'alice', 'laptop');
      const phone = await ctx.connect('tcp');
      await phone.login(phoneToken);
      const laptop = await ctx.connect('tcp');
      await laptop.login(laptopToken);
      const { status, json } = await post(base, '/api/v1/revoke', { user_id: 'alice', device_id: 'phone' });
      assert.equal(status, 200);
      assert.equal(typeof json.revoked_before_ms, 'number');
      await expectKick(phone, ErrorCode.TOKEN_REVOKED, 1000);
      await pingPong(laptop);
      // The laptop's token still logs in (on a second connection it replaces the first).
      const laptop2 = await ctx.connect('ws');
      await laptop2.login(laptopToken);
      const phone2 = await ctx.connect('ws');
      await expectFatal(phone2, ErrorCode.TOKEN_REVOKED, phone2.send({ case: 'login', value: { token: phoneToken } }));
    }));

  test('a revoked token replayed after the device logged in again is refused without touching the live connection: it keeps getting pushes', T, () =>
    withServer({}, async (ctx) => {
      const base = ctx.server.httpUrl;
      const oldToken = await apiToken(base, 'alice', 'phone');
      const { status } = await post(base, '/api/v1/revoke', { user_id: 'alice', device_id: 'phone' });
      assert.equal(status, 200);
      await sleep(5);
      const phone = await ctx.connect('tcp');
      await phone.login(await apiToken(base, 'alice', 'phone'));
      const bob = await ctx.login('ws', 'bob');
      await sendText(bob, 'alice', 'one', 'b1');
      await phone.next((f) => f.body.case === 'push' && f.body.value.messages.some((m) => m.text === 'one'));
      // Someone replays the revoked token on the same device.
      for (const kind of ['tcp', 'ws'] as const) {
        const replay = await ctx.connect(kind);
        await expectFatal(replay, ErrorCode.TOKEN_REVOKED, replay.send({ case: 'login', value: { token: oldToken } }));
      }
      // The phone still holds its session: the next message is pushed to it.
      await sendText(bob, 'alice', 'two', 'b2');
      await phone.next((f) => f.body.case === 'push' && f.body.value.messages.some((m) => m.text === 'two'), 3000);
      assert.ok(!phone.frames.some((f) => f.body.case === 'kick' || f.body.case === 'error'), phone.describe());
    }));

  test('after a user-wide revocation, a token issued later logs in and stays', T, () =>
    withServer({}, async (ctx) => {
      const base = ctx.server.httpUrl;
      const old = await ctx.connect('tcp');
      await old.login(await apiToken(base, 'alice', 'phone'));
      const { status } = await post(base, '/api/v1/revoke', { user_id: 'alice' });
      assert.equal(status, 200);
      await expectKick(old, ErrorCode.TOKEN_REVOKED, 1000);
      await sleep(5);
      const fresh = await ctx.connect('ws');
      await fresh.login(await apiToken(base, 'alice', 'laptop'));
      await sleep(200);
      await pingPong(fresh);
      assert.ok(!fresh.frames.some((f) => f.body.case === 'kick'), fresh.describe());
    }));

  test('revoking needs the admin key and a valid body', T, () =>
    withServer({}, async (ctx) => {
      const base = ctx.server.httpUrl;
      const alice = await ctx.login('tcp', 'alice');
      for (const key of [null, 'wrong-key-0123456789', `${ADMIN_KEY}x`, '']) {
        const { status, json } = await post(base, '/api/v1/revoke', { user_id: 'alice' }, key);
        assert.equal(status, 401);
        assert.equal((json.error as { code: string }).code, 'UNAUTHORIZED');
      }
      for (const body of [{}, { user_id: 'bad id!' }, { user_id: 'alice', device_id: 7 }, { user_id: 'alice', extra: 1 }]) {
        const { status, json } = await post(base, '/api/v1/revoke', body);
        assert.equal(status, 400, JSON.stringify(body));
        assert.equal((json.error as { code: string }).code, 'BAD_REQUEST');
      }
      await pingPong(alice); // nothing happened to alice
    }));
});

describe('token expiry', () => {
  test('a connection outlives its token (checked at login), but reconnecting with the expired token is refused with TOKEN_EXPIRED', T, () =>
    withServer({}, async (ctx) => {
      // `exp` is in whole seconds: a 2 s token has 1-2 s left, time enough to log in on a busy machine.
      const token = await ctx.server.token('alice', 'd1', 2);
      const c = await ctx.connect('tcp');
      await c.login(token);
      await sleep(3100);
      await pingPong(c);
      const again = await ctx.connect('ws');
      await expectFatal(again, ErrorCode.TOKEN_EXPIRED, again.send({ case: 'login', value: { token } }));
    }));
});

describe('secret rotation from a secrets file', () => {
  test('a new secret signs, the old one is accepted until removed, and no connection is dropped', T, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'longlink-secrets-'));
    const file = join(dir, 'secrets');
    const oldSecret = 'old-secret-0123456789abcdef';
    const newSecret = 'new-secret-0123456789abcdef';
    writeFileSync(file, `# current first\n${oldSecret}\n`);
    try {
      await withServer({ 'token-secrets-file': file }, async (ctx) => {
        const base = ctx.server.httpUrl;
        const oldToken = (await new TokenService(oldSecret).issue('alice', 'd1', 'other', 3600)).token;
        const alice = await ctx.connect('tcp');
        await alice.login(oldToken);
        const bob = await ctx.connect('ws');
        await bob.login((await new TokenService(oldSecret).issue('bob', 'd1', 'other', 3600)).token);

        // Rotate: the new secret first, the old one still accepted.
        writeFileSync(file, `${newSecret}\n${oldSecret}\n`);
        const newToken = (await new TokenService(newSecret).issue('alice', 'd2', 'other', 3600)).token;
        await waitForLogin(ctx.connect.bind(ctx), newToken, 'the new secret to be accepted');
        // Tokens the API issues now are signed with the new secret.
        const issued = await apiToken(base, 'carol', 'd1');
        await new TokenService(newSecret).verify(issued);
        await assert.rejects(new TokenService(oldSecret).verify(issued));
        // The old token still logs in during the rotation.
        const alice2 = await ctx.connect('ws');
        await alice2.login((await new TokenService(oldSecret).issue('alice', 'd3', 'other', 3600)).token);

        // Retire the old secret: its tokens are refused from now on...
        writeFileSync(file, `${newSecret}\n`);
        const probe = (await new TokenService(oldSecret).issue('probe', 'd1', 'other', 3600)).token;
        const deadline = Date.now() + 5000;
        for (;;) {
          const c = await ctx.connect('tcp');
          c.send({ case: 'login', value: { token: probe } });
          const reply = await c.next((f) => f.body.case === 'loginResult' || f.body.case === 'error', 5000);
          c.close();
          if (reply.body.case === 'error') {
            assert.equal(reply.body.value.code, ErrorCode.TOKEN_INVALID);
            break;
          }
          assert.ok(Date.now() < deadline, 'the retired secret was still accepted after 5 s');
          await sleep(200);
        }
        // ...but the connections that logged in with it were never dropped, and still chat.
        await sendText(alice, 'bob', 'still here', 'r1');
        await bob.next((f) => f.body.case === 'push' && f.body.value.messages.some((m) => m.text === 'still here'));
        for (const c of [alice, bob, alice2]) {
          await pingPong(c);
          assert.ok(!c.frames.some((f) => f.body.case === 'kick' || (f.body.case === 'error' && f.body.value.fatal)), c.describe());
        }
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** Retries a login until it succeeds (the secrets file is re-read within about a second). */
async function waitForLogin(connect: (kind: 'tcp') => Promise<RawClient>, token: string, what: string): Promise<RawClient> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const c = await connect('tcp');
    c.send({ case: 'login', value: { token } });
    const reply = await c.next((f) => f.body.case === 'loginResult' || f.body.case === 'error', 5000);
    if (reply.body.case === 'loginResult') return c;
    c.close();
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(200);
  }
}

describe('revocation across a cluster', () => {
  let redis: RedisServer;
  let postgres: PostgresServer;
  let logic: RunningLogic;
  let gateways: RunningGateway[] = [];
  let dataDir: string;

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'longlink-revoke-'));
    [redis, postgres] = await Promise.all([startRedis(), startPostgres()]);
    const config = (nodeId: string) => loadServerConfig({
      'node-id': nodeId, 'http-port': '0', 'tcp-port': '0', 'data-dir': dataDir,
      'admin-key': ADMIN_KEY, 'token-secret': TOKEN_SECRET, 'redis-url': redis.url, 'postgres-url': postgres.url,
      'bus-shards': '4', 'log-level': 'warn',
    }, {});
    logic = await startLogic(config('lg-1'));
    gateways = [await startGateway(config('gw-1')), await startGateway(config('gw-2'))];
  });

  after(async () => {
    for (const g of gateways) await g.stop();
    await logic?.stop();
    await redis?.stop();
    await postgres?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  test('devices on two gateways are kicked within a second; the old token is refused on both', T, async () => {
    const clients: RawClient[] = [];
    try {
      const tokens = [await apiToken(logic.httpUrl, 'alice', 'phone'), await apiToken(logic.httpUrl, 'alice', 'laptop')];
      for (const [i, g] of gateways.entries()) {
        const c = await RawClient.connect(i === 0 ? g.tcpUrl : g.wsUrl);
        clients.push(c);
        await c.login(tokens[i]!);
      }
      const started = Date.now();
      const { status, json } = await post(logic.httpUrl, '/api/v1/revoke', { user_id: 'alice' });
      assert.equal(status, 200, JSON.stringify(json));
      assert.equal(typeof json.revoked_before_ms, 'number');
      for (const c of clients) await expectKick(c, ErrorCode.TOKEN_REVOKED, 1000);
      assert.ok(Date.now() - started < 1500, `kicks took ${Date.now() - started} ms`);
      for (const [i, g] of gateways.entries()) {
        const c = await RawClient.connect(g.tcpUrl);
        clients.push(c);
        await expectFatal(c, ErrorCode.TOKEN_REVOKED, c.send({ case: 'login', value: { token: tokens[i]! } }));
      }
    } finally {
      for (const c of clients) c.close();
    }
  });
});
