// The acceptance of files, search and push notifications, run as a user runs
// it: `longlink start` with a push webhook pointed at a local HTTP server;
// alice sends bob a small PNG with `send --file`; bob's `listen` prints it
// with the file's id and type; bob downloads it and carol cannot; `search`
// finds an earlier message; the webhook gets one notification while bob has
// no device online and none while he listens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { run, startServer, type Proc } from './cli-helpers.js';

const SECRET = 'cli-push-secret-0123456789';

test('files, search and push notifications from the command line, as the acceptance runs them', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'longlink-files-'));
  const received: Record<string, unknown>[] = [];
  const hook = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>);
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  const s = await startServer(join(dir, 'data'), 0, 0, {
    LONGLINK_PUSH_WEBHOOK_URL: `http://127.0.0.1:${(hook.address() as AddressInfo).port}/push`,
    LONGLINK_PUSH_WEBHOOK_SECRET: SECRET,
    LONGLINK_PUSH_COLLAPSE_MS: '300',
  });
  const procs: Proc[] = [];
  const ok = async (args: string[]): Promise<Proc> => {
    const p = run([...args, '--server', s.http]);
    assert.equal(await p.exited, 0, `${args.join(' ')}: ${p.errLines.join('\n')}`);
    return p;
  };
  try {
    const listen = run(['listen', '--user', 'bob', '--device', 'listen', '--server', s.http]);
    procs.push(listen);
    await listen.waitFor(() => listen.errLines.some((l) => l.includes('"type":"online"')), 15_000, 'listen online');

    await ok(['send', '--user', 'alice', '--to', 'bob', '--text', 'the harbour photos are coming']);
    const png = join(dir, 'harbour.png');
    writeFileSync(png, await sharp({ create: { width: 48, height: 32, channels: 3, background: '#0a7' } }).png().toBuffer());
    const sent = await ok(['send', '--user', 'alice', '--to', 'bob', '--file', png]);
    const upload = sent.json<{ file_id: string; mime: string; width: number; height: number }>('upload')[0]!;
    assert.deepEqual([upload.mime, upload.width, upload.height], ['image/png', 48, 32]);
    assert.equal(sent.json('ack').length, 1);

    await listen.waitFor(() => listen.json('message').length >= 2, 10_000, 'both messages at bob');
    const withFile = listen.json<{ files?: { file_id: string; mime: string; name: string }[] }>('message')[1]!;
    assert.deepEqual(withFile.files?.map((f) => [f.file_id, f.mime, f.name]), [[upload.file_id, 'image/png', 'harbour.png']]);

    const out = join(dir, 'got.png');
    const got = await ok(['download', '--user', 'bob', '--file', upload.file_id, '--out', out]);
    assert.equal(got.json<{ mime: string }>('downloaded')[0]?.mime, 'image/png');
    assert.deepEqual(readFileSync(out), readFileSync(png));
    const carol = run(['download', '--user', 'carol', '--file', upload.file_id, '--out', join(dir, 'carol.png'), '--server', s.http]);
    assert.equal(await carol.exited, 1);
    assert.ok(carol.errLines.some((l) => l.includes('"code":"FILE_NOT_FOUND"')), carol.errLines.join('\n'));

    // Indexed beside the send path: found a moment after the ack.
    let hits: { text: string; snippet: string }[] = [];
    for (let i = 0; i < 50 && hits.length === 0; i++) {
      hits = (await ok(['search', '--user', 'bob', '--query', 'harbour'])).json<{ text: string; snippet: string }>('hit');
      if (hits.length === 0) await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(hits.map((h) => [h.text, h.snippet]), [['the harbour photos are coming', 'the [harbour] photos are coming']]);
    const carolSearch = await ok(['search', '--user', 'carol', '--query', 'harbour']);
    assert.deepEqual(carolSearch.json('hit'), []);

    // While bob listens: no notification. Once he is gone: one, for the burst.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(received.length, 0, `bob was listening: ${JSON.stringify(received)}`);
    await listen.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    await ok(['send', '--user', 'alice', '--to', 'bob', '--text', 'you there?', '--count', '2']);
    for (let i = 0; i < 100 && received.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(received.length, 1, JSON.stringify(received));
    assert.deepEqual([received[0]!.user_id, received[0]!.conversation_id, received[0]!.count, received[0]!.badge], ['bob', 'u:alice:bob', 2, 4]);
  } finally {
    for (const p of procs) await p.kill('SIGKILL');
    await s.proc.kill('SIGTERM');
    await new Promise<void>((r) => hook.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  }
});
