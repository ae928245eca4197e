// Rich messages on a real cluster (the built binary: 2 gateways and 2 logic
// nodes on Redis and PostgreSQL), the users on different gateways and
// transports: a custom payload, a reply with its quote, a forward, a mention
// and the mentioned flag, an edit and a delete in order, and a block that a
// send on the other gateway meets at once; then a device that syncs later
// reads the latest versions from PostgreSQL; delete for me and profiles.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connectClient, startTestCluster, until, type TestClient, type TestCluster } from './helpers.js';
import { ErrorCode, LonglinkError, errorName, payloadJson } from '../../src/client/index.js';

const T = { timeout: 180_000 };
const AB = 'u:alice:bob';

describe('rich messages on a cluster', () => {
  let cluster: TestCluster;
  const clients: TestClient[] = [];
  before(async () => {
    cluster = await startTestCluster({ routing: 'targeted' });
  });
  after(async () => {
    for (const c of clients) await c.close();
    await cluster?.stop();
  });
  async function connect(user: string, gateway: string, transport: 'tcp' | 'ws', device = 'd1'): Promise<TestClient> {
    const c = await connectClient(cluster, user, { gateway, transport, device });
    clients.push(c);
    return c;
  }

  test('payload, reply, forward, mention, edit, delete and block across gateways; a later device syncs the latest versions', T, async () => {
    const alice = await connect('alice', 'gw-1', 'tcp');
    const bob = await connect('bob', 'gw-2', 'ws');
    const carol = await connect('carol', 'gw-2', 'tcp');
    const order = await alice.client.send({ to: 'bob', text: '[order]', type: 'app.order', payload: { id: 42 } });
    await until(() => bob.in(AB).length >= 1, 20_000, () => 'bob gets the order');
    assert.deepEqual(payloadJson(bob.in(AB)[0]!), { id: 42 });

    const reply = await bob.client.send({ to: 'alice', text: 'on it', replyTo: order.seq });
    await until(() => alice.in(AB).length >= 1, 20_000, () => 'alice gets the reply');
    assert.deepEqual(alice.in(AB)[0]!.reply, { seq: order.seq, fromUser: 'alice', text: '[order]', type: 'app.order' });

    await bob.client.send({ to: 'carol', forward: { conversationId: AB, seq: order.seq } });
    await until(() => carol.in('u:bob:carol').length >= 1, 20_000, () => 'carol gets the forward');
    assert.deepEqual(carol.in('u:bob:carol')[0]!.content?.forward?.fromUser, 'alice');

    const g = await alice.client.createGroup('crew', ['bob', 'carol']);
    await alice.client.send({ groupId: g.groupId, text: '@carol', mentions: ['carol'] });
    await until(async () => (await carol.client.conversations()).find((c) => c.conversationId === g.conversationId)?.mentioned === true,
      20_000, () => 'carol\'s group says mentioned');

    await alice.client.edit(AB, order.seq, { text: '[order, updated]', type: 'app.order', payload: { id: 43 } });
    await bob.client.deleteMessage(AB, reply.seq);
    const after = await alice.client.send({ to: 'bob', text: 'after the edit' });
    await until(() => bob.in(AB).some((m) => m.seq === after.seq), 20_000, () => 'bob gets the message after the edit');
    // In order: bob's own reply reached him only as its ack; its delete event reaches every device, his too.
    assert.deepEqual(bob.in(AB).map((m) => m.event?.type ?? m.text), ['[order]', 'edited', 'deleted', 'after the edit']);

    const later = await connect('bob', 'gw-1', 'tcp', 'd2');
    await until(() => later.in(AB).some((m) => m.seq === after.seq), 20_000, () => 'a later device of bob syncs');
    const byseq = new Map(later.in(AB).map((m) => [m.seq, m]));
    assert.equal(byseq.get(order.seq)!.text, '[order, updated]');
    assert.deepEqual(payloadJson(byseq.get(order.seq)!), { id: 43 });
    assert.equal(byseq.get(reply.seq)!.deletedBy, 'bob');

    // A reaction through gw-2 reaches alice on gw-1 as the message's reactions; a later read carries them.
    const reactions: { seq: number; counts: number[] }[] = [];
    alice.client.on('reactions', (r) => reactions.push({ seq: r.seq, counts: r.reactions.map((x) => x.count) }));
    await bob.client.react(AB, order.seq, '👍');
    await until(() => reactions.some((r) => r.seq === order.seq && r.counts[0] === 1), 20_000, () => `alice gets the reaction: ${JSON.stringify(reactions)}`);
    const h = await alice.client.history(AB);
    assert.deepEqual(h.messages.find((m) => m.seq === order.seq)!.reactions, [{ emoji: '👍', count: 1, users: ['bob'] }]);

    // A block made through one gateway refuses the next send through the other at once.
    await bob.client.block('alice');
    try {
      await alice.client.send({ to: 'bob', text: 'hello?' });
      assert.fail('a send after the block was stored');
    } catch (err) {
      assert.ok(err instanceof LonglinkError);
      assert.equal(errorName(err.code), errorName(ErrorCode.BLOCKED));
    }
    await alice.client.send({ groupId: g.groupId, text: 'group still works' });
    await until(() => bob.in(g.conversationId).some((m) => m.text === 'group still works'), 20_000, () => 'bob gets group messages');

    // Delete for me through gw-2 reaches bob's device on gw-1; a profile set through gw-1 is read through gw-2.
    const hides: number[] = [];
    later.client.on('hide', (x) => hides.push(x.seq));
    await bob.client.deleteForMe(AB, after.seq);
    await until(() => hides.includes(after.seq), 20_000, () => 'bob\'s other device learns the hide');
    assert.equal((await later.client.history(AB)).messages.find((m) => m.seq === after.seq)!.hidden, true);
    assert.equal((await alice.client.history(AB)).messages.find((m) => m.seq === after.seq)!.hidden, undefined, 'alice still has it');
    await alice.client.setProfile({ name: 'Alice A' });
    assert.deepEqual((await bob.client.profiles(['alice'])).map((p) => p.name), ['Alice A']);
  });
});
