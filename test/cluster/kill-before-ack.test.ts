// A logic node SIGKILLed between its commit and its stream ack, for a group
// create, an add, a recall and a read mark: the survivor handles the entry
// again (it is still pending in the stream) and each is applied once. The
// kill is real (LONGLINK_FAULT_KILL_BEFORE_ACK=1: a request whose id starts
// with `kill-before-ack:` kills the node that handled it, once).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { RawClient } from '../helpers/raw.js';
import { startTestCluster, until, type TestCluster } from './helpers.js';
import { requestToken } from '../../src/client/index.js';
import { messageFromWire, type ChatMessage, type Frame, type FrameBodyInit } from '../../src/protocol/index.js';

const T = { timeout: 180_000 };

const show = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? String(x) : x));

describe('SIGKILL of a logic node between its commit and its stream ack', () => {
  let cluster: TestCluster;
  const clients: RawClient[] = [];

  before(async () => {
    cluster = await startTestCluster({ routing: 'targeted', shards: 4, env: { LONGLINK_FAULT_KILL_BEFORE_ACK: '1' } });
  });
  after(async () => {
    for (const c of clients) c.close();
    await cluster?.stop();
  });

  const connect = async (user: string, gateway: number): Promise<RawClient> => {
    const c = await RawClient.connect(cluster.node(`gw-${gateway}`).tcpUrl!);
    await c.login((await requestToken(cluster.apiUrl(), cluster.adminKey, { user_id: user, device_id: 'd1' })).token);
    clients.push(c);
    // The test cluster expects a ping every second.
    const beat = setInterval(() => c.send({ case: 'ping', value: {} }), 500);
    beat.unref();
    return c;
  };

  /** Sends a request with `requestId`; resolves with the first reply (a redelivery may answer again). */
  const ask = async (c: RawClient, body: FrameBodyInit, requestId = ''): Promise<Frame> => {
    const from = c.frames.length;
    const id = c.send(body, undefined, requestId);
    return c.next((f) => f.id === id, 60_000, from);
  };

  /** Runs `work` (which sends a request that kills its handler); waits for a logic node to die, then starts it again. */
  const killedBy = async <R>(work: () => Promise<R>): Promise<R> => {
    const before = cluster.logics().filter((n) => n.running).map((n) => n.name);
    assert.equal(before.length, 2, 'both logic nodes run');
    const result = await work();
    await until(() => cluster.logics().filter((n) => n.running).length === 1, 30_000, () => 'a logic node was killed');
    const dead = cluster.logics().find((n) => !n.running)!;
    assert.match(cluster.logs(dead.name), /fault injection: SIGKILL/);
    await cluster.restart(dead.name);
    return result;
  };

  const timeline = async (c: RawClient, conversationId: string): Promise<ChatMessage[]> => {
    const reply = await ask(c, { case: 'sync', value: { cursors: [], conversationIds: [conversationId], limit: 0 } });
    assert.equal(reply.body.case, 'syncResult');
    return (reply.body.value as { messages: Parameters<typeof messageFromWire>[0][] }).messages.map(messageFromWire);
  };

  test('group create, add, recall and read mark are each applied once', T, async () => {
    const alice = await connect('alice-k', 1);
    const bob = await connect('bob-k', 2);

    // Create: one group, one creation event, however often it is handled.
    const created = await killedBy(() => ask(alice, { case: 'group', value: { op: { case: 'create', value: { name: 'k', memberIds: ['bob-k'] } } } }, 'kill-before-ack:create'));
    assert.equal(created.body.case, 'groupResult', show(created.body.value));
    const groupId = (created.body.value as { group?: { groupId: string } }).group!.groupId;
    const conversationId = `g:${groupId}`;
    const again = await ask(alice, { case: 'group', value: { op: { case: 'create', value: { name: 'k', memberIds: ['bob-k'] } } } }, 'kill-before-ack:create');
    assert.equal((again.body.value as { group?: { groupId: string } }).group!.groupId, groupId, 'a resend names the same group');

    // Add: one members_added event.
    const added = await killedBy(() => ask(alice, { case: 'group', value: { op: { case: 'add', value: { groupId, userIds: ['carol-k'] } } } }, 'kill-before-ack:add'));
    assert.equal(added.body.case, 'groupResult');

    // Recall: one recalled event.
    const sent = await ask(alice, { case: 'send', value: { clientMsgId: 'k-1', conversationId, text: 'to recall' } });
    assert.equal(sent.body.case, 'sendAck');
    const seq = (sent.body.value as { seq: bigint }).seq;
    const recalled = await killedBy(() => ask(alice, { case: 'recall', value: { conversationId, seq } }, 'kill-before-ack:recall'));
    assert.equal(recalled.body.case, 'done', show(recalled.body.value));

    // Read mark: bob's cursor at the recall event, once.
    const read = await killedBy(() => ask(bob, { case: 'markRead', value: { conversationId, seq: 0n } }, 'kill-before-ack:read'));
    assert.equal(read.body.case, 'done', show(read.body.value));

    // Everything the survivors handled again is in the timeline once.
    await until(async () => (await timeline(alice, conversationId)).some((m) => m.event?.type === 'recalled'), 30_000, () => 'the recall');
    const events = (await timeline(alice, conversationId)).map((m) => m.event?.type ?? `msg:${m.text}`);
    assert.deepEqual(events, ['group_created', 'members_added', 'msg:', 'recalled'], 'each change once, in order (the recalled text erased)');
    const list = await ask(bob, { case: 'conversations', value: {} });
    const mine = (list.body.value as { conversations: { conversationId: string; readSeq: bigint; lastSeq: bigint; unread: bigint }[] }).conversations
      .find((c) => c.conversationId === conversationId)!;
    assert.equal(mine.readSeq, mine.lastSeq, 'bob read up to the latest');
    assert.equal(mine.unread, 0n);
    // Nothing dead-lettered along the way.
    const dead = await fetch(`${cluster.apiUrl()}/api/v1/dead-letters`, { headers: { authorization: `Bearer ${cluster.adminKey}` } });
    assert.equal(((await dead.json()) as { count: number }).count, 0);
  });
});
