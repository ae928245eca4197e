// /metrics and /readyz on the cluster roles: a gateway and a logic node in
// this process, on real Redis and PostgreSQL. Metrics move with a message sent
// over TCP; /readyz turns 503 (naming Redis) when Redis stops and 200 again
// once it is back, while /metrics keeps answering.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadServerConfig } from '../../src/config.js';
import { startGateway, type RunningGateway } from '../../src/roles/gateway.js';
import { startLogic, type RunningLogic } from '../../src/roles/logic.js';
import { TokenService } from '../../src/auth/tokens.js';
import { startPostgres, startRedis, type PostgresServer, type RedisServer } from '../helpers/services.js';
import { ADMIN_KEY, TOKEN_SECRET } from '../helpers/server.js';
import { RawClient } from '../helpers/raw.js';
import { sendOk, uniqueId } from '../logic/support.js';
import { until } from '../cluster/helpers.js';
import { getJson, scrape, value } from './prom.js';

const T = { timeout: 120_000 };
const SHARDS = 4;

let redis: RedisServer;
let postgres: PostgresServer;
let logic: RunningLogic;
let gateway: RunningGateway;
let gatewayHttp: string;

function config(nodeId: string) {
  return loadServerConfig({
    'node-id': nodeId, 'http-port': '0', 'tcp-port': '0', 'admin-key': ADMIN_KEY, 'token-secret': TOKEN_SECRET,
    'redis-url': redis.url, 'postgres-url': postgres.url, 'bus-shards': String(SHARDS), 'lease-ms': '1500', 'node-ttl-ms': '1500',
    'ping-interval-ms': '1000',
  }, {});
}

async function readyz(url: string) {
  return getJson(`${url}/readyz`);
}

/** Polls until both roles' /readyz answer `status`; fails with their last answers. */
async function bothReady(status: number, timeoutMs: number): Promise<Record<string, unknown>[]> {
  let last: { status: number; body: Record<string, unknown> }[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    last = await Promise.all([readyz(logic.httpUrl), readyz(gatewayHttp)]);
    if (last.every((r) => r.status === status)) return last.map((r) => r.body);
    if (Date.now() > deadline) assert.fail(`not ${status} within ${timeoutMs} ms: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  [redis, postgres] = await Promise.all([startRedis(), startPostgres({ durable: false })]);
  logic = await startLogic(config('obs-logic'));
  gateway = await startGateway(config('obs-gw'));
  gatewayHttp = `http://127.0.0.1:${gateway.httpPort}`;
});

after(async () => {
  await gateway?.stop();
  await logic?.stop();
  await redis?.stop();
  await postgres?.stop();
});

describe('observability on a gateway and a logic node', () => {
  test('/readyz: 200 with every check ok on both roles', T, async () => {
    const [l, g] = await bothReady(200, 10_000);
    assert.deepEqual(l!.checks, { redis: 'ok', store: 'ok', shards: 'ok' });
    assert.equal(l!.role, 'logic');
    assert.deepEqual(g!.checks, { redis: 'ok', registry: 'ok' });
    assert.equal(g!.role, 'gateway');
    const health = await getJson(`${gatewayHttp}/healthz`);
    assert.deepEqual([health.status, health.body.role, health.body.node], [200, 'gateway', 'obs-gw']);
  });

  test('/metrics on both roles, moving with a message sent over TCP', T, async () => {
    await bothReady(200, 10_000);
    // Ready means owning a shard; the others follow as their streams are checked (bounds, groups).
    let logicBefore = await scrape(logic.httpUrl);
    await until(async () => value(logicBefore = await scrape(logic.httpUrl), 'longlink_bus_shards_owned') === SHARDS, 5000,
      () => `one logic node owns every shard: ${value(logicBefore, 'longlink_bus_shards_owned')} of ${SHARDS}`);
    const appendsBefore = value(logicBefore, 'longlink_store_batch_size_count', { op: 'append' }) ?? 0;

    const tokens = new TokenService(TOKEN_SECRET);
    const alice = await RawClient.connect(gateway.tcpUrl);
    await alice.login((await tokens.issue('alice', 'd1', 'cli', 600)).token);
    await sendOk(alice, { clientMsgId: uniqueId(), toUser: 'bob', text: 'hello' });
    alice.close();

    const l = await scrape(logic.httpUrl);
    assert.ok((value(l, 'longlink_store_batch_size_count', { op: 'append' }) ?? 0) >= appendsBefore + 1, 'the store appended a batch');
    assert.ok((value(l, 'longlink_bus_up_read_total') ?? 0) >= 1, 'logic read the send');
    // Every shard has its series; the entries settle (XACK follows the SendAck, the logout follows the close).
    const settled = (samples: typeof l) => Array.from({ length: SHARDS }, (_, s) => [
      value(samples, 'longlink_bus_up_lag', { shard: String(s) }), value(samples, 'longlink_bus_up_pending', { shard: String(s) }),
    ]);
    let last = settled(l);
    await until(async () => (last = settled(await scrape(logic.httpUrl))).flat().every((v) => v === 0), 5000,
      () => `[lag, pending] per shard: ${JSON.stringify(last)}`);
    const g = await scrape(gatewayHttp);
    assert.ok((value(g, 'longlink_bus_up_published_total') ?? 0) >= 1, 'the gateway published the send');
    assert.ok((value(g, 'longlink_bus_down_read_total') ?? 0) >= 1, 'and read its ack');
    assert.ok((value(g, 'longlink_bus_down_length', { stream: 'own' }) ?? 0) >= 1, 'its downlink stream holds the ack');
    assert.ok(value(g, 'process_resident_memory_bytes') !== undefined);
  });

  test('/readyz: 503 naming Redis while it is stopped, /metrics still answers, 200 again once it is back', T, async () => {
    await bothReady(200, 10_000);
    const port = redis.port;
    await redis.stop();
    const [l, g] = await bothReady(503, 10_000);
    for (const body of [l!, g!]) {
      assert.notEqual((body.checks as Record<string, string>).redis, 'ok');
      assert.equal((body.error as { code: string }).code, 'UNAVAILABLE');
      assert.match((body.error as { message: string }).message, /redis/);
    }
    assert.equal((l!.checks as Record<string, string>).store, 'ok', 'PostgreSQL is still up');
    const started = Date.now();
    assert.equal(value(await scrape(logic.httpUrl), 'longlink_bus_up_lag', { shard: '0' }), undefined, 'no lag without Redis');
    await scrape(gatewayHttp);
    assert.ok(Date.now() - started < 5000, `scrapes answered in ${Date.now() - started} ms without Redis`);

    redis = await startRedis({ port });
    const [l2, g2] = await bothReady(200, 20_000);
    assert.deepEqual(l2!.checks, { redis: 'ok', store: 'ok', shards: 'ok' });
    assert.deepEqual(g2!.checks, { redis: 'ok', registry: 'ok' });
  });
});
