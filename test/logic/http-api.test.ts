// The HTTP API against a real embedded server: tokens, business push,
// discovery and health, and the error contract {"error": {"code", "message"}}.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { RawClient } from '../helpers/raw.js';
import { ADMIN_KEY, TOKEN_SECRET, startTestServer, type TestServer } from '../helpers/server.js';
import { HttpApi } from '../../src/logic/http-api.js';
import { BusRequester } from '../../src/logic/bus-requests.js';
import { TokenService } from '../../src/auth/tokens.js';
import { MemoryBus } from '../../src/engines/bus-memory.js';
import { MemorySessions } from '../../src/engines/sessions-memory.js';
import { MemoryRegistry } from '../../src/engines/registry-memory.js';
import { barrier, history, online, pushed, sleep, syncAll, TRANSPORTS, until, urlOf, waitPushed } from './support.js';

/** No test may hang the suite. */
const T = { timeout: 120_000 };

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(async () => {
  await s.close();
});

interface Reply {
  status: number;
  contentType: string;
  body: Record<string, unknown>;
}

async function call(method: string, path: string, options: { body?: string; auth?: string | null; json?: unknown; base?: string } = {}): Promise<Reply> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const auth = options.auth === undefined ? `Bearer ${ADMIN_KEY}` : options.auth;
  if (auth !== null) headers.authorization = auth;
  const body = options.json !== undefined ? JSON.stringify(options.json) : options.body;
  const res = await fetch(`${options.base ?? s.httpUrl}${path}`, { method, headers, body });
  const text = await res.text();
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    assert.fail(`${method} ${path} answered ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`);
  }
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', body: parsed };
}

function assertError(r: Reply, status: number, code: string): void {
  assert.equal(r.status, status, JSON.stringify(r.body));
  assert.match(r.contentType, /^application\/json/);
  const e = r.body.error as { code?: unknown; message?: unknown } | undefined;
  assert.ok(e, `an error object: ${JSON.stringify(r.body)}`);
  assert.equal(e.code, code);
  assert.equal(typeof e.message, 'string');
  assert.ok((e.message as string).length > 0);
}

const tokenOf = (r: Reply) => r.body.token as string;

describe('POST /api/v1/tokens', () => {
  test('with the admin key: a token that logs in over TCP and WS, with defaults', T, async () => {
    const t0 = Date.now();
    const r = await call('POST', '/api/v1/tokens', { json: { user_id: 'alice' } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.match(r.contentType, /^application\/json/);
    assert.equal(r.body.user_id, 'alice');
    assert.equal(r.body.device_id, 'default');
    assert.equal(r.body.platform, 'other');
    assert.equal(typeof r.body.token, 'string');
    const expires = r.body.expires_at_ms as number;
    assert.ok(Math.abs(expires - (t0 + 86_400_000)) < 5_000, `expires_at_ms ${expires} about a day from now`);
    for (const t of TRANSPORTS) {
      const c = await RawClient.connect(urlOf(s, t));
      const login = await c.login(tokenOf(r));
      assert.ok(login.body.case === 'loginResult');
      assert.equal(login.body.value.userId, 'alice');
      assert.equal(login.body.value.deviceId, 'default');
      assert.equal(login.body.value.platform, 'other');
      c.close();
    }
  });

  test('device, platform and ttl are honoured', T, async () => {
    const t0 = Date.now();
    const r = await call('POST', '/api/v1/tokens', { json: { user_id: 'bob.smith@example', device_id: 'phone-1', platform: 'ios', ttl_seconds: 60 } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.device_id, 'phone-1');
    assert.equal(r.body.platform, 'ios');
    assert.ok(Math.abs((r.body.expires_at_ms as number) - (t0 + 60_000)) < 5_000);
    const c = await RawClient.connect(s.tcpUrl);
    const login = await c.login(tokenOf(r));
    assert.ok(login.body.case === 'loginResult');
    assert.deepEqual([login.body.value.userId, login.body.value.deviceId, login.body.value.platform], ['bob.smith@example', 'phone-1', 'ios']);
    c.close();
  });

  test('without or with a wrong admin key: 401 UNAUTHORIZED', T, async () => {
    for (const auth of [null, 'Bearer wrong-key', `Bearer ${ADMIN_KEY}x`, `Basic ${ADMIN_KEY}`, `bearer ${ADMIN_KEY}`, 'Bearer ']) {
      const r = await call('POST', '/api/v1/tokens', { auth, json: { user_id: 'alice' } });
      assertError(r, 401, 'UNAUTHORIZED');
      assert.equal(r.body.token, undefined);
    }
  });

  test('a body that is not JSON: 400 BAD_JSON', T, async () => {
    for (const body of ['not json', '{"user_id": "alice"', '', '   ']) {
      assertError(await call('POST', '/api/v1/tokens', { body }), 400, 'BAD_JSON');
    }
  });

  test('missing user_id, unknown fields, invalid ids or values: 400 BAD_REQUEST', T, async () => {
    const bad: unknown[] = [
      {},
      [],
      'alice',
      null,
      { user_id: 'alice', admin: true },
      { user_id: 'a:b' },
      { user_id: '' },
      { user_id: 'x'.repeat(65) },
      { user_id: 'has space' },
      { user_id: 42 },
      { user_id: 'alice', device_id: 'bad/device' },
      { user_id: 'alice', device_id: '' },
      { user_id: 'alice', platform: '' },
      { user_id: 'alice', ttl_seconds: 5 },
      { user_id: 'alice', ttl_seconds: 1.5 },
      { user_id: 'alice', ttl_seconds: '60' },
    ];
    for (const json of bad) {
      const r = await call('POST', '/api/v1/tokens', { json });
      assertError(r, 400, 'BAD_REQUEST');
      assert.equal(r.body.token, undefined, JSON.stringify(json));
    }
    // The longest valid id is fine.
    assert.equal((await call('POST', '/api/v1/tokens', { json: { user_id: 'x'.repeat(64) } })).status, 200);
  });

  test('the reserved user "system" is refused', T, async () => {
    const r = await call('POST', '/api/v1/tokens', { json: { user_id: 'system' } });
    assertError(r, 400, 'BAD_REQUEST');
    assert.match((r.body.error as { message: string }).message, /reserved/);
  });

  test('an oversized body: 413 BODY_TOO_LARGE', T, async () => {
    // node:http rather than fetch: the server may stop reading once it has answered.
    const reply = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(`${s.httpUrl}/api/v1/tokens`, {
        method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
      }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end(JSON.stringify({ user_id: 'alice', platform: 'x'.repeat(100_000) }));
    });
    assert.equal(reply.status, 413);
    assert.equal((JSON.parse(reply.body) as { error: { code: string } }).error.code, 'BODY_TOO_LARGE');
    // The server is fine afterwards.
    assert.equal((await call('POST', '/api/v1/tokens', { json: { user_id: 'alice' } })).status, 200);
  });
});

describe('POST /api/v1/messages', () => {
  test('from a user: the online recipient and the sender\'s devices get a push; an offline one gets it at sync', T, async () => {
    const bob = await online(s, 'ws', 'm1-bob', 'phone');
    const alice = await online(s, 'tcp', 'm1-alice', 'laptop');
    const t0 = Date.now();
    const r = await call('POST', '/api/v1/messages', { json: { from: 'm1-alice', to: 'm1-bob', text: 'from the backend' } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.conversation_id, 'u:m1-alice:m1-bob');
    assert.equal(r.body.seq, 1);
    assert.equal(r.body.duplicate, false);
    assert.equal(typeof r.body.server_msg_id, 'string');
    assert.ok(Math.abs((r.body.sent_at_ms as number) - t0) < 5_000);

    for (const c of [bob, alice]) {
      const [m, ...rest] = await waitPushed(c, 1);
      assert.deepEqual(rest, []);
      assert.equal(m!.conversationId, 'u:m1-alice:m1-bob');
      assert.equal(m!.seq, 1);
      assert.equal(m!.fromUser, 'm1-alice');
      assert.equal(m!.text, 'from the backend');
      assert.equal(m!.serverMsgId, r.body.server_msg_id);
    }

    // Offline: carol gets it when she comes and syncs.
    const r2 = await call('POST', '/api/v1/messages', { json: { from: 'm1-alice', to: 'm1-carol', text: 'while you were away' } });
    assert.equal(r2.status, 200);
    const carol = await online(s, 'tcp', 'm1-carol', 'phone');
    const got = await syncAll(carol);
    assert.deepEqual(got.messages.map((m) => [m.conversationId, m.seq, m.fromUser, m.text]), [
      ['u:m1-alice:m1-carol', 1, 'm1-alice', 'while you were away'],
    ]);
    for (const c of [bob, alice, carol]) c.close();
  });

  test('with no "from": sent by the system user, pushed online and synced offline', T, async () => {
    const dan = await online(s, 'tcp', 'm2-dan');
    const r = await call('POST', '/api/v1/messages', { json: { to: 'm2-dan', text: 'your order shipped' } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.conversation_id, 'u:m2-dan:system');
    const [m] = await waitPushed(dan, 1);
    assert.equal(m!.fromUser, 'system');
    assert.equal(m!.conversationId, 'u:m2-dan:system');
    assert.equal(m!.text, 'your order shipped');

    const r2 = await call('POST', '/api/v1/messages', { json: { to: 'm2-eve', text: 'welcome' } });
    assert.equal(r2.status, 200);
    const eve = await online(s, 'ws', 'm2-eve');
    const got = await syncAll(eve);
    assert.deepEqual(got.messages.map((x) => [x.conversationId, x.fromUser, x.text]), [['u:m2-eve:system', 'system', 'welcome']]);
    // The user sees the conversation's history like any other.
    const h = await history(eve, 'u:m2-eve:system');
    assert.deepEqual(h.messages.map((x) => x.text), ['welcome']);
    dan.close();
    eve.close();
  });

  test('idempotent with client_msg_id: same seq and id, duplicate on the second, shown once', T, async () => {
    const fay = await online(s, 'tcp', 'm3-fay');
    const body = { to: 'm3-fay', text: 'once only', client_msg_id: 'order-42-shipped' };
    const first = await call('POST', '/api/v1/messages', { json: body });
    const second = await call('POST', '/api/v1/messages', { json: body });
    assert.equal(first.status, 200);
    assert.equal(second.status, 200);
    assert.equal(first.body.duplicate, false);
    assert.equal(second.body.duplicate, true);
    assert.equal(second.body.seq, first.body.seq);
    assert.equal(second.body.server_msg_id, first.body.server_msg_id);
    // Without client_msg_id each post is a new message.
    const a = await call('POST', '/api/v1/messages', { json: { to: 'm3-fay', text: 'x' } });
    const b = await call('POST', '/api/v1/messages', { json: { to: 'm3-fay', text: 'x' } });
    assert.deepEqual([a.body.seq, b.body.seq], [2, 3]);
    await until(() => pushed(fay).some((m) => m.seq === 3), 10_000, () => 'seq 3 at fay');
    await barrier(fay);
    await sleep(200);
    // The repeated post may push seq 1 again (same id): a client shows it once, by seq.
    const shown = new Map(pushed(fay).map((m) => [m.seq, m]));
    assert.deepEqual([...shown.values()].map((m) => [m.seq, m.text]), [[1, 'once only'], [2, 'x'], [3, 'x']]);
    assert.ok(pushed(fay).filter((m) => m.seq === 1).every((m) => m.serverMsgId === first.body.server_msg_id));
    fay.close();
  });

  test('to_users: one 1:1 message per recipient, idempotent per recipient, for any valid client_msg_id and user ids', T, async () => {
    const long = 'L'.repeat(64); // the longest valid user id
    const online1 = await online(s, 'tcp', 'm4-gus');
    const body = { to_users: ['m4-gus', long], text: 'maintenance tonight', client_msg_id: 'k'.repeat(100) }; // the longest accepted id
    const first = await call('POST', '/api/v1/messages', { json: body });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const msgs = first.body.messages as { conversation_id: string; seq: number; duplicate: boolean; server_msg_id: string }[];
    assert.deepEqual(msgs.map((m) => [m.conversation_id, m.seq, m.duplicate]), [
      ['u:m4-gus:system', 1, false], [`u:${long}:system`, 1, false],
    ]);
    const again = await call('POST', '/api/v1/messages', { json: body });
    assert.equal(again.status, 200, JSON.stringify(again.body));
    const msgs2 = again.body.messages as typeof msgs;
    assert.deepEqual(msgs2.map((m) => [m.server_msg_id, m.duplicate]), msgs.map((m) => [m.server_msg_id, true]));
    const [m] = await waitPushed(online1, 1);
    assert.equal(m!.text, 'maintenance tonight');
    await barrier(online1);
    await sleep(100);
    assert.deepEqual([...new Set(pushed(online1).map((m) => `${m.seq} ${m.serverMsgId}`))], [`1 ${msgs[0]!.server_msg_id}`], 'one message, however often pushed');
    online1.close();
    // One bad recipient refuses the whole request: nothing is stored for the others.
    assertError(await call('POST', '/api/v1/messages', { json: { to_users: ['m4-hal', 'system'], text: 'x' } }), 403, 'FORBIDDEN');
    const hal = await online(s, 'ws', 'm4-hal');
    assert.deepEqual((await syncAll(hal)).messages, []);
    hal.close();
  });

  test('refusals: admin key, bad bodies, the system user as recipient, text over the limit', T, async () => {
    assertError(await call('POST', '/api/v1/messages', { auth: null, json: { to: 'bob', text: 'x' } }), 401, 'UNAUTHORIZED');
    assertError(await call('POST', '/api/v1/messages', { auth: 'Bearer nope', json: { to: 'bob', text: 'x' } }), 401, 'UNAUTHORIZED');
    assertError(await call('POST', '/api/v1/messages', { body: '{oops' }), 400, 'BAD_JSON');
    for (const json of [{ text: 'x' }, { to: 'bob' }, { to: 'a:b', text: 'x' }, { to: 'bob', text: 'x', from: 'bad id' }, { to: 'bob', text: 'x', extra: 1 }]) {
      assertError(await call('POST', '/api/v1/messages', { json }), 400, 'BAD_REQUEST');
    }
    assertError(await call('POST', '/api/v1/messages', { json: { to: 'bob', text: '' } }), 400, 'TEXT_EMPTY');
    assertError(await call('POST', '/api/v1/messages', { json: { to: 'system', text: 'x' } }), 403, 'FORBIDDEN');
    assertError(await call('POST', '/api/v1/messages', { json: { to: 'bob', text: 'x'.repeat(s.config.limits.maxTextBytes + 1) } }), 400, 'TEXT_TOO_LARGE');
  });
});

describe('discovery, health, routing', () => {
  test('GET /healthz', T, async () => {
    const r = await call('GET', '/healthz', { auth: null });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { status: 'ok', node: 'test-node' });
  });

  test('GET /api/v1/gateways lists this node with URLs that work', T, async () => {
    const r = await call('GET', '/api/v1/gateways', { auth: null });
    assert.equal(r.status, 200);
    const gateways = r.body.gateways as { id: string; tcp_url: string; ws_url: string; load: number }[];
    assert.equal(gateways.length, 1);
    const g = gateways[0]!;
    assert.equal(g.id, 'test-node');
    assert.equal(g.tcp_url, s.tcpUrl);
    assert.equal(g.ws_url, s.wsUrl);
    assert.equal(typeof g.load, 'number');
    const token = await s.token('disco', 'd1');
    for (const url of [g.tcp_url, g.ws_url]) {
      const c = await RawClient.connect(url);
      await c.login(token);
      c.close();
    }
  });

  test('GET /api/v1/nodes without or with a wrong admin key: 401 UNAUTHORIZED, nothing listed', T, async () => {
    for (const auth of [null, 'Bearer wrong-key', `Bearer ${ADMIN_KEY}x`, `Basic ${ADMIN_KEY}`, `bearer ${ADMIN_KEY}`, 'Bearer ']) {
      const r = await call('GET', '/api/v1/nodes', { auth });
      assertError(r, 401, 'UNAUTHORIZED');
      assert.equal(r.body.nodes, undefined);
    }
  });

  test('GET /api/v1/nodes on the embedded server lists its gateway', T, async () => {
    const r = await call('GET', '/api/v1/nodes');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.match(r.contentType, /^application\/json/);
    const nodes = r.body.nodes as Record<string, unknown>[];
    const gw = nodes.find((n) => n.role === 'gateway');
    assert.ok(gw, JSON.stringify(nodes));
    assert.equal(gw.id, 'test-node');
    assert.equal(gw.tcp_url, s.tcpUrl);
    assert.equal(gw.ws_url, s.wsUrl);
    assert.equal(gw.http_url, String(s.wsUrl).replace(/^ws/, 'http').replace(/\/ws$/, ''), 'its HTTP port is the WebSocket\'s');
    assert.equal(typeof gw.load, 'number');
    assert.equal(typeof gw.started_at_ms, 'number');
    assert.deepEqual(Object.keys(gw).sort(), ['http_url', 'id', 'load', 'role', 'services', 'started_at_ms', 'tcp_url', 'ws_url']);
  });

  test('GET /api/v1/nodes lists every live node of every role, by role then id, absent fields null', T, async () => {
    const registry = new MemoryRegistry();
    const bus = new MemoryBus();
    const sessions = new MemorySessions();
    const api = new HttpApi({ nodeId: 'api-node', adminKey: ADMIN_KEY, tokenTtlSeconds: 3600, maxTextBytes: 4096 }, {
      tokens: new TokenService(TOKEN_SECRET), registry, bus, requests: new BusRequester(bus, 'api-node.api'), sessions,
    });
    const server = http.createServer(api.handle);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      assert.deepEqual((await call('GET', '/api/v1/nodes', { base })).body, { nodes: [] });
      await registry.announce({ id: 'msg-1', role: 'message', services: ['message', 'presence', 'push'], httpUrl: 'http://10.0.0.3:8081', load: 0, startedAtMs: 3 }, 60_000);
      await registry.announce({ id: 'logic-1', role: 'logic', services: ['auth', 'message', 'group'], httpUrl: 'http://10.0.0.2:8080', load: 0, startedAtMs: 2 }, 60_000);
      await registry.announce({ id: 'gw-2', role: 'gateway', tcpUrl: 'tcp://10.0.0.1:9001', wsUrl: 'ws://10.0.0.1:8001/ws', load: 1, startedAtMs: 1 }, 60_000);
      await registry.announce({ id: 'gw-1', role: 'gateway', tcpUrl: 'tcp://10.0.0.1:9000', wsUrl: 'ws://10.0.0.1:8000/ws', load: 5, startedAtMs: 1 }, 60_000);
      await registry.announce({ id: 'gone', role: 'auth', load: 0, startedAtMs: 0 }, 1);
      await sleep(20);
      for (const auth of [null, 'Bearer wrong-key']) assertError(await call('GET', '/api/v1/nodes', { base, auth }), 401, 'UNAUTHORIZED');
      const r = await call('GET', '/api/v1/nodes', { base });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body, {
        nodes: [
          { id: 'gw-1', role: 'gateway', services: null, http_url: null, tcp_url: 'tcp://10.0.0.1:9000', ws_url: 'ws://10.0.0.1:8000/ws', load: 5, started_at_ms: 1 },
          { id: 'gw-2', role: 'gateway', services: null, http_url: null, tcp_url: 'tcp://10.0.0.1:9001', ws_url: 'ws://10.0.0.1:8001/ws', load: 1, started_at_ms: 1 },
          { id: 'logic-1', role: 'logic', services: ['auth', 'message', 'group'], http_url: 'http://10.0.0.2:8080', tcp_url: null, ws_url: null, load: 0, started_at_ms: 2 },
          { id: 'msg-1', role: 'message', services: ['message', 'presence', 'push'], http_url: 'http://10.0.0.3:8081', tcp_url: null, ws_url: null, load: 0, started_at_ms: 3 },
        ],
      });
      assertError(await call('POST', '/api/v1/nodes', { base }), 405, 'METHOD_NOT_ALLOWED');
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await bus.close();
      await registry.close();
    }
  });

  test('unknown routes: 404 NOT_FOUND; known routes with the wrong method: 405 METHOD_NOT_ALLOWED', T, async () => {
    for (const [method, path] of [['GET', '/nope'], ['GET', '/api/v1/nope'], ['POST', '/api/v2/tokens'], ['GET', '/healthz/x']]) {
      assertError(await call(method!, path!), 404, 'NOT_FOUND');
    }
    for (const [method, path] of [['GET', '/api/v1/tokens'], ['POST', '/healthz'], ['DELETE', '/api/v1/gateways'], ['GET', '/api/v1/messages'], ['PUT', '/api/v1/tokens'], ['POST', '/api/v1/nodes'], ['DELETE', '/api/v1/nodes']]) {
      assertError(await call(method!, path!), 405, 'METHOD_NOT_ALLOWED');
    }
    // A query string does not change the route.
    assert.equal((await call('GET', '/healthz?verbose=1', { auth: null })).status, 200);
  });
});
