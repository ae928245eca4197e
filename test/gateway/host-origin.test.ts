// DNS rebinding against a developer's quick start: a page on evil.example
// whose name is made to resolve to 127.0.0.1 talks to the local server with
// `Host: evil.example:8080`; a page elsewhere uses the visitor's browser with
// `Origin: http://evil.example`. The HTTP API, the web page and /ws answer only
// the names the server is configured with (its host and public host, the
// loopback names, IP literals, and the origins in LONGLINK_ALLOWED_ORIGINS), and
// browsers only from their own origin or an allowed one. Clients that send no
// Origin (not browsers) are not affected. The dev login is on only when asked for.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import WebSocket from 'ws';
import { loadServerConfig } from '../../src/config.js';
import { devLoginEnabled } from '../../src/roles/web.js';
import { quickStartDevLogin } from '../../src/cli/start.js';
import { decodeFrame, encodeFrame, makeFrame } from '../../src/protocol/index.js';
import { withServer, type Ctx } from './gw-helpers.js';

interface Answer { status: number; body: string; json?: { error?: { code: string; message: string } } }

function request(ctx: Ctx, method: string, path: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  const u = new URL(ctx.server.httpUrl);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: Number(u.port), method, path, headers }, (res) => {
      let data = '';
      res.setEncoding('utf8').on('data', (d: string) => (data += d)).on('end', () => {
        let json: Answer['json'];
        try {
          json = JSON.parse(data) as Answer['json'];
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, body: data, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Open /ws with these headers: 'open' (and a login works), or the HTTP status it was refused with. */
function upgrade(ctx: Ctx, headers: Record<string, string>, origin?: string): Promise<string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(ctx.server.wsUrl, { headers, origin, perMessageDeflate: false });
    ws.on('unexpected-response', (_req, res) => {
      let data = '';
      res.setEncoding('utf8').on('data', (d: string) => (data += d)).on('end', () => {
        const code = (JSON.parse(data) as { error: { code: string } }).error.code;
        resolve(`${res.statusCode} ${code}`);
      });
    });
    ws.on('error', () => undefined);
    ws.on('open', () => {
      void ctx.server.token('alice').then((token) => ws.send(encodeFrame(makeFrame(1, { case: 'login', value: { token } }))));
    });
    ws.on('message', (d: Buffer) => {
      const f = decodeFrame(d);
      ws.terminate();
      resolve(f.body.case === 'loginResult' ? 'open' : `frame ${f.body.case}`);
    });
  });
}

describe('Host', () => {
  test('a name the server is not configured with gets 421 HOST_NOT_ALLOWED on the API, the page and /metrics; its own names pass', () =>
    withServer({ 'dev-login': '1' }, async (ctx) => {
      const port = new URL(ctx.server.httpUrl).port;
      for (const path of ['/healthz', '/api/v1/gateways', '/', '/metrics', '/readyz']) {
        const r = await request(ctx, 'GET', path, { host: `evil.example:${port}` });
        assert.equal(r.status, 421, `${path}: ${r.body}`);
        assert.equal(r.json?.error?.code, 'HOST_NOT_ALLOWED', path);
        assert.match(r.json?.error?.message ?? '', /evil\.example/);
      }
      const dev = await request(ctx, 'POST', '/api/v1/dev/token', { host: `evil.example:${port}`, 'content-type': 'application/json' }, '{"user_id":"alice"}');
      assert.equal(dev.status, 421, 'the rebinding page gets no token');
      for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, '127.0.0.1', `10.1.2.3:${port}`]) {
        const r = await request(ctx, 'GET', '/healthz', { host });
        assert.equal(r.status, 200, `Host ${host}: ${r.body}`);
      }
      assert.equal((await request(ctx, 'POST', '/api/v1/dev/token', { host: `127.0.0.1:${port}`, 'content-type': 'application/json' }, '{"user_id":"alice"}')).status, 200);
    }));

  test('/ws with a foreign Host is refused before the upgrade', () =>
    withServer({}, async (ctx) => {
      const port = new URL(ctx.server.httpUrl).port;
      assert.equal(await upgrade(ctx, { host: `evil.example:${port}` }), '421 HOST_NOT_ALLOWED');
      assert.equal(await upgrade(ctx, {}), 'open');
    }));

  test('the public host and the allowed origins name the server too', () =>
    withServer({ 'public-host': 'chat.example.com', 'allowed-origins': 'https://app.example.org' }, async (ctx) => {
      for (const host of ['chat.example.com', 'chat.example.com:443', 'CHAT.example.com', 'app.example.org']) {
        assert.equal((await request(ctx, 'GET', '/healthz', { host })).status, 200, host);
      }
      assert.equal((await request(ctx, 'GET', '/healthz', { host: 'example.com' })).status, 421);
      assert.equal((await request(ctx, 'GET', '/healthz', { host: 'chat.example.com.evil.example' })).status, 421);
    }));

  test('allowed origins `*`: any Host and any Origin', () =>
    withServer({ 'allowed-origins': '*' }, async (ctx) => {
      assert.equal((await request(ctx, 'GET', '/healthz', { host: 'evil.example', origin: 'http://evil.example' })).status, 200);
      assert.equal(await upgrade(ctx, {}, 'http://evil.example'), 'open');
    }));
});

describe('Origin', () => {
  test('a browser page on another origin is refused on the API (403 ORIGIN_NOT_ALLOWED) and at /ws; its own origin passes; no Origin passes', () =>
    withServer({ 'dev-login': '1' }, async (ctx) => {
      const u = new URL(ctx.server.httpUrl);
      const dev = (origin?: string) => request(ctx, 'POST', '/api/v1/dev/token',
        { 'content-type': 'application/json', ...(origin ? { origin } : {}) }, '{"user_id":"alice"}');
      for (const origin of ['http://evil.example', `http://evil.example:${u.port}`, `http://localhost:${Number(u.port) + 1}`, 'null', 'not a url']) {
        const r = await dev(origin);
        assert.equal(r.status, 403, `${origin}: ${r.body}`);
        assert.equal(r.json?.error?.code, 'ORIGIN_NOT_ALLOWED', origin);
        assert.equal(await upgrade(ctx, {}, origin), '403 ORIGIN_NOT_ALLOWED', `/ws from ${origin}`);
      }
      for (const origin of [undefined, `http://127.0.0.1:${u.port}`, `http://localhost:${u.port}`]) {
        assert.equal((await dev(origin)).status, 200, `origin ${origin}`);
        assert.equal(await upgrade(ctx, {}, origin), 'open', `/ws from ${origin}`);
      }
    }));

  test('LONGLINK_ALLOWED_ORIGINS lets pages served elsewhere in', () =>
    withServer({ 'allowed-origins': 'https://app.example.org, http://localhost:3000' }, async (ctx) => {
      assert.equal(await upgrade(ctx, {}, 'https://app.example.org'), 'open');
      assert.equal(await upgrade(ctx, {}, 'http://localhost:3000'), 'open');
      assert.equal(await upgrade(ctx, {}, 'http://app.example.org'), '403 ORIGIN_NOT_ALLOWED', 'the scheme is part of the origin');
      assert.equal(await upgrade(ctx, {}, 'https://evil.example'), '403 ORIGIN_NOT_ALLOWED');
      assert.equal((await request(ctx, 'GET', '/api/v1/gateways', { origin: 'https://app.example.org' })).status, 200);
    }));

  test('a bad setting is refused at start', () => {
    assert.throws(() => loadServerConfig({ 'allowed-origins': 'app.example.org' }, {}), /LONGLINK_ALLOWED_ORIGINS/);
    assert.throws(() => loadServerConfig({ 'allowed-origins': 'https://app.example.org/path' }, {}), /LONGLINK_ALLOWED_ORIGINS/);
    assert.throws(() => loadServerConfig({ 'trusted-proxies': 'proxy.example' }, {}), /LONGLINK_TRUSTED_PROXIES/);
    assert.throws(() => loadServerConfig({ 'trusted-proxies': '10.0.0.0/99' }, {}), /LONGLINK_TRUSTED_PROXIES/);
    assert.deepEqual(loadServerConfig({ 'trusted-proxies': ' 10.0.0.1, 192.168.0.0/16,::1 ' }, {}).trustedProxies, ['10.0.0.1', '192.168.0.0/16', '::1']);
    assert.deepEqual(loadServerConfig({}, {}).trustedProxies, []);
    assert.deepEqual(loadServerConfig({}, { LONGLINK_ALLOWED_ORIGINS: 'https://a.example:8443' }).allowedOrigins, ['https://a.example:8443']);
  });
});

describe('dev login', () => {
  test('off unless asked for: LONGLINK_DEV_LOGIN=1 or --dev-login 1; never implied by generated secrets or a loopback host', () => {
    const on = (flags: Record<string, string>, env: Record<string, string> = {}) => devLoginEnabled(loadServerConfig(flags, env));
    assert.equal(on({}), false, 'generated secrets on 127.0.0.1 do not turn it on by themselves');
    assert.equal(on({ host: 'localhost' }), false);
    assert.equal(on({}, { LONGLINK_DEV_LOGIN: '1' }), true);
    assert.equal(on({ 'dev-login': '1' }), true);
    assert.equal(on({ host: '0.0.0.0' }, { LONGLINK_DEV_LOGIN: 'true' }), true);
    assert.equal(on({}, { LONGLINK_DEV_LOGIN: '0' }), false);
  });

  test('the quick start (`longlink start`) turns it on explicitly only with no secrets configured, on a loopback host, and not when told no', () => {
    const quick = (flags: Record<string, string>, env: Record<string, string> = {}) => quickStartDevLogin(loadServerConfig(flags, env), flags, env);
    assert.equal(quick({}), true, 'a newcomer\'s `npm start`');
    assert.equal(quick({ host: 'localhost' }), true);
    assert.equal(quick({ host: '0.0.0.0' }), false, 'reachable from other machines');
    assert.equal(quick({}, { LONGLINK_TOKEN_SECRET: 'a-configured-secret-0123456789' }), false, 'a token secret was configured');
    assert.equal(quick({}, { LONGLINK_ADMIN_KEY: 'a-configured-admin-key-0123' }), false, 'an admin key was configured');
    assert.equal(quick({ 'token-secret': 'a-configured-secret-0123456789' }), false);
    assert.equal(quick({}, { LONGLINK_DEV_LOGIN: '0' }), false, 'told no');
    assert.equal(quick({ 'admin-key': 'a-configured-admin-key-0123' }, { LONGLINK_DEV_LOGIN: '1' }), true, 'told yes');
  });
});
