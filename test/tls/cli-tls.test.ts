// TLS through the real binary: `longlink start` with a certificate and key
// made at test time, and `listen` / `send` that trust its CA (--ca or
// LONGLINK_CA) over tls:// and wss://; without the CA they are refused.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type Proc } from '../cli/cli-helpers.js';
import { TOKEN_SECRET } from '../helpers/server.js';
import { makeTestCertificates, type TestCertificates } from '../helpers/tls.js';

const T = { timeout: 90_000 };

interface MessageLine { from: string; text: string; seq: number }

let certs: TestCertificates;
let dataDir: string;
let server: Proc;
const urls: Record<'http' | 'tcp' | 'ws', string> = { http: '', tcp: '', ws: '' };

before(async () => {
  certs = makeTestCertificates();
  dataDir = mkdtempSync(join(tmpdir(), 'longlink-cli-tls-'));
  server = run(['start'], {
    LONGLINK_HTTP_PORT: '0', LONGLINK_TCP_PORT: '0', LONGLINK_DATA_DIR: dataDir, LONGLINK_TOKEN_SECRET: TOKEN_SECRET, ...certs.serverEnv,
  });
  await server.waitFor(() => server.lines.some((l) => l.includes(' listening ')) || server.exitCode !== null, 15_000, 'server start');
  const line = server.lines.find((l) => l.includes(' listening '));
  assert.ok(line, `server did not start: ${server.errLines.join('\n')}`);
  for (const k of ['http', 'tcp', 'ws'] as const) urls[k] = new RegExp(`${k}=(\\S+)`).exec(line)![1]!;
});

after(async () => {
  await server?.kill('SIGTERM');
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  certs?.remove();
});

test('`longlink start` with a certificate serves https, tls:// and wss://', T, () => {
  assert.match(urls.http, /^https:\/\//);
  assert.match(urls.tcp, /^tls:\/\//);
  assert.match(urls.ws, /^wss:\/\/.*\/ws$/);
});

test('listen and send with --ca (tls://) and LONGLINK_CA (wss://): delivered', T, async () => {
  const bob = run(['listen', '--user', 'bob', '--device', 'cli', '--server', urls.http, '--ca', certs.caFile]);
  try {
    await bob.waitFor(() => bob.errLines.some((l) => l.includes('"type":"online"')) || bob.exitCode !== null, 15_000, 'listen online');
    const overTls = run(['send', '--user', 'alice', '--to', 'bob', '--text', 'over tls', '--server', urls.http, '--ca', certs.caFile]);
    assert.equal(await overTls.exited, 0, overTls.errLines.join('\n'));
    const overWss = run(['send', '--user', 'alice', '--to', 'bob', '--text', 'over wss', '--transport', 'ws', '--server', urls.http],
      { LONGLINK_CA: certs.caFile });
    assert.equal(await overWss.exited, 0, overWss.errLines.join('\n'));
    // --gateway pins a tls:// gateway; the token still comes over https.
    const pinned = run(['send', '--user', 'alice', '--to', 'bob', '--text', 'pinned', '--server', urls.http, '--gateway', urls.tcp, '--ca', certs.caFile]);
    assert.equal(await pinned.exited, 0, pinned.errLines.join('\n'));
    assert.deepEqual([overTls, overWss, pinned].map((p) => p.json<{ seq: number }>('ack').map((a) => a.seq)), [[1], [2], [3]]);
    await bob.waitFor(() => bob.json('message').length >= 3, 10_000, 'three messages');
    assert.deepEqual(bob.json<MessageLine>('message').map((m) => [m.from, m.text, m.seq]),
      [['alice', 'over tls', 1], ['alice', 'over wss', 2], ['alice', 'pinned', 3]]);
  } finally {
    await bob.kill('SIGINT');
  }
});

test('without the CA (or with another) the CLI is refused with a certificate error; a bad --ca is a usage error', T, async () => {
  const attempts = [
    run(['send', '--user', 'alice', '--to', 'bob', '--text', 'x', '--server', urls.http]),
    run(['send', '--user', 'alice', '--to', 'bob', '--text', 'x', '--server', urls.http, '--ca', certs.otherCaFile]),
  ];
  for (const p of attempts) {
    assert.equal(await p.exited, 1);
    const error = p.errLines.map((l) => JSON.parse(l) as { type: string; code: string; message: string }).find((l) => l.type === 'error');
    assert.equal(error?.code, 'UNAVAILABLE', p.errLines.join('\n'));
    assert.match(error.message, /certificate/);
    assert.deepEqual(p.json('ack'), []);
  }
  const bad = [join(certs.dir, 'missing.pem'), certs.keyFile].map((file) =>
    run(['send', '--user', 'alice', '--to', 'bob', '--text', 'x', '--server', urls.http, '--ca', file]));
  for (const p of bad) {
    assert.equal(await p.exited, 2);
    assert.match(p.errLines.join('\n'), /longlink: (cannot read the CA file|.* holds no PEM certificate)/);
  }
});
