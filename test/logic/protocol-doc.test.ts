// Claims of docs/protocol.md that a client written only from the doc relies
// on, checked against the server: sync cursors cover every conversation the
// request names (through `cursors` too), client_msg_id is counted in
// characters, a malformed conversation id is told apart from one that is not
// yours, and the HTTP API refuses an empty text with TEXT_EMPTY like the wire.
// And the doc's "Tokens" section, read from the doc (its tables and examples):
// the issue endpoint's fields, defaults, bounds, answer and refusals, the
// revoke and dev-login endpoints, and tokens signed without the API.
// (The worked exchange: test/protocol/worked-exchange.test.ts.)
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { SignJWT } from 'jose';
import { ErrorCode, errorName } from '../../src/protocol/index.js';
import { RawClient } from '../helpers/raw.js';
import { ADMIN_KEY, TOKEN_SECRET, type TestServer } from '../helpers/server.js';
import { expectError, online, request, sendOk, syncOnce, withServer } from './support.js';

const T = { timeout: 60_000 };

describe('the protocol doc and the server agree', () => {
  test('SyncResult.cursors covers a conversation named only through cursors, with nothing new in it', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const bob = await online(s, 'ws', 'bob');
      await sendOk(alice, { toUser: 'bob', text: 'one' });
      await sendOk(alice, { toUser: 'carol', text: 'two' });
      // bob has read u:alice:bob up to 1: nothing new; it is named only in cursors.
      const page = await syncOnce(bob, new Map([['u:alice:bob', 1]]));
      assert.deepEqual(page.messages, []);
      assert.equal(page.cursors.get('u:alice:bob'), 1, `cursors: ${JSON.stringify([...page.cursors])}`);
      alice.close();
      bob.close();
    });
  });

  test('client_msg_id is 1-128 characters, counted as characters (an emoji is one)', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const emoji = '😀'; // two UTF-16 units
      const ack = await sendOk(alice, { toUser: 'bob', clientMsgId: emoji.repeat(128), text: '128 characters of id' });
      assert.equal(ack.clientMsgId, emoji.repeat(128));
      await expectError(alice, { case: 'send', value: { toUser: 'bob', clientMsgId: emoji.repeat(129), text: 'too long' } }, ErrorCode.BAD_REQUEST);
      alice.close();
    });
  });

  test('a conversation id spelled wrong is BAD_REQUEST saying how ids are spelled; one well formed but not yours, FORBIDDEN', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      await sendOk(alice, { toUser: 'bob', text: 'hi' });
      const unsorted = await expectError(alice, { case: 'history', value: { conversationId: 'u:bob:alice', beforeSeq: 0n, limit: 0 } }, ErrorCode.BAD_REQUEST);
      assert.match(unsorted.message, /sorted \(u:alice:bob\)/);
      for (const id of ['alice', 'bob:alice', 'team']) {
        const e = await expectError(alice, { case: 'markRead', value: { conversationId: id, seq: 0n } }, ErrorCode.BAD_REQUEST);
        assert.match(e.message, /is not a conversation id: u:\{a\}:\{b\}/);
      }
      await expectError(alice, { case: 'history', value: { conversationId: 'u:bob:carol', beforeSeq: 0n, limit: 0 } }, ErrorCode.FORBIDDEN);
      alice.close();
    });
  });

  test('POST /api/v1/messages with an empty text: 400 TEXT_EMPTY, as on the wire', T, async () => {
    await withServer(async (s) => {
      const res = await fetch(`${s.httpUrl}/api/v1/messages`, {
        method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ to: 'bob', text: '' }),
      });
      assert.equal(res.status, 400);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'TEXT_EMPTY');
    });
  });
});

// ---- "Tokens", as the doc tells it -------------------------------------------

const DOC = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');

/** The text from `start` (a heading line) to the next heading of the same or a higher level. */
function part(text: string, start: string): string {
  const at = text.indexOf(`\n${start}\n`);
  assert.ok(at >= 0, `docs/protocol.md has "${start}"`);
  const level = /^#+/.exec(start)![0];
  const next = text.slice(at + start.length + 2).search(new RegExp(`^#{1,${level.length}} `, 'm'));
  return next < 0 ? text.slice(at) : text.slice(at, at + start.length + 2 + next);
}

const TOKENS = part(DOC, '## Tokens');
const ISSUE = part(TOKENS, '### `POST /api/v1/tokens`: issue a token');
const REVOKE = part(TOKENS, '### `POST /api/v1/revoke`: log a user or a device out');
const DEV = part(TOKENS, '### `POST /api/v1/dev/token`: dev login (a development server only)');
const SELF_SIGNED = part(TOKENS, '### Signing tokens without the API');

/** The rows of the markdown table whose header row is `header`, as cells. */
function table(text: string, header: string[]): string[][] {
  const lines = text.split('\n');
  const at = lines.findIndex((l) => l === `| ${header.join(' | ')} |`);
  assert.ok(at >= 0, `a table | ${header.join(' | ')} |`);
  const rows: string[][] = [];
  for (const l of lines.slice(at + 2)) {
    if (!l.startsWith('|')) break;
    rows.push(l.slice(1, -1).split(' | ').map((c) => c.trim()));
  }
  return rows;
}

/** The fenced block of a language in `text`. */
function fenced(text: string, lang: string): string {
  const m = new RegExp(`^\`\`\`${lang}\\n([\\s\\S]*?)^\`\`\`$`, 'm').exec(text);
  assert.ok(m, `a \`\`\`${lang} block`);
  return m[1]!;
}

const num = (s: string): number => Number(s.replace(/,/g, ''));

/** The fields table: field → its rule and default. */
const FIELDS = new Map(table(ISSUE, ['field', 'type', 'rule', 'default']).map(([f, type, rule, dflt]) => [f!.replace(/`/g, ''), { type: type!, rule: rule!, dflt: dflt! }]));
/** The refusals table: code → status. */
const REFUSALS = new Map(table(ISSUE, ['status', 'code', 'when']).map(([status, code]) => [code!.replace(/`/g, ''), Number(status)]));

interface Reply {
  status: number;
  body: Record<string, unknown>;
}

/** An HTTP request over node:http (the server may answer before it has read a large body). */
function call(s: TestServer, method: string, path: string, headers: Record<string, string>, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${s.httpUrl}${path}`, { method, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> });
        } catch {
          reject(new Error(`${method} ${path}: ${res.statusCode} with a body that is not JSON: ${text.slice(0, 200)}`));
        }
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const ADMIN = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' };
const issue = (s: TestServer, json: unknown, headers: Record<string, string> = ADMIN) => call(s, 'POST', '/api/v1/tokens', headers, typeof json === 'string' ? json : JSON.stringify(json));

/** A refusal as the doc's table says: its status, `{"error": {"code", "message"}}`, and no token. */
function assertRefused(r: Reply, code: string, what: string): string {
  const status = REFUSALS.get(code);
  assert.ok(status, `the doc's refusals list ${code}`);
  assert.equal(r.status, status, `${what}: ${JSON.stringify(r.body)}`);
  assert.deepEqual(Object.keys(r.body), ['error'], what);
  const e = r.body.error as { code: unknown; message: unknown };
  assert.deepEqual(Object.keys(e), ['code', 'message'], what);
  assert.equal(e.code, code, `${what}: ${JSON.stringify(r.body)}`);
  assert.ok(typeof e.message === 'string' && e.message.length > 0, what);
  return e.message;
}

/** Logs in with `token`; the LoginResult, or the fatal Error's code name. */
async function loginWith(s: TestServer, token: string): Promise<{ userId: string; deviceId: string; platform: string } | string> {
  const c = await RawClient.connect(s.tcpUrl);
  try {
    const reply = await request(c, { case: 'login', value: { token } });
    if (reply.body.case === 'loginResult') {
      const { userId, deviceId, platform } = reply.body.value;
      return { userId, deviceId, platform };
    }
    assert.ok(reply.body.case === 'error', `a login is answered with a LoginResult or an Error, not ${reply.body.case}`);
    return errorName(reply.body.value.code);
  } finally {
    c.close();
  }
}

function jwtHeader(token: string): unknown {
  const parts = token.split('.');
  assert.equal(parts.length, 3, 'a JWT: header.payload.signature');
  return JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8'));
}

describe('the doc\'s Tokens section and the server agree', () => {
  test('the doc\'s example request is answered as its example answer shows, and the token logs in', T, async () => {
    await withServer(async (s) => {
      const shown = fenced(ISSUE, 'http');
      const [head, body] = shown.split('\n\n') as [string, string];
      const [requestLine, ...headerLines] = head.split('\n');
      assert.equal(requestLine, 'POST /api/v1/tokens HTTP/1.1');
      const headers = Object.fromEntries(headerLines.map((l) => l.split(': ') as [string, string]).map(([k, v]) => [k.toLowerCase(), v.replace('<admin key>', ADMIN_KEY)]));
      const asked = JSON.parse(body) as { user_id: string; device_id: string; platform: string; ttl_seconds: number };
      const example = JSON.parse(fenced(ISSUE, 'json')) as Record<string, unknown>;

      const t0 = Date.now();
      const r = await issue(s, body, headers);
      const t1 = Date.now();
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(Object.keys(r.body), Object.keys(example), 'the answer has the example\'s fields, in its order');
      for (const [k, v] of Object.entries(example)) assert.equal(typeof r.body[k], typeof v, `${k} is a ${typeof v}`);
      assert.deepEqual([r.body.user_id, r.body.device_id, r.body.platform], [example.user_id, example.device_id, example.platform]);
      // An HS256 JWT, whose expiry is a whole second: the issue time in seconds plus ttl_seconds.
      const token = r.body.token as string;
      assert.deepEqual(jwtHeader(token), { alg: 'HS256', typ: 'JWT' });
      assert.equal(token.split('.')[0], (example.token as string).split('.')[0], 'the example token\'s header is the real one');
      const expires = r.body.expires_at_ms as number;
      assert.equal(expires % 1000, 0);
      assert.ok(expires >= (Math.floor(t0 / 1000) + asked.ttl_seconds) * 1000 && expires <= (Math.floor(t1 / 1000) + asked.ttl_seconds) * 1000, `expires_at_ms ${expires}`);
      assert.deepEqual(await loginWith(s, token), { userId: asked.user_id, deviceId: asked.device_id, platform: asked.platform });
    });
  });

  test('the fields table: the defaults are the server\'s', T, async () => {
    await withServer(async (s) => {
      assert.equal(FIELDS.get('device_id')?.dflt, '`"default"`');
      assert.equal(FIELDS.get('platform')?.dflt, '`"other"`');
      const ttl = /\(([\d,]+): a day\)/.exec(FIELDS.get('ttl_seconds')?.dflt ?? '');
      assert.ok(ttl, 'the default ttl is the server\'s token lifetime, in seconds');
      const t0 = Date.now();
      const r = await issue(s, { user_id: 'alice' });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.device_id, 'default');
      assert.equal(r.body.platform, 'other');
      const expires = r.body.expires_at_ms as number;
      assert.ok(Math.abs(expires - (t0 + num(ttl[1]!) * 1000)) < 2000, `expires_at_ms ${expires}: ${ttl[1]} s from now`);
      // No other field is accepted.
      for (const extra of ['admin', 'expires_at_ms', 'ttl']) {
        assertRefused(await issue(s, { user_id: 'alice', [extra]: 1 }), 'BAD_REQUEST', `a field ${extra}`);
      }
    });
  });

  test('the fields table: each rule\'s bounds, just inside and just outside', T, async () => {
    await withServer(async (s) => {
      const ok = async (json: Record<string, unknown>) => {
        const r = await issue(s, json);
        assert.equal(r.status, 200, `${JSON.stringify(json)}: ${JSON.stringify(r.body)}`);
        for (const [k, v] of Object.entries(json)) if (k !== 'ttl_seconds') assert.equal(r.body[k], v);
      };
      const bad = async (json: Record<string, unknown>, field: string) => {
        const message = assertRefused(await issue(s, json), 'BAD_REQUEST', JSON.stringify(json).slice(0, 100));
        assert.ok(message.startsWith(`${field}: `), `the message is led by ${field}: ${message}`);
      };
      for (const field of ['user_id', 'device_id']) {
        const rule = /(\d+)-(\d+) characters of `([^`]+)`/.exec(FIELDS.get(field)?.rule ?? '');
        assert.ok(rule, `${field}: its length and characters`);
        const [min, max] = [Number(rule[1]), Number(rule[2])];
        const chars = rule[3]!.replace(/ /g, '').replace('A-Z', 'AZ').replace('a-z', 'az').replace('0-9', '09');
        const base = field === 'user_id' ? {} : { user_id: 'alice' };
        await ok({ ...base, [field]: chars });
        await ok({ ...base, [field]: 'x'.repeat(max) });
        await ok({ ...base, [field]: 'x'.repeat(min) });
        await bad({ ...base, [field]: 'x'.repeat(max + 1) }, field);
        if (min > 0) await bad({ ...base, [field]: '' }, field);
        for (const c of [':', ' ', '/', 'é', '+']) await bad({ ...base, [field]: `a${c}b` }, field);
        await bad({ ...base, [field]: 42 }, field);
      }
      assert.match(FIELDS.get('user_id')!.rule, /^required; .*not `system`/);
      await bad({ user_id: 'system' }, 'user_id');
      assertRefused(await issue(s, { device_id: 'phone' }), 'BAD_REQUEST', 'no user_id');

      const platform = /^(\d+)-(\d+) characters /.exec(FIELDS.get('platform')?.rule ?? '');
      assert.ok(platform, 'platform: its length');
      await ok({ user_id: 'alice', platform: 'p'.repeat(Number(platform[2])) });
      await ok({ user_id: 'alice', platform: 'smart fridge 🧊' });
      // Counted in code points, as the doc says: an emoji (two UTF-16 units) is one.
      assert.match(FIELDS.get('platform')!.rule, /\(Unicode code points: 😀 is one\)/);
      await ok({ user_id: 'alice', platform: '😀'.repeat(Number(platform[2])) });
      await bad({ user_id: 'alice', platform: '😀'.repeat(Number(platform[2]) + 1) }, 'platform');
      await bad({ user_id: 'alice', platform: 'p'.repeat(Number(platform[2]) + 1) }, 'platform');
      await bad({ user_id: 'alice', platform: '' }, 'platform');

      const ttl = /^([\d,]+) to ([\d,]+) /.exec(FIELDS.get('ttl_seconds')?.rule ?? '');
      assert.ok(ttl, 'ttl_seconds: its bounds');
      assert.equal(FIELDS.get('ttl_seconds')?.type, 'integer');
      const [lo, hi] = [num(ttl[1]!), num(ttl[2]!)];
      for (const t of [lo, hi]) {
        const t0 = Date.now();
        const r = await issue(s, { user_id: 'alice', ttl_seconds: t });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        assert.ok(Math.abs((r.body.expires_at_ms as number) - (t0 + t * 1000)) < 2000);
      }
      for (const t of [lo - 1, hi + 1, 0, -60, lo + 0.5, String(lo + 50)]) await bad({ user_id: 'alice', ttl_seconds: t }, 'ttl_seconds');
    });
  });

  test('the refusals table: each refusal with its status and code, and no token', T, async () => {
    await withServer(async (s) => {
      assert.deepEqual([...REFUSALS.keys()].sort(), ['BAD_JSON', 'BAD_REQUEST', 'BODY_TOO_LARGE', 'METHOD_NOT_ALLOWED', 'UNAUTHORIZED']);
      const json = { 'content-type': 'application/json' };
      // 401, before the body is read (a body that is not JSON does not matter).
      for (const auth of [undefined, `Basic ${ADMIN_KEY}`, `bearer ${ADMIN_KEY}`, 'Bearer wrong-admin-key-000000', `Bearer  ${ADMIN_KEY}`, `Bearer ${ADMIN_KEY}x`]) {
        const headers = auth === undefined ? json : { ...json, authorization: auth };
        assertRefused(await issue(s, { user_id: 'alice' }, headers), 'UNAUTHORIZED', `Authorization ${auth}`);
        assertRefused(await issue(s, 'not json', headers), 'UNAUTHORIZED', `Authorization ${auth}, a body that is not JSON`);
      }
      // 413 past 65,536 bytes; that many is fine.
      const limit = /at most ([\d,]+) bytes/.exec(ISSUE);
      assert.ok(limit, 'the doc gives the body limit');
      const small = JSON.stringify({ user_id: 'alice' });
      assert.equal((await issue(s, small + ' '.repeat(num(limit[1]!) - small.length))).status, 200, 'a body of exactly the limit');
      assertRefused(await issue(s, small + ' '.repeat(num(limit[1]!) - small.length + 1)), 'BODY_TOO_LARGE', 'a body one byte over');
      // 400 BAD_JSON: empty, or not JSON.
      for (const body of ['', '   ', 'not json', '{"user_id": "alice"']) assertRefused(await issue(s, body), 'BAD_JSON', JSON.stringify(body));
      // 400 BAD_REQUEST: not an object, no user_id, a rule broken, an unknown field.
      for (const body of [[], 'alice', null, 42, {}, { user_id: 'system' }, { user_id: 'alice', ttl_seconds: 5 }, { user_id: 'alice', admin: true }]) {
        assertRefused(await issue(s, JSON.stringify(body)), 'BAD_REQUEST', JSON.stringify(body));
      }
      // The content type is not required.
      assert.equal((await issue(s, small, { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'text/plain' })).status, 200);
      assert.equal((await issue(s, small, { authorization: `Bearer ${ADMIN_KEY}` })).status, 200);
      // 405 for another method.
      for (const method of ['GET', 'PUT', 'DELETE']) {
        assertRefused(await call(s, method, '/api/v1/tokens', ADMIN), 'METHOD_NOT_ALLOWED', method);
      }
    });
  });

  test('POST /api/v1/revoke answers as the doc shows; the tokens issued before are refused and their connections kicked', T, async () => {
    await withServer(async (s) => {
      const shown = /`200 (\{"user_id"[^`]*\})`/.exec(REVOKE);
      assert.ok(shown, 'the doc shows the answer');
      const example = JSON.parse(shown[1]!) as Record<string, unknown>;
      const token = (await issue(s, { user_id: 'alice', device_id: 'phone' })).body.token as string;
      const open = await RawClient.connect(s.tcpUrl);
      await open.login(token);

      const r = await call(s, 'POST', '/api/v1/revoke', ADMIN, JSON.stringify({ user_id: 'alice' }));
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(Object.keys(r.body), Object.keys(example));
      assert.equal(r.body.user_id, 'alice');
      assert.equal(r.body.device_id, null, 'device_id null: every device');
      assert.equal(typeof r.body.revoked_before_ms, 'number');
      const kick = await open.nextOf('kick');
      assert.ok(kick.body.case === 'kick');
      assert.deepEqual([errorName(kick.body.value.code), kick.body.value.reconnect], ['TOKEN_REVOKED', false]);
      assert.equal(await loginWith(s, token), 'TOKEN_REVOKED');
      const later = (await issue(s, { user_id: 'alice', device_id: 'phone' })).body.token as string;
      assert.deepEqual(await loginWith(s, later), { userId: 'alice', deviceId: 'phone', platform: 'other' }, 'a token issued later logs in');

      // One device: that device's tokens only.
      const laptop = (await issue(s, { user_id: 'bob', device_id: 'laptop' })).body.token as string;
      const phone = (await issue(s, { user_id: 'bob', device_id: 'phone' })).body.token as string;
      const one = await call(s, 'POST', '/api/v1/revoke', ADMIN, JSON.stringify({ user_id: 'bob', device_id: 'laptop' }));
      assert.equal(one.status, 200);
      assert.equal(one.body.device_id, 'laptop');
      assert.equal(await loginWith(s, laptop), 'TOKEN_REVOKED');
      assert.deepEqual(await loginWith(s, phone), { userId: 'bob', deviceId: 'phone', platform: 'other' });

      // Refusals as for /api/v1/tokens.
      assertRefused(await call(s, 'POST', '/api/v1/revoke', { 'content-type': 'application/json' }, '{"user_id":"bob"}'), 'UNAUTHORIZED', 'no admin key');
      assertRefused(await call(s, 'POST', '/api/v1/revoke', ADMIN, '{"user_id":"bob","platform":"ios"}'), 'BAD_REQUEST', 'a field not listed');
      assertRefused(await call(s, 'POST', '/api/v1/revoke', ADMIN, '{"user_id":"a b"}'), 'BAD_REQUEST', 'a bad id');
      assertRefused(await call(s, 'POST', '/api/v1/revoke', ADMIN, 'nope'), 'BAD_JSON', 'not JSON');
      open.close();
    });
  });

  test('POST /api/v1/dev/token: 403 DEV_LOGIN_DISABLED unless turned on (before the body is read); on, the documented defaults', T, async () => {
    const noKey = { 'content-type': 'application/json' };
    assert.match(DEV, /403\s+`DEV_LOGIN_DISABLED` before reading the body/);
    await withServer(async (s) => {
      for (const body of ['{"user_id":"alice"}', 'not json', '']) {
        const r = await call(s, 'POST', '/api/v1/dev/token', noKey, body);
        assert.equal(r.status, 403, JSON.stringify(r.body));
        assert.equal((r.body.error as { code: string }).code, 'DEV_LOGIN_DISABLED');
      }
      // With the admin key too: it is not a way around.
      assert.equal((await call(s, 'POST', '/api/v1/dev/token', ADMIN, '{"user_id":"alice"}')).status, 403);
    });
    assert.match(DEV, /defaults `"web"` and `"web"`; no `ttl_seconds`: the\s+token lives `LONGLINK_TOKEN_TTL`/);
    await withServer(async (s) => {
      const t0 = Date.now();
      const r = await call(s, 'POST', '/api/v1/dev/token', noKey, '{"user_id":"alice"}');
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(Object.keys(r.body), Object.keys(JSON.parse(fenced(ISSUE, 'json')) as object), 'the answer is as from /api/v1/tokens');
      assert.deepEqual([r.body.user_id, r.body.device_id, r.body.platform], ['alice', 'web', 'web']);
      assert.ok(Math.abs((r.body.expires_at_ms as number) - (t0 + 600_000)) < 2000, 'the server\'s token lifetime');
      assert.deepEqual(await loginWith(s, r.body.token as string), { userId: 'alice', deviceId: 'web', platform: 'web' });
      const mine = await call(s, 'POST', '/api/v1/dev/token', noKey, '{"user_id":"bob","device_id":"tablet","platform":"android"}');
      assert.deepEqual([mine.body.user_id, mine.body.device_id, mine.body.platform], ['bob', 'tablet', 'android']);
      assertRefused(await call(s, 'POST', '/api/v1/dev/token', noKey, '{"user_id":"alice","ttl_seconds":60}'), 'BAD_REQUEST', 'ttl_seconds');
      assertRefused(await call(s, 'POST', '/api/v1/dev/token', noKey, '{"user_id":"system"}'), 'BAD_REQUEST', 'system');
      assertRefused(await call(s, 'POST', '/api/v1/dev/token', noKey, 'nope'), 'BAD_JSON', 'not JSON');
    }, { 'dev-login': '1', 'token-ttl': '600' });
  });

  test('a token signed with the secret and the documented claims logs in; one missing a claim is TOKEN_INVALID', T, async () => {
    for (const claim of ['iss', 'sub', 'dev', 'plt', 'exp', 'iatms', 'iat']) assert.match(SELF_SIGNED, new RegExp(`\`${claim}\``), `the doc names ${claim}`);
    await withServer(async (s) => {
      const key = new TextEncoder().encode(TOKEN_SECRET);
      const nowS = Math.floor(Date.now() / 1000);
      const sign = (claims: Record<string, unknown>, secret = key) =>
        new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(secret);
      const full = { iss: 'longlink', sub: 'carol', dev: 'watch', plt: 'wearos', exp: nowS + 600, iatms: Date.now() };
      assert.deepEqual(await loginWith(s, await sign(full)), { userId: 'carol', deviceId: 'watch', platform: 'wearos' });
      for (const missing of ['iss', 'sub', 'dev', 'plt', 'exp'] as const) {
        const { [missing]: _gone, ...rest } = full;
        assert.equal(await loginWith(s, await sign(rest)), 'TOKEN_INVALID', `without ${missing}`);
      }
      assert.equal(await loginWith(s, await sign({ ...full, iss: 'someone-else' })), 'TOKEN_INVALID', 'another issuer');
      assert.equal(await loginWith(s, await sign({ ...full, sub: 'system' })), 'TOKEN_INVALID', 'sub system');
      assert.equal(await loginWith(s, await sign(full, new TextEncoder().encode('another-secret-0123456789abcdef'))), 'TOKEN_INVALID', 'another secret');
      assert.equal(await loginWith(s, await sign({ ...full, exp: nowS - 5 })), 'TOKEN_EXPIRED', 'expired');
      // iat (seconds) in place of iatms; neither: refused, nothing to check revocations with.
      const { iatms: _i, ...timeless } = full;
      const carol = { userId: 'carol', deviceId: 'watch', platform: 'wearos' };
      const withIat = await sign({ ...timeless, iat: nowS - 1 });
      assert.deepEqual(await loginWith(s, withIat), carol, 'iat (seconds) in place of iatms');
      assert.match(SELF_SIGNED, /with\s+neither `iatms` nor `iat`\), or signed otherwise, is refused at login with `TOKEN_INVALID`/);
      assert.equal(await loginWith(s, await sign(timeless)), 'TOKEN_INVALID', 'neither iat nor iatms: no issue time to check revocations with');
      // Revocations compare with the issue time.
      assert.equal((await call(s, 'POST', '/api/v1/revoke', ADMIN, JSON.stringify({ user_id: 'carol' }))).status, 200);
      assert.equal(await loginWith(s, withIat), 'TOKEN_REVOKED', 'iat before the revocation');
      await new Promise((r) => setTimeout(r, 5));
      assert.deepEqual(await loginWith(s, await sign({ ...full, iatms: Date.now() })), carol, 'one issued later logs in');
    });
  });
});
