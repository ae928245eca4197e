// Every write in its conversation's order, exactly once, on a cluster of 2
// gateways and 2 logic nodes (real Redis and PostgreSQL): the scenarios of
// test/helpers/write-order.ts, with the writer on one gateway, the readers on
// the other, and HTTP pushes served by either logic node's API.
import { after, before, describe, test } from 'node:test';
import { RawClient } from '../helpers/raw.js';
import { startTestCluster, type TestCluster } from './helpers.js';
import { requestToken } from '../../src/client/index.js';
import { addThenSend, httpGroupPushesAmongMembershipChanges, httpPushInOrder, rejoinedMemberSyncs, removeThenSend, resentCreate, type Target } from '../helpers/write-order.js';

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
        return c;
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
});
