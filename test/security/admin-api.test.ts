// The HTTP admin API opens only with the admin key, given exactly as
// `Authorization: Bearer <key>`; the dev login only where it is turned on;
// forged tokens never log in. Each refusal is coded and has no effect: no
// token issued, nothing stored or pushed, nobody kicked. Over real sockets
// against a real embedded server. (Client operations: authorization.test.ts.)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { SignJWT } from 'jose';
import { TokenService } from '../../src/auth/tokens.js';
import { ErrorCode, errorName } from '../../src/protocol/index.js';
import { RawClient } from '../helpers/raw.js';
import { ADMIN_KEY, TOKEN_SECRET, startTestServer, type TestServer } from '../helpers/server.js';
import { barrier, online, pushed, sleep, syncAll, withServer, type Transport } from '../logic/support.js';

/** No test may hang the suite. */
const T = { timeout: 60_000 };

/** Tests log in many times from 127.0.0.1: lift the per-address login limit. */
const MANY_LOGINS = { 'login-attempts-per-minute': '100000' };

interface Reply {
  status: number;
  body: Record<string, unknown>;
}

async function call(s: TestServer, path: string, init: { headers?: Record<string, string>; json?: unknown; method?: string } = {}): Promise<Reply> {
  const res = await fetch(`${s.httpUrl}${path}`, {
    method: init.method ?? 'POST',
    headers: { 'content-type': 'application/json', ...init.headers },
    body: init.json === undefined ? undefined : JSON.stringify(init.json),
  });
  const text = await res.text();
  try {
    return { status: res.status, body: JSON.parse(text) as Record<string, unknown> };
  } catch {
    assert.fail(`${path} answered ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`);
  }
}

function assertCoded(r: Reply, status: number, code: string, what: string): void {
  assert.equal(r.status, status, `${what}: ${JSON.stringify(r.body)}`);
  const e = r.body.error as { code?: unknown; message?: unknown } | undefined;
  assert.equal(e?.code, code, `${what}: ${JSON.stringify(r.body)}`);
  assert.ok(typeof e.message === 'string' && e.message.length > 0, `${what}: the error explains itself`);
}

/** Every endpoint that needs the admin key, with a body it would accept. */
const ADMIN_ENDPOINTS: { path: string; json: Record<string, unknown> }[] = [
  { path: '/api/v1/tokens', json: { user_id: 'mallory' } },
  { path: '/api/v1/messages', json: { to: 'bob', from: 'mallory', text: 'from the outside' } },
  { path: '/api/v1/broadcast', json: { text: 'hello, all' } },
  { path: '/api/v1/revoke', json: { user_id: 'bob' } },
  { path: '/api/v1/dead-letters/replay', json: {} },
];

describe('admin API: the admin key, exactly, or 401 UNAUTHORIZED', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer(MANY_LOGINS);
  });
  after(async () => {
    await s?.close();
  });

  test('no key, wrong and near-miss keys, other schemes, the key in the wrong place: refused, with no effect', T, async () => {
    const bob = await online(s, 'tcp', 'bob');
    const bobToken = await s.token('bob');
    const key = ADMIN_KEY;
    const b64 = (x: string) => Buffer.from(x).toString('base64');
    const flip = (x: string, i: number) => x.slice(0, i) + (x[i] === 'a' ? 'b' : 'a') + x.slice(i + 1);
    /** [what, headers, query string] */
    const variants: [string, Record<string, string>, string][] = [
      ['no Authorization', {}, ''],
      ['Bearer and nothing', { authorization: 'Bearer' }, ''],
      ['Bearer and a space', { authorization: 'Bearer ' }, ''],
      ['a wrong key', { authorization: 'Bearer wrong-key' }, ''],
      ['the key less its last character', { authorization: `Bearer ${key.slice(0, -1)}` }, ''],
      ['the key and one more character', { authorization: `Bearer ${key}x` }, ''],
      ['the key with its first character changed', { authorization: `Bearer ${flip(key, 0)}` }, ''],
      ['the key with its last character changed', { authorization: `Bearer ${flip(key, key.length - 1)}` }, ''],
      ['the key in upper case', { authorization: `Bearer ${key.toUpperCase()}` }, ''],
      ['the key after two spaces', { authorization: `Bearer  ${key}` }, ''],
      ['the key twice', { authorization: `Bearer ${key}, Bearer ${key}` }, ''],
      ['the key, 10 KB long', { authorization: `Bearer ${key.repeat(400)}` }, ''],
      ['a login token', { authorization: `Bearer ${bobToken}` }, ''],
      ['the token secret', { authorization: `Bearer ${TOKEN_SECRET}` }, ''],
      ['scheme in lower case', { authorization: `bearer ${key}` }, ''],
      ['scheme in upper case', { authorization: `BEARER ${key}` }, ''],
      ['no scheme', { authorization: key }, ''],
      ['Basic admin:key', { authorization: `Basic ${b64(`admin:${key}`)}` }, ''],
      ['Basic key:', { authorization: `Basic ${b64(`${key}:`)}` }, ''],
      ['Basic key', { authorization: `Basic ${key}` }, ''],
      ['Token key', { authorization: `Token ${key}` }, ''],
      ['Digest key', { authorization: `Digest ${key}` }, ''],
      ['X-Admin-Key header', { 'x-admin-key': key }, ''],
      ['X-Api-Key header', { 'x-api-key': key }, ''],
      ['Proxy-Authorization', { 'proxy-authorization': `Bearer ${key}` }, ''],
      ['a cookie', { cookie: `admin_key=${key}; token=${key}` }, ''],
      ['the query string', {}, `?admin_key=${key}&key=${key}&access_token=${key}`],
    ];
    for (const { path, json } of ADMIN_ENDPOINTS) {
      for (const [what, headers, query] of variants) {
        const r = await call(s, path + query, { headers, json });
        assertCoded(r, 401, 'UNAUTHORIZED', `${path} with ${what}`);
        assert.deepEqual(Object.keys(r.body), ['error'], `${path} with ${what}: nothing but the error`);
      }
      // The key in the body is no key either.
      assertCoded(await call(s, path, { json: { ...json, admin_key: key } }), 401, 'UNAUTHORIZED', `${path} with the key in the body`);
    }
    // Every proper prefix of the key, whatever its length: 401, never a 500 (keys are hashed before the comparison).
    for (let n = 1; n < key.length; n++) {
      assertCoded(await call(s, '/api/v1/tokens', { headers: { authorization: `Bearer ${key.slice(0, n)}` }, json: { user_id: 'mallory' } }),
        401, 'UNAUTHORIZED', `a ${n}-character prefix of the key`);
    }

    // No effect: bob got no message or broadcast, was not kicked, and has nothing to sync.
    await barrier(bob);
    await sleep(300);
    assert.deepEqual(bob.frames.filter((f) => f.body.case !== 'pong' && f.body.case !== 'loginResult').map((f) => f.body.case), [], bob.describe());
    assert.equal(bob.closed, false);
    assert.deepEqual((await syncAll(bob)).messages, []);

    // The right key opens each endpoint (the refusals above were about the key, not the bodies).
    const ok = { authorization: `Bearer ${key}` };
    for (const { path, json } of ADMIN_ENDPOINTS) {
      const r = await call(s, path, { headers: ok, json });
      assert.equal(r.status, 200, `${path} with the key: ${JSON.stringify(r.body)}`);
    }
    assert.equal(pushed(bob).length + bob.frames.filter((f) => f.body.case === 'event' || f.body.case === 'kick').length > 0, true,
      'the accepted requests reached bob');
    bob.close();
  });

  test('open endpoints stay open and give nothing an admin would: health, discovery', T, async () => {
    for (const path of ['/healthz', '/api/v1/gateways']) {
      const r = await call(s, path, { method: 'GET' });
      assert.equal(r.status, 200, path);
      assert.ok(!JSON.stringify(r.body).includes(ADMIN_KEY) && !JSON.stringify(r.body).includes(TOKEN_SECRET), `${path} leaks a secret`);
    }
  });
});

describe('dev login', () => {
  test('off: 403 DEV_LOGIN_DISABLED, even with the admin key', T, async () => {
    await withServer(async (s) => {
      for (const headers of [{}, { authorization: `Bearer ${ADMIN_KEY}` }] as Record<string, string>[]) {
        assertCoded(await call(s, '/api/v1/dev/token', { headers, json: { user_id: 'alice' } }), 403, 'DEV_LOGIN_DISABLED', 'dev login off');
      }
    }, { 'dev-login': '0' });
  });

  test('on: a token that logs in, never for the system user, and no key to the admin API', T, async () => {
    await withServer(async (s) => {
      const r = await call(s, '/api/v1/dev/token', { json: { user_id: 'alice' } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const c = await RawClient.connect(s.wsUrl);
      const login = await c.login(r.body.token as string);
      assert.ok(login.body.case === 'loginResult' && login.body.value.userId === 'alice');
      c.close();
      assertCoded(await call(s, '/api/v1/dev/token', { json: { user_id: 'system' } }), 400, 'BAD_REQUEST', 'a dev token for the system user');
      assertCoded(await call(s, '/api/v1/tokens', { headers: { authorization: `Bearer ${r.body.token as string}` }, json: { user_id: 'bob' } }),
        401, 'UNAUTHORIZED', 'a dev token as the admin key');
    }, { 'dev-login': '1' });
  });
});

// ---------------------------------------------------------------------------

const b64url = (x: unknown) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');

/** A JWT signed by hand (HS256), for headers a JWT library refuses to write. */
function hs256(header: Record<string, unknown>, payload: Record<string, unknown>, secret: string): string {
  const input = `${b64url(header)}.${b64url(payload)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

describe('forged tokens never log in (TOKEN_INVALID, fatal), and frames behind them are never acted on', () => {
  test('alg none, other algorithms, near-miss secrets, tampered parts, forged-and-expired, not yet valid, the admin key', T, async () => {
    await withServer(async (s) => {
      const nowS = Math.floor(Date.now() / 1000);
      const claims = { sub: 'alice', dev: 'd1', plt: 'other', iss: 'longlink', iat: nowS, exp: nowS + 3600 };
      const real = await s.token('alice');
      const [h, p, sig] = real.split('.') as [string, string, string];
      const bobSig = (await s.token('bob')).split('.')[2]!;
      const sign = (secret: string, alg = 'HS256', extra: Record<string, unknown> = {}) =>
        new SignJWT({ ...claims, ...extra }).setProtectedHeader({ alg, typ: 'JWT' }).sign(new TextEncoder().encode(secret));
      const forged: [string, string][] = [
        ['alg none, no signature', `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claims)}.`],
        ['alg none, the real signature kept', `${b64url({ alg: 'none', typ: 'JWT' })}.${p}.${sig}`],
        ['alg None', `${b64url({ alg: 'None', typ: 'JWT' })}.${b64url(claims)}.`],
        ['HS512 with the right secret', await sign(TOKEN_SECRET, 'HS512')],
        ['HS384 header on an HS256 signature', `${b64url({ alg: 'HS384', typ: 'JWT' })}.${p}.${sig}`],
        ['the secret less its last character', await sign(TOKEN_SECRET.slice(0, -1))],
        ['the secret and one more character', await sign(`${TOKEN_SECRET}!`)],
        ['another server\'s secret', (await new TokenService('another-server-secret-0123456789').issue('alice', 'd1', 'other', 3600)).token],
        ['signed with the admin key', await sign(ADMIN_KEY)],
        ['forged and expired', await sign('some-other-secret-0123456789abcdef', 'HS256', { iat: nowS - 7200, exp: nowS - 60 })],
        ['a one-character change in the payload', `${h}.${b64url({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), sub: 'alicf' })}.${sig}`],
        ['the payload made to last longer', `${h}.${b64url({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), exp: nowS + 9e8 })}.${sig}`],
        ['alice\'s payload with bob\'s signature', `${h}.${p}.${bobSig}`],
        ['the signature truncated', `${h}.${p}.${sig.slice(0, -2)}`],
        ['an unknown critical header', hs256({ alg: 'HS256', typ: 'JWT', crit: ['x-longlink'], 'x-longlink': 1 }, claims, TOKEN_SECRET)],
        ['not valid yet (nbf in an hour)', await sign(TOKEN_SECRET, 'HS256', { nbf: nowS + 3600 })],
        ['no expiry, rightly signed', await sign(TOKEN_SECRET, 'HS256', { exp: undefined })],
        ['five parts (JWE shape)', `${h}.${p}.${sig}.${sig}.${sig}`],
        ['the admin key as a token', ADMIN_KEY],
        ['the token secret as a token', TOKEN_SECRET],
      ];
      const carol = await online(s, 'tcp', 'carol');
      for (const [i, [what, token]] of forged.entries()) {
        const kind: Transport = i % 2 === 0 ? 'tcp' : 'ws';
        const c = await RawClient.connect(kind === 'tcp' ? s.tcpUrl : s.wsUrl);
        // A send pipelined right behind the login: it must never be delivered.
        const loginId = c.send({ case: 'login', value: { token } });
        c.send({ case: 'send', value: { clientMsgId: `forged-${i}`, toUser: 'carol', text: `forged ${what}` } });
        const reply = await c.next((f) => f.id === loginId);
        assert.equal(reply.body.case, 'error', `${what}: ${c.describe()}`);
        if (reply.body.case === 'error') {
          assert.equal(errorName(reply.body.value.code), errorName(ErrorCode.TOKEN_INVALID), `${what} (${kind}): ${reply.body.value.message}`);
          assert.equal(reply.body.value.fatal, true, what);
        }
        await c.waitClosed();
        assert.ok(!c.frames.some((f) => f.body.case === 'loginResult' || f.body.case === 'sendAck'), `${what}: ${c.describe()}`);
      }
      await barrier(carol);
      await sleep(200);
      assert.deepEqual(pushed(carol), [], 'a forged login delivered something');
      assert.deepEqual((await syncAll(carol)).messages, []);
      // The real token still works, and is alice.
      const alice = await RawClient.connect(s.tcpUrl);
      const ok = await alice.login(real);
      assert.ok(ok.body.case === 'loginResult' && ok.body.value.userId === 'alice');
      for (const c of [alice, carol]) c.close();
    }, MANY_LOGINS);
  });
});
