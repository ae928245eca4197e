// Structured logs: JSON lines on stderr with the node id and role, never a
// secret or a message body; at debug level the trace of a message id from the
// store. Checked on the real binary (`longlink start`, needs `npm run build`)
// and on an in-process server with the logger pointed at an array.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { log, logTo } from '../../src/observability/log.js';
import { startTestServer, ADMIN_KEY, TOKEN_SECRET } from '../helpers/server.js';
import { RawClient } from '../helpers/raw.js';
import { sendOk } from '../logic/support.js';
import { run } from '../cli/cli-helpers.js';

const T = { timeout: 60_000 };
const BODY = 'a-message-body-nobody-may-log-7f3a';

/** Lines the logger writes, kept here instead of stderr. */
function capture(): string[] {
  const lines: string[] = [];
  logTo({ write: (chunk: string) => void lines.push(...chunk.split('\n').filter((l) => l !== '')) });
  return lines;
}

after(() => logTo(undefined));

function parse(lines: readonly string[]): Record<string, unknown>[] {
  return lines.map((l) => {
    try {
      return JSON.parse(l) as Record<string, unknown>;
    } catch {
      return assert.fail(`not a JSON line: ${l}`);
    }
  });
}

function assertClean(lines: readonly string[], secrets: readonly string[]): void {
  for (const secret of secrets) {
    const leak = lines.find((l) => l.includes(secret));
    assert.equal(leak, undefined, `a log line holds ${secret.slice(0, 12)}…`);
  }
}

async function issueToken(httpUrl: string, user: string): Promise<string> {
  const res = await fetch(`${httpUrl}/api/v1/tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: user, device_id: 'd1' }),
  });
  assert.equal(res.status, 200);
  return ((await res.json()) as { token: string }).token;
}

describe('logs', () => {
  test('longlink start: JSON lines on stderr with node and role, the human start-up lines on stdout, no secret or body', T, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'longlink-log-'));
    const proc = run(['start'], {
      LONGLINK_HTTP_PORT: '0', LONGLINK_TCP_PORT: '0', LONGLINK_DATA_DIR: dir, LONGLINK_TOKEN_SECRET: TOKEN_SECRET,
      LONGLINK_NODE_ID: 'log-node', LONGLINK_LOG_LEVEL: 'info',
    });
    try {
      await proc.waitFor(() => proc.lines.some((l) => l.includes(' listening ')) || proc.exitCode !== null, 15_000, 'server start');
      const line = proc.lines.find((l) => l.includes(' listening '))!;
      const http = /http=(\S+)/.exec(line)![1]!;
      const tcp = /tcp=(\S+)/.exec(line)![1]!;
      const token = await issueToken(http, 'alice');
      const alice = await RawClient.connect(tcp);
      await alice.login(token);
      await sendOk(alice, { clientMsgId: 'log-cm-1', toUser: 'bob', text: BODY });
      alice.close();
      // A bad login too: errors are where secrets tend to leak.
      const mallory = await RawClient.connect(tcp);
      await mallory.login(`${token}x`).catch(() => undefined);
      mallory.close();
      assert.equal(await proc.kill('SIGTERM'), 0);

      const records = parse(proc.errLines);
      assert.ok(records.length >= 3, `stderr: ${proc.errLines.join('\n')}`);
      for (const r of records) {
        assert.equal(r.node, 'log-node');
        assert.equal(r.role, 'embedded');
        assert.equal(typeof r.level, 'number');
        assert.ok((r.level as number) >= 30, 'nothing below info');
      }
      assert.deepEqual(records.map((r) => r.msg).filter((m) => ['started', 'stopping', 'stopped'].includes(m as string)), ['started', 'stopping', 'stopped']);
      assertClean(proc.errLines, [token, ADMIN_KEY, TOKEN_SECRET, BODY]);
      assertClean(proc.lines, [token, TOKEN_SECRET, BODY]);
    } finally {
      await proc.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('redaction: tokens, keys, authorization headers, URL passwords and message text never reach a line', T, async () => {
    const lines = capture();
    const token = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ';
    const logger = log.child({ component: 'test' });
    logger.info({ token, adminKey: ADMIN_KEY, headers: { authorization: `Bearer ${ADMIN_KEY}` }, text: BODY, message: { text: BODY } }, 'fields');
    logger.warn({ url: 'redis://default:hunter2-pw@10.0.0.5:6379', note: `sent ${token}` }, 'strings');
    logger.error({ err: new Error(`connect to postgres://longlink:hunter2-pw@db/longlink failed (Authorization: Bearer ${ADMIN_KEY})`) }, 'error');
    logger.info(`login with ${token}`);
    const records = parse(lines);
    assert.equal(records.length, 4);
    assertClean(lines, [token, ADMIN_KEY, BODY, 'hunter2-pw']);
    assert.equal(records[0]!.token, '[redacted]');
    assert.equal((records[0]!.message as { text: string }).text, '[redacted]');
    assert.equal(records[1]!.url, 'redis://default:[redacted]@10.0.0.5:6379', 'the URL stays readable without its password');
    assert.match((records[2]!.err as { message: string }).message, /^connect to postgres:\/\/longlink:\[redacted\]@db/);
    assert.equal(records[0]!.component, 'test');
  });

  test('at info, no trace; at debug, a message id is followed gateway → logic → store → gateway, with its server id, conversation and seq', T, async () => {
    for (const level of ['info', 'debug'] as const) {
      const lines = capture();
      const s = await startTestServer({ 'log-level': level, 'node-id': `trace-${level}` });
      try {
        const bob = await RawClient.connect(s.wsUrl);
        await bob.login(await s.token('bob'));
        const alice = await RawClient.connect(s.tcpUrl);
        await alice.login(await s.token('alice'));
        const ack = await sendOk(alice, { clientMsgId: `trace-7c1d-${level}`, toUser: 'bob', text: BODY });
        await bob.next((f) => f.body.case === 'push');
        alice.close();
        bob.close();
        const records = parse(lines);
        const traced = records.filter((r) => r.trace === `trace-7c1d-${level}`);
        if (level === 'info') {
          assert.deepEqual(traced, []);
          assert.ok(records.some((r) => r.msg === 'started' && r.node === 'trace-info' && r.role === 'embedded'));
        } else {
          const stored = traced.find((r) => r.component === 'store' && r.msg === 'stored');
          assert.ok(stored, `no store trace in:\n${lines.join('\n')}`);
          assert.equal(stored.node, 'trace-debug');
          assert.equal(stored.role, 'embedded');
          assert.equal(stored.from, 'alice');
          assert.equal(stored.msg_id, ack.serverMsgId);
          assert.equal(stored.conv, 'u:alice:bob');
          assert.equal(stored.seq, Number(ack.seq));
          assert.equal(stored.duplicate, false);
          // The whole path, in order: received at the gateway, accepted by logic, stored, written to bob.
          const steps = traced.map((r) => `${r.component as string}: ${r.msg as string}`);
          const path = ['gateway: send received', 'logic: send accepted', 'store: stored', 'gateway: push written'];
          const at = path.map((step) => steps.indexOf(step));
          assert.ok(at.every((i) => i >= 0) && at.every((i, k) => k === 0 || i > at[k - 1]!), `trace steps ${JSON.stringify(steps)}`);
          const written = traced.find((r) => r.msg === 'push written')!;
          assert.equal(written.msg_id, ack.serverMsgId);
          assert.equal(written.seq, Number(ack.seq));
        }
        assertClean(lines, [BODY]);
      } finally {
        await s.close();
      }
    }
  });
});
