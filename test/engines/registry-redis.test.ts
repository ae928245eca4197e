// The Registry contract on Redis, against a real redis-server, plus what only a
// shared registry shows: nodes seen across processes, TTLs kept by Redis itself.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { registryContract } from './registry.contract.js';
import { RedisRegistry } from '../../src/engines/registry-redis.js';
import { NODE_ROLES, type NodeInfo, type NodeRole } from '../../src/engines/registry.js';
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

function service(id: string, role: NodeRole, load = 0): NodeInfo {
  return { id, role, httpUrl: `http://10.0.0.${load}:8080`, services: [role, 'presence'], load, startedAtMs: 1_700_000_000_000 };
}

/** The roles whose index lists the id. */
async function indexesOf(p: string, id: string): Promise<NodeRole[]> {
  const out: NodeRole[] = [];
  for (const role of NODE_ROLES) if ((await shared.zscore(`${p}nodes:${role}`, id)) !== null) out.push(role);
  return out;
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

  test('whatever role a node moves to, it leaves every other role\'s index; remove clears them all', async () => {
    const p = prefix();
    const registry = new RedisRegistry(shared, p);
    // Every role in turn, and back to the first: each announce leaves the node in one index only.
    for (const role of [...NODE_ROLES, NODE_ROLES[0]]) {
      await registry.announce(role === 'gateway' ? gateway('node-1', 1) : service('node-1', role, 1), 60_000);
      assert.deepEqual(await indexesOf(p, 'node-1'), [role]);
      for (const other of NODE_ROLES) assert.deepEqual((await registry.live(other)).map((n) => n.id), other === role ? ['node-1'] : [], `${role}: ${other}`);
      assert.deepEqual((await registry.all()).map((n) => `${n.role}/${n.id}`), [`${role}/node-1`]);
    }
    await registry.announce(service('node-2', 'push', 2), 60_000);
    await registry.remove('node-2');
    assert.deepEqual(await indexesOf(p, 'node-2'), []);
    assert.equal(await shared.exists(`${p}node:node-2`), 0);
    await registry.close();
  });

  test('stores the HTTP address and services with the node, and nothing absent', async () => {
    const p = prefix();
    const registry = new RedisRegistry(shared, p);
    await registry.announce({ ...service('msg-1', 'message', 3), extra: 'not a field' } as NodeInfo, 60_000);
    assert.deepEqual(JSON.parse((await shared.get(`${p}node:msg-1`))!), service('msg-1', 'message', 3));
    await registry.announce({ id: 'auth-1', role: 'auth', load: 0, startedAtMs: 5 }, 60_000);
    assert.deepEqual(JSON.parse((await shared.get(`${p}node:auth-1`))!), { id: 'auth-1', role: 'auth', load: 0, startedAtMs: 5 });
    await registry.close();
  });

  test('all() sees every process\'s nodes, prunes every role\'s index, and skips entries that are not nodes', async () => {
    const p = prefix();
    const a = new RedisRegistry({ url: redis.url, prefix: p });
    const b = new RedisRegistry(shared, p);
    try {
      await a.announce(service('grp-1', 'group', 1), 60_000);
      await b.announce(service('sto-1', 'storage', 2), 150);
      await b.announce(gateway('gw-1', 3), 60_000);
      await shared.zadd(`${p}nodes:risk`, Date.now() + 60_000, 'junk');
      await shared.set(`${p}node:junk`, 'not json');
      await shared.zadd(`${p}nodes:risk`, Date.now() + 60_000, 'ghost');
      assert.deepEqual((await a.all()).map((n) => n.id), ['gw-1', 'grp-1', 'sto-1']);
      await sleep(500);
      assert.deepEqual((await a.all()).map((n) => n.id), ['gw-1', 'grp-1']);
      assert.equal(await shared.zcard(`${p}nodes:storage`), 0, 'the expired entry is pruned');
      assert.deepEqual(await shared.zrange(`${p}nodes:risk`, 0, -1), ['junk'], 'an entry whose key is gone is pruned');
    } finally {
      await a.close();
      await b.close();
    }
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
