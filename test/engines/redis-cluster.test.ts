// The bus, sessions, registry and presence watches contracts on a real Redis Cluster: 3 masters
// and 3 replicas made by `redis-cli --cluster create` on free ports. What a
// cluster adds: every script and multi-key command stays in one slot (the
// contracts would fail with CROSSSLOT otherwise), each shard is read on its
// own, and a write is on a replica before a publish is done.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { busContract } from './bus.contract.js';
import { sessionsContract } from './sessions.contract.js';
import { registryContract } from './registry.contract.js';
import { watchesContract } from './watches.contract.js';
import { RedisBus, shardOf } from '../../src/engines/bus-redis.js';
import { RedisSessions } from '../../src/engines/sessions-redis.js';
import { RedisRegistry } from '../../src/engines/registry-redis.js';
import { RedisWatches } from '../../src/engines/watches-redis.js';
import { openRedis, slotOf } from '../../src/engines/redis-shared.js';
import { upEnvelope, type UpEnvelope } from '../../src/engines/bus.js';
import { FrameSchema } from '../../src/protocol/index.js';
import { startRedisCluster, type RedisCluster } from '../helpers/services.js';

let cluster: RedisCluster;
let n = 0;
before(async () => {
  cluster = await startRedisCluster();
});
after(async () => {
  await cluster.stop();
});

busContract('RedisBus on a Redis Cluster', () => new RedisBus({ url: cluster.url, nodeId: 'logic-1', prefix: `t${++n}:`, shards: 4, leaseMs: 2000, blockMs: 200, unavailablePauseMaxMs: 200 }));
sessionsContract('RedisSessions on a Redis Cluster', () => new RedisSessions({ url: cluster.url, prefix: `s${++n}:` }));
registryContract('RedisRegistry on a Redis Cluster', () => new RedisRegistry({ url: cluster.url, prefix: `r${++n}:` }));
watchesContract('RedisWatches on a Redis Cluster', () => new RedisWatches({ url: cluster.url, prefix: `w${++n}:` }));

describe('Redis Cluster key layout', () => {
  test('slotOf agrees with the cluster (CLUSTER KEYSLOT), hash tags included', async () => {
    const client = openRedis(cluster.url);
    try {
      for (const key of ['ll:up:3', 'll:{committed:3}', 'll:{committed:3}counters:push', 'll:{live}logic-nodes', 'll:{s17}sess:alice', 'x{}y', 'ü{ä}']) {
        assert.equal(slotOf(key), Number(await client.call('CLUSTER', 'KEYSLOT', key)), key);
      }
    } finally {
      client.disconnect();
    }
  });

  test('the shard streams spread over every master (no single slot holds the uplink)', async () => {
    const client = openRedis(cluster.url);
    try {
      await client.ping(); // the slots are known once connected
      const masters = new Set<string>();
      for (let s = 0; s < 16; s++) {
        const owner = (client as import('ioredis').Cluster).slots[slotOf(`ll:up:${s}`)]![0]!;
        masters.add(owner);
      }
      assert.equal(masters.size, 3);
    } finally {
      client.disconnect();
    }
  });
});

describe('RedisBus on a Redis Cluster with several logic nodes', () => {
  const upMessage = (tag: string): UpEnvelope => upEnvelope({
    origin: { node: 'gw-1', connId: 1n, userId: tag, deviceId: 'd1', platform: 'ios' },
    partition: tag,
    body: { case: 'frame', value: create(FrameSchema, { id: 1, body: { case: 'send', value: { conversationId: 'u:a:b', clientMsgId: tag, text: 'x' } } }) },
  });

  test('two nodes split 8 shards and handle 400 messages once each, in order per partition', async () => {
    const prefix = `m${++n}:`;
    const bus = (nodeId: string) => new RedisBus({ url: cluster.url, nodeId, prefix, shards: 8, leaseMs: 1000, blockMs: 100 });
    const [a, b, publisher] = [bus('logic-a'), bus('logic-b'), bus('gw-1')];
    const seen: string[] = [];
    const by = new Map<string, Set<string>>();
    const consume = (x: RedisBus, name: string) => x.consumeUp(async (batch) => {
      for (const m of batch) {
        seen.push(m.origin!.userId);
        if (!by.has(name)) by.set(name, new Set());
        by.get(name)!.add(m.partition);
      }
    });
    const subs = [consume(a, 'a'), consume(b, 'b')];
    try {
      const sent: string[] = [];
      for (let i = 0; i < 400; i++) {
        const tag = `p${i % 20}-${String(i).padStart(3, '0')}`;
        sent.push(tag);
        await publisher.publishUp({ ...upMessage(tag), partition: `p${i % 20}` });
      }
      const deadline = Date.now() + 15_000;
      while (seen.length < 400 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(seen.length, 400, 'each message handled once');
      assert.deepEqual([...seen].sort(), [...sent].sort());
      for (let p = 0; p < 20; p++) {
        const order = seen.filter((t) => t.startsWith(`p${p}-`));
        assert.deepEqual(order, [...order].sort(), `partition p${p} in order`);
      }
      assert.equal(by.size, 2, 'both nodes handled some shards');
    } finally {
      for (const s of subs) await s.close();
      await Promise.all([a.close(), b.close(), publisher.close()]);
    }
  });

  // Each shard is read on its own connection, so a read can be answered while
  // the node is busy with another shard's batch; its entries wait, pending
  // under the node, and the orphan scan (anything idle past twice the lease)
  // claims them first. The read's answer must not hand them again.
  test('entries a read brought while the node was busy, claimed meanwhile, are handled once', { timeout: 30_000 }, async () => {
    const prefix = `m${++n}:`;
    const node = new RedisBus({ url: cluster.url, nodeId: 'logic-a', prefix, shards: 2, leaseMs: 1000, blockMs: 250 });
    const publisher = new RedisBus({ url: cluster.url, nodeId: 'gw-1', prefix, shards: 2, leaseMs: 1000, blockMs: 250 });
    const [slow, quick] = [0, 1].map((s) => Array.from({ length: 50 }, (_, i) => `p${i}`).find((p) => shardOf(p, 2) === s)!) as [string, string];
    const handled: string[] = [];
    const sub = node.consumeUp(async (batch) => {
      for (const m of batch) {
        handled.push(m.origin!.userId);
        if (m.origin!.userId === 'slow-1') {
          // While this batch is handled, the other shard's read (in flight) brings an entry, then it ages past the scan's idle time.
          await publisher.publishUp({ ...upMessage('quick-1'), partition: quick });
          await new Promise((r) => setTimeout(r, 3000));
        }
      }
    });
    try {
      await new Promise((r) => setTimeout(r, 1500)); // both shards taken, their reads waiting
      await publisher.publishUp({ ...upMessage('slow-1'), partition: slow });
      const deadline = Date.now() + 15_000;
      while (!handled.includes('quick-1') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 1500)); // a second handling would come by now
      assert.deepEqual(handled, ['slow-1', 'quick-1']);
    } finally {
      await sub.close();
      await Promise.all([node.close(), publisher.close()]);
    }
  });
});
