// The cluster's roles on a Redis Cluster (3 masters, 3 replicas, pointed at
// with LONGLINK_REDIS_CLUSTER): users chat across 2 gateways as on one Redis,
// and when the master holding the conversation's uplink shard is killed
// (SIGKILL) mid-stream, its replica takes over and no acked message is lost,
// repeated or reordered.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Cluster as RedisClusterClient } from 'ioredis';
import {
  assertAckedInOrder, assertExactlyOnceInOrder, connectClient, sendAll, startTestCluster, texts, until, within, type TestClient,
} from './helpers.js';
import { directConversationId } from '../../src/client/index.js';
import { shardOf } from '../../src/engines/bus-redis.js';
import { openRedis, slotOf } from '../../src/engines/redis-shared.js';

test('on a Redis Cluster, 500 messages across 2 gateways while the master of their shard is killed: all acked, delivered once each, in order', { timeout: 180_000 }, async (t) => {
  const cluster = await startTestCluster({ routing: 'targeted', redisCluster: true });
  const clients: TestClient[] = [];
  const redis = openRedis(cluster.redisCluster!.url) as RedisClusterClient;
  redis.on('error', () => undefined);
  t.after(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    redis.disconnect();
    await cluster.stop();
  });
  const [aliceId, bobId] = ['rc-alice', 'rc-bob'];
  const conv = directConversationId(aliceId, bobId);
  const bob = await connectClient(cluster, bobId, { gateway: 'gw-2' });
  clients.push(bob);
  const alice = await connectClient(cluster, aliceId, { gateway: 'gw-1', transport: 'ws' });
  clients.push(alice);

  // The master serving the conversation's send-path shard (8 shards in the test cluster).
  await redis.ping();
  const master = redis.slots[slotOf(`ll:up:${shardOf(conv, 8)}`)]![0]!;
  const victim = cluster.redisCluster!.nodes.find((n) => `127.0.0.1:${n.port}` === master)!;
  assert.ok(victim, `the master ${master} is one of the cluster's nodes`);

  const expected = texts('rc', 500);
  let killed: Promise<void> | undefined;
  const out = sendAll(alice, expected.map((text) => ({ to: bobId, text })), {
    perTick: 10,
    tickMs: 20,
    onAck: (acked) => {
      if (killed === undefined && acked >= 150) killed = victim.kill();
    },
  });
  const status = () => `acked ${out.acked()}/${out.sent()}, bob has ${bob.in(conv).length} (${bob.client.state}), alice ${alice.client.state}\n${cluster.logs()}`;
  await until(() => killed !== undefined, 60_000, () => `never 150 acks: ${status()}`);
  await killed;
  const failedOverAt = Date.now();
  await cluster.redisCluster!.waitHealthy(30_000).catch(() => undefined); // the killed node stays down: healthy means its slots are served again

  const acks = await within(out.done, 90_000, () => `not every send acked after the failover: ${status()}`);
  t.diagnostic(`all 500 acked ${Date.now() - failedOverAt} ms after the master was killed`);
  assertAckedInOrder(acks, conv, 'alice');
  await until(() => bob.in(conv).length >= expected.length, 60_000, () => `bob got ${bob.in(conv).length}/500: ${status()}`);
  assertExactlyOnceInOrder(bob.in(conv), expected, 'bob');
  // The old master's replica serves its slots now.
  const now = (await cluster.redisCluster!.masters()).map((n) => n.port);
  assert.ok(!now.includes(victim.port), 'the killed master no longer serves slots');
});
