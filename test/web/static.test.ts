// The web page's server side, over real HTTP: static files of the built page
// (types, caching, no traversal, 404s) and the dev login's guard.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadServerConfig } from '../../src/config.js';
import { devLoginEnabled } from '../../src/roles/web.js';
import { quickStartDevLogin } from '../../src/cli/start.js';
import { RawClient } from '../helpers/raw.js';
import { ADMIN_KEY, startTestServer, type TestServer } from '../helpers/server.js';

const T = { timeout: 60_000 };

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A request with the path sent exactly as given (fetch would normalize `..`). */
function raw(server: TestServer, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: server.httpPort, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function assertError(r: Reply, status: number, code: string): void {
  assert.equal(r.status, status, r.body);
  assert.match(r.headers['content-type'] ?? '', /^application\/json/);
  assert.equal((JSON.parse(r.body) as { error: { code: string } }).error.code, code);
}

describe('static files of the web page', () => {
  let root: string;
  let outside: string;
  let s: TestServer;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'longlink-web-'));
    outside = mkdtempSync(join(tmpdir(), 'longlink-outside-'));
    mkdirSync(join(root, 'assets'));
    writeFileSync(join(root, 'index.html'), '<!doctype html><title>page</title>');
    writeFileSync(join(root, 'assets', 'app-ABC.js'), 'console.log(1)');
    writeFileSync(join(root, 'assets', 'app-ABC.css'), 'body{}');
    writeFileSync(join(root, 'assets', 'run.sh'), 'echo no');
    writeFileSync(join(root, '.secret.txt'), 'hidden');
    writeFileSync(join(outside, 'secret.txt'), 'outside');
    symlinkSync(join(outside, 'secret.txt'), join(root, 'assets', 'link.txt'));
    s = await startTestServer({}, undefined, { webRoot: root });
  });
  after(async () => {
    await s.close();
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  test('/ and /index.html: the page, revalidated on every load, with a CSP', T, async () => {
    for (const path of ['/', '/index.html', '/?x=1']) {
      const r = await raw(s, 'GET', path);
      assert.equal(r.status, 200, path);
      assert.equal(r.headers['content-type'], 'text/html; charset=utf-8');
      assert.equal(r.headers['cache-control'], 'no-cache');
      assert.match(String(r.headers['content-security-policy']), /default-src 'self'/);
      assert.equal(r.headers['x-content-type-options'], 'nosniff');
      assert.equal(r.body, '<!doctype html><title>page</title>');
    }
  });

  test('/assets/: content types, long-lived cache, HEAD, ETag revalidation', T, async () => {
    const js = await raw(s, 'GET', '/assets/app-ABC.js');
    assert.equal(js.status, 200);
    assert.equal(js.headers['content-type'], 'text/javascript; charset=utf-8');
    assert.equal(js.headers['cache-control'], 'public, max-age=31536000, immutable');
    assert.equal(js.headers['content-length'], String('console.log(1)'.length));
    assert.equal(js.headers['content-security-policy'], undefined);
    const css = await raw(s, 'GET', '/assets/app-ABC.css');
    assert.equal(css.headers['content-type'], 'text/css; charset=utf-8');
    const head = await raw(s, 'HEAD', '/assets/app-ABC.js');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.equal(head.headers['content-length'], js.headers['content-length']);
    const etag = js.headers.etag;
    assert.ok(etag);
    const again = await raw(s, 'GET', '/assets/app-ABC.js', { 'if-none-match': etag });
    assert.equal(again.status, 304);
    assert.equal(again.body, '');
  });

  test('404 for what is missing, hidden, outside the folder or of an unknown type; no listing', T, async () => {
    for (const path of [
      '/nope.html', '/assets/nope.js', '/assets/', '/assets', '/assets/run.sh', '/.secret.txt', '/%2esecret.txt',
      '/../secret.txt', '/assets/../../secret.txt', '/assets/..%2f..%2fsecret.txt', '/%2e%2e/%2e%2e/etc/passwd',
      '/assets/%2e%2e%5c%2e%2e%5csecret.txt', '/assets/link.txt', '/index.html%00.js', '/%E0%A4%A.js', '//index.html',
    ]) {
      assertError(await raw(s, 'GET', path), 404, 'NOT_FOUND');
    }
  });

  test('the API keeps its routes and errors: other methods on page paths, /healthz, /api/', T, async () => {
    assertError(await raw(s, 'POST', '/'), 404, 'NOT_FOUND');
    assertError(await raw(s, 'GET', '/api/v1/nope'), 404, 'NOT_FOUND');
    assert.equal((await raw(s, 'GET', '/healthz')).status, 200);
  });

  test('a server whose page is not built says so at /', T, async () => {
    const bare = await startTestServer({}, undefined, { webRoot: join(root, 'no-such-dir') });
    try {
      const r = await raw(bare, 'GET', '/');
      assertError(r, 404, 'NOT_FOUND');
      assert.match(r.body, /npm run build/);
    } finally {
      await bare.close();
    }
  });
});

describe('dev login (POST /api/v1/dev/token)', () => {
  test('refused with DEV_LOGIN_DISABLED unless the server has it on', T, async () => {
    const s = await startTestServer();
    try {
      const r = await raw(s, 'POST', '/api/v1/dev/token', { 'content-type': 'application/json' }, JSON.stringify({ user_id: 'alice' }));
      assertError(r, 403, 'DEV_LOGIN_DISABLED');
      assertError(await raw(s, 'GET', '/api/v1/dev/token'), 405, 'METHOD_NOT_ALLOWED');
      // The admin route still works as before.
      const t = await raw(s, 'POST', '/api/v1/tokens', { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}` },
        JSON.stringify({ user_id: 'alice' }));
      assert.equal(t.status, 200);
    } finally {
      await s.close();
    }
  });

  test('on: a token for the user and device asked, which logs in; bad bodies are 400', T, async () => {
    const s = await startTestServer({ 'dev-login': '1' });
    try {
      const r = await raw(s, 'POST', '/api/v1/dev/token', { 'content-type': 'application/json' },
        JSON.stringify({ user_id: 'alice', device_id: 'web-1' }));
      assert.equal(r.status, 200, r.body);
      const body = JSON.parse(r.body) as { token: string; user_id: string; device_id: string; platform: string };
      assert.deepEqual([body.user_id, body.device_id, body.platform], ['alice', 'web-1', 'web']);
      const c = await RawClient.connect(s.wsUrl);
      const login = await c.login(body.token);
      assert.equal(login.body.case, 'loginResult');
      if (login.body.case === 'loginResult') assert.equal(login.body.value.userId, 'alice');
      c.close();
      for (const bad of [{}, { user_id: 'no spaces' }, { user_id: 'system' }, { user_id: 'a', admin: true }]) {
        assertError(await raw(s, 'POST', '/api/v1/dev/token', { 'content-type': 'application/json' }, JSON.stringify(bad)), 400, 'BAD_REQUEST');
      }
    } finally {
      await s.close();
    }
  });

  test('who has it on: only when asked for (LONGLINK_DEV_LOGIN=1; `longlink start` asks for it on a loopback quick start with generated secrets)', () => {
    const on = (flags: Record<string, string>, env: Record<string, string> = {}) => devLoginEnabled(loadServerConfig(flags, env));
    assert.equal(on({}), false, 'never implicitly');
    assert.equal(on({ host: 'localhost' }), false);
    assert.equal(on({ host: '0.0.0.0' }), false, 'reachable from other machines');
    const quick = (flags: Record<string, string>, env: Record<string, string> = {}) => quickStartDevLogin(loadServerConfig(flags, env), flags, env);
    assert.equal(quick({}), true, 'the quick start on 127.0.0.1, secrets generated');
    assert.equal(quick({ host: 'localhost' }), true);
    assert.equal(quick({ host: '0.0.0.0' }), false, 'reachable from other machines');
    assert.equal(quick({ 'token-secret': 'a-real-token-secret-0123456789' }), false, 'a real token secret was configured');
    assert.equal(quick({ 'admin-key': ADMIN_KEY }), false, 'an admin key was configured');
    assert.equal(quick({}, { LONGLINK_DEV_LOGIN: '0' }), false);
    assert.equal(on({ 'admin-key': ADMIN_KEY }), false, 'an admin key was configured');
    assert.equal(on({ 'admin-key': ADMIN_KEY }, { LONGLINK_DEV_LOGIN: '1' }), true);
    assert.equal(on({ host: '0.0.0.0' }, { LONGLINK_DEV_LOGIN: 'true' }), true);
    assert.equal(on({}, { LONGLINK_DEV_LOGIN: '0' }), false);
    assert.throws(() => on({}, { LONGLINK_DEV_LOGIN: 'maybe' }), /LONGLINK_DEV_LOGIN/);
  });
});
