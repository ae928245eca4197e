// The hooks the gateway and logic call (one line per event): what each call
// shows at the next scrape, by the names and labels operators query.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode } from '../../src/protocol/index.js';
import { Metrics, noGatewayMetrics, noLogicMetrics } from '../../src/observability/metrics.js';
import { parseMetrics, value } from './prom.js';

async function samples(m: Metrics) {
  return parseMetrics(await m.scrape());
}

test('gateway hooks: connections by transport, logins by result, frames, acks, errors, kicks and limit breaches', async () => {
  const m = new Metrics({ processMetrics: false });
  const g = m.gateway;
  g.connectionOpened('tcp');
  g.connectionOpened('tcp');
  g.connectionOpened('ws');
  g.connectionClosed('tcp');
  g.login('ok');
  g.login('ok');
  g.login(ErrorCode.TOKEN_INVALID);
  g.frameIn('send');
  g.frameIn('send');
  g.frameIn(undefined);
  g.framesOut(100);
  g.framesOut(1);
  g.pushAck();
  g.pushLatency(0.003);
  g.pushLatency(-0.5); // a clock a little behind: counted as 0, not dropped
  g.error(ErrorCode.RATE_LIMITED);
  g.kick(ErrorCode.REPLACED);
  g.limitBreach('rate');
  g.limitBreach('rate');
  const s = await samples(m);
  assert.equal(value(s, 'longlink_connections', { transport: 'tcp' }), 1);
  assert.equal(value(s, 'longlink_connections', { transport: 'ws' }), 1);
  assert.equal(value(s, 'longlink_logins_total', { result: 'ok' }), 2);
  assert.equal(value(s, 'longlink_logins_total', { result: 'TOKEN_INVALID' }), 1);
  assert.equal(value(s, 'longlink_frames_in_total', { type: 'send' }), 2);
  assert.equal(value(s, 'longlink_frames_in_total', { type: 'unknown' }), 1);
  assert.equal(value(s, 'longlink_frames_out_total'), 101);
  assert.equal(value(s, 'longlink_push_acks_total'), 1);
  assert.equal(value(s, 'longlink_push_latency_seconds_count'), 2);
  assert.equal(value(s, 'longlink_push_latency_seconds_bucket', { le: '0.001' }), 1, 'the negative one, as 0');
  assert.equal(value(s, 'longlink_push_latency_seconds_bucket', { le: '0.005' }), 2);
  assert.equal(value(s, 'longlink_errors_total', { code: 'RATE_LIMITED' }), 1);
  assert.equal(value(s, 'longlink_kicks_total', { code: 'REPLACED' }), 1);
  assert.equal(value(s, 'longlink_limit_breaches_total', { limit: 'rate' }), 2);
  assert.equal(value(s, 'longlink_limit_breaches_total', { limit: 'group_size' }), 0);
  // Counters only grow between scrapes.
  g.login('ok');
  assert.equal(value(await samples(m), 'longlink_logins_total', { result: 'ok' }), 3);
});

test('logic hooks: batches, requests by type, errors and breaches share the role\'s registry', async () => {
  const m = new Metrics({ processMetrics: false });
  m.logic.batch(3);
  m.logic.request('send');
  m.logic.request('send');
  m.logic.request('sync');
  m.logic.error(ErrorCode.FORBIDDEN);
  m.gateway.error(ErrorCode.FORBIDDEN);
  m.logic.limitBreach('group_size');
  const s = await samples(m);
  assert.equal(value(s, 'longlink_logic_batches_total'), 1);
  assert.equal(value(s, 'longlink_logic_requests_total', { type: 'send' }), 2);
  assert.equal(value(s, 'longlink_logic_requests_total', { type: 'sync' }), 1);
  assert.equal(value(s, 'longlink_errors_total', { code: 'FORBIDDEN' }), 2);
  assert.equal(value(s, 'longlink_limit_breaches_total', { limit: 'group_size' }), 1);
});

test('a label never takes more than 200 values: the rest count as "other"', async () => {
  const m = new Metrics({ processMetrics: false });
  for (let i = 0; i < 250; i++) m.gateway.frameIn(`type-${i}`);
  const s = await samples(m);
  assert.equal(s.filter((x) => x.name === 'longlink_frames_in_total').length, 201, '200 values, then "other"');
  assert.equal(value(s, 'longlink_frames_in_total', { type: 'type-199' }), 1);
  assert.equal(value(s, 'longlink_frames_in_total', { type: 'other' }), 50);
});

test('bus gauges are read at scrape time; a failing read leaves the per-shard series out, owns 0, and the scrape still answers', async () => {
  const m = new Metrics({ processMetrics: false });
  let fail = false;
  m.watchBus(async () => {
    if (fail) throw new Error('redis is down');
    return { upLag: new Map([['0', 7], ['1', 0]]), upPending: new Map([['0', 2]]), shardsOwned: 2 };
  });
  let s = await samples(m);
  assert.equal(value(s, 'longlink_bus_up_lag', { shard: '0' }), 7);
  assert.equal(value(s, 'longlink_bus_up_pending', { shard: '0' }), 2);
  assert.equal(value(s, 'longlink_bus_shards_owned'), 2);
  fail = true;
  await new Promise((r) => setTimeout(r, 300)); // past the memo of one scrape
  s = await samples(m);
  assert.equal(value(s, 'longlink_bus_up_lag', { shard: '0' }), undefined);
  assert.equal(value(s, 'longlink_bus_shards_owned'), 0);
});

test('the no-op hooks accept every call', () => {
  noGatewayMetrics.connectionOpened('ws');
  noGatewayMetrics.login(ErrorCode.TOKEN_EXPIRED);
  noGatewayMetrics.pushLatency(1);
  noLogicMetrics.request('send');
  noLogicMetrics.limitBreach('group_size');
});
