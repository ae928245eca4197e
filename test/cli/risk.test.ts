// The risk-control issue's acceptance, through the real binary: `longlink
// start`, rules put through PUT /api/v1/risk/rules (a blocked word, a masked
// word, a before-send webhook on a local HTTP server that denies "deny-me").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, startServer, type Proc } from './cli-helpers.js';
import { ADMIN_KEY } from '../helpers/server.js';

interface MessageLine { seq: number; from: string; text: string }

async function listen(server: string, user: string, device: string): Promise<Proc> {
  const p = run(['listen', '--user', user, '--device', device, '--server', server]);
  await p.waitFor(() => p.errLines.some((l) => l.includes('"type":"online"')), 15_000, 'listen online');
  return p;
}

test('blocked word refused CONTENT_BLOCKED and never delivered or kept; masked word arrives masked; the before-send webhook denies exactly "deny-me"', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'longlink-cli-risk-'));
  const denied: string[] = [];
  const hook = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString())).on('end', () => {
      const text = (JSON.parse(body) as { message: { text: string } }).message.text;
      const deny = text.includes('deny-me');
      if (deny) denied.push(text);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(deny ? { action: 'deny', reason: 'no deny-me' } : { action: 'allow' }));
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  const s = await startServer(dir);
  try {
    const put = await fetch(`${s.http}/api/v1/risk/rules`, {
      method: 'PUT', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        block_words: ['forbidden'], mask_words: ['darn'],
        before_send_webhook: { url: `http://127.0.0.1:${(hook.address() as AddressInfo).port}/check`, timeout_ms: 1000, on_failure: 'allow' },
      }),
    });
    assert.equal(put.status, 200, await put.text());
    const bob = await listen(s.http, 'bob', 'phone');

    const send = async (text: string) => {
      const p = run(['send', '--user', 'alice', '--to', 'bob', '--text', text, '--server', s.http]);
      return { code: await p.exited, err: p.errLines.join('\n') };
    };
    const blocked = await send('this is Forbidden talk');
    assert.notEqual(blocked.code, 0);
    assert.match(blocked.err, /CONTENT_BLOCKED/);
    assert.equal((await send('well darn it')).code, 0);
    const hooked = await send('please deny-me now');
    assert.notEqual(hooked.code, 0);
    assert.match(hooked.err, /CONTENT_BLOCKED/);
    assert.equal((await send('deny me not')).code, 0);
    assert.deepEqual(denied, ['please deny-me now'], 'the webhook denied exactly that one');

    await bob.waitFor(() => bob.json('message').length >= 2, 10_000, 'two messages');
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(bob.json<MessageLine>('message').map((m) => m.text), ['well **** it', 'deny me not']);
    await bob.kill('SIGINT');
    // A new device syncs the whole conversation: what is stored.
    const tablet = await listen(s.http, 'bob', 'tablet');
    await tablet.waitFor(() => tablet.json('message').length >= 2, 10_000, 'the synced history');
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(tablet.json<MessageLine>('message').map((m) => [m.seq, m.text]), [[1, 'well **** it'], [2, 'deny me not']]);
    await tablet.kill('SIGINT');
  } finally {
    await s.proc.kill();
    hook.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
