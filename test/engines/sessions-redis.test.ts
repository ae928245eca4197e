// The Sessions contract on Redis, against a real redis-server, plus what only a
// shared registry shows: several gateways on one Redis, dead nodes dropped.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { sessionsContract } from './sessions.contract.js';
import { RedisSessions } from '../../src/engines/sessions-redis.js';
import type { SessionInfo } from '../../src/engines/sessions.js';
import { startRedis, type RedisServer } from '../helpers/services.js';

let redis: RedisServer;
/** A client owned by the test, lent to some RedisSessions (which must not close it). */
let shared: Redis;
let n = 0;
/** A fresh key prefix: a fresh, empty cluster on the shared server. */
const prefix = () => `t${++n}:`;

before(async () => {
  redis = await startRedis();
  shared = new Redis(redis.url);
});
after(async () => {
  await shared.quit();
  await redis.stop();
});

// Each instance creates (and on close quits) its own client.
sessionsContract('RedisSessions', () => new RedisSessions({ url: redis.url, prefix: prefix() }));
// Each instance borrows the test's client; the suite closes every instance, and
// the later tests still use the client, so close() must leave it open.
sessionsContract('RedisSessions (client passed in)', () => new RedisSessions(shared, prefix()));

function session(userId: string, deviceId: string, node: string, connId: number): SessionInfo {
  return { userId, deviceId, platform: 'ios', node, connId, loginAtMs: 1_700_000_000_000 + connId };
}

describe('RedisSessions on a shared Redis', () => {
  test('two gateways on the same Redis see each other\'s sessions', async () => {
    const p = prefix();
    const gw1 = new RedisSessions({ url: redis.url, prefix: p });
    const gw2 = new RedisSessions(shared, p);
    const logic = new RedisSessions({ url: redis.url, prefix: p });
    try {
      const phone = session('alice', 'phone', 'gw-1', 1);
      const web = session('alice', 'web', 'gw-2', 1);
      await gw1.bind(phone);
      await gw2.bind(web);
      await gw2.bind(session('bob', 'phone', 'gw-2', 2));
      const found = await logic.lookup(['alice', 'bob', 'carol']);
      assert.deepEqual(found.get('alice'), [phone, web]);
      assert.equal(found.get('bob')?.[0]?.node, 'gw-2');
      assert.equal(found.has('carol'), false);

      // alice's phone logs in again on gw-2: gw-2 learns where to kick the old connection.
      const moved = session('alice', 'phone', 'gw-2', 3);
      assert.deepEqual(await gw2.bind(moved), phone);
      // gw-1's late logout of the replaced connection changes nothing.
      assert.equal(await gw1.unbind('alice', 'phone', 'gw-1', 1), false);
      assert.deepEqual((await gw1.lookup(['alice'])).get('alice'), [moved, web]);
      // A different prefix is a different cluster.
      assert.equal((await new RedisSessions(shared, prefix()).lookup(['alice'])).size, 0);
    } finally {
      await gw1.close();
      await gw2.close();
      await logic.close();
    }
  });

  test('a dead node\'s sessions are dropped, a device that re-bound elsewhere survives', async () => {
    const p = prefix();
    const gw1 = new RedisSessions({ url: redis.url, prefix: p });
    const gw2 = new RedisSessions({ url: redis.url, prefix: p });
    const logic = new RedisSessions(shared, p);
    try {
      await gw1.bind(session('alice', 'phone', 'gw-1', 1));
      await gw1.bind(session('bob', 'phone', 'gw-1', 2));
      await gw1.bind(session('bob', 'web', 'gw-1', 3));
      const carol = session('carol', 'phone', 'gw-2', 1);
      await gw2.bind(carol);
      // alice's phone reconnected to gw-2 before gw-1 was declared dead.
      const alice = session('alice', 'phone', 'gw-2', 2);
      await gw2.bind(alice);

      assert.equal(await logic.dropNode('gw-1'), 2);
      const found = await logic.lookup(['alice', 'bob', 'carol']);
      assert.deepEqual(found.get('alice'), [alice]);
      assert.equal(found.has('bob'), false);
      assert.deepEqual(found.get('carol'), [carol]);
      // Nothing of gw-1 is left in Redis, and gw-2's index still knows alice.
      assert.equal(await shared.exists(`${p}node-sess:gw-1`, `${p}node-drop:gw-1`, `${p}sess:bob`), 0);
      assert.equal(await logic.dropNode('gw-1'), 0);
      assert.equal(await logic.dropNode('gw-2'), 2);
      assert.equal((await logic.lookup(['alice', 'carol'])).size, 0);
    } finally {
      await gw1.close();
      await gw2.close();
      await logic.close();
    }
  });

  test('dropNode of a large node removes every session, in batches', async () => {
    const p = prefix();
    const sessions = new RedisSessions({ url: redis.url, prefix: p, dropBatch: 7 });
    try {
      const users = Array.from({ length: 100 }, (_, i) => `user${i}`);
      await Promise.all(users.map((u, i) => sessions.bind(session(u, 'phone', i % 4 === 0 ? 'gw-2' : 'gw-1', i))));
      assert.equal(await sessions.dropNode('gw-1'), 75);
      const found = await sessions.lookup(users);
      assert.deepEqual([...found.keys()].sort(), users.filter((_, i) => i % 4 === 0).sort());
    } finally {
      await sessions.close();
    }
  });

  test('devices re-binding while a drop runs all survive, and the indexes stay exact', async () => {
    const p = prefix();
    const logic = new RedisSessions({ url: redis.url, prefix: p, dropBatch: 5 });
    const gw2 = new RedisSessions({ url: redis.url, prefix: p });
    try {
      const users = Array.from({ length: 200 }, (_, i) => `user${i}`);
      for (const [i, u] of users.entries()) await logic.bind(session(u, 'phone', 'gw-1', i));
      const movers = users.filter((_, i) => i % 3 === 0);
      await gw2.lookup(['warm-up']); // connected, so its binds race the drop rather than queue behind a connect
      const [dropped] = await Promise.all([
        logic.dropNode('gw-1'),
        Promise.all(movers.map((u, i) => gw2.bind(session(u, 'phone', 'gw-2', 1000 + i)))),
      ]);
      // Each mover was either dropped first or moved first; either way it is on gw-2 now.
      assert.ok(dropped >= users.length - movers.length && dropped <= users.length, `dropped ${dropped}`);
      const found = await logic.lookup(users);
      assert.deepEqual([...found.keys()].sort(), [...movers].sort());
      for (const u of movers) assert.equal(found.get(u)?.[0]?.node, 'gw-2');
      assert.equal(await shared.exists(`${p}node-sess:gw-1`, `${p}node-drop:gw-1`), 0);
      assert.equal(await logic.dropNode('gw-2'), movers.length);
    } finally {
      await logic.close();
      await gw2.close();
    }
  });

  test('a node that restarts under its id while a drop runs: no session is half removed', async () => {
    const p = prefix();
    const logic = new RedisSessions({ url: redis.url, prefix: p, dropBatch: 5 });
    const gw1 = new RedisSessions({ url: redis.url, prefix: p });
    try {
      const users = Array.from({ length: 200 }, (_, i) => `user${i}`);
      for (const [i, u] of users.entries()) await logic.bind(session(u, 'phone', 'gw-1', i));
      // The restarted gw-1 binds some devices again (new connections) while the old gw-1 is dropped:
      // those bound before the drop began go with it, those bound after stay, whole.
      const back = users.filter((_, i) => i % 2 === 0);
      await gw1.lookup(['warm-up']); // connected, so its binds race the drop rather than queue behind a connect
      await Promise.all([logic.dropNode('gw-1'), Promise.all(back.map((u, i) => gw1.bind(session(u, 'phone', 'gw-1', 5000 + i))))]);
      const found = await logic.lookup(users);
      for (const [u, list] of found) {
        assert.ok(back.includes(u), `${u} was not bound again`);
        assert.ok((list[0]?.connId ?? 0) >= 5000, `${u} is its new connection`);
      }
      // The index knows exactly the survivors.
      assert.equal(await shared.exists(`${p}node-drop:gw-1`), 0);
      assert.equal(await shared.scard(`${p}node-sess:gw-1`), found.size);
      assert.equal(await logic.dropNode('gw-1'), found.size);
      assert.equal((await logic.lookup(users)).size, 0);
    } finally {
      await logic.close();
      await gw1.close();
    }
  });

  test('a dropNode that died half-way is finished by the next one', async () => {
    const p = prefix();
    const sessions = new RedisSessions(shared, p);
    for (let i = 0; i < 10; i++) await sessions.bind(session(`user${i}`, 'phone', 'gw-1', i));
    // What the first step of a drop does, before its process died.
    await shared.rename(`${p}node-sess:gw-1`, `${p}node-drop:gw-1`);
    await sessions.bind(session('late', 'phone', 'gw-1', 99));
    assert.equal(await sessions.dropNode('gw-1'), 11);
    assert.equal(await shared.exists(`${p}node-sess:gw-1`, `${p}node-drop:gw-1`), 0);
    await sessions.close();
  });

  test('binds after a drop work, and an unbind leaves no keys behind', async () => {
    const p = prefix();
    const sessions = new RedisSessions({ url: redis.url, prefix: p });
    try {
      await sessions.bind(session('alice', 'phone', 'gw-1', 1));
      await sessions.dropNode('gw-1');
      const again = session('alice', 'phone', 'gw-1', 1);
      assert.equal(await sessions.bind(again), undefined);
      assert.equal(await sessions.unbind('alice', 'phone', 'gw-1', 1), true);
      assert.equal(await shared.exists(`${p}node-sess:gw-1`, `${p}sess:alice`), 0);
    } finally {
      await sessions.close();
    }
  });

  test('user and device ids with separators and non-ASCII text stay apart', async () => {
    const p = prefix();
    const sessions = new RedisSessions(shared, p);
    const odd = [session('a:b', 'c', 'gw-1', 1), session('a', ':bc', 'gw-1', 2), session('ü\tx', 'Ω📱', 'gw-1', 3), session('1:a', 'b', 'gw-1', 4)];
    for (const s of odd) assert.equal(await sessions.bind(s), undefined);
    const found = await sessions.lookup(odd.map((s) => s.userId));
    for (const s of odd) assert.deepEqual(found.get(s.userId), [s]);
    assert.equal(await sessions.dropNode('gw-1'), odd.length);
    assert.equal((await sessions.lookup(odd.map((s) => s.userId))).size, 0);
    await sessions.close();
  });

  test('keeps working after Redis lost its script cache', async () => {
    const sessions = new RedisSessions(shared, prefix());
    await sessions.bind(session('alice', 'phone', 'gw-1', 1));
    await shared.script('FLUSH');
    assert.equal((await sessions.bind(session('alice', 'phone', 'gw-1', 2)))?.connId, 1);
    await shared.script('FLUSH');
    assert.equal(await sessions.unbind('alice', 'phone', 'gw-1', 2), true);
    await shared.script('FLUSH');
    assert.equal(await sessions.dropNode('gw-1'), 0);
    await sessions.close();
  });

  test('close() quits a client it created and leaves a client passed in open', async () => {
    const name = `owned-${prefix().slice(0, -1)}`;
    const owned = new RedisSessions({ url: redis.url, prefix: prefix(), redis: { connectionName: name } });
    await owned.lookup(['alice']);
    assert.match(await clientList(), new RegExp(`name=${name} `));
    await owned.close();
    for (let i = 0; i < 50 && (await clientList()).includes(`name=${name} `); i++) await new Promise((r) => setTimeout(r, 20));
    assert.doesNotMatch(await clientList(), new RegExp(`name=${name} `));
    await assert.rejects(owned.lookup(['alice']), /closed/);

    const borrowed = new RedisSessions(shared, prefix());
    await borrowed.close();
    assert.equal(await shared.ping(), 'PONG');
    await assert.rejects(borrowed.bind(session('alice', 'phone', 'gw-1', 1)), /closed/);
  });
});

async function clientList(): Promise<string> {
  return String(await shared.call('CLIENT', 'LIST'));
}
