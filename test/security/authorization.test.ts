// Who may do what: every operation a client can ask for, against real
// servers over real sockets (TCP and WebSocket), with the coded error each
// refusal gets and a check that nothing leaked (the other party received
// nothing; history and sync show nothing of theirs; state did not change).
//
//   identity        the sender is the token's user; nothing in a frame changes it
//   conversations   send, history, sync, markRead, typing, pushAck, recall: only in
//                   one's own 1:1 conversations and groups one is (or, to read, was) in
//   groups          info, add, remove, leave, dismiss, roles, mute: by rank (table below)
//   recall          one's own (within the window); the owner anyone's; an admin a member's
//   presence        'all': anyone; 'contacts': only users sharing a conversation
//
// The HTTP admin API and forged tokens: admin-api.test.ts beside this file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { MessageInitShape } from '@bufbuild/protobuf';
import {
  ErrorCode, GroupRole, errorName, type BodyOf, type Frame, type FrameBodyInit, type GroupRequestSchema,
} from '../../src/protocol/index.js';
import { groupFromWire, type GroupInfo } from '../../src/client/types.js';
import { RawClient } from '../helpers/raw.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import {
  barrier, bigintJson, expectError, history, online, pushed, request, sendOk, sleep, syncAll, syncOnce,
  uniqueId, until, urlOf, withServer, type Transport,
} from '../logic/support.js';

/** No test may hang the suite. */
const T = { timeout: 60_000 };

/** Tests log in many times from 127.0.0.1: lift the per-address login limit. */
const MANY_LOGINS = { 'login-attempts-per-minute': '100000' };

type GroupOp = MessageInitShape<typeof GroupRequestSchema>['op'];

/** What a request must get: 'ok' (its normal reply) or a coded error. */
type Outcome = 'ok' | ErrorCode;

/** Sends a request and checks the outcome; returns the reply. */
async function expectOutcome(c: RawClient, body: FrameBodyInit, outcome: Outcome, what: string) {
  const reply = await request(c, body);
  if (outcome === 'ok') {
    assert.notEqual(reply.body.case, 'error', `${what}: refused with ${reply.body.case === 'error' ? `${errorName(reply.body.value.code)} (${reply.body.value.message})` : ''}`);
  } else {
    assert.equal(reply.body.case, 'error', `${what}: expected ${errorName(outcome)}, got ${reply.body.case}: ${JSON.stringify(reply.body.value, bigintJson)}`);
    if (reply.body.case === 'error') {
      assert.equal(errorName(reply.body.value.code), errorName(outcome), `${what}: ${reply.body.value.message}`);
      assert.equal(reply.body.value.fatal, false, `${what}: a refusal keeps the connection`);
    }
  }
  return reply;
}

async function groupOk(c: RawClient, op: GroupOp): Promise<GroupInfo> {
  const reply = await request(c, { case: 'group', value: { op } });
  if (reply.body.case !== 'groupResult' || !reply.body.value.group) {
    assert.fail(`expected a GroupResult, got ${reply.body.case}: ${JSON.stringify(reply.body.value, bigintJson)}`);
  }
  return groupFromWire(reply.body.value.group);
}

/** Frames of one kind a client received since index `from`. */
function since<C extends NonNullable<Frame['body']['case']>>(c: RawClient, from: number, kind: C): BodyOf<C>[] {
  return c.frames.slice(from).flatMap((f) => (f.body.case === kind ? [f.body.value as BodyOf<C>] : []));
}

/** Users whose presence events a client received since index `from`. */
function presenceSince(c: RawClient, from: number): string[] {
  return since(c, from, 'event').flatMap((e) => (e.body.case === 'presence' ? [e.body.value.userId] : [e.body.case ?? 'empty']));
}

/** Server → client frames a user received since `from` (pushes and events: what could leak). */
function deliveredSince(c: RawClient, from: number): string[] {
  return c.frames.slice(from).filter((f) => f.body.case === 'push' || f.body.case === 'event')
    .map((f) => `${f.body.case} ${JSON.stringify(f.body.value, bigintJson)}`);
}

const send = (conversationId: string, text = 'let me in', fromUser = ''): FrameBodyInit =>
  ({ case: 'send', value: { clientMsgId: uniqueId('x'), conversationId, text, fromUser } });

// ---------------------------------------------------------------------------

describe('conversations one is not in: every operation refused, nothing leaks', () => {
  // alice, bob, carol and dave are in group G; dave was removed from it. bob
  // and carol talk 1:1 (u:bob:carol). alice dismissed group D (with carol).
  // eve is in nothing. bob and carol stay online to catch any leak.
  let s: TestServer;
  let alice: RawClient, bob: RawClient, carol: RawClient, dave: RawClient, eve: RawClient;
  let G: string, D: string;
  const BC = 'u:bob:carol';

  before(async () => {
    s = await startTestServer(MANY_LOGINS);
    const t: Transport[] = ['tcp', 'ws'];
    const c = await Promise.all(['alice', 'bob', 'carol', 'dave', 'eve'].map((u, i) => online(s, t[i % 2]!, u)));
    [alice, bob, carol, dave, eve] = [c[0]!, c[1]!, c[2]!, c[3]!, c[4]!];
    const g = await groupOk(alice, { case: 'create', value: { name: 'G', memberIds: ['bob', 'carol', 'dave'] } });
    G = g.conversationId;
    await sendOk(alice, { conversationId: G, text: 'g: from alice' });
    await sendOk(carol, { conversationId: G, text: 'g: from carol' });
    await groupOk(alice, { case: 'remove', value: { groupId: g.groupId, userIds: ['dave'] } });
    await sendOk(bob, { conversationId: G, text: 'g: after dave left' });
    await sendOk(bob, { toUser: 'carol', text: 'bc: secret 1' });
    await sendOk(carol, { toUser: 'bob', text: 'bc: secret 2' });
    const d = await groupOk(alice, { case: 'create', value: { name: 'D', memberIds: ['carol'] } });
    D = d.conversationId;
    await sendOk(carol, { conversationId: D, text: 'd: before the end' });
    await groupOk(alice, { case: 'dismiss', value: { groupId: d.groupId } });
    // Everything above has reached bob and carol before the refusals begin.
    await until(() => pushed(bob).some((m) => m.text === 'bc: secret 2'), 10_000, () => bob.describe());
    await until(() => pushed(carol).some((m) => m.conversationId === D && m.seq === 3), 10_000, () => carol.describe());
  });

  after(async () => {
    for (const c of [alice, bob, carol, dave, eve]) c?.close();
    await s?.close();
  });

  /** How far carol has read u:bob:carol, as bob's conversation list shows it. */
  async function carolReadOfBC(): Promise<bigint | undefined> {
    const list = await request(bob, { case: 'conversations', value: {} });
    assert.ok(list.body.case === 'conversationsResult', bob.describe());
    return list.body.value.conversations.find((c) => c.conversationId === BC)?.peerReadSeq;
  }

  test('the sender is always the token\'s user: a frame naming another sender is refused, server-only frames are refused', T, async () => {
    const marks = [bob.frames.length, carol.frames.length];
    // from_user naming someone else: FORBIDDEN, whatever the destination.
    for (const value of [
      { toUser: 'carol', fromUser: 'bob' },
      { conversationId: BC, fromUser: 'bob' },
      { conversationId: G, fromUser: 'bob' },
      { toUser: 'carol', fromUser: 'system' },
      { toUser: 'carol', fromUser: 'Alice' }, // ids are case-sensitive
    ]) {
      await expectError(alice, { case: 'send', value: { clientMsgId: uniqueId('id'), text: 'as someone else', ...value } }, ErrorCode.FORBIDDEN);
    }
    // Frames only the server sends, carrying another sender: UNKNOWN_FRAME, never relayed.
    const forged = { conversationId: BC, seq: 99n, serverMsgId: 'forged', fromUser: 'bob', fromDevice: 'd1', text: 'forged push' };
    const serverOnly: FrameBodyInit[] = [
      { case: 'push', value: { messages: [forged] } },
      { case: 'sendAck', value: { clientMsgId: 'x', conversationId: BC, seq: 99n } },
      { case: 'event', value: { body: { case: 'typing', value: { conversationId: BC, userId: 'bob' } } } },
      { case: 'event', value: { body: { case: 'receipt', value: { conversationId: BC, userId: 'bob', seq: 2n } } } },
      { case: 'syncResult', value: { messages: [forged] } },
      { case: 'groupResult', value: {} },
      { case: 'loginResult', value: { userId: 'bob', deviceId: 'd1' } },
      { case: 'kick', value: { code: ErrorCode.REPLACED } },
      { case: 'error', value: { code: ErrorCode.INTERNAL } },
      { case: 'presenceResult', value: { users: [{ userId: 'bob', online: false }] } },
    ];
    for (const body of serverOnly) await expectError(alice, body, ErrorCode.UNKNOWN_FRAME);
    // A plain send carries the token's identity (user and device).
    const ack = await sendOk(alice, { toUser: 'carol', text: 'really from alice', fromUser: 'alice' });
    await until(() => pushed(carol).some((m) => m.serverMsgId === ack.serverMsgId), 10_000, () => carol.describe());
    const got = pushed(carol).find((m) => m.serverMsgId === ack.serverMsgId)!;
    assert.deepEqual([got.fromUser, got.fromDevice, got.conversationId], ['alice', 'd1', 'u:alice:carol']);
    // Nothing else reached bob or carol; bob's and carol's conversation holds only their own two messages.
    await settle(bob, carol);
    assert.deepEqual(deliveredSince(bob, marks[0]!), []);
    assert.deepEqual(deliveredSince(carol, marks[1]!).filter((x) => !x.includes('really from alice')), []);
    assert.deepEqual((await history(bob, BC)).messages.map((m) => [m.fromUser, m.text]), [['bob', 'bc: secret 1'], ['carol', 'bc: secret 2']]);
  });

  test('the reserved system user (a token only the secret could make) cannot log in from a connection: TOKEN_INVALID, nothing sent', T, async () => {
    const marks = [bob.frames.length, carol.frames.length];
    for (const transport of ['tcp', 'ws'] as const) {
      const sys = await RawClient.connect(urlOf(s, transport));
      const loginId = sys.send({ case: 'login', value: { token: await s.token('system') } });
      // Pipelined behind the login: must never be acted on.
      sys.send({ case: 'send', value: { clientMsgId: uniqueId(), toUser: 'bob', text: 'official notice' } });
      const reply = await sys.next((f) => f.id === loginId, 5000);
      assert.equal(reply.body.case, 'error', sys.describe());
      assert.equal(reply.body.value.code, ErrorCode.TOKEN_INVALID);
      assert.equal(reply.body.value.fatal, true);
      await sys.waitClosed(5000);
    }
    await settle(bob, carol);
    assert.deepEqual(deliveredSince(bob, marks[0]!), []);
    assert.deepEqual(deliveredSince(carol, marks[1]!), []);
  });

  test('every conversation operation on someone else\'s 1:1, a group one is not in, a dismissed group and malformed ids: the coded refusal', T, async () => {
    const marks = [bob.frames.length, carol.frames.length, alice.frames.length];
    const carolRead = await carolReadOfBC();
    const malformed = [
      '', 'u:carol:bob', 'u:bob', 'u:bob:carol:eve', 'u::bob', 'U:bob:carol', ' u:bob:carol', 'u:bob:carol ', 'u:bob:car ol',
      'g:', 'g:bad id', 'g:a:b', 'x:bob:carol', 'bob', 'u:bob:carol\u0000', `u:bob:${'c'.repeat(65)}`, 'g'.repeat(4000),
    ];
    /** Each operation, and what it gets on each kind of conversation id. */
    // A malformed id is BAD_REQUEST everywhere (the message says how ids are spelled); one well formed but not yours, FORBIDDEN.
    const ops: { op: string; body: (id: string) => FrameBodyInit; own: Outcome; group: Outcome; bad: Outcome }[] = [
      { op: 'send', body: (id) => send(id), own: ErrorCode.FORBIDDEN, group: ErrorCode.NOT_MEMBER, bad: ErrorCode.BAD_REQUEST },
      { op: 'history', body: (id) => ({ case: 'history', value: { conversationId: id } }), own: ErrorCode.FORBIDDEN, group: ErrorCode.FORBIDDEN, bad: ErrorCode.BAD_REQUEST },
      { op: 'sync', body: (id) => ({ case: 'sync', value: { conversationIds: [id] } }), own: ErrorCode.FORBIDDEN, group: ErrorCode.FORBIDDEN, bad: ErrorCode.BAD_REQUEST },
      { op: 'markRead', body: (id) => ({ case: 'markRead', value: { conversationId: id, seq: 0n } }), own: ErrorCode.FORBIDDEN, group: ErrorCode.FORBIDDEN, bad: ErrorCode.BAD_REQUEST },
      { op: 'typing', body: (id) => ({ case: 'typing', value: { conversationId: id } }), own: ErrorCode.FORBIDDEN, group: ErrorCode.FORBIDDEN, bad: ErrorCode.BAD_REQUEST },
      { op: 'pushAck', body: (id) => ({ case: 'pushAck', value: { conversationId: id, seq: 1n } }), own: ErrorCode.FORBIDDEN, group: ErrorCode.FORBIDDEN, bad: ErrorCode.BAD_REQUEST },
      { op: 'recall', body: (id) => ({ case: 'recall', value: { conversationId: id, seq: 1n } }), own: ErrorCode.FORBIDDEN, group: ErrorCode.FORBIDDEN, bad: ErrorCode.BAD_REQUEST },
    ];
    let checked = 0;
    for (const { op, body, own, group, bad } of ops) {
      // eve, in nothing: another pair's 1:1, a live group, a dismissed group, an unknown group, malformed ids.
      await expectOutcome(eve, body(BC), own, `eve ${op} ${BC}`);
      await expectOutcome(eve, body(G), group, `eve ${op} G`);
      await expectOutcome(eve, body(D), group, `eve ${op} dismissed D`);
      for (const id of malformed) await expectOutcome(eve, body(id), bad, `eve ${op} ${JSON.stringify(id.slice(0, 40))}`);
      // alice is in G, but not in bob and carol's 1:1.
      await expectOutcome(alice, body(BC), own, `alice ${op} ${BC}`);
      checked += 4 + malformed.length;
    }
    // Unknown (well-formed) group: sending says so; reading is simply not allowed.
    await expectOutcome(eve, send('g:nosuchgroup'), ErrorCode.NOT_FOUND, 'eve sends to an unknown group');
    await expectOutcome(eve, { case: 'history', value: { conversationId: 'g:nosuchgroup' } }, ErrorCode.FORBIDDEN, 'eve reads an unknown group');
    // dave, removed from G: may no longer write, type, recall (reading up to his removal is by design).
    await expectOutcome(dave, send(G), ErrorCode.NOT_MEMBER, 'dave sends after removal');
    await expectOutcome(dave, { case: 'typing', value: { conversationId: G } }, ErrorCode.FORBIDDEN, 'dave types after removal');
    await expectOutcome(dave, { case: 'recall', value: { conversationId: G, seq: 2n } }, ErrorCode.FORBIDDEN, 'dave recalls after removal');
    // The system user takes no messages; a peer cannot recall the other's message.
    await expectOutcome(eve, { case: 'send', value: { clientMsgId: uniqueId(), toUser: 'system', text: 'hi' } }, ErrorCode.FORBIDDEN, 'eve writes to system');
    await expectOutcome(eve, send('u:eve:system'), ErrorCode.FORBIDDEN, 'eve writes into u:eve:system');
    await expectOutcome(carol, { case: 'recall', value: { conversationId: BC, seq: 1n } }, ErrorCode.NOT_SENDER, 'carol recalls bob\'s message');
    assert.ok(checked > 100);

    // Nothing leaked: bob and carol received nothing at all; alice nothing of theirs.
    await settle(bob, carol, alice);
    assert.deepEqual(deliveredSince(bob, marks[0]!), [], 'bob received something');
    assert.deepEqual(deliveredSince(carol, marks[1]!), [], 'carol received something');
    assert.deepEqual(deliveredSince(alice, marks[2]!), [], 'alice received something');
    // Nothing changed: each conversation holds what it held.
    assert.deepEqual((await history(carol, BC)).messages.map((m) => [m.seq, m.text, m.recalledBy]), [[1, 'bc: secret 1', undefined], [2, 'bc: secret 2', undefined]]);
    assert.deepEqual((await history(alice, G)).messages.map((m) => m.seq), [1, 2, 3, 4, 5]);
    assert.deepEqual((await history(alice, D)).messages.map((m) => m.seq), [1, 2, 3]);
    assert.equal(await carolReadOfBC(), carolRead, 'nobody moved carol\'s read mark');
  });

  test('an outsider\'s sync, conversation list and cursors show nothing of others, even when it names their conversations', T, async () => {
    // Cursors naming others' conversations are ignored, not echoed.
    const page = await syncOnce(eve, new Map([[BC, 0], [G, 0], [D, 0]]));
    assert.deepEqual(page.messages, []);
    assert.deepEqual([...page.cursors.keys()].filter((id) => [BC, G, D].includes(id)), []);
    assert.deepEqual((await syncAll(eve)).messages, []);
    const list = await request(eve, { case: 'conversations', value: {} });
    assert.ok(list.body.case === 'conversationsResult');
    assert.deepEqual(list.body.value.conversations, []);
    // alice's own list: her conversations only, never bob and carol's.
    const aliceList = await request(alice, { case: 'conversations', value: {} });
    assert.ok(aliceList.body.case === 'conversationsResult');
    assert.ok(!aliceList.body.value.conversations.some((c) => c.conversationId === BC));
    // dave's sync of G ends at his removal (seq 4): he never sees bob's later message.
    const daveSync = await syncAll(dave, { conversationIds: [G] });
    assert.deepEqual(daveSync.messages.map((m) => m.seq), [1, 2, 3, 4]);
    assert.ok(!JSON.stringify(daveSync.messages).includes('after dave left'));
  });

  test('one removed from a group still marks what it saw read, but the group\'s members hear nothing of it', T, async () => {
    const marks = [alice.frames.length, bob.frames.length, carol.frames.length];
    const done = await request(dave, { case: 'markRead', value: { conversationId: G, seq: 0n } });
    assert.equal(done.body.case, 'done', dave.describe());
    await settle(alice, bob, carol);
    for (const [i, c] of [alice, bob, carol].entries()) {
      assert.deepEqual(deliveredSince(c, marks[i]!).filter((x) => x.includes('dave')), [], `${['alice', 'bob', 'carol'][i]} got dave's receipt`);
    }
  });
});

/** After a round trip on each client and a pause, nothing more is on its way. */
async function settle(...clients: RawClient[]): Promise<void> {
  for (const c of clients) await barrier(c);
  await sleep(300);
}

// ---------------------------------------------------------------------------

type Rank = 'owner' | 'admin' | 'member' | 'former' | 'outsider';
const RANKS: readonly Rank[] = ['owner', 'admin', 'member', 'former', 'outsider'];

/** The acting user of each rank; tA (an admin) and tM (a member) are targets, newbie is added. */
const ACTOR: Record<Rank, string> = { owner: 'gO', admin: 'gA', member: 'gM', former: 'gF', outsider: 'gX' };

/** A group in a known state, and the seq of one message by the owner, by admin tA, by member tM. */
interface Fixture {
  groupId: string;
  conversationId: string;
  msg: { owner: number; admin: number; member: number };
}

interface Row {
  what: string;
  body: (fx: Fixture) => FrameBodyInit;
  may: Record<Rank, Outcome>;
}

const group = (op: GroupOp): FrameBodyInit => ({ case: 'group', value: { op } });
const recall = (fx: Fixture, seq: number): FrameBodyInit => ({ case: 'recall', value: { conversationId: fx.conversationId, seq: BigInt(seq) } });
const { NOT_ADMIN, NOT_MEMBER, NOT_SENDER, FORBIDDEN } = ErrorCode;

/**
 * Every group operation and what each rank gets: the whole permission model
 * in one table. The owner outranks admins; admins manage plain members only.
 */
const GROUP_TABLE: Row[] = [
  { what: 'info', body: (fx) => group({ case: 'info', value: { groupId: fx.groupId } }),
    may: { owner: 'ok', admin: 'ok', member: 'ok', former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'send a message', body: (fx) => send(fx.conversationId, 'hello group'),
    may: { owner: 'ok', admin: 'ok', member: 'ok', former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'add a user', body: (fx) => group({ case: 'add', value: { groupId: fx.groupId, userIds: ['newbie'] } }),
    may: { owner: 'ok', admin: 'ok', member: NOT_ADMIN, former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'add oneself back', body: (fx) => group({ case: 'add', value: { groupId: fx.groupId, userIds: ['gF', 'gX'] } }),
    may: { owner: 'ok', admin: 'ok', member: NOT_ADMIN, former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'remove a member', body: (fx) => group({ case: 'remove', value: { groupId: fx.groupId, userIds: ['tM'] } }),
    may: { owner: 'ok', admin: 'ok', member: NOT_ADMIN, former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'remove an admin', body: (fx) => group({ case: 'remove', value: { groupId: fx.groupId, userIds: ['tA'] } }),
    may: { owner: 'ok', admin: NOT_ADMIN, member: NOT_ADMIN, former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'remove the owner', body: (fx) => group({ case: 'remove', value: { groupId: fx.groupId, userIds: ['gO'] } }),
    may: { owner: NOT_ADMIN, admin: NOT_ADMIN, member: NOT_ADMIN, former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'leave', body: (fx) => group({ case: 'leave', value: { groupId: fx.groupId } }),
    may: { owner: FORBIDDEN, admin: 'ok', member: 'ok', former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'dismiss', body: (fx) => group({ case: 'dismiss', value: { groupId: fx.groupId } }),
    may: { owner: 'ok', admin: NOT_ADMIN, member: NOT_ADMIN, former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'make a member admin', body: (fx) => group({ case: 'setRole', value: { groupId: fx.groupId, userId: 'tM', role: GroupRole.ADMIN } }),
    may: { owner: 'ok', admin: NOT_ADMIN, member: NOT_ADMIN, former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'demote an admin', body: (fx) => group({ case: 'setRole', value: { groupId: fx.groupId, userId: 'tA', role: GroupRole.MEMBER } }),
    may: { owner: 'ok', admin: NOT_ADMIN, member: NOT_ADMIN, former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'transfer ownership', body: (fx) => group({ case: 'setRole', value: { groupId: fx.groupId, userId: 'tM', role: GroupRole.OWNER } }),
    may: { owner: 'ok', admin: NOT_ADMIN, member: NOT_ADMIN, former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'mute a member', body: (fx) => group({ case: 'mute', value: { groupId: fx.groupId, userId: 'tM', muted: true } }),
    may: { owner: 'ok', admin: 'ok', member: NOT_ADMIN, former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'mute an admin', body: (fx) => group({ case: 'mute', value: { groupId: fx.groupId, userId: 'tA', muted: true } }),
    may: { owner: 'ok', admin: NOT_ADMIN, member: NOT_ADMIN, former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'mute the owner', body: (fx) => group({ case: 'mute', value: { groupId: fx.groupId, userId: 'gO', muted: true } }),
    may: { owner: NOT_ADMIN, admin: NOT_ADMIN, member: NOT_ADMIN, former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'mute the whole group', body: (fx) => group({ case: 'mute', value: { groupId: fx.groupId, userId: '', muted: true } }),
    may: { owner: 'ok', admin: 'ok', member: NOT_ADMIN, former: NOT_MEMBER, outsider: NOT_MEMBER } },
  { what: 'recall the owner\'s message', body: (fx) => recall(fx, fx.msg.owner),
    may: { owner: 'ok', admin: NOT_SENDER, member: NOT_SENDER, former: FORBIDDEN, outsider: FORBIDDEN } },
  { what: 'recall an admin\'s message', body: (fx) => recall(fx, fx.msg.admin),
    may: { owner: 'ok', admin: NOT_SENDER, member: NOT_SENDER, former: FORBIDDEN, outsider: FORBIDDEN } },
  { what: 'recall a member\'s message', body: (fx) => recall(fx, fx.msg.member),
    may: { owner: 'ok', admin: 'ok', member: NOT_SENDER, former: FORBIDDEN, outsider: FORBIDDEN } },
  { what: 'read history', body: (fx) => ({ case: 'history', value: { conversationId: fx.conversationId } }),
    may: { owner: 'ok', admin: 'ok', member: 'ok', former: 'ok', outsider: FORBIDDEN } },
  { what: 'type', body: (fx) => ({ case: 'typing', value: { conversationId: fx.conversationId } }),
    may: { owner: 'ok', admin: 'ok', member: 'ok', former: FORBIDDEN, outsider: FORBIDDEN } },
];

describe('groups: every operation × every rank', () => {
  let s: TestServer;
  const clients = new Map<string, RawClient>();
  const as = (user: string): RawClient => clients.get(user)!;

  before(async () => {
    s = await startTestServer(MANY_LOGINS);
    const users = [...Object.values(ACTOR), 'tA', 'tM'];
    for (const [i, u] of users.entries()) clients.set(u, await online(s, i % 2 === 0 ? 'tcp' : 'ws', u));
  });

  after(async () => {
    for (const c of clients.values()) c.close();
    await s?.close();
  });

  /** gO owns the group; gA and tA are admins; gM and tM members; gF was a member and was removed. */
  async function fixture(): Promise<Fixture> {
    const g = await groupOk(as('gO'), { case: 'create', value: { name: 'ranks', memberIds: ['gA', 'gM', 'gF', 'tA', 'tM'] } });
    for (const u of ['gA', 'tA']) await groupOk(as('gO'), { case: 'setRole', value: { groupId: g.groupId, userId: u, role: GroupRole.ADMIN } });
    await groupOk(as('gO'), { case: 'remove', value: { groupId: g.groupId, userIds: ['gF'] } });
    const seqOf = async (u: string) => Number((await sendOk(as(u), { conversationId: g.conversationId, text: `from ${u}` })).seq);
    return { groupId: g.groupId, conversationId: g.conversationId, msg: { owner: await seqOf('gO'), admin: await seqOf('tA'), member: await seqOf('tM') } };
  }

  /** Typing has no reply when accepted: the outcome is read after a barrier. */
  async function run(actor: RawClient, row: Row, fx: Fixture, outcome: Outcome, what: string): Promise<void> {
    const body = row.body(fx);
    if (body?.case !== 'typing' || outcome !== 'ok') {
      await expectOutcome(actor, body, outcome, what);
      return;
    }
    const from = actor.frames.length;
    actor.send(body);
    await barrier(actor);
    await sleep(100);
    assert.deepEqual(since(actor, from, 'error'), [], `${what}: typing refused`);
  }

  test('refused cells: the coded error, and the group and its timeline unchanged', T, async () => {
    const fx = await fixture();
    const before = await groupOk(as('gO'), { case: 'info', value: { groupId: fx.groupId } });
    const lastSeq = (await history(as('gO'), fx.conversationId)).messages.at(-1)!.seq;
    let refused = 0;
    for (const row of GROUP_TABLE) {
      for (const rank of RANKS) {
        const outcome = row.may[rank];
        if (outcome === 'ok') continue;
        await run(as(ACTOR[rank]), row, fx, outcome, `${rank} ${row.what}`);
        refused++;
      }
    }
    assert.ok(refused >= 60, `${refused} refused cells`);
    assert.deepEqual(await groupOk(as('gO'), { case: 'info', value: { groupId: fx.groupId } }), before, 'refusals changed the group');
    const after = (await history(as('gO'), fx.conversationId)).messages;
    assert.equal(after.at(-1)!.seq, lastSeq, 'refusals added to the timeline');
    assert.ok(after.every((m) => m.recalledBy === undefined), 'a refused recall recalled');
  });

  test('allowed cells: each on a fresh group, answered with its result', T, async () => {
    for (const row of GROUP_TABLE) {
      for (const rank of RANKS) {
        if (row.may[rank] !== 'ok') continue;
        const fx = await fixture();
        await run(as(ACTOR[rank]), row, fx, 'ok', `${rank} ${row.what}`);
      }
    }
  });

  test('a dismissed group: its last members are told GROUP_DISMISSED; outsiders and those removed earlier only NOT_MEMBER', T, async () => {
    const fx = await fixture();
    await groupOk(as('gO'), { case: 'dismiss', value: { groupId: fx.groupId } });
    const { GROUP_DISMISSED } = ErrorCode;
    const cases: [string, FrameBodyInit, Outcome, Outcome][] = [
      // what, body, a member gets, an outsider (or one removed) gets
      ['send', send(fx.conversationId), GROUP_DISMISSED, NOT_MEMBER],
      ['info', group({ case: 'info', value: { groupId: fx.groupId } }), GROUP_DISMISSED, NOT_MEMBER],
      ['add', group({ case: 'add', value: { groupId: fx.groupId, userIds: ['newbie'] } }), GROUP_DISMISSED, NOT_MEMBER],
      ['leave', group({ case: 'leave', value: { groupId: fx.groupId } }), GROUP_DISMISSED, NOT_MEMBER],
      ['dismiss', group({ case: 'dismiss', value: { groupId: fx.groupId } }), GROUP_DISMISSED, NOT_MEMBER],
      ['set a role', group({ case: 'setRole', value: { groupId: fx.groupId, userId: 'tM', role: GroupRole.ADMIN } }), GROUP_DISMISSED, NOT_MEMBER],
      ['mute', group({ case: 'mute', value: { groupId: fx.groupId, userId: '', muted: true } }), GROUP_DISMISSED, NOT_MEMBER],
      // Dismissal ended every membership: the timeline is read-only for all.
      ['recall', recall(fx, fx.msg.member), FORBIDDEN, FORBIDDEN],
      ['type', { case: 'typing', value: { conversationId: fx.conversationId } }, FORBIDDEN, FORBIDDEN],
    ];
    for (const [what, body, member, outsider] of cases) {
      await expectOutcome(as('gO'), body, member, `owner ${what} after dismissal`);
      await expectOutcome(as('gM'), body, member, `member ${what} after dismissal`);
      await expectOutcome(as('gX'), body, outsider, `outsider ${what} after dismissal`);
      await expectOutcome(as('gF'), body, outsider, `removed member ${what} after dismissal`);
    }
    // Members still read it; the outsider does not.
    assert.ok((await history(as('gM'), fx.conversationId)).messages.length > 0);
    await expectOutcome(as('gX'), { case: 'history', value: { conversationId: fx.conversationId } }, FORBIDDEN, 'outsider reads');
  });
});

// ---------------------------------------------------------------------------

describe('presence visibility', () => {
  test('\'all\' (the default): anyone logged in queries and watches anyone', T, async () => {
    await withServer(async (s) => {
      const eve = await online(s, 'tcp', 'eve');
      const zed = await online(s, 'ws', 'zed', 'z1');
      const q = await request(eve, { case: 'presenceQuery', value: { userIds: ['zed', 'nobody'] } });
      assert.ok(q.body.case === 'presenceResult', eve.describe());
      assert.deepEqual(q.body.value.users.map((p) => [p.userId, p.online]), [['zed', true], ['nobody', false]]);
      const w = await request(eve, { case: 'presenceSubscribe', value: { userIds: ['zed'] } });
      assert.equal(w.body.case, 'presenceResult');
      for (const c of [eve, zed]) c.close();
    }, MANY_LOGINS);
  });

  // A contact of a user is someone it has written to. bob wrote to alice in
  // their 1:1 (she never answered); carol wrote in alice's group, erin is in
  // it and never wrote, and left another of alice's groups; alice only typed
  // at dave (no conversation); frank's group with her was dismissed; zed is a
  // stranger. alice made the group, so its members see her.
  test('\'contacts\': only users who have written to you; one hidden user refuses the whole request; events follow', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const bob = await online(s, 'ws', 'bob');
      const carol = await online(s, 'tcp', 'carol');
      const erin = await online(s, 'ws', 'erin');
      const zed = await online(s, 'tcp', 'zed');
      await sendOk(bob, { toUser: 'alice', text: 'hi alice' });
      const friends = await groupOk(alice, { case: 'create', value: { name: 'friends', memberIds: ['carol', 'erin'] } });
      await sendOk(carol, { conversationId: friends.conversationId, text: 'hi all' });
      const left = await groupOk(alice, { case: 'create', value: { name: 'left', memberIds: ['erin'] } });
      await groupOk(erin, { case: 'leave', value: { groupId: left.groupId } });
      const gone = await groupOk(alice, { case: 'create', value: { name: 'gone', memberIds: ['frank'] } });
      await groupOk(alice, { case: 'dismiss', value: { groupId: gone.groupId } });
      alice.send({ case: 'typing', value: { conversationId: 'u:alice:dave' } });

      const query = (c: RawClient, userIds: string[]) => request(c, { case: 'presenceQuery', value: { userIds } });
      const visible = async (c: RawClient, userIds: string[], what: string) => {
        const r = await query(c, userIds);
        assert.ok(r.body.case === 'presenceResult', `${what}: ${c.describe()}`);
        return r.body.value.users.map((p) => [p.userId, p.online]);
      };
      assert.deepEqual(await visible(alice, ['alice', 'bob', 'carol'], 'alice sees who wrote to her'),
        [['alice', true], ['bob', true], ['carol', true]]);
      // alice acted in the group (she made it): its members see her; carol wrote there, so erin sees her too.
      for (const c of [carol, erin]) assert.deepEqual(await visible(c, ['alice'], 'a member sees the group\'s maker'), [['alice', true]]);
      assert.deepEqual(await visible(erin, ['carol'], 'erin sees carol, who wrote in their group'), [['carol', true]]);
      // Not contacts: written to but never answered, a member who never wrote, only typing,
      // a dismissed group, and pairs who share nothing.
      for (const [c, who] of [
        [bob, 'alice'], [alice, 'erin'], [alice, 'zed'], [alice, 'dave'], [alice, 'frank'], [zed, 'alice'], [bob, 'carol'], [erin, 'frank'],
      ] as const) {
        const e = await expectError(c, { case: 'presenceQuery', value: { userIds: [who] } }, ErrorCode.FORBIDDEN);
        assert.match(e.message, new RegExp(who));
      }
      // One hidden user among visible ones: the whole request is refused, nothing about anyone.
      const mixed = await expectError(alice, { case: 'presenceQuery', value: { userIds: ['bob', 'zed', 'carol'] } }, ErrorCode.FORBIDDEN);
      assert.match(mixed.message, /zed/);
      assert.doesNotMatch(mixed.message, /bob|carol/);

      // Watching: a refused subscription changes nothing; the earlier one keeps its events.
      const w = await request(alice, { case: 'presenceSubscribe', value: { userIds: ['bob'] } });
      assert.equal(w.body.case, 'presenceResult');
      await expectError(alice, { case: 'presenceSubscribe', value: { userIds: ['bob', 'zed'] } }, ErrorCode.FORBIDDEN);
      await expectError(zed, { case: 'presenceSubscribe', value: { userIds: ['alice'] } }, ErrorCode.FORBIDDEN);
      const mark = alice.frames.length;
      const zedMark = zed.frames.length;
      zed.close();
      const zed2 = await online(s, 'ws', 'zed', 'z2');
      bob.close();
      await until(() => presenceSince(alice, mark).length >= 1, 10_000, () => `alice sees bob go offline: ${alice.describe()}`);
      const bob2 = await online(s, 'tcp', 'bob', 'b2');
      await until(() => presenceSince(alice, mark).length >= 2, 10_000, () => `alice sees bob back: ${alice.describe()}`);
      // alice's connection comes and goes too: zed (refused) hears nothing of it.
      const alice2 = await online(s, 'ws', 'alice', 'a2');
      alice2.close();
      await settle(alice, zed2);
      const events = presenceSince(alice, mark);
      assert.ok(events.every((u) => u === 'bob'), `alice only hears of bob: ${events.join()}`);
      assert.deepEqual(presenceSince(zed, zedMark), []);
      assert.deepEqual(presenceSince(zed2, 0), []);
      for (const c of [alice, bob2, carol, erin, zed2]) c.close();
    }, { ...MANY_LOGINS, 'presence-visibility': 'contacts' });
  });

  test('\'contacts\' for a user in many groups: a fellow member who wrote is visible, others are not', T, async () => {
    await withServer(async (s) => {
      const gina = await online(s, 'tcp', 'gina');
      const hal = await online(s, 'ws', 'hal');
      for (let i = 0; i < 20; i++) {
        const g = await groupOk(gina, { case: 'create', value: { name: `g${i}`, memberIds: i === 19 ? ['hal'] : [] } });
        if (i === 19) await sendOk(hal, { conversationId: g.conversationId, text: 'hal here' });
      }
      hal.close();
      const ok = await request(gina, { case: 'presenceQuery', value: { userIds: ['hal'] } });
      assert.ok(ok.body.case === 'presenceResult', gina.describe());
      assert.deepEqual(ok.body.value.users.map((p) => p.userId), ['hal']);
      await expectError(gina, { case: 'presenceQuery', value: { userIds: ['hal', 'ivan'] } }, ErrorCode.FORBIDDEN);
      gina.close();
    }, { ...MANY_LOGINS, 'presence-visibility': 'contacts' });
  });
});
