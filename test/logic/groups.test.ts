// Groups over real sockets (TCP and WebSocket): create, membership rules and
// permissions (every refusal with its coded error), roles, mutes, ownership
// transfer, dismissal, membership changes as timeline messages (online and
// at sync), ordering under concurrent senders, offline sync, late joiners,
// removed members, and a 10,000-member group with a member that never reads.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import type { MessageInitShape } from '@bufbuild/protobuf';
import {
  ErrorCode, GroupRole, LengthPrefixedReader, decodeFrame, encodeFrame, lengthPrefixed, makeFrame, messageFromWire,
  type ChatMessage, type GroupRequestSchema,
} from '../../src/protocol/index.js';
import { createClient, type LonglinkClient } from '../../src/client/index.js';
import { groupFromWire, type GroupInfo } from '../../src/client/types.js';
import type { RawClient } from '../helpers/raw.js';
import type { TestServer } from '../helpers/server.js';
import {
  TRANSPORTS, barrier, bigintJson, expectError, history, online, pushed, range, request, sendMany, sendOk, sleep,
  syncAll, until, urlOf, waitPushed, withServer, type Transport,
} from './support.js';

/** No test may hang the suite. */
const T = { timeout: 120_000 };

type GroupOp = MessageInitShape<typeof GroupRequestSchema>['op'];

const seqs = (ms: readonly ChatMessage[]) => ms.map((m) => m.seq);
const texts = (ms: readonly ChatMessage[]) => ms.map((m) => m.text);
const other = (t: Transport): Transport => (t === 'tcp' ? 'ws' : 'tcp');

/** A group request that must succeed; returns the group after it. */
async function groupOk(c: RawClient, op: GroupOp): Promise<GroupInfo> {
  const reply = await request(c, { case: 'group', value: { op } });
  if (reply.body.case !== 'groupResult' || !reply.body.value.group) {
    assert.fail(`expected a GroupResult, got ${reply.body.case}: ${JSON.stringify(reply.body.value, bigintJson)}`);
  }
  return groupFromWire(reply.body.value.group);
}

/** A group request that must be refused with `code`. */
async function groupErr(c: RawClient, op: GroupOp, code: ErrorCode, what: string): Promise<void> {
  const reply = await request(c, { case: 'group', value: { op } });
  if (reply.body.case !== 'error') assert.fail(`${what}: expected error ${ErrorCode[code]}, got ${reply.body.case}`);
  assert.equal(ErrorCode[reply.body.value.code], ErrorCode[code], `${what}: ${reply.body.value.message}`);
  assert.ok(reply.body.value.message.length > 0, `${what}: the error explains itself`);
  assert.equal(reply.body.value.fatal, false, `${what}: the connection stays open`);
}

const create = (name: string, memberIds: string[]): GroupOp => ({ case: 'create', value: { name, memberIds } });
const add = (groupId: string, userIds: string[]): GroupOp => ({ case: 'add', value: { groupId, userIds } });
const remove = (groupId: string, userIds: string[]): GroupOp => ({ case: 'remove', value: { groupId, userIds } });
const leave = (groupId: string): GroupOp => ({ case: 'leave', value: { groupId } });
const dismiss = (groupId: string): GroupOp => ({ case: 'dismiss', value: { groupId } });
const info = (groupId: string): GroupOp => ({ case: 'info', value: { groupId } });
const setRole = (groupId: string, userId: string, role: GroupRole): GroupOp => ({ case: 'setRole', value: { groupId, userId, role } });
const mute = (groupId: string, userId: string, muted: boolean): GroupOp => ({ case: 'mute', value: { groupId, userId, muted } });

function rolesOf(g: GroupInfo): Record<string, string> {
  return Object.fromEntries(g.members.map((m) => [m.userId, m.role]));
}

/** What a device may see: events reduced to their meaning, messages to sender and text. */
function describeTimeline(ms: readonly ChatMessage[]): string[] {
  return ms.map((m) => {
    if (!m.event) return `${m.seq} msg ${m.fromUser}: ${m.text}`;
    const e = m.event;
    const parts = [`${m.seq} ${e.type} by ${e.actor}`];
    if (e.userIds) parts.push(`[${[...e.userIds].sort().join(',')}]`);
    if (e.role) parts.push(`role=${e.role}`);
    if (e.muted !== undefined) parts.push(`muted=${e.muted}`);
    if (e.name) parts.push(`name=${e.name}`);
    return parts.join(' ');
  });
}

/** After a round trip and a pause, nothing more may have arrived. */
async function settle(...clients: RawClient[]): Promise<void> {
  for (const c of clients) await barrier(c);
  await sleep(300);
}

describe('group message flow', () => {
  for (const t of TRANSPORTS) {
    test(`${t}: create makes the creator owner; every member's device sees GROUP_CREATED as seq 1, then the messages in order`, T, async () => {
      await withServer(async (s) => {
        const alice = await online(s, t, 'alice', 'a1');
        const alice2 = await online(s, other(t), 'alice', 'a2');
        const bob = await online(s, t, 'bob');
        const carol = await online(s, t, 'carol');
        const outsider = await online(s, t, 'eve');

        const g = await groupOk(alice, create('  Team  ', ['bob', 'carol', 'alice', 'bob']));
        assert.match(g.groupId, /^[A-Za-z0-9_.@-]+$/);
        assert.equal(g.conversationId, `g:${g.groupId}`);
        assert.equal(g.name, 'Team');
        assert.equal(g.owner, 'alice');
        assert.deepEqual(g.members, [
          { userId: 'alice', role: 'owner', muted: false, readSeq: 1 },
          { userId: 'bob', role: 'member', muted: false, readSeq: 0 },
          { userId: 'carol', role: 'member', muted: false, readSeq: 0 },
        ]);
        assert.equal(g.mutedAll, false);
        assert.equal(g.dismissed, false);

        for (const c of [alice, alice2, bob, carol]) {
          const [created] = await waitPushed(c, 1);
          assert.equal(created!.conversationId, g.conversationId);
          assert.equal(created!.seq, 1);
          assert.equal(created!.text, '');
          assert.equal(created!.fromUser, 'alice');
          assert.deepEqual(describeTimeline([created!]), ['1 group_created by alice [bob,carol] name=Team']);
        }

        const acks = await sendMany(alice, 3, (i) => ({ conversationId: g.conversationId, text: `hello ${i + 1}` }));
        assert.deepEqual(acks.map((a) => Number(a.seq)), [2, 3, 4]);
        assert.ok(acks.every((a) => a.conversationId === g.conversationId));
        const reply = await sendOk(bob, { conversationId: g.conversationId, text: 'hi from bob' });
        assert.equal(reply.seq, 5n);

        const want = {
          alice: ['5 msg bob: hi from bob'],
          alice2: ['2 msg alice: hello 1', '3 msg alice: hello 2', '4 msg alice: hello 3', '5 msg bob: hi from bob'],
          bob: ['2 msg alice: hello 1', '3 msg alice: hello 2', '4 msg alice: hello 3'],
          carol: ['2 msg alice: hello 1', '3 msg alice: hello 2', '4 msg alice: hello 3', '5 msg bob: hi from bob'],
        };
        const clients = { alice, alice2, bob, carol };
        for (const [name, c] of Object.entries(clients)) await waitPushed(c, 1 + want[name as keyof typeof want].length);
        await settle(alice, alice2, bob, carol, outsider);
        for (const [name, c] of Object.entries(clients)) {
          assert.deepEqual(describeTimeline(pushed(c).slice(1)), want[name as keyof typeof want], `${name} over ${c.transport}`);
        }
        assert.deepEqual(pushed(outsider), [], 'a non-member gets nothing');
        // Every push of one message carries the same stored message to every member.
        const ids = new Set([bob, carol, alice2].map((c) => pushed(c).find((m) => m.seq === 3)!.serverMsgId));
        assert.deepEqual([...ids], [acks[1]!.serverMsgId]);
        for (const c of [alice, alice2, bob, carol, outsider]) c.close();
      });
    });
  }

  test('SDK on TCP and WS: createGroup, send({ groupId }), members\' clients emit each message once, in order', T, async () => {
    await withServer(async (s) => {
      const clients: LonglinkClient[] = [];
      const got = new Map<string, ChatMessage[]>();
      const make = async (user: string, t: Transport): Promise<LonglinkClient> => {
        const c = createClient({ url: urlOf(s, t), token: await s.token(user, `${user}-${t}`), reconnect: false });
        const list: ChatMessage[] = [];
        got.set(`${user}-${t}`, list);
        c.on('message', (m) => list.push(m));
        await c.connect();
        clients.push(c);
        return c;
      };
      try {
        const alice = await make('alice', 'tcp');
        await make('bob', 'ws');
        await make('carol', 'tcp');
        const g = await alice.createGroup('sdk group', ['bob', 'carol']);
        assert.equal(g.owner, 'alice');
        const results = [];
        for (let i = 1; i <= 20; i++) results.push(alice.send({ groupId: g.groupId, text: `s${i}` }));
        const acks = await Promise.all(results);
        assert.deepEqual(acks.map((a) => a.seq), range(2, 21));
        for (const who of ['bob-ws', 'carol-tcp']) {
          await until(() => got.get(who)!.length >= 21, 20_000, () => `${who}: ${got.get(who)!.length} messages`);
        }
        await sleep(300);
        for (const who of ['bob-ws', 'carol-tcp']) {
          const ms = got.get(who)!;
          assert.deepEqual(seqs(ms), range(1, 21), `${who}: every seq once, in order`);
          assert.equal(ms[0]!.event?.type, 'group_created');
          assert.deepEqual(texts(ms.slice(1)), range(1, 20).map((i) => `s${i}`));
        }
        // The creator's own client learns of the creation event; its own messages come back only as acks.
        assert.deepEqual(got.get('alice-tcp')!.map((m) => m.event?.type), ['group_created']);
      } finally {
        for (const c of clients) await c.close();
      }
    });
  });
});

describe('membership rules and permissions', () => {
  test('only the owner and admins add and remove; admins cannot remove admins or the owner; non-members are refused', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const bob = await online(s, 'ws', 'bob');
      const carol = await online(s, 'tcp', 'carol');
      const dave = await online(s, 'ws', 'dave');
      const eve = await online(s, 'tcp', 'eve');
      const g = await groupOk(alice, create('rules', ['bob', 'carol', 'dave']));
      const id = g.groupId;

      // A plain member manages nothing.
      await groupErr(carol, add(id, ['frank']), ErrorCode.NOT_ADMIN, 'member adds');
      await groupErr(carol, remove(id, ['dave']), ErrorCode.NOT_ADMIN, 'member removes');
      await groupErr(carol, mute(id, 'dave', true), ErrorCode.NOT_ADMIN, 'member mutes');
      await groupErr(carol, mute(id, '', true), ErrorCode.NOT_ADMIN, 'member mutes the group');
      await groupErr(carol, setRole(id, 'dave', GroupRole.ADMIN), ErrorCode.NOT_ADMIN, 'member sets a role');
      await groupErr(carol, dismiss(id), ErrorCode.NOT_ADMIN, 'member dismisses');
      // A non-member does nothing at all.
      await groupErr(eve, add(id, ['eve']), ErrorCode.NOT_MEMBER, 'outsider adds');
      await groupErr(eve, remove(id, ['carol']), ErrorCode.NOT_MEMBER, 'outsider removes');
      await groupErr(eve, info(id), ErrorCode.NOT_MEMBER, 'outsider asks for info');
      await groupErr(eve, leave(id), ErrorCode.NOT_MEMBER, 'outsider leaves');
      await expectError(eve, { case: 'send', value: { clientMsgId: 'e1', conversationId: g.conversationId, text: 'let me in' } }, ErrorCode.NOT_MEMBER);
      await expectError(eve, { case: 'sync', value: { conversationIds: [g.conversationId] } }, ErrorCode.FORBIDDEN);
      await expectError(eve, { case: 'history', value: { conversationId: g.conversationId } }, ErrorCode.FORBIDDEN);
      await expectError(eve, { case: 'markRead', value: { conversationId: g.conversationId } }, ErrorCode.FORBIDDEN);
      await expectError(eve, { case: 'recall', value: { conversationId: g.conversationId, seq: 1n } }, ErrorCode.FORBIDDEN);
      // A full sync by the outsider lists nothing of the group.
      const eveSync = await syncAll(eve);
      assert.deepEqual(eveSync.messages.filter((m) => m.conversationId === g.conversationId), []);

      // The owner makes bob an admin; bob adds and removes members.
      const withAdmin = await groupOk(alice, setRole(id, 'bob', GroupRole.ADMIN));
      assert.equal(rolesOf(withAdmin).bob, 'admin');
      const added = await groupOk(bob, add(id, ['frank', 'gina']));
      assert.deepEqual(added.members.map((m) => m.userId).sort(), ['alice', 'bob', 'carol', 'dave', 'frank', 'gina']);
      const removed = await groupOk(bob, remove(id, ['gina']));
      assert.ok(!removed.members.some((m) => m.userId === 'gina'));
      // Admins cannot remove the owner or another admin; the owner can.
      await groupErr(bob, remove(id, ['alice']), ErrorCode.NOT_ADMIN, 'admin removes the owner');
      await groupOk(alice, setRole(id, 'dave', GroupRole.ADMIN));
      await groupErr(bob, remove(id, ['dave']), ErrorCode.NOT_ADMIN, 'admin removes an admin');
      await groupErr(bob, mute(id, 'dave', true), ErrorCode.NOT_ADMIN, 'admin mutes an admin');
      await groupErr(bob, mute(id, 'alice', true), ErrorCode.NOT_ADMIN, 'admin mutes the owner');
      await groupErr(bob, setRole(id, 'carol', GroupRole.ADMIN), ErrorCode.NOT_ADMIN, 'admin sets a role');
      await groupErr(bob, dismiss(id), ErrorCode.NOT_ADMIN, 'admin dismisses');
      // The owner can be neither removed nor leave.
      await groupErr(alice, remove(id, ['alice']), ErrorCode.NOT_ADMIN, 'owner removes itself');
      await groupErr(alice, leave(id), ErrorCode.FORBIDDEN, 'owner leaves');
      // Role requests that make no sense.
      await groupErr(alice, setRole(id, 'eve', GroupRole.ADMIN), ErrorCode.NOT_MEMBER, 'role for a non-member');
      await groupErr(alice, setRole(id, 'alice', GroupRole.MEMBER), ErrorCode.BAD_REQUEST, 'owner demotes itself');
      await groupErr(alice, setRole(id, 'carol', GroupRole.GROUP_ROLE_UNSPECIFIED), ErrorCode.BAD_REQUEST, 'no role');
      await groupErr(alice, mute(id, 'eve', true), ErrorCode.NOT_MEMBER, 'mute a non-member');
      // The owner removes an admin.
      const noDave = await groupOk(alice, remove(id, ['dave']));
      assert.deepEqual(rolesOf(noDave), { alice: 'owner', bob: 'admin', carol: 'member', frank: 'member' });
      // A member leaves on its own.
      const left = await groupOk(carol, leave(id));
      assert.ok(!left.members.some((m) => m.userId === 'carol'));
      await groupErr(carol, info(id), ErrorCode.NOT_MEMBER, 'info after leaving');
      await expectError(carol, { case: 'send', value: { clientMsgId: 'c-after', conversationId: g.conversationId, text: 'x' } }, ErrorCode.NOT_MEMBER);

      // Every member sees the same group.
      const fromBob = await groupOk(bob, info(id));
      assert.deepEqual(fromBob, await groupOk(alice, info(id)));
      for (const c of [alice, bob, carol, dave, eve]) c.close();
    });
  });

  test('bad and unknown groups: NOT_FOUND, BAD_REQUEST', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'ws', 'alice');
      await groupErr(alice, info('nosuchgroup'), ErrorCode.NOT_FOUND, 'unknown group info');
      await groupErr(alice, add('nosuchgroup', ['bob']), ErrorCode.NOT_FOUND, 'unknown group add');
      await groupErr(alice, dismiss('nosuchgroup'), ErrorCode.NOT_FOUND, 'unknown group dismiss');
      await groupErr(alice, leave('nosuchgroup'), ErrorCode.NOT_FOUND, 'unknown group leave');
      await expectError(alice, { case: 'send', value: { clientMsgId: 'x1', conversationId: 'g:nosuchgroup', text: 'x' } }, ErrorCode.NOT_FOUND);
      await groupErr(alice, info('bad id!'), ErrorCode.BAD_REQUEST, 'invalid group id');
      await groupErr(alice, create('', ['bob']), ErrorCode.BAD_REQUEST, 'empty name');
      await groupErr(alice, create('   ', ['bob']), ErrorCode.BAD_REQUEST, 'blank name');
      await groupErr(alice, create('x'.repeat(65), ['bob']), ErrorCode.BAD_REQUEST, 'name too long');
      await groupErr(alice, create('ok', ['bob', 'not valid']), ErrorCode.BAD_REQUEST, 'invalid member id');
      await groupErr(alice, create('ok', ['system']), ErrorCode.BAD_REQUEST, 'the system user as member');
      await groupErr(alice, create('ok', range(1, 1001).map((i) => `u${i}`)), ErrorCode.BAD_REQUEST, 'over 1000 ids in one request');
      await groupErr(alice, { case: undefined }, ErrorCode.BAD_REQUEST, 'empty group request');
      // None of the refused creates made a group.
      const sync = await syncAll(alice);
      assert.deepEqual(sync.messages, []);
      const g = await groupOk(alice, create('ok', []));
      assert.deepEqual(g.members, [{ userId: 'alice', role: 'owner', muted: false, readSeq: 1 }]);
      await groupErr(alice, add(g.groupId, ['fine', 'not valid']), ErrorCode.BAD_REQUEST, 'invalid id in add');
      assert.equal((await groupOk(alice, info(g.groupId))).members.length, 1, 'a refused add adds nobody');
      alice.close();
    });
  });

  test('GROUP_FULL past max-group-members (owner included), on create and on add', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      await groupErr(alice, create('big', ['b', 'c', 'd', 'e']), ErrorCode.GROUP_FULL, 'create 5 with a limit of 4');
      const g = await groupOk(alice, create('small', ['b', 'c']));
      await groupErr(alice, add(g.groupId, ['d', 'e']), ErrorCode.GROUP_FULL, 'add 2 to 3');
      assert.equal((await groupOk(alice, add(g.groupId, ['d']))).members.length, 4);
      await groupErr(alice, add(g.groupId, ['e']), ErrorCode.GROUP_FULL, 'add 1 to 4');
      assert.equal((await groupOk(alice, add(g.groupId, ['b', 'c']))).members.length, 4, 'adding present members is no change');
      await groupOk(alice, remove(g.groupId, ['b']));
      assert.deepEqual((await groupOk(alice, add(g.groupId, ['e']))).members.map((m) => m.userId), ['alice', 'c', 'd', 'e']);
      alice.close();
    }, { 'max-group-members': '4' });
  });

  test('mute: a muted member cannot send (MUTED); a muted group lets only owner and admins send', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const bob = await online(s, 'ws', 'bob');
      const carol = await online(s, 'tcp', 'carol');
      const g = await groupOk(alice, create('quiet', ['bob', 'carol']));
      const conv = g.conversationId;
      await groupOk(alice, setRole(g.groupId, 'bob', GroupRole.ADMIN));

      const muted = await groupOk(bob, mute(g.groupId, 'carol', true));
      assert.deepEqual(muted.members.find((m) => m.userId === 'carol'), { userId: 'carol', role: 'member', muted: true, readSeq: 0 });
      await expectError(carol, { case: 'send', value: { clientMsgId: 'c1', conversationId: conv, text: 'shh' } }, ErrorCode.MUTED);
      await sendOk(bob, { conversationId: conv, text: 'admin talks' });
      await groupOk(alice, mute(g.groupId, 'carol', false));
      const c2 = await sendOk(carol, { conversationId: conv, text: 'carol again' });

      const all = await groupOk(bob, mute(g.groupId, '', true));
      assert.equal(all.mutedAll, true);
      await expectError(carol, { case: 'send', value: { clientMsgId: 'c3', conversationId: conv, text: 'quiet please' } }, ErrorCode.MUTED);
      const b = await sendOk(bob, { conversationId: conv, text: 'admin in a muted group' });
      const a = await sendOk(alice, { conversationId: conv, text: 'owner in a muted group' });
      assert.ok(b.seq > c2.seq && a.seq > b.seq);
      await groupOk(alice, mute(g.groupId, '', false));
      await sendOk(carol, { conversationId: conv, text: 'free again' });

      // The timeline holds every mute change, and the refused sends are not in it.
      const h = await history(carol, conv);
      assert.deepEqual(describeTimeline(h.messages), [
        '1 group_created by alice [bob,carol] name=quiet',
        '2 role_changed by alice [bob] role=admin',
        '3 mute_changed by bob [carol] muted=true',
        '4 msg bob: admin talks',
        '5 mute_changed by alice [carol]',
        '6 msg carol: carol again',
        '7 mute_changed by bob muted=true',
        '8 msg bob: admin in a muted group',
        '9 msg alice: owner in a muted group',
        '10 mute_changed by alice',
        '11 msg carol: free again',
      ]);
      for (const c of [alice, bob, carol]) c.close();
    });
  });

  test('ownership transfer: the new owner rules, the old owner becomes an admin and may leave', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const bob = await online(s, 'ws', 'bob');
      const carol = await online(s, 'tcp', 'carol');
      const g = await groupOk(alice, create('handover', ['bob', 'carol']));
      const after = await groupOk(alice, setRole(g.groupId, 'bob', GroupRole.OWNER));
      assert.deepEqual(rolesOf(after), { alice: 'admin', bob: 'owner', carol: 'member' });
      const seenByCarol = await groupOk(carol, info(g.groupId));
      // Both changes are in the timeline, new owner first.
      const events = await waitPushed(carol, 3);
      assert.deepEqual(describeTimeline(events.slice(1)), [
        '2 role_changed by alice [bob] role=owner',
        '3 role_changed by alice [alice] role=admin',
      ]);
      // The old owner lost the owner's powers; the new owner has them.
      await groupErr(alice, setRole(g.groupId, 'carol', GroupRole.ADMIN), ErrorCode.NOT_ADMIN, 'old owner sets a role');
      await groupErr(alice, dismiss(g.groupId), ErrorCode.NOT_ADMIN, 'old owner dismisses');
      await groupErr(alice, remove(g.groupId, ['bob']), ErrorCode.NOT_ADMIN, 'old owner removes the new owner');
      await groupErr(bob, leave(g.groupId), ErrorCode.FORBIDDEN, 'new owner leaves');
      assert.equal(rolesOf(await groupOk(bob, setRole(g.groupId, 'carol', GroupRole.ADMIN))).carol, 'admin');
      const gone = await groupOk(alice, leave(g.groupId));
      assert.deepEqual(rolesOf(gone), { bob: 'owner', carol: 'admin' });
      const beforeDismiss = await groupOk(bob, info(g.groupId));
      assert.equal((await groupOk(bob, dismiss(g.groupId))).dismissed, true);
      for (const c of [alice, bob, carol]) c.close();
      // The group's `owner` field follows the transfer, like the roles do.
      assert.equal(after.owner, 'bob', 'the transfer\'s result names the new owner');
      assert.equal(seenByCarol.owner, 'bob', 'info names the new owner');
      assert.equal(beforeDismiss.owner, 'bob', 'info names the new owner after the old one left');
    });
  });

  test('dismiss: every member learns it (online and at sync); the group then refuses sends and changes (GROUP_DISMISSED)', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'ws', 'alice');
      const bob = await online(s, 'tcp', 'bob');
      const g = await groupOk(alice, create('short-lived', ['bob', 'carol']));
      await sendOk(bob, { conversationId: g.conversationId, text: 'before the end' });
      const done = await groupOk(alice, dismiss(g.groupId));
      assert.equal(done.dismissed, true);
      const bobSaw = await waitPushed(bob, 2);
      assert.deepEqual(describeTimeline(bobSaw), ['1 group_created by alice [bob,carol] name=short-lived', '3 dismissed by alice']);

      await expectError(bob, { case: 'send', value: { clientMsgId: 'b2', conversationId: g.conversationId, text: 'anyone?' } }, ErrorCode.GROUP_DISMISSED);
      await expectError(alice, { case: 'send', value: { clientMsgId: 'a2', conversationId: g.conversationId, text: 'owner too' } }, ErrorCode.GROUP_DISMISSED);
      await groupErr(alice, add(g.groupId, ['dave']), ErrorCode.GROUP_DISMISSED, 'add after dismiss');
      await groupErr(alice, dismiss(g.groupId), ErrorCode.GROUP_DISMISSED, 'dismiss twice');
      await groupErr(bob, leave(g.groupId), ErrorCode.GROUP_DISMISSED, 'leave after dismiss');
      await groupErr(alice, setRole(g.groupId, 'bob', GroupRole.ADMIN), ErrorCode.GROUP_DISMISSED, 'role after dismiss');

      // carol was offline: she syncs the whole story, ending with the dismissal.
      const carol = await online(s, 'tcp', 'carol');
      const synced = await syncAll(carol);
      assert.deepEqual(describeTimeline(synced.messages), [
        '1 group_created by alice [bob,carol] name=short-lived',
        '2 msg bob: before the end',
        '3 dismissed by alice',
      ]);
      for (const c of [alice, bob, carol]) c.close();
    });
  });
});

describe('membership changes are timeline messages', () => {
  test('online members see each change in order; an offline member syncs the same; a member added and removed sees its window', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const bob = await online(s, 'ws', 'bob');
      const g = await groupOk(alice, create('story', ['bob', 'carol']));
      const id = g.groupId;
      await groupOk(alice, add(id, ['dave']));
      await groupOk(alice, setRole(id, 'bob', GroupRole.ADMIN));
      await groupOk(bob, mute(id, 'carol', true));
      await groupOk(alice, mute(id, 'carol', false));
      await groupOk(alice, mute(id, '', true));
      await groupOk(alice, mute(id, '', false));
      await sendOk(alice, { conversationId: g.conversationId, text: 'hello all' });
      await groupOk(bob, remove(id, ['dave']));
      await sendOk(alice, { conversationId: g.conversationId, text: 'dave is gone' });

      const story = [
        '1 group_created by alice [bob,carol] name=story',
        '2 members_added by alice [dave]',
        '3 role_changed by alice [bob] role=admin',
        '4 mute_changed by bob [carol] muted=true',
        '5 mute_changed by alice [carol]',
        '6 mute_changed by alice muted=true',
        '7 mute_changed by alice',
        '8 msg alice: hello all',
        '9 members_removed by bob [dave]',
        '10 msg alice: dave is gone',
      ];
      await waitPushed(bob, 10);
      await waitPushed(alice, 8);
      await settle(alice, bob);
      assert.deepEqual(describeTimeline(pushed(bob)), story, 'bob, online');
      assert.deepEqual(describeTimeline(pushed(alice)), story.filter((l) => !l.includes(' msg alice')), 'alice gets events, not her own messages');

      const carol = await online(s, 'tcp', 'carol');
      const carolSync = await syncAll(carol);
      assert.deepEqual(describeTimeline(carolSync.messages), story, 'carol, at sync');
      assert.equal(carolSync.cursors.get(g.conversationId), 10);

      const dave = await online(s, 'ws', 'dave');
      const daveSync = await syncAll(dave);
      assert.deepEqual(describeTimeline(daveSync.messages), story.slice(1, 9), 'dave: from his join to his removal');
      const daveHistory = await history(dave, g.conversationId);
      assert.deepEqual(describeTimeline(daveHistory.messages), story.slice(1, 9));
      assert.equal(daveHistory.hasMore, false);
      for (const c of [alice, bob, carol, dave]) c.close();
    });
  });
});

describe('group order with concurrent senders', () => {
  test('3 senders × 300 messages at once: every member sees seq 2..901 once, in order, each sender\'s messages in its send order', T, async () => {
    await withServer(async (s) => {
      const N = 300;
      const owner = await online(s, 'tcp', 'owner');
      const senders = [await online(s, 'tcp', 's1'), await online(s, 'ws', 's2'), await online(s, 'tcp', 's3')];
      const rawReaders = [await online(s, 'ws', 'r1'), await online(s, 'tcp', 'r2')];
      const g = await groupOk(owner, create('busy', ['s1', 's2', 's3', 'r1', 'r2', 'r3', 'offline1']));
      const sdkReader = createClient({ url: s.wsUrl, token: await s.token('r3', 'sdk'), reconnect: false });
      const sdkGot: ChatMessage[] = [];
      sdkReader.on('message', (m) => sdkGot.push(m));
      await sdkReader.connect();
      try {
        for (const c of [...senders, ...rawReaders]) await waitPushed(c, 1);
        await until(() => sdkGot.length >= 1, 10_000, () => 'the SDK reader sees the group');

        const acks = await Promise.all(senders.map((c, k) => sendMany(c, N, (i) => ({
          conversationId: g.conversationId, clientMsgId: `s${k + 1}-${i}`, text: `s${k + 1}:${i}`,
        }))));
        const total = 3 * N;
        const allSeqs = acks.flat().map((a) => Number(a.seq)).sort((x, y) => x - y);
        assert.deepEqual(allSeqs, range(2, total + 1), 'acks: seq 2..901, each once');
        acks.forEach((list, k) => {
          const q = list.map((a) => Number(a.seq));
          assert.ok(q.every((x, i) => i === 0 || x > q[i - 1]!), `s${k + 1}: seq grows with send order`);
        });

        const checkOrder = (who: string, ms: ChatMessage[], expectSenders: string[]) => {
          const plain = ms.filter((m) => !m.event);
          assert.ok(plain.every((m, i) => i === 0 || m.seq > plain[i - 1]!.seq), `${who}: in seq order`);
          assert.equal(new Set(seqs(plain)).size, plain.length, `${who}: no duplicates`);
          for (const sender of expectSenders) {
            const mine = plain.filter((m) => m.fromUser === sender);
            assert.deepEqual(texts(mine), range(0, N - 1).map((i) => `${sender}:${i}`), `${who}: ${sender}'s messages in send order`);
          }
        };
        for (const [i, r] of rawReaders.entries()) {
          const ms = await waitPushed(r, 1 + total, 60_000);
          assert.deepEqual(seqs(ms), range(1, total + 1), `r${i + 1}: seq 1..901 once, in order`);
          checkOrder(`r${i + 1}`, ms, ['s1', 's2', 's3']);
        }
        for (const [k, c] of senders.entries()) {
          const ms = await waitPushed(c, 1 + 2 * N, 60_000);
          checkOrder(`s${k + 1}`, ms, ['s1', 's2', 's3'].filter((x) => x !== `s${k + 1}`));
        }
        await until(() => sdkGot.length >= 1 + total, 60_000, () => `SDK reader: ${sdkGot.length}`);
        assert.deepEqual(seqs(sdkGot), range(1, total + 1), 'SDK reader: seq 1..901 once, in order');
        checkOrder('r3 (SDK)', sdkGot, ['s1', 's2', 's3']);

        const late = await online(s, 'tcp', 'offline1');
        const synced = await syncAll(late);
        assert.deepEqual(seqs(synced.messages), range(1, total + 1), 'offline member syncs seq 1..901');
        checkOrder('offline1', synced.messages, ['s1', 's2', 's3']);
        assert.ok(synced.pages.length > 1, 'paged');
        for (const c of [owner, ...senders, ...rawReaders, late]) c.close();
      } finally {
        await sdkReader.close();
      }
    });
  });
});

describe('offline members, late joiners, removed members', () => {
  test('an offline member\'s client gets everything at its next login; a member added later sees only from its join on', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const g = await groupOk(alice, create('sync', ['bob', 'carol']));
      const acks = await sendMany(alice, 5, (i) => ({ conversationId: g.conversationId, text: `early ${i + 1}` }));
      assert.deepEqual(acks.map((a) => Number(a.seq)), [2, 3, 4, 5, 6]);

      // carol was offline: her SDK client catches up at login, over WS.
      const carol = createClient({ url: s.wsUrl, token: await s.token('carol', 'phone'), reconnect: false });
      const carolGot: ChatMessage[] = [];
      carol.on('message', (m) => carolGot.push(m));
      let synced = 0;
      carol.on('synced', () => synced++);
      await carol.connect();
      await until(() => synced > 0, 10_000, () => 'carol synced');
      assert.deepEqual(describeTimeline(carolGot), [
        '1 group_created by alice [bob,carol] name=sync',
        ...range(1, 5).map((i) => `${i + 1} msg alice: early ${i}`),
      ]);

      // dave joins at seq 7; two more messages.
      await groupOk(alice, add(g.groupId, ['dave']));
      await sendMany(alice, 2, (i) => ({ conversationId: g.conversationId, text: `late ${i + 1}` }));
      const dave = await online(s, 'tcp', 'dave');
      const daveSync = await syncAll(dave);
      const daveView = ['7 members_added by alice [dave]', '8 msg alice: late 1', '9 msg alice: late 2'];
      assert.deepEqual(describeTimeline(daveSync.messages), daveView, 'sync: from the join on');
      assert.equal(daveSync.cursors.get(g.conversationId), 9);
      const h = await history(dave, g.conversationId);
      assert.deepEqual(describeTimeline(h.messages), daveView, 'history: from the join on');
      assert.equal(h.hasMore, false);
      const older = await history(dave, g.conversationId, 7);
      assert.deepEqual(older.messages, [], 'nothing before the join');
      const fromZero = await request(dave, { case: 'sync', value: { cursors: [{ conversationId: g.conversationId, seq: 0n }], conversationIds: [g.conversationId] } });
      assert.equal(fromZero.body.case, 'syncResult');
      if (fromZero.body.case === 'syncResult') {
        assert.deepEqual(fromZero.body.value.messages.map((m) => Number(m.seq)), [7, 8, 9], 'a cursor of 0 does not reach before the join');
      }
      // carol, online, got the join and the two messages live.
      await until(() => carolGot.length >= 9, 10_000, () => `carol: ${carolGot.length}`);
      assert.deepEqual(seqs(carolGot), range(1, 9));
      await carol.close();
      for (const c of [alice, dave]) c.close();
    });
  });

  test('a removed member gets its removal, then nothing (online and at sync), and can no longer send, sync on or read on', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const bob = await online(s, 'tcp', 'bob');
      const carol = await online(s, 'ws', 'carol');
      const g = await groupOk(alice, create('trim', ['bob', 'carol', 'frank']));
      const conv = g.conversationId;
      await sendOk(alice, { conversationId: conv, text: 'all four' });
      await waitPushed(carol, 2);

      const removed = await groupOk(alice, remove(g.groupId, ['carol', 'frank']));
      assert.deepEqual(removed.members.map((m) => m.userId), ['alice', 'bob']);
      const carolSaw = await waitPushed(carol, 3);
      assert.deepEqual(describeTimeline(carolSaw), [
        '1 group_created by alice [bob,carol,frank] name=trim',
        '2 msg alice: all four',
        '3 members_removed by alice [carol,frank]',
      ]);
      await sendMany(alice, 3, (i) => ({ conversationId: conv, text: `after ${i + 1}` }));
      await sendOk(bob, { conversationId: conv, text: 'bob after' });
      await waitPushed(bob, 6);
      await settle(carol, bob, alice);
      assert.equal(pushed(carol).length, 3, `carol got nothing after her removal: ${describeTimeline(pushed(carol)).join(' | ')}`);
      assert.deepEqual(describeTimeline(pushed(bob)).slice(2), [
        '3 members_removed by alice [carol,frank]', '4 msg alice: after 1', '5 msg alice: after 2', '6 msg alice: after 3',
      ]);

      await expectError(carol, { case: 'send', value: { clientMsgId: 'c-x', conversationId: conv, text: 'still here?' } }, ErrorCode.NOT_MEMBER);
      await expectError(carol, { case: 'typing', value: { conversationId: conv } }, ErrorCode.FORBIDDEN);
      const carolSync = await syncAll(carol);
      assert.deepEqual(seqs(carolSync.messages), [1, 2, 3], 'sync stops at the removal');
      const carolHistory = await history(carol, conv);
      assert.deepEqual(seqs(carolHistory.messages), [1, 2, 3], 'history stops at the removal');
      assert.equal(carolHistory.messages.some((m) => m.text.startsWith('after')), false);

      // frank was offline the whole time: his sync ends at his removal too.
      const frank = await online(s, 'tcp', 'frank');
      const frankSync = await syncAll(frank);
      assert.deepEqual(describeTimeline(frankSync.messages), describeTimeline(carolSaw));
      await expectError(frank, { case: 'send', value: { clientMsgId: 'f-x', conversationId: conv, text: 'me?' } }, ErrorCode.NOT_MEMBER);

      // The removed member's conversation list shows the group as it last saw it.
      const list = await request(carol, { case: 'conversations', value: {} });
      assert.equal(list.body.case, 'conversationsResult');
      if (list.body.case === 'conversationsResult') {
        const entry = list.body.value.conversations.find((c) => c.conversationId === conv);
        assert.ok(entry, 'the group stays in the list');
        assert.equal(Number(entry.lastSeq), 3);
        assert.equal(entry.lastMessage ? messageFromWire(entry.lastMessage).event?.type : undefined, 'members_removed');
      }
      for (const c of [alice, bob, carol, frank]) c.close();
    });
  });
});

describe('removed, then added back', () => {
  test('a member removed and added back while its client stays online gets the messages after its return', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const carol = createClient({ url: s.wsUrl, token: await s.token('carol', 'c1'), reconnect: false });
      const got: ChatMessage[] = [];
      carol.on('message', (m) => got.push(m));
      await carol.connect();
      try {
        const g = await groupOk(alice, create('revolving door', ['carol']));
        await sendOk(alice, { conversationId: g.conversationId, text: 'first stay' });
        await until(() => got.length >= 2, 10_000, () => `carol: ${describeTimeline(got).join(' | ')}`);
        await groupOk(alice, remove(g.groupId, ['carol']));
        await sendOk(alice, { conversationId: g.conversationId, text: 'while carol is out' });
        await groupOk(alice, add(g.groupId, ['carol']));
        await sendOk(alice, { conversationId: g.conversationId, text: 'welcome back' });
        const want = [
          '1 group_created by alice [carol] name=revolving door',
          '2 msg alice: first stay',
          '3 members_removed by alice [carol]',
          '5 members_added by alice [carol]',
          '6 msg alice: welcome back',
        ];
        // The server's side: a fresh device of carol syncs both her stays, and nothing from while she was out.
        const fresh = await online(s, 'tcp', 'carol', 'c2');
        assert.deepEqual(describeTimeline((await syncAll(fresh)).messages), want);
        fresh.close();
        // The client that stayed online shows both stays, skipping what happened while carol was out.
        await until(() => got.length >= want.length, 10_000, () => `carol's client shows: ${describeTimeline(got).join(' | ')}`);
        assert.deepEqual(describeTimeline(got), want);
      } finally {
        await carol.close();
        alice.close();
      }
    });
  });
});

/** A TCP connection that logs in, then never reads again (a member that stopped reading). */
async function pausedMember(s: TestServer, user: string): Promise<{ socket: net.Socket; resume: () => Promise<ChatMessage[]> }> {
  const u = new URL(s.tcpUrl);
  const socket = net.connect({ host: u.hostname, port: Number(u.port) });
  await once(socket, 'connect');
  const reader = new LengthPrefixedReader(64 * 1024 * 1024);
  const got: ChatMessage[] = [];
  const onData = (chunk: Buffer) => {
    reader.push(chunk);
    for (let p = reader.next(); p; p = reader.next()) {
      const f = decodeFrame(p);
      if (f.body.case === 'loginResult') socket.emit('logged-in');
      if (f.body.case === 'push') got.push(...f.body.value.messages.map(messageFromWire));
    }
  };
  socket.on('data', onData);
  const loggedIn = once(socket, 'logged-in');
  socket.write(lengthPrefixed(encodeFrame(makeFrame(1, { case: 'login', value: { token: await s.token(user, 'stuck') } }))));
  await loggedIn;
  socket.pause();
  return {
    socket,
    resume: async () => {
      socket.resume();
      return got;
    },
  };
}

describe('a 10,000-member group', () => {
  test('a message reaches each of 200 online members once (TCP and WS), offline members at sync, and a member that never reads holds nobody up', { timeout: 180_000 }, async () => {
    await withServer(async (s) => {
      const MEMBERS = 10_000;
      const ids = range(1, MEMBERS - 1).map((i) => `m${String(i).padStart(5, '0')}`);
      const owner = createClient({ url: s.tcpUrl, token: await s.token('owner', 'o1'), reconnect: false, autoSync: false });
      await owner.connect();
      try {
        let g = await owner.createGroup('everyone', ids.slice(0, 999));
        for (let i = 999; i < ids.length; i += 1000) g = await owner.addMembers(g.groupId, ids.slice(i, i + 1000));
        assert.equal(g.members.length, MEMBERS);
        assert.equal(g.owner, 'owner');
        const conv = g.conversationId;
        const lastEvent = Math.ceil((ids.length - 999) / 1000) + 1;

        // One member that stops reading, first in member order (so it would be served first), ...
        const stuckUser = ids[0]!;
        const stuck = await pausedMember(s, stuckUser);
        // ... with a backlog of ~14 MB it never reads (1:1 messages), more than the socket buffers hold.
        const stuffers = await Promise.all(['st1', 'st2', 'st3'].map((u) => online(s, 'tcp', u)));
        const big = 'x'.repeat(16_000);
        await Promise.all(stuffers.map((c) => sendMany(c, 300, () => ({ toUser: stuckUser, text: big }))));
        // 200 members online (half TCP, half WS).
        const ONLINE = 200;
        const clients: RawClient[] = [];
        for (let i = 1; i <= ONLINE; i += 20) {
          clients.push(...await Promise.all(range(i, i + 19).map((k) => online(s, k % 2 === 0 ? 'tcp' : 'ws', ids[k]!, 'live'))));
        }

        const ack = await owner.send({ groupId: g.groupId, text: 'hello, ten thousand' });
        assert.equal(ack.seq, lastEvent + 1);
        const isIt = (m: ChatMessage) => m.seq === ack.seq && m.conversationId === conv;
        await until(() => clients.every((c) => pushed(c).some(isIt)), 30_000,
          () => `${clients.filter((c) => pushed(c).some(isIt)).length} of ${ONLINE} online members got it`);
        await settle(...clients.slice(0, 5));
        for (const c of clients) {
          const got = pushed(c).filter((m) => m.conversationId === conv && !m.event);
          assert.deepEqual(got.map((m) => [m.seq, m.text, m.fromUser]), [[ack.seq, 'hello, ten thousand', 'owner']], 'once each');
        }

        // Offline members get it at sync, from their own join on.
        for (const [user, joinSeq] of [[ids[998]!, 1], [ids[999]!, 2], [ids[5000]!, 6], [ids[MEMBERS - 2]!, lastEvent]] as const) {
          const c = await online(s, 'ws', user, 'later');
          const synced = await syncAll(c, { conversationIds: [conv] });
          const plain = synced.messages.filter((m) => !m.event);
          assert.deepEqual(plain.map((m) => [m.seq, m.text]), [[ack.seq, 'hello, ten thousand']], `${user} syncs the message`);
          assert.equal(synced.messages[0]!.seq, joinSeq, `${user} sees from its join event`);
          c.close();
        }

        // The member that stopped reading still has its connection; once it reads, it gets the message too.
        assert.equal(stuck.socket.destroyed, false, 'the stuck member was not dropped');
        const stuckGot = await stuck.resume();
        await until(() => stuckGot.some(isIt), 30_000, () => `stuck member got ${stuckGot.length} messages`);
        stuck.socket.destroy();
        for (const c of [...clients, ...stuffers]) c.close();
      } finally {
        await owner.close();
      }
    }, { 'max-group-members': '20000', 'max-outbound-bytes': String(64 * 1024 * 1024) });
  });
});
