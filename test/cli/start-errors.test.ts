// `longlink start` refuses what would silently misbehave: a second server on
// the same data folder (a lock naming its owner), and a port in use (said
// plainly, with the setting to change, not a stack trace). A lock left by a
// process that died is taken over.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LOCK_FILE, StartError } from '../../src/roles/data-lock.js';
import { ADMIN_KEY, startTestServer } from '../helpers/server.js';
import { BIN, Proc, run, startServer } from './cli-helpers.js';

const T = { timeout: 60_000 };

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'longlink-lock-'));
}

describe('longlink start: the data folder lock and ports in use', () => {
  test('a second server on the same data folder is refused while the first runs; the lock goes with it', T, async () => {
    const dir = tempDir();
    try {
      const first = await startTestServer({}, dir);
      await assert.rejects(startTestServer({}, dir), (err: unknown) => {
        assert.ok(err instanceof StartError, String(err));
        assert.match(err.message, new RegExp(`in use by another longlink \\(pid ${process.pid}; lock ${join(dir, LOCK_FILE).replace(/[/.]/g, '\\$&')}\\)`));
        return true;
      });
      await first.close();
      assert.equal(existsSync(join(dir, LOCK_FILE)), false, 'released at stop');
      const again = await startTestServer({}, dir);
      await again.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a lock left by a process that died is taken over', T, async () => {
    const dir = tempDir();
    try {
      const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
      writeFileSync(join(dir, LOCK_FILE), `${gone.stdout.toString()}\n`);
      const s = await startTestServer({}, dir);
      await s.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the CLI finds a local quick start\'s admin key in its data folder: no LONGLINK_ADMIN_KEY needed', T, async () => {
    const cwd = tempDir();
    const s = await startTestServer();
    try {
      mkdirSync(join(cwd, 'data'));
      writeFileSync(join(cwd, 'data', 'dev-secrets.json'), JSON.stringify({ adminKey: ADMIN_KEY, tokenSecret: 'unused' }));
      const env = { ...process.env };
      delete env.LONGLINK_ADMIN_KEY;
      const send = (extra: string[], dir: string) => new Proc(spawn(process.execPath, [BIN, 'send', '--user', 'alice', '--to', 'bob', '--text', 'hi', '--server', s.httpUrl, ...extra], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] }));
      const ok = send([], cwd);
      assert.equal(await ok.exited, 0, ok.errLines.join('\n'));
      assert.match(ok.lines.join('\n'), /"seq":1/);
      const elsewhere = send([], tmpdir());
      assert.equal(await elsewhere.exited, 2);
      assert.match(elsewhere.errLines.join('\n'), /set LONGLINK_ADMIN_KEY .*dev-secrets\.json/);
      const named = send(['--data-dir', join(cwd, 'data')], tmpdir());
      assert.equal(await named.exited, 0, named.errLines.join('\n'));
    } finally {
      await s.close();
      rmSync(cwd, { recursive: true, force: true });
    }
  });

  test('the CLI: a second start on the folder exits 1 naming the lock; a port in use is named with its setting', T, async () => {
    const dir = tempDir();
    const other = tempDir();
    try {
      const first = await startServer(dir);
      try {
        const second = run(['start'], { LONGLINK_DATA_DIR: dir, LONGLINK_HTTP_PORT: '0', LONGLINK_TCP_PORT: '0', LONGLINK_TOKEN_SECRET: 'x'.repeat(32) });
        assert.equal(await second.exited, 1);
        const said = second.errLines.join('\n');
        assert.match(said, /longlink: the data folder .* is in use by another longlink \(pid \d+; lock .*longlink\.lock\)/);
        assert.doesNotMatch(said, /\n\s+at /, 'no stack trace');

        const port = new URL(first.http).port;
        const clash = run(['start'], { LONGLINK_DATA_DIR: other, LONGLINK_HTTP_PORT: port, LONGLINK_TCP_PORT: '0', LONGLINK_TOKEN_SECRET: 'x'.repeat(32) });
        assert.equal(await clash.exited, 1);
        const clashSaid = clash.errLines.join('\n');
        assert.match(clashSaid, new RegExp(`longlink: the HTTP port ${port} on 127\\.0\\.0\\.1 is in use .*--http-port / LONGLINK_HTTP_PORT`));
        assert.doesNotMatch(clashSaid, /\n\s+at /, 'no stack trace');
        assert.equal(existsSync(join(other, LOCK_FILE)), false, 'a start that failed leaves no lock');

        // A wrong admin key: the same code as the HTTP answer (UNAUTHORIZED), not a nearby wire code.
        const wrongKey = run(['send', '--user', 'alice', '--to', 'bob', '--text', 'hi', '--server', first.http], { LONGLINK_ADMIN_KEY: 'wrong-admin-key-0123456789' });
        assert.equal(await wrongKey.exited, 1);
        assert.match(wrongKey.errLines.join('\n'), /"code":"UNAUTHORIZED"/);
      } finally {
        await first.proc.kill();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(other, { recursive: true, force: true });
    }
  });
});
