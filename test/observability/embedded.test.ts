// /metrics, /healthz and /readyz on the embedded server (`longlink start`):
// the Prometheus text format, counters that move with real traffic over real
// sockets, a registry per running server, and the optional metrics key.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadServerConfig } from '../../src/config.js';
import { startEmbedded } from '../../src/roles/embedded.js';
import { startTestServer, ADMIN_KEY, TOKEN_SECRET } from '../helpers/server.js';
import { online, sendOk, uniqueId } from '../logic/support.js';
import { RawClient } from '../helpers/raw.js';
import { until } from '../cluster/helpers.js';
import { getJson, scrape, value } from './prom.js';

const T = { timeout: 60_000 };

describe('observability on the embedded server', () => {
  test('GET /metrics answers in the Prometheus text format, with process metrics and every longlink family', T, async () => {
    const s = await startTestServer();
    try {
      const samples = await scrape(s.httpUrl);
      assert.ok(value(samples, 'process_cpu_user_seconds_total') !== undefined, 'default process metrics');
      assert.ok(value(samples, 'nodejs_eventloop_lag_seconds') !== undefined, 'event loop lag');
      const text = await (await fetch(`${s.httpUrl}/metrics`)).text();
      for (const family of [
        'longlink_connections', 'longlink_logins_total', 'longlink_frames_in_total', 'longlink_frames_out_total',
        'longlink_push_acks_total', 'longlink_push_latency_seconds', 'longlink_errors_total', 'longlink_kicks_total',
        'longlink_limit_breaches_total', 'longlink_logic_batches_total', 'longlink_logic_requests_total',
        'longlink_store_latency_seconds', 'longlink_store_batch_size', 'longlink_store_errors_total',
        'longlink_bus_up_lag', 'longlink_bus_shards_owned', 'longlink_bus_up_read_total',
      ]) assert.match(text, new RegExp(`^# TYPE ${family} `, 'm'), family);
      // Series known in advance exist at 0, so dashboards and alerts see them before the first event.
      assert.equal(value(samples, 'longlink_connections', { transport: 'tcp' }), 0);
      assert.equal(value(samples, 'longlink_limit_breaches_total', { limit: 'connections_per_user' }), 0);
      assert.equal(value(samples, 'longlink_bus_shards_owned'), 1);
      // Not the web page's 404: the page does not take these paths.
      const bad = await fetch(`${s.httpUrl}/metrics`, { method: 'POST' });
      assert.equal(bad.status, 405);
      assert.equal(((await bad.json()) as { error: { code: string } }).error.code, 'METHOD_NOT_ALLOWED');
    } finally {
      await s.close();
    }
  });

  test('store and bus counters move with messages sent over TCP and WebSocket', T, async () => {
    const s = await startTestServer();
    try {
      const before = await scrape(s.httpUrl);
      const appendsBefore = value(before, 'longlink_store_batch_size_count', { op: 'append' }) ?? 0;
      const bob = await online(s, 'ws', 'bob');
      const alice = await online(s, 'tcp', 'alice');
      for (let i = 0; i < 5; i++) await sendOk(alice, { clientMsgId: uniqueId(), toUser: 'bob', text: `m${i}` });
      const after = await scrape(s.httpUrl);
      const appends = value(after, 'longlink_store_batch_size_count', { op: 'append' }) ?? 0;
      assert.ok(appends >= appendsBefore + 1, `append batches ${appendsBefore} → ${appends}`);
      assert.ok((value(after, 'longlink_store_batch_size_sum', { op: 'append' }) ?? 0) >= 5, 'at least the 5 messages were appended');
      assert.ok((value(after, 'longlink_store_latency_seconds_count', { op: 'append' }) ?? 0) >= appends);
      assert.ok((value(after, 'longlink_store_latency_seconds_bucket', { op: 'append', le: '+Inf' }) ?? 0) >= appends);
      assert.ok((value(after, 'longlink_bus_up_read_total') ?? 0) >= 5, 'uplink messages read by logic');
      assert.ok((value(after, 'longlink_bus_down_published_total') ?? 0) >= 5, 'acks and pushes went down');
      assert.equal(value(after, 'longlink_bus_up_lag', { shard: '0' }), 0, 'nothing waits for logic once every send was acked');
      alice.close();
      bob.close();
    } finally {
      await s.close();
    }
  });

  test('gateway counters move: connections by transport, logins by result, frames in and out, errors by code', T, async () => {
    const s = await startTestServer();
    try {
      const bob = await online(s, 'ws', 'bob');
      const alice = await online(s, 'tcp', 'alice');
      let m = await scrape(s.httpUrl);
      assert.equal(value(m, 'longlink_connections', { transport: 'tcp' }), 1);
      assert.equal(value(m, 'longlink_connections', { transport: 'ws' }), 1);
      assert.equal(value(m, 'longlink_logins_total', { result: 'ok' }), 2);
      for (let i = 0; i < 3; i++) await sendOk(alice, { clientMsgId: uniqueId(), toUser: 'bob', text: `m${i}` });
      const mallory = await RawClient.connect(s.tcpUrl);
      await mallory.login('not-a-token').catch(() => undefined);
      await mallory.waitClosed();
      alice.close();
      bob.close();
      await until(async () => {
        m = await scrape(s.httpUrl);
        return value(m, 'longlink_connections', { transport: 'tcp' }) === 0 && value(m, 'longlink_connections', { transport: 'ws' }) === 0;
      }, 5000, () => 'connections back to 0 after the clients closed');
      assert.equal(value(m, 'longlink_frames_in_total', { type: 'send' }), 3);
      assert.equal(value(m, 'longlink_frames_in_total', { type: 'login' }), 3);
      // 2 login results, 3 acks, 3 pushes (the error to mallory is counted below, with its code).
      assert.ok((value(m, 'longlink_frames_out_total') ?? 0) >= 8, `frames out: ${value(m, 'longlink_frames_out_total')}`);
      assert.equal(value(m, 'longlink_logins_total', { result: 'TOKEN_INVALID' }), 1);
      assert.equal(value(m, 'longlink_errors_total', { code: 'TOKEN_INVALID' }), 1);
    } finally {
      await s.close();
    }
  });

  test('each running server has its own registry', T, async () => {
    const a = await startTestServer({ 'node-id': 'obs-a' });
    const b = await startTestServer({ 'node-id': 'obs-b' });
    try {
      const alice = await online(a, 'tcp', 'alice');
      await sendOk(alice, { clientMsgId: uniqueId(), toUser: 'bob', text: 'only on a' });
      assert.ok((value(await scrape(a.httpUrl), 'longlink_store_batch_size_count', { op: 'append' }) ?? 0) >= 1);
      assert.equal(value(await scrape(b.httpUrl), 'longlink_store_batch_size_count', { op: 'append' }) ?? 0, 0);
      alice.close();
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('/healthz (the API\'s) and /readyz answer 200, /readyz with the node, the role and the checks', T, async () => {
    const s = await startTestServer();
    try {
      const health = await getJson(`${s.httpUrl}/healthz`);
      assert.equal(health.status, 200);
      assert.equal(health.body.status, 'ok');
      assert.equal(health.body.node, 'test-node');
      const ready = await getJson(`${s.httpUrl}/readyz`);
      assert.equal(ready.status, 200, JSON.stringify(ready.body));
      assert.deepEqual(ready.body.checks, { store: 'ok', started: 'ok' });
      assert.deepEqual([ready.body.node, ready.body.role], ['test-node', 'embedded']);
    } finally {
      await s.close();
    }
  });

  test('with a metrics key, /metrics wants it as a bearer token; the probes stay open', T, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'longlink-obs-'));
    const config = Object.assign(loadServerConfig({
      'http-port': '0', 'tcp-port': '0', 'data-dir': dir, 'admin-key': ADMIN_KEY, 'token-secret': TOKEN_SECRET, 'node-id': 'obs-key',
    }, {}), { metricsKey: 'metrics-key-0123456789' });
    const s = await startEmbedded(config);
    try {
      const refused: Record<string, string>[] = [{}, { authorization: 'Bearer wrong-key' }, { authorization: `Bearer ${ADMIN_KEY}` }];
      for (const headers of refused) {
        const res = await fetch(`${s.httpUrl}/metrics`, { headers });
        assert.equal(res.status, 401);
        assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'UNAUTHORIZED');
      }
      assert.ok((await scrape(s.httpUrl, { authorization: 'Bearer metrics-key-0123456789' })).length > 0);
      assert.equal((await fetch(`${s.httpUrl}/healthz`)).status, 200);
      assert.equal((await fetch(`${s.httpUrl}/readyz`)).status, 200);
    } finally {
      await s.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
