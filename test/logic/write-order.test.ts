// Every write in its conversation's order, exactly once, on an embedded
// server: pipelined membership changes and sends on one connection, a
// resent group create, and HTTP business pushes among client sends
// (scenarios in test/helpers/write-order.ts; the cluster runs them too).
import { after, before, describe, test } from 'node:test';
import { RawClient } from '../helpers/raw.js';
import { ADMIN_KEY, startTestServer, type TestServer } from '../helpers/server.js';
import { addThenSend, httpGroupPushesAmongMembershipChanges, httpPushInOrder, rejoinedMemberSyncs, removeThenSend, resentCreate, type Target } from '../helpers/write-order.js';

const T = { timeout: 120_000 };

describe('write order on an embedded server', () => {
  let s: TestServer;
  let target: Target;
  before(async () => {
    s = await startTestServer();
    target = {
      connect: async (user) => {
        const c = await RawClient.connect(s.tcpUrl);
        await c.login(await s.token(user));
        // The scenarios' readers only listen: kept alive like a real client's connection.
        return c.keepAlive();
      },
      post: async (path, json) => {
        const res = await fetch(`${s.httpUrl}${path}`, {
          method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(json),
        });
        return { status: res.status, body: (await res.json()) as Record<string, unknown> };
      },
    };
  });
  after(async () => {
    await s.close();
  });

  test('"remove bob" then "send", pipelined: bob never receives the message', T, () => removeThenSend(target, 'e1'));
  test('"add yann" then "send", pipelined: yann receives the message', T, () => addThenSend(target, 'e2'));
  test('a group create resent with the same request id makes one group, answered the same', T, () => resentCreate(target, 'e3'));
  test('POST /api/v1/messages among client sends: answered with its seq, pushed in seq order', T, () => httpPushInOrder(target, 'e4'));
  test('a member removed and added back before its device synced gets every message of its membership windows, and none from outside them', T, () => rejoinedMemberSyncs(target, 'e5'));
  test('POST /api/v1/messages into a group among membership changes: nothing reaches a removed member, seq order, no gap', T, () => httpGroupPushesAmongMembershipChanges(target, 'e6'));
});
