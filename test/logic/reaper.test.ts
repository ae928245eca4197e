// The reaper on a real Redis: sessions of gateways whose registry entry
// expired are dropped; sessions of live gateways are kept.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { RedisSessions } from '../../src/engines/sessions-redis.js';
import { RedisRegistry } from '../../src/engines/registry-redis.js';
import { Reaper } from '../../src/logic/reaper.js';
import { startRedis, type RedisServer } from '../helpers/services.js';

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
});

const gateway = (id: string) => ({ id, role: 'gateway' as const, tcpUrl: `tcp://127.0.0.1:1/${id}`, load: 0, startedAtMs: 0 });
const session = (userId: string, node: string) => ({ userId, deviceId: 'd1', platform: 'ios', node, connId: 1, loginAtMs: 0 });

test('drops the sessions of a gateway whose registry entry expired, and only those', async () => {
  const sessions = new RedisSessions({ url: redis.url, prefix: 'r1:' });
  const registry = new RedisRegistry({ url: redis.url, prefix: 'r1:' });
  const logged: string[] = [];
  const reaper = new Reaper(60_000, { sessions, registry }, (line) => logged.push(line));
  try {
    await registry.announce(gateway('gw-live'), 60_000);
    await registry.announce(gateway('gw-dying'), 300);
    await sessions.bind(session('alice', 'gw-live'));
    await sessions.bind(session('bob', 'gw-dying'));
    await sessions.bind(session('carol', 'gw-dying'));

    assert.deepEqual(await reaper.reap(), [], 'nothing to reap while both are live');
    assert.equal((await sessions.lookup(['alice', 'bob', 'carol'])).size, 3);

    await new Promise((r) => setTimeout(r, 600)); // gw-dying stops refreshing: its entry expires
    assert.deepEqual(await reaper.reap(), ['gw-dying']);
    const left = await sessions.lookup(['alice', 'bob', 'carol']);
    assert.deepEqual([...left.keys()], ['alice'], 'bob and carol are offline: their messages go to sync');
    assert.deepEqual(await sessions.nodes(), ['gw-live']);
    assert.match(logged.join('\n'), /gw-dying is gone: dropped 2 sessions/);
    assert.deepEqual(await reaper.reap(), [], 'a second pass finds nothing');
  } finally {
    await reaper.stop();
    await sessions.close();
    await registry.close();
  }
});

test('a gateway that never announced but holds sessions is reaped (it died before its first refresh)', async () => {
  const sessions = new RedisSessions({ url: redis.url, prefix: 'r2:' });
  const registry = new RedisRegistry({ url: redis.url, prefix: 'r2:' });
  const reaper = new Reaper(60_000, { sessions, registry }, () => undefined);
  try {
    await sessions.bind(session('dave', 'gw-ghost'));
    assert.deepEqual(await reaper.reap(), ['gw-ghost']);
    assert.equal((await sessions.lookup(['dave'])).size, 0);
  } finally {
    await reaper.stop();
    await sessions.close();
    await registry.close();
  }
});
