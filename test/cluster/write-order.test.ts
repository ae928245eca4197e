// Every write in its conversation's order, exactly once, on a cluster of 2
// gateways and 2 logic nodes (real Redis and PostgreSQL): the scenarios of
// test/helpers/write-order.ts, with the writer on one gateway, the readers on
// the other, and HTTP pushes served by either logic node's API.
import { after, before, describe, test } from 'node:test';
import { RawClient } from '../helpers/raw.js';
import { startTestCluster, type TestCluster } from './helpers.js';
import { requestToken } from '../../src/client/index.js';
import { addThenSend, httpGroupPushesAmongMembershipChanges, httpPushInOrder, lateCommitPushedInOrder, lateFirstCommitPushed, type LateWriter, rejoinedMemberSyncs, removeThenSend, resentCreate, type Target } from '../helpers/write-order.js';
import { randomUUID } from 'node:crypto';
import { RedisBus } from '../../src/engines/bus-redis.js';
import { committed } from '../../src/engines/bus.js';
import { PostgresStore } from '../../src/engines/store-postgres.js';
import { messageToWire } from '../../src/protocol/index.js';

const T = { timeout: 180_000 };

describe('write order on 2 gateways + 2 logic nodes', () => {
  let cluster: TestCluster;
  let target: Target;
  let api = 0;
  before(async () => {
    cluster = await startTestCluster({ routing: 'targeted', shards: 8 });
    target = {
      connect: async (user, gateway) => {
        const c = await RawClient.connect(cluster.node(`gw-${gateway + 1}`).tcpUrl!);
        await c.login((await requestToken(cluster.apiUrl(), cluster.adminKey, { user_id: user, device_id: 'd1' })).token);
        // The scenarios' readers only listen: kept alive like a real client's connection.
        return c.keepAlive();
      },
      // Alternate between the two logic nodes' APIs: either serves any conversation.
      post: async (path, json) => {
        const url = cluster.node(`logic-${(api++ % 2) + 1}`).httpUrl;
        const res = await fetch(`${url}${path}`, {
          method: 'POST', headers: { authorization: `Bearer ${cluster.adminKey}`, 'content-type': 'application/json' }, body: JSON.stringify(json),
        });
        return { status: res.status, body: (await res.json()) as Record<string, unknown> };
      },
    };
  });
  after(async () => {
    await cluster?.stop();
  });

  test('"remove bob" then "send", pipelined: bob never receives the message', T, () => removeThenSend(target, 'c1'));
  test('"add yann" then "send", pipelined: yann receives the message', T, () => addThenSend(target, 'c2'));
  test('a group create resent with the same request id makes one group, answered the same', T, () => resentCreate(target, 'c3'));
  test('POST /api/v1/messages on either logic node among client sends: answered with its seq, pushed in seq order', T, () => httpPushInOrder(target, 'c4'));
  test('a member removed and added back before its device synced gets every message of its membership windows, and none from outside them', T, () => rejoinedMemberSyncs(target, 'c5'));
  test('POST /api/v1/messages into a group among membership changes: nothing reaches a removed member, seq order, no gap', T, () => httpGroupPushesAmongMembershipChanges(target, 'c6'));
  test('a message committed by a writer that has not published it yet is pushed before the next one, and not again when published', T, async () => {
    await withLateWriter((late) => lateCommitPushedInOrder(target, 'c7', late));
  });
  test('a late writer\'s message that comes before anything the push group knows of the conversation is pushed when published, once', T, async () => {
    await withLateWriter((late) => lateFirstCommitPushed(target, 'c8', late));
  });

  /** A writer beside the cluster's: stores in its PostgreSQL, publishes on its Redis, when told. */
  async function withLateWriter(run: (late: LateWriter) => Promise<void>): Promise<void> {
    const store = await PostgresStore.open({ url: cluster.postgres.url });
    const bus = new RedisBus({ url: cluster.redis.url, nodeId: 'late-writer', shards: 8, leaseMs: 1500 });
    try {
      await run({
        commit: async (conversationId, fromUser, text, members) => (await store.append([{
          conversationId, kind: members ? 'direct' : 'group', members: members ?? [], fromUser, fromDevice: 'd9',
          clientMsgId: `late-${randomUUID()}`, serverMsgId: randomUUID(), text, sentAtMs: Date.now(),
        }]))[0]!.message,
        publish: (message) => bus.publishCommitted([committed({ message: messageToWire(message), originNode: 'late-writer', duplicate: false, alsoNotify: [] })]),
      });
    } finally {
      await bus.close();
      await store.close();
    }
  }
});
