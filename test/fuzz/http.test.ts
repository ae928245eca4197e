// Property-based fuzzing of the HTTP API and everything else on the HTTP port
// of a real embedded server (the API routes, /metrics, /healthz, /readyz,
// the web page's files, the /ws upgrade): random methods, paths, query
// strings, headers and bodies (none, JSON of the right shape with wrong
// types, JSON of any shape, not JSON, not UTF-8, over the size limit), with
// and without the admin key. Every answer comes within a bound, has a proper
// status, and an error is JSON {"error": {"code", "message"}}; no 5xx but a
// documented 503 UNAVAILABLE; the server keeps serving. Then bytes that are
// not HTTP at all.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import { ADMIN_KEY, startTestServer, type TestServer } from '../helpers/server.js';
import { abridged, runs, validId } from './arbitraries.js';

const BOUND_MS = 10_000;
/** Node's default --max-http-header-size. */
const NODE_MAX_HEADER_BYTES = 16 * 1024;

const ROUTES = [
  '/healthz', '/readyz', '/metrics', '/api/v1/gateways', '/api/v1/tokens', '/api/v1/messages', '/api/v1/broadcast',
  '/api/v1/dev/token', '/api/v1/revoke', '/api/v1/dead-letters', '/api/v1/dead-letters/replay', '/api/v1/nodes', '/ws', '/', '/index.html', '/assets/app.js',
];
const ODD_PATHS = [
  '/api/v1/tokens/', '/API/V1/TOKENS', '/api/v1', '/api/', '/api', '//api/v1/tokens', '/api/v1/tokens%00', '/%00', '/..%2f..%2fetc%2fpasswd',
  '/../../etc/passwd', '/assets/../index.html', '/assets/%2e%2e/%2e%2e/package.json', '/.env', '/%', '/%zz', '/healthz/', '/healthz/x',
  '/index.html%00.js', '/a'.repeat(2000), '*', '/\\..\\..\\x', '/assets/.hidden.js',
];
const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'PROPFIND', 'SEARCH'];

/** Any string, escaped so it can stand in a request line. */
const escapeForUrl = (s: string) => s.replace(/[^\x21-\x7e]|[#%?]/gu, (c) => encodeURIComponent(c));

const path = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...ROUTES) },
  { weight: 2, arbitrary: fc.constantFrom(...ODD_PATHS) },
  { weight: 2, arbitrary: fc.webPath().map((p) => (p.startsWith('/') ? p : `/${p}`)) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }).map((s) => `/${escapeForUrl(s)}`) },
);
const query = fc.oneof(
  fc.constant(''),
  fc.webQueryParameters().map((q) => `?${q}`),
  fc.string({ unit: 'binary', maxLength: 60 }).map((s) => `?${escapeForUrl(s)}`),
);
/** Header values: printable ASCII (what a client library lets through), sometimes long. */
const headerValue = fc.oneof(fc.string({ unit: 'grapheme-ascii', maxLength: 60 }), fc.constant('x'.repeat(4000)));
const headerName = fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/).filter((n) => !['content-length', 'transfer-encoding', 'host', 'connection', 'upgrade', 'expect'].includes(n));

/** Field values of the right name and any type, the right type, or out of range. */
const fieldValue = fc.oneof(
  validId, fc.jsonValue({ maxDepth: 2 }), fc.string({ unit: 'binary', maxLength: 30 }), fc.integer(), fc.double(),
  fc.constantFrom(null, true, '', 'system', -1, 0, 10, 1e308, 'x'.repeat(70_000)), fc.array(validId, { maxLength: 5 }),
  fc.array(validId, { minLength: 1001, maxLength: 1001 }),
);
const FIELDS = ['user_id', 'device_id', 'platform', 'ttl_seconds', 'from', 'to', 'to_users', 'group_id', 'text', 'client_msg_id', 'extra'];
const shapedJson = fc.dictionary(fc.constantFrom(...FIELDS), fieldValue, { maxKeys: 5 });

const body = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  { weight: 6, arbitrary: shapedJson.map((o) => Buffer.from(JSON.stringify(o))) },
  { weight: 2, arbitrary: fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? 'null')) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }).map((s) => Buffer.from(s)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)) },
  { weight: 1, arbitrary: fc.constantFrom(Buffer.from('{"user_id":'), Buffer.from('{}'), Buffer.from('[]'), Buffer.from('null'), Buffer.alloc(70_000, 0x20)) },
);

const request = fc.record({
  method: fc.constantFrom(...METHODS),
  path,
  query,
  auth: fc.oneof(fc.constant(undefined), fc.constant(`Bearer ${ADMIN_KEY}`), fc.constant('Bearer wrong-key'), fc.constant('Basic eA=='), headerValue),
  contentType: fc.oneof(fc.constant(undefined), fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data'), headerValue),
  headers: fc.dictionary(headerName, headerValue, { maxKeys: 4 }),
  body,
}).map(abridged);
type Req = typeof request extends fc.Arbitrary<infer R> ? R : never;

interface Answer {
  /** Bytes of the request line and headers sent. */
  headBytes: number;
  status: number;
  headers: Map<string, string>;
  body: Buffer;
}

/**
 * One request over its own socket, written by hand (a client library adds
 * its own opinions, and refuses some of what a hostile client sends), read
 * until the server closes (`Connection: close`).
 */
async function send(server: TestServer, r: Req): Promise<Answer> {
  const u = new URL(server.httpUrl);
  const headers: [string, string][] = [['host', u.host], ['connection', 'close'], ...Object.entries(r.headers)];
  if (r.auth !== undefined) headers.push(['authorization', r.auth]);
  if (r.contentType !== undefined) headers.push(['content-type', r.contentType]);
  if (r.body !== undefined) headers.push(['content-length', String(r.body.length)]);
  const head = `${r.method} ${r.path}${r.query} HTTP/1.1\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
  const socket = net.connect({ host: u.hostname, port: Number(u.port) });
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no complete answer within ${BOUND_MS} ms`)), BOUND_MS);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.on('error', () => undefined); // a reset after the answer is fine; no answer is caught below
  });
  socket.write(Buffer.concat([Buffer.from(head, 'latin1'), r.body ?? Buffer.alloc(0)]));
  try {
    await ended;
  } finally {
    socket.destroy();
  }
  const raw = Buffer.concat(chunks);
  const split = raw.indexOf('\r\n\r\n');
  assert.ok(split > 0, `no HTTP answer to ${r.method} ${r.path.slice(0, 80)}: ${JSON.stringify(raw.toString('latin1', 0, 100))}`);
  const [statusLine, ...lines] = raw.toString('latin1', 0, split).split('\r\n');
  const status = /^HTTP\/1\.1 (\d{3}) /.exec(statusLine ?? '');
  assert.ok(status, `not a status line: ${statusLine}`);
  const map = new Map(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  return { headBytes: Buffer.byteLength(head, 'latin1'), status: Number(status[1]), headers: map, body: raw.subarray(split + 4) };
}

/** What every answer must be. */
function checkAnswer(r: Req, a: Answer): void {
  const what = `${r.method} ${r.path.slice(0, 80)}${r.query.slice(0, 40)} → ${a.status} ${a.body.toString('utf8', 0, 200)}`;
  assert.ok(a.status >= 200 && a.status <= 599, `status ${what}`);
  if (a.status >= 500) assert.equal(a.status, 503, `a 5xx other than 503 UNAVAILABLE: ${what}`);
  if (a.status < 400 || r.method === 'HEAD') {
    if (a.status === 200 && String(a.headers.get('content-type')).startsWith('application/json') && r.method !== 'HEAD') {
      assert.doesNotThrow(() => JSON.parse(a.body.toString('utf8')), `a success whose JSON does not parse: ${what}`);
    }
    return;
  }
  // Node's HTTP parser refuses a head over its 16 KiB limit before any route sees it: the
  // listener's clientError handler (src/roles/http-server.ts) answers 431 HEADERS_TOO_LARGE.
  if (a.headBytes > NODE_MAX_HEADER_BYTES) assert.equal(a.status, 431, `a head over 16 KiB: ${what}`);
  assert.match(String(a.headers.get('content-type')), /^application\/json/, `an error that is not JSON: ${what}`);
  let parsed: unknown;
  assert.doesNotThrow(() => (parsed = JSON.parse(a.body.toString('utf8'))), `an error body that does not parse: ${what}`);
  const error = (parsed as { error?: { code?: unknown; message?: unknown } }).error;
  assert.ok(error && typeof error.code === 'string' && /^[A-Z][A-Z0-9_]*$/.test(error.code), `no error code: ${what}`);
  assert.ok(typeof error.message === 'string' && error.message.length > 0, `no error message: ${what}`);
  if (a.status === 503) assert.equal(error.code, 'UNAVAILABLE', what);
}

describe('HTTP API fuzz', () => {
  let server: TestServer;

  before(async () => {
    server = await startTestServer({ 'dev-login': '1', 'login-attempts-per-minute': '1000000' });
  });

  after(async () => {
    await server?.close();
  });

  async function healthy(): Promise<void> {
    const a = await send(server, { method: 'GET', path: '/healthz', query: '', auth: undefined, contentType: undefined, headers: {}, body: undefined });
    assert.equal(a.status, 200, `the server stopped answering /healthz: ${a.status}`);
  }

  test('random requests to every route: a proper status, JSON errors with a code, no 5xx but 503 UNAVAILABLE, no hang', async () => {
    await fc.assert(fc.asyncProperty(request, async (r) => checkAnswer(r, await send(server, r))), { numRuns: runs(400) });
    await healthy();
  });

  test('bytes that are not HTTP (or hostile upgrades) get an HTTP answer or a close, never a hang; the server keeps serving', async () => {
    const u = new URL(server.httpUrl);
    const garbage = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => Buffer.from(b)),
      fc.tuple(fc.constantFrom(...METHODS, 'GARBAGE', ''), fc.string({ unit: 'binary', maxLength: 60 }), fc.string({ unit: 'binary', maxLength: 200 }))
        .map(([m, p, rest]) => Buffer.from(`${m} ${p} HTTP/1.1\r\n${rest}\r\n\r\n`)),
      // An upgrade to /ws (or elsewhere) with a random key, version and extras.
      fc.tuple(fc.constantFrom('/ws', '/ws?x=1', '/', '/api/v1/tokens', '/wss'), fc.string({ maxLength: 30 }), fc.constantFrom('13', '8', '', 'x'))
        .map(([p, key, version]) => Buffer.from(`GET ${p} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: ${version}\r\n\r\n`)),
    );
    await fc.assert(fc.asyncProperty(garbage, async (bytes) => {
      const socket = net.connect({ host: u.hostname, port: Number(u.port) });
      socket.on('error', () => undefined);
      const got: Buffer[] = [];
      socket.on('data', (c: Buffer) => got.push(c));
      await new Promise((r) => socket.once('connect', r));
      // Send and half-close: an incomplete request is then a parse error, not a wait for
      // more (a client that sends nothing more is held until the headers timeout).
      socket.end(bytes);
      const closed = await Promise.race([
        new Promise<boolean>((r) => socket.once('close', () => r(true))),
        new Promise<boolean>((r) => setTimeout(() => r(false), BOUND_MS)),
      ]);
      socket.destroy();
      const head = Buffer.concat(got).toString('latin1');
      assert.ok(closed, `the server neither answered and closed nor closed within ${BOUND_MS} ms; got ${JSON.stringify(head.slice(0, 100))}`);
      assert.ok(head === '' || /^HTTP\/1\.[01] \d{3} /.test(head), `not an HTTP answer: ${JSON.stringify(head.slice(0, 100))}`);
      if (head !== '') assert.ok(!/^HTTP\/1\.[01] 5/.test(head) || /^HTTP\/1\.[01] 503/.test(head), `a 5xx: ${head.slice(0, 100)}`);
    }), { numRuns: runs(150) });
    await healthy();
  });
});
