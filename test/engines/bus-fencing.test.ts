// Fencing of zombie writers (store.ts, "Write fencing"): a logic node that
// lost its shard while it held a batch must not write it. First the store's
// half (PostgreSQL: epochs per shard, the lease deadline), then the bus's
// (RedisBus: a consumer that lost its lease mid-batch has its write refused,
// leaves the batch unacked, and the new owner stores it once, in order).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { Redis } from 'ioredis';
import { PostgresStore } from '../../src/engines/store-postgres.js';
import { RedisBus } from '../../src/engines/bus-redis.js';
import { upEnvelope, type UpEnvelope } from '../../src/engines/bus.js';
import {
  FencedError, withWriteFence, type AppendResult, type MessageDraft, type ShardClaim, type WriteFence,
} from '../../src/engines/store.js';
import { FrameSchema, directConversationId, directMembers } from '../../src/protocol/index.js';
import { startPostgres, startRedis, type PostgresServer, type RedisServer } from '../helpers/services.js';

let pgServer: PostgresServer;
let redis: RedisServer;
before(async () => {
  [pgServer, redis] = await Promise.all([startPostgres(), startRedis()]);
});
after(async () => {
  await Promise.all([pgServer.stop(), redis.stop()]);
});

let n = 0;
const AB = directConversationId('alice', 'bob');

function draft(clientMsgId: string): MessageDraft {
  return {
    conversationId: AB, kind: 'direct', members: directMembers(AB)!, fromUser: 'alice', fromDevice: 'd1',
    clientMsgId, serverMsgId: `s-${clientMsgId}`, text: clientMsgId, sentAtMs: 1_700_000_000_000,
  };
}

const FAR = Number.MAX_SAFE_INTEGER;
function claim(shard: number, heldAt: number, validUntil = FAR): ShardClaim {
  return { shard, epoch: undefined, validUntil, heldAt };
}

async function texts(store: PostgresStore): Promise<string[]> {
  return (await store.after(AB, 0, 1000)).map((m) => `${m.seq}:${m.text}`);
}

describe('PostgresStore under a write fence', () => {
  const open = () => PostgresStore.open({ url: pgServer.url, schema: `fence_${++n}` });
  const write = (store: PostgresStore, fence: WriteFence, id: string) => withWriteFence(fence, () => store.append([draft(id)]));

  test('a first write takes the shard; a writer whose epoch was superseded is refused and writes nothing', async () => {
    const store = await open();
    try {
      const a = { owner: 'logic-a', claims: [claim(3, 100)] };
      await write(store, a, 'm1');
      assert.equal(a.claims[0]!.epoch, 1, 'the first write took epoch 1');
      await write(store, a, 'm2');
      assert.equal(a.claims[0]!.epoch, 1, 'later writes keep it');

      const b = { owner: 'logic-b', claims: [claim(3, 200)] };
      await write(store, b, 'm3');
      assert.equal(b.claims[0]!.epoch, 2);

      await assert.rejects(write(store, a, 'm4'), (err: unknown) => err instanceof FencedError && /superseded by 2/.test(err.message));
      assert.deepEqual(await texts(store), ['1:m1', '2:m2', '3:m3'], 'm4 was not stored, no seq was used');
      // Other shards and unfenced writes (the HTTP API's business push) are not affected.
      await write(store, { owner: 'logic-a', claims: [claim(4, 100)] }, 'm5');
      await store.append([draft('m6')]);
      assert.deepEqual((await texts(store)).slice(3), ['4:m5', '5:m6']);
    } finally {
      await store.close();
    }
  });

  test('an owner whose lease proof is older than the current owner\'s cannot take the shard back', async () => {
    const store = await open();
    try {
      await write(store, { owner: 'logic-b', claims: [claim(0, 500)] }, 'm1');
      // logic-a took the lease before logic-b (heldAt 400) but only writes now: it lost the shard meanwhile.
      const late = { owner: 'logic-a', claims: [claim(0, 400)] };
      await assert.rejects(write(store, late, 'm2'), (err: unknown) => err instanceof FencedError && /newer owner/.test(err.message));
      assert.equal(late.claims[0]!.epoch, undefined, 'nothing taken');
      assert.deepEqual(await texts(store), ['1:m1']);
    } finally {
      await store.close();
    }
  });

  test('a writer paused inside its transaction past idleInTransactionMs: the server ends it, the append fails, the process lives on', async () => {
    const store = await PostgresStore.open({ url: pgServer.url, schema: `fence_${++n}`, idleInTransactionMs: 200 });
    try {
      // The claim's shard is read right before the first statement of the transaction goes out:
      // then block the event loop (as SIGSTOP would) while the server runs it and times the session out.
      let paused = false;
      const slow: ShardClaim = {
        get shard() {
          if (!paused) {
            paused = true;
            setImmediate(() => {
              const until = Date.now() + 1000;
              while (Date.now() < until) { /* paused */ }
            });
          }
          return 5;
        },
        epoch: undefined, validUntil: FAR, heldAt: 100,
      };
      await assert.rejects(write(store, { owner: 'logic-a', claims: [slow] }, 'm1'));
      assert.ok(paused);
      assert.deepEqual(await texts(store), [], 'nothing of it was stored');
      await write(store, { owner: 'logic-a', claims: [claim(5, 100)] }, 'm2');
      assert.deepEqual(await texts(store), ['1:m2'], 'the store goes on with a fresh connection');
    } finally {
      await store.close();
    }
  });

  test('a write after the lease deadline is refused, even with the current epoch; a batch with one lost shard writes nothing', async () => {
    const store = await open();
    try {
      const a = { owner: 'logic-a', claims: [claim(1, 100), claim(2, 100)] };
      await write(store, a, 'm1');
      a.claims[1]!.validUntil = Date.now() - 1; // shard 2's lease ran out (the node was paused)
      await assert.rejects(write(store, a, 'm2'), (err: unknown) => err instanceof FencedError && /lease of shard 2 ran out/.test(err.message));
      assert.deepEqual(await texts(store), ['1:m1']);
    } finally {
      await store.close();
    }
  });
});

describe('RedisBus and PostgresStore: a consumer that lost its shard mid-batch', () => {
  const upSend = (clientMsgId: string): UpEnvelope => upEnvelope({
    origin: { node: 'gw-1', connId: 1n, userId: 'alice', deviceId: 'd1', platform: 'ios' },
    partition: AB, requestId: clientMsgId,
    body: { case: 'frame', value: create(FrameSchema, { id: 1, body: { case: 'send', value: { clientMsgId, toUser: 'bob', text: clientMsgId } } }) },
  });
  const idsOf = (batch: UpEnvelope[]) => batch.map((m) => (m.body.case === 'frame' && m.body.value.body.case === 'send' ? m.body.value.body.value.clientMsgId : ''));
  const waitFor = async (check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  /**
   * logic-a holds the only shard and gets stuck in its handler on `stuckOn`;
   * meanwhile Redis loses its lease (as after a restart without fsync) and
   * logic-b takes the shard, claims the pending batch and writes it, then
   * stores `after`. Then logic-a's handler goes on and tries to write.
   */
  async function scenario(before: string[], stuckOn: string, later: string[]) {
    const prefix = `f${++n}:`;
    const store = await PostgresStore.open({ url: pgServer.url, schema: `bus_fence_${n}` });
    // Long leases: no renewal runs during the test, so only the fence can stop logic-a.
    const make = (nodeId: string) => new RedisBus({ url: redis.url, nodeId, prefix, shards: 1, leaseMs: 60_000, blockMs: 100 });
    const [a, b, publisher] = [make('logic-a'), make('logic-b'), make('gw-1')];
    const redisClient = new Redis(redis.url);
    const handledBy = { a: [] as string[], b: [] as string[] };
    const errorsOfA: unknown[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let stuck = false;
    const store1 = (who: 'a' | 'b') => async (batch: UpEnvelope[]) => {
      const ids = idsOf(batch);
      if (who === 'a' && ids.includes(stuckOn)) {
        stuck = true;
        await gate;
      }
      try {
        const results: AppendResult[] = await store.append(ids.map(draft));
        handledBy[who].push(...results.map((r) => `${r.message.seq}:${r.message.text}${r.duplicate ? '(dup)' : ''}`));
      } catch (err) {
        if (who === 'a') errorsOfA.push(err);
        throw err;
      }
    };
    const subA = a.consumeUp(store1('a'));
    let subB: { close(): Promise<void> } | undefined;
    try {
      for (const id of before) await publisher.publishUp(upSend(id));
      await waitFor(() => handledBy.a.length === before.length, 'logic-a stores the first messages');
      await publisher.publishUp(upSend(stuckOn));
      await waitFor(() => stuck, 'logic-a holds the batch');
      await redisClient.del(`${prefix}lease:0`);
      subB = b.consumeUp(store1('b'));
      await waitFor(() => handledBy.b.length === 1, 'logic-b takes the shard and stores the pending batch');
      for (const id of later) await publisher.publishUp(upSend(id));
      await waitFor(() => handledBy.b.length === 1 + later.length, 'logic-b stores what came next');
      release();
      await waitFor(() => a.counters.fenced === 1, 'logic-a\'s write is refused');
      // Give a wrongly acked or retried batch a chance to show.
      await new Promise((r) => setTimeout(r, 300));
      return {
        handledBy, errorsOfA, stored: await texts(store),
        pending: (await redisClient.xpending(`${prefix}up:0`, 'logic')) as [number, ...unknown[]],
      };
    } finally {
      release();
      await subA.close();
      await subB?.close();
      await Promise.all([a.close(), b.close(), publisher.close()]);
      redisClient.disconnect();
      await store.close();
    }
  }

  test('an owner that wrote before is refused (its epoch was superseded); the new owner stored everything once, in order', async () => {
    const r = await scenario(['m1', 'm2'], 'm3', ['m4', 'm5']);
    assert.equal(r.errorsOfA.length, 1);
    assert.ok(r.errorsOfA[0] instanceof FencedError && /superseded/.test(r.errorsOfA[0].message), String(r.errorsOfA[0]));
    assert.deepEqual(r.handledBy.a, ['1:m1', '2:m2'], 'logic-a wrote nothing after losing the shard');
    assert.deepEqual(r.handledBy.b, ['3:m3', '4:m4', '5:m5']);
    assert.deepEqual(r.stored, ['1:m1', '2:m2', '3:m3', '4:m4', '5:m5'], 'each once, in publish order');
    assert.equal(r.pending[0], 0, 'nothing left pending: the new owner acked it all');
  });

  test('an owner that had not written yet cannot take the shard back with its first write', async () => {
    const r = await scenario([], 'm1', ['m2']);
    assert.equal(r.errorsOfA.length, 1);
    assert.ok(r.errorsOfA[0] instanceof FencedError && /newer owner/.test(r.errorsOfA[0].message), String(r.errorsOfA[0]));
    assert.deepEqual(r.handledBy.a, []);
    assert.deepEqual(r.stored, ['1:m1', '2:m2']);
    assert.equal(r.pending[0], 0);
  });
});
