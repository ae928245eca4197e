// The Registry contract on Redis, against a real redis-server, plus what only a
// shared registry shows: nodes seen across processes, TTLs kept by Redis itself.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { registryContract } from './registry.contract.js';
import { RedisRegistry } from '../../src/engines/registry-redis.js';
import type { NodeInfo } from '../../src/engines/registry.js';
import { startRedis, type RedisServer } from '../helpers/services.js';

let redis: RedisServer;
/** A client owned by the test, lent to some registries (which must not close it). */
let shared: Redis;
let n = 0;
/** A fresh key prefix: a fresh, empty cluster on the shared server. */
const prefix = () => `t${++n}:`;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

before(async () => {
  redis = await startRedis();
  shared = new Redis(redis.url);
});
after(async () => {
  await shared.quit();
  await redis.stop();
});

// Each instance creates (and on close quits) its own client.
registryContract('RedisRegistry', () => new RedisRegistry({ url: redis.url, prefix: prefix() }));
// Each instance borrows the test's client; close() must leave it open for the later tests.
registryContract('RedisRegistry (client passed in)', () => new RedisRegistry(shared, prefix()));

function gateway(id: string, load: number): NodeInfo {
  return { id, role: 'gateway', tcpUrl: `tcp://127.0.0.1:${9000 + load}`, wsUrl: `ws://127.0.0.1:${8000 + load}/ws`, load, startedAtMs: 1_700_000_000_000 };
}

describe('RedisRegistry on a shared Redis', () => {
  test('nodes announced by one process are live for another', async () => {
    const p = prefix();
    const gw1 = new RedisRegistry({ url: redis.url, prefix: p });
    const gw2 = new RedisRegistry({ url: redis.url, prefix: p });
    const api = new RedisRegistry(shared, p);
    try {
      await gw1.announce(gateway('gw-1', 40), 60_000);
      await gw2.announce(gateway('gw-2', 10), 60_000);
      assert.deepEqual(await api.live('gateway'), [gateway('gw-2', 10), gateway('gw-1', 40)]);
      await gw2.announce(gateway('gw-2', 90), 60_000);
      assert.deepEqual((await api.live('gateway')).map((g) => g.id), ['gw-1', 'gw-2']);
      await api.remove('gw-1');
      assert.deepEqual((await gw2.live('gateway')).map((g) => g.id), ['gw-2']);
      assert.deepEqual(await new RedisRegistry(shared, prefix()).live('gateway'), [], 'another prefix is another cluster');
    } finally {
      await gw1.close();
      await gw2.close();
      await api.close();
    }
  });

  test('entries expire by TTL in Redis itself, and live() prunes the index', async () => {
    const p = prefix();
    const registry = new RedisRegistry(shared, p);
    await registry.announce(gateway('gw-1', 1), 150);
    await registry.announce(gateway('gw-2', 2), 60_000);
    const ttl = await shared.pttl(`${p}node:gw-1`);
    assert.ok(ttl > 0 && ttl <= 150, `PTTL ${ttl}`);
    assert.deepEqual(JSON.parse((await shared.get(`${p}node:gw-1`))!), gateway('gw-1', 1));
    assert.equal(await shared.zcard(`${p}nodes:gateway`), 2);
    await sleep(500);
    // Gone from Redis without anyone calling live().
    assert.equal(await shared.exists(`${p}node:gw-1`), 0);
    assert.equal(await shared.exists(`${p}node:gw-2`), 1);
    assert.deepEqual((await registry.live('gateway')).map((g) => g.id), ['gw-2']);
    assert.deepEqual(await shared.zrange(`${p}nodes:gateway`, 0, -1), ['gw-2']);
    await registry.close();
  });

  test('a node whose key vanished is not live, even before its index entry expires', async () => {
    const p = prefix();
    const registry = new RedisRegistry(shared, p);
    await registry.announce(gateway('gw-1', 1), 60_000);
    await shared.del(`${p}node:gw-1`);
    assert.deepEqual(await registry.live('gateway'), []);
    assert.equal(await shared.zcard(`${p}nodes:gateway`), 0);
    await registry.close();
  });

  test('a node that changes role is listed under its new role only', async () => {
    const registry = new RedisRegistry(shared, prefix());
    await registry.announce(gateway('node-1', 1), 60_000);
    await registry.announce({ id: 'node-1', role: 'logic', load: 0, startedAtMs: 1 }, 60_000);
    assert.deepEqual(await registry.live('gateway'), []);
    assert.deepEqual((await registry.live('logic')).map((x) => x.id), ['node-1']);
    await registry.close();
  });

  test('keeps working after Redis lost its script cache', async () => {
    const registry = new RedisRegistry(shared, prefix());
    await registry.announce(gateway('gw-1', 1), 60_000);
    await shared.script('FLUSH');
    assert.equal((await registry.live('gateway')).length, 1);
    await shared.script('FLUSH');
    await registry.announce(gateway('gw-2', 0), 60_000);
    assert.deepEqual((await registry.live('gateway')).map((g) => g.id), ['gw-2', 'gw-1']);
    await registry.close();
  });

  test('close() leaves a client passed in open, and the registry refuses work after it', async () => {
    const registry = new RedisRegistry(shared, prefix());
    await registry.close();
    assert.equal(await shared.ping(), 'PONG');
    await assert.rejects(registry.live('gateway'), /closed/);
    const owned = new RedisRegistry({ url: redis.url, prefix: prefix() });
    await owned.live('logic');
    await owned.close();
    await assert.rejects(owned.announce(gateway('gw-1', 1), 1000), /closed/);
  });
});
