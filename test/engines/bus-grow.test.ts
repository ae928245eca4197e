// Growing the shard count of a live RedisBus cluster (16 → 64) while
// publishers keep sending: every request is handled once, in publish order
// per partition, by the nodes sharing the new shards; the new shards of an
// old one wait until it is drained up to the growth's marker; a publisher
// that never heard of the growth has its late requests forwarded. On one
// Redis server and on a Redis Cluster.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { RedisBus, shardOf } from '../../src/engines/bus-redis.js';
import { upEnvelope, type UpEnvelope } from '../../src/engines/bus.js';
import { FrameSchema } from '../../src/protocol/index.js';
import { startRedis, startRedisCluster, type RedisCluster, type RedisServer } from '../helpers/services.js';

let redis: RedisServer;
let cluster: RedisCluster;
let n = 0;
before(async () => {
  [redis, cluster] = await Promise.all([startRedis(), startRedisCluster()]);
});
after(async () => {
  await Promise.all([redis.stop(), cluster.stop()]);
});

const up = (partition: string, k: number): UpEnvelope => upEnvelope({
  origin: { node: 'gw-1', connId: 1n, userId: `${partition}#${k}`, deviceId: 'd1', platform: 'ios' },
  partition,
  body: { case: 'frame', value: create(FrameSchema, { id: 1, body: { case: 'send', value: { conversationId: partition, clientMsgId: `${partition}#${k}`, text: 'x' } } }) },
});

async function waitFor(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

for (const target of ['one Redis server', 'a Redis Cluster'] as const) {
  describe(`growing the shards on ${target}`, () => {
    const url = () => (target === 'one Redis server' ? redis.url : cluster.url);

    test('16 → 64 under load: every request handled once, in order per partition; new shards wait for their old one', { timeout: 120_000 }, async () => {
      const prefix = `g${++n}:`;
      const bus = (nodeId: string) => new RedisBus({ url: url(), nodeId, prefix, shards: 16, leaseMs: 1000, blockMs: 100 });
      const [a, b, gw1, gw2] = [bus('logic-a'), bus('logic-b'), bus('gw-1'), bus('gw-2')];
      const handled = new Map<string, number[]>();
      let total = 0;
      const consume = (x: RedisBus) => x.consumeUp(async (batch) => {
        for (const m of batch) {
          const [partition, k] = m.origin!.userId.split('#') as [string, string];
          handled.set(partition, [...(handled.get(partition) ?? []), Number(k)]);
          total++;
        }
      });
      const subs = [consume(a), consume(b)];
      const partitions = Array.from({ length: 40 }, (_, i) => `u:p${i}:q${i}`);
      const sent = new Map<string, number>();
      let running = true;
      // Two publishers, each its own partitions, sending without pause (a bounded number).
      const publish = async (gw: RedisBus, mine: string[]) => {
        for (let k = 0; running && k < 400; k++) {
          await Promise.all(mine.map(async (p) => {
            await gw.publishUp(up(p, k));
            sent.set(p, k + 1);
          }));
          await new Promise((r) => setTimeout(r, 5));
        }
      };
      try {
        const pubs = [publish(gw1, partitions.slice(0, 20)), publish(gw2, partitions.slice(20))];
        await waitFor(() => total >= 1500, 'traffic before the growth');
        const grown = await a.shards.growShards(64);
        assert.deepEqual(grown, { count: 64, previous: 16, epoch: 1 });
        // A second growth waits for this one.
        await assert.rejects(b.shards.growShards(128), /still under way|another growth/);
        await waitFor(async () => (await a.shards.shardStatus()).every((t) => t.shards.every((s) => s.state === 'ready')), 'every new shard ready', 30_000);
        running = false;
        await Promise.all(pubs);
        const expected = [...sent.values()].reduce((x, y) => x + y, 0);
        await waitFor(() => total >= expected, `all ${expected} handled (have ${total})`, 30_000);
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(total, expected, 'each request handled once');
        for (const p of partitions) {
          assert.deepEqual(handled.get(p), Array.from({ length: sent.get(p)! }, (_, k) => k), `partition ${p}: every request once, in order`);
        }
        // The 64 shards are held, by both nodes, and the partitions that moved are read from their new shards.
        const status = await a.shards.shardStatus();
        const send = status.find((t) => t.topic === 'up')!;
        assert.equal(send.shards.length, 64);
        assert.ok(send.shards.every((s) => s.owner === 'logic-a' || s.owner === 'logic-b'), `every shard has an owner: ${send.shards.map((s) => `${s.shard}:${s.owner ?? '-'}`).join(' ')}`);
        assert.ok(partitions.some((p) => shardOf(p, 64) >= 16), 'some partitions moved to new shards');
      } finally {
        running = false;
        for (const s of subs) await s.close();
        await Promise.all([a.close(), b.close(), gw1.close(), gw2.close()]);
      }
    });
  });
}
