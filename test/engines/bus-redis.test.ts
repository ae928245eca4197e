// The Bus contract on Redis Streams, against a real redis-server.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { Redis } from 'ioredis';
import { busContract } from './bus.contract.js';
import { RedisBus, shardOf, type RedisBusOptions } from '../../src/engines/bus-redis.js';
import { toBinary } from '@bufbuild/protobuf';
import { down, upEnvelope, type Down, type UpEnvelope } from '../../src/engines/bus.js';
import { DownSchema } from '../../src/protocol/gen/longlink/internal/v1/envelope_pb.js';
import { ErrorCode, FrameSchema, encodeFrame, makeFrame } from '../../src/protocol/index.js';
import { startRedis, type RedisServer } from '../helpers/services.js';

let redis: RedisServer;
let n = 0;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
});

// Each bus gets its own key prefix: a fresh cluster on the shared server.
busContract('RedisBus', () => new RedisBus({ url: redis.url, nodeId: 'logic-1', prefix: `t${++n}:`, shards: 4, leaseMs: 2000, blockMs: 200, unavailablePauseMaxMs: 200 }));
busContract('RedisBus (1 shard, batch 3)', () => new RedisBus({ url: redis.url, nodeId: 'logic-1', prefix: `s${++n}:`, shards: 1, batch: 3, leaseMs: 2000, blockMs: 200, unavailablePauseMaxMs: 200 }));

// What only a distributed bus does: several logic nodes share the shards,
// a node that leaves hands its shards over, a poison entry is dead-lettered.
describe('RedisBus with several logic nodes', () => {
  const waitFor = async (check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  // The user id carries the tag the test follows; a send, so it is on the send path's streams (`up:{shard}`).
  const upMessage = (tag: string, partition = tag): UpEnvelope => upEnvelope({
    origin: { node: 'gw-1', connId: 1n, userId: tag, deviceId: 'd1', platform: 'ios' },
    partition,
    body: { case: 'frame', value: create(FrameSchema, { id: 1, body: { case: 'send', value: { conversationId: 'u:a:b', clientMsgId: tag, text: 'x' } } }) },
  });
  const userOf = (m: UpEnvelope): string => m.origin?.userId ?? '';
  const bus = (prefix: string, nodeId: string, extra: Partial<RedisBusOptions> = {}) =>
    new RedisBus({ url: redis.url, nodeId, prefix, shards: 8, leaseMs: 1000, blockMs: 100, ...extra });

  test('two nodes split the shards, every message is handled once, and the survivor takes all shards when one leaves', async () => {
    const prefix = `m${++n}:`;
    const [a, b] = [bus(prefix, 'logic-a'), bus(prefix, 'logic-b')];
    const publisher = bus(prefix, 'gw-1');
    const seen = new Map<string, string[]>();
    const takeovers = { 'logic-a': 0, 'logic-b': 0 };
    const consume = (x: RedisBus, name: 'logic-a' | 'logic-b') => x.consumeUp(async (batch) => {
      for (const m of batch) seen.set(userOf(m), [...(seen.get(userOf(m)) ?? []), name]);
    }, { onTakeover: () => takeovers[name]++ });
    const subA = consume(a, 'logic-a');
    const subB = consume(b, 'logic-b');
    try {
      await waitFor(() => takeovers['logic-a'] > 0 && takeovers['logic-b'] > 0, 'both nodes own shards');
      const first = Array.from({ length: 200 }, (_, i) => `u${i}`);
      for (const u of first) await publisher.publishUp(upMessage(u, u));
      await waitFor(() => first.every((u) => seen.has(u)), 'every message handled');
      assert.ok(first.every((u) => seen.get(u)!.length === 1), 'each once');
      const byNode = [...seen.values()].flat();
      assert.ok(byNode.includes('logic-a') && byNode.includes('logic-b'), 'both nodes handled some');

      const before = takeovers['logic-a'];
      await subB.close(); // a graceful leave releases the leases at once
      await waitFor(() => takeovers['logic-a'] > before, 'logic-a takes over the released shards', 5000);
      const second = Array.from({ length: 100 }, (_, i) => `v${i}`);
      for (const u of second) await publisher.publishUp(upMessage(u, u));
      await waitFor(() => second.every((u) => seen.has(u)), 'every later message handled', 5000);
      assert.ok(second.every((u) => seen.get(u)!.join() === 'logic-a'), 'all by the survivor, once');
    } finally {
      await subA.close();
      await subB.close();
      await Promise.all([a.close(), b.close(), publisher.close()]);
    }
  });

  test('a former owner\'s late read takes an entry after a takeover: the new owner handles it before the entries after it', async () => {
    // The former owner stalled between its lease check and its blocking read, which Redis
    // then served after the takeover: it took m1, the new owner's read got m2.
    const prefix = `late${++n}:`;
    const owner = bus(prefix, 'logic-new', { shards: 1 });
    const publisher = bus(prefix, 'gw-1', { shards: 1 });
    const former = new Redis(redis.url);
    const handled: string[] = [];
    let takeovers = 0;
    const sub = owner.consumeUp(async (batch) => {
      for (const m of batch) handled.push(userOf(m));
    }, { onTakeover: () => takeovers++ });
    try {
      await waitFor(() => takeovers > 0, 'the new owner holds the shard');
      await publisher.publishUp(upMessage('m0', 'u:a:b'));
      await waitFor(() => handled.length === 1, 'm0 handled');
      // The former owner's read blocks before the new owner's next one (which it re-sends every ≤ 250 ms).
      const late = former.xreadgroup('GROUP', 'logic', 'logic-former', 'COUNT', 1, 'BLOCK', 5000, 'STREAMS', `${prefix}up:0`, '>');
      await new Promise((r) => setTimeout(r, 400));
      await publisher.publishUp(upMessage('m1', 'u:a:b'));
      await publisher.publishUp(upMessage('m2', 'u:a:b'));
      const taken = (await late) as [string, [string, string[]][]][] | null;
      assert.equal(taken?.[0]?.[1].length, 1, 'the former owner\'s read took one entry');
      await waitFor(() => handled.length >= 3, 'm1 and m2 handled', 5000);
      await new Promise((r) => setTimeout(r, 300)); // a repeat would show up here
      assert.deepEqual(handled, ['m0', 'm1', 'm2'], 'in publish order, each once');
    } finally {
      former.disconnect();
      await sub.close();
      await Promise.all([owner.close(), publisher.close()]);
    }
  });

  test('an entry whose handler keeps failing goes to the dead-letter stream and the shard moves on', async () => {
    const prefix = `d${++n}:`;
    const consumer = bus(prefix, 'logic-a', { shards: 1, maxDeliveries: 3 });
    const publisher = bus(prefix, 'gw-1', { shards: 1 });
    const handled: string[] = [];
    let poisonAttempts = 0;
    const sub = consumer.consumeUp(async (batch) => {
      if (batch.some((m) => userOf(m) === 'poison')) {
        poisonAttempts++;
        throw new Error('cannot handle this one');
      }
      for (const m of batch) handled.push(userOf(m));
    });
    const redisClient = new Redis(redis.url);
    try {
      await publisher.publishUp(upMessage('poison', 'k'));
      await waitFor(() => poisonAttempts >= 3, '3 attempts');
      await publisher.publishUp(upMessage('after', 'k'));
      await waitFor(() => handled.includes('after'), 'the next entry');
      assert.equal(poisonAttempts, 3);
      const dead = await consumer.dead.list(10);
      assert.equal(dead.length, 1);
      assert.match(dead[0]!.error, /cannot handle this one/);
      assert.equal(dead[0]!.userId, 'poison');
      assert.equal(dead[0]!.partition, 'k');
    } finally {
      redisClient.disconnect();
      await sub.close();
      await Promise.all([consumer.close(), publisher.close()]);
    }
  });

  test('shards read together are handled together, but a poison entry is dead-lettered alone: the other shard goes on', async () => {
    const prefix = `p${++n}:`;
    const keys = ['a', 'b', 'c', 'd', 'e', 'f'];
    const good = keys.find((k) => shardOf(k, 2) === 0)!;
    const bad = keys.find((k) => shardOf(k, 2) === 1)!;
    const publisher = bus(prefix, 'gw-1', { shards: 2 });
    // Published before any consumer runs, so one read returns both shards.
    await publisher.publishUp(upMessage('poison', bad));
    for (const i of [1, 2, 3]) await publisher.publishUp(upMessage(`good-${i}`, good));
    const consumer = bus(prefix, 'logic-a', { shards: 2, maxDeliveries: 3 });
    const handled: string[] = [];
    let together = false;
    const sub = consumer.consumeUp(async (batch) => {
      const users = batch.map((m) => userOf(m));
      if (users.includes('poison')) {
        together ||= users.length > 1;
        throw new Error('cannot handle this one');
      }
      handled.push(...users);
    });
    const redisClient = new Redis(redis.url);
    try {
      await waitFor(() => handled.length >= 3, 'the good shard');
      await waitFor(async () => (await redisClient.xlen(`${prefix}dead`)) >= 1, 'the dead letter');
      assert.equal(together, true, 'the first read handed both shards over as one batch');
      assert.deepEqual(handled, ['good-1', 'good-2', 'good-3']);
      const dead = await consumer.dead.list(10);
      assert.equal(dead.length, 1);
      assert.equal(dead[0]!.userId, 'poison');
    } finally {
      redisClient.disconnect();
      await sub.close();
      await Promise.all([consumer.close(), publisher.close()]);
    }
  });

  test('what one turn publishes for a gateway travels as one stream entry, in call order, frames intact', async () => {
    const prefix = `d${++n}:`;
    const [publisher, gateway] = [bus(prefix, 'logic-a'), bus(prefix, 'gw-x')];
    const got: Down[] = [];
    const sub = gateway.consumeDown('gw-x', (batch) => got.push(...batch));
    try {
      await new Promise((r) => setTimeout(r, 100)); // the reader is in place
      const frame = (i: number) => encodeFrame(makeFrame(i, { case: 'pong', value: { serverTimeMs: BigInt(i) } }));
      const sent: Down[] = [
        ...Array.from({ length: 50 }, (_, i) => down({ case: 'reply', value: { connId: BigInt(i), frame: frame(i) } })),
        down({ case: 'kick', value: { userId: 'u3', deviceId: 'd3', connId: 7n, code: ErrorCode.SERVER_SHUTDOWN, reason: 'bye' } }),
        down({ case: 'deliver', value: { targets: [{ userId: 'u1' }, { userId: 'u2', exceptDevice: 'd1' }], frame: frame(99) } }),
      ];
      await Promise.all(sent.map((m) => publisher.publishDown('gw-x', m)));
      await waitFor(() => got.length >= sent.length, 'the batch');
      assert.equal(publisher.counters.downPublished, 1);
      assert.equal(gateway.counters.downRead, 1);
      assert.equal(gateway.counters.downMessagesRead, sent.length);
      const hex = (m: Down) => Buffer.from(toBinary(DownSchema, m)).toString('hex');
      assert.deepEqual(got.map(hex), sent.map(hex));
      // A lone message is an entry of one, read the same way.
      const lone = down({ case: 'reply', value: { connId: 1000n, frame: frame(1000) } });
      await publisher.publishDown('gw-x', lone);
      await waitFor(() => got.length > sent.length, 'the lone message');
      assert.equal(gateway.counters.downRead, 2);
      assert.deepEqual(hex(got.at(-1)!), hex(lone));
    } finally {
      await sub.close();
      await Promise.all([publisher.close(), gateway.close()]);
    }
  });
});
