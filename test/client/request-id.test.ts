// Request ids over a real server: every write the SDK makes that is not a
// Send (group changes, markRead, recall) carries a Frame.request_id of its
// own, so the server can apply a resend of it once. The SDK does not resend
// such a request after a lost connection (its promise rejects UNAVAILABLE and
// the app decides); the id it chose still names the one group a resend makes.
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, LonglinkError, errorName } from '../../src/client/index.js';
import { newRequestId } from '../../src/client/requests.js';
import { groupIdForCreate } from '../../src/protocol/operations.js';
import type { Frame } from '../../src/protocol/index.js';
import { TRANSPORTS, online, until, withServer } from '../logic/support.js';
import { Wire, closeAll, connected } from './harness.js';

const T = { timeout: 60_000 };

afterEach(closeAll);

/** What a frame is, for messages: its case, and a group request's op. */
function kindOf(f: Frame): string {
  return f.body.case === 'group' ? `group.${f.body.value.op.case ?? '?'}` : f.body.case ?? '?';
}

const WRITES = new Set(['group.create', 'group.add', 'group.remove', 'group.leave', 'group.dismiss', 'group.setRole', 'group.mute', 'markRead', 'recall']);

describe('request ids', () => {
  test('a new id per call, also where crypto has no randomUUID (a browser page over plain http)', () => {
    const ids = new Set<string>();
    const add = (): void => {
      const id = newRequestId();
      assert.match(id, /^[0-9a-f-]{32,36}$/);
      ids.add(id);
    };
    for (let i = 0; i < 100; i++) add();
    Object.defineProperty(globalThis.crypto, 'randomUUID', { value: undefined, configurable: true });
    try {
      for (let i = 0; i < 100; i++) add();
    } finally {
      Reflect.deleteProperty(globalThis.crypto, 'randomUUID');
    }
    assert.equal(typeof globalThis.crypto.randomUUID, 'function');
    assert.equal(ids.size, 200);
  });

  for (const t of TRANSPORTS) {
    test(`${t}: group changes, markRead and recall each carry a request id of their own; nothing else does`, T, async () => {
      await withServer(async (s) => {
        const aliceWire = new Wire();
        const bobWire = new Wire();
        const alice = await connected(s, t, 'alice', 'phone', { connector: aliceWire.connector });
        const bob = await connected(s, t, 'bob', 'phone', { connector: bobWire.connector });
        const g = await alice.client.createGroup('Team', ['bob', 'carol']);
        await alice.client.groupInfo(g.groupId);
        await alice.client.addMembers(g.groupId, ['dave']);
        await alice.client.removeMembers(g.groupId, ['dave']);
        await alice.client.setRole(g.groupId, 'carol', 'admin');
        await alice.client.mute(g.groupId, true, 'carol');
        const sent = await alice.client.send({ groupId: g.groupId, text: 'oops' });
        await alice.client.markRead(g.conversationId, sent.seq);
        await alice.client.recall(g.conversationId, sent.seq);
        await bob.client.leaveGroup(g.groupId);
        await alice.client.dismissGroup(g.groupId);

        const frames = [...aliceWire.outgoing, ...bobWire.outgoing];
        const writes = frames.filter((f) => WRITES.has(kindOf(f)));
        assert.deepEqual(writes.map(kindOf).sort(), [...WRITES].sort(), 'one frame of each write');
        for (const f of writes) {
          assert.ok(f.requestId.length > 0 && f.requestId.length <= 128, `${kindOf(f)} request id: ${JSON.stringify(f.requestId)}`);
        }
        assert.equal(new Set(writes.map((f) => f.requestId)).size, writes.length, 'a new id per call');
        const others = frames.filter((f) => !WRITES.has(kindOf(f)));
        assert.ok(others.some((f) => kindOf(f) === 'group.info') && others.some((f) => kindOf(f) === 'send'));
        for (const f of others) assert.equal(f.requestId, '', `${kindOf(f)} carries no request id`);

        // The server derived the group's id from the creator and the create's request id.
        const create = writes.find((f) => kindOf(f) === 'group.create')!;
        assert.equal(g.groupId, groupIdForCreate('alice', create.requestId));
      });
    });
  }

  test('a create whose reply is lost is not resent by the SDK; a resend of its request id makes no second group', T, async () => {
    await withServer(async (s) => {
      const wire = new Wire();
      const alice = await connected(s, 'tcp', 'alice', 'phone', { connector: wire.connector });
      // The server creates the group, but its reply never reaches the client: the connection drops.
      let lost = 0;
      wire.onIncoming = (f, bytes, deliver) => {
        if (f.body.case === 'groupResult') lost++;
        else deliver(bytes);
      };
      const creating = alice.client.createGroup('Team', ['bob']);
      await until(() => lost === 1, 10_000, () => 'the create to be answered');
      wire.drop();
      await assert.rejects(creating, (err: unknown) => {
        assert.ok(err instanceof LonglinkError, String(err));
        assert.equal(errorName(err.code), errorName(ErrorCode.UNAVAILABLE));
        return true;
      });
      wire.onIncoming = (_f, bytes, deliver) => deliver(bytes);
      await until(() => alice.logins === 2 && alice.synced === 2, 10_000, () => 'reconnect and sync');

      const creates = wire.outgoing.filter((f) => kindOf(f) === 'group.create');
      assert.equal(creates.length, 1, 'the SDK did not resend the create');
      const requestId = creates[0]!.requestId;
      assert.notEqual(requestId, '');

      // What a resend would do: the same request id (here from another device of alice) names the same group, once.
      const raw = await online(s, 'tcp', 'alice', 'tablet');
      try {
        const from = raw.frames.length;
        const id = raw.send({ case: 'group', value: { op: { case: 'create', value: { name: 'Team', memberIds: ['bob'] } } } }, undefined, requestId);
        const reply = await raw.next((f) => f.id === id, 10_000, from);
        assert.equal(reply.body.case, 'groupResult', raw.describe());
        const groupId = reply.body.case === 'groupResult' ? reply.body.value.group?.groupId : undefined;
        assert.equal(groupId, groupIdForCreate('alice', requestId));
      } finally {
        raw.close();
      }
      const groups = (await alice.client.conversations()).filter((c) => c.kind === 'group');
      assert.deepEqual(groups.map((c) => c.groupId), [groupIdForCreate('alice', requestId)], 'one group');
    });
  });
});
