// Scenarios of "every write in its conversation's order, exactly once", run
// against an embedded server (test/logic/write-order.test.ts) and a cluster
// of 2 gateways and 2 logic nodes (test/cluster/write-order.test.ts), from
// raw protocol clients that pipeline their frames (each written without
// waiting for the reply before it), and through the HTTP business push.
import assert from 'node:assert/strict';
import { RawClient } from './raw.js';
import { directConversationId, encodeFrame, lengthPrefixed, makeFrame, messageFromWire, type ChatMessage, type Frame, type FrameBodyInit } from '../../src/protocol/index.js';

export interface Target {
  /** A raw client logged in as `user` on gateway `gateway` (0 or 1; an embedded server has one). */
  connect(user: string, gateway: number): Promise<RawClient>;
  /** POST a JSON body with the admin key; the parsed reply. */
  post(path: string, json: unknown): Promise<{ status: number; body: Record<string, unknown> }>;
}

const T = 15_000;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Sends without waiting; resolves with the reply (the frame with the same id). */
function pipelined(c: RawClient, body: FrameBodyInit, requestId = ''): Promise<Frame> {
  const from = c.frames.length;
  const id = c.send(body, undefined, requestId);
  return c.next((f) => f.id === id, T, from);
}

/**
 * Several requests in one write to the socket (TCP), so the server reads them
 * together and they reach logic in one batch; resolves with their replies.
 */
function together(c: RawClient, bodies: FrameBodyInit[]): Promise<Frame[]> {
  const from = c.frames.length;
  const ids = bodies.map(() => 0);
  const bytes = Buffer.concat(bodies.map((body, i) => {
    ids[i] = 900_000 + Math.floor(Math.random() * 1_000_000);
    return lengthPrefixed(encodeFrame(makeFrame(ids[i]!, body)));
  }));
  c.sendRaw(bytes);
  return Promise.all(ids.map((id) => c.next((f) => f.id === id, T, from)));
}

function ok(f: Frame, kind: string): void {
  if (f.body.case !== kind) assert.fail(`expected ${kind}, got ${f.body.case}: ${JSON.stringify(f.body.value, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`);
}

function pushedTo(c: RawClient): ChatMessage[] {
  const out: ChatMessage[] = [];
  for (const f of c.frames) if (f.body.case === 'push') out.push(...f.body.value.messages.map(messageFromWire));
  return out;
}

async function waitUntil(check: () => boolean, what: () => string, ms = T): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out: ${what()}`);
    await sleep(10);
  }
}

/** Every message the server has for `c` in one conversation, from a full sync. */
async function synced(c: RawClient, conversationId: string): Promise<ChatMessage[]> {
  const out: ChatMessage[] = [];
  let cursors: { conversationId: string; seq: bigint }[] = [];
  for (let page = 0; page < 50; page++) {
    const reply = await pipelined(c, { case: 'sync', value: { cursors, conversationIds: [conversationId], limit: 0 } });
    if (reply.body.case === 'error') return out; // not (or no longer) allowed to read it
    ok(reply, 'syncResult');
    const r = reply.body.value as { messages: Parameters<typeof messageFromWire>[0][]; cursors: typeof cursors; hasMore: boolean };
    out.push(...r.messages.map(messageFromWire));
    cursors = r.cursors;
    if (!r.hasMore) break;
  }
  return out;
}

async function createGroup(owner: RawClient, name: string, members: string[], requestId = ''): Promise<string> {
  const reply = await pipelined(owner, { case: 'group', value: { op: { case: 'create', value: { name, memberIds: members } } } }, requestId);
  ok(reply, 'groupResult');
  return (reply.body.value as { group?: { groupId: string } }).group!.groupId;
}

const texts = (ms: readonly ChatMessage[]) => ms.filter((m) => !m.event).map((m) => m.text);

/**
 * "remove bob" then "send secret", pipelined on one connection, several
 * rounds: bob never receives the secret (push, sync), carol does, after the
 * removal event.
 */
export async function removeThenSend(t: Target, tag: string, rounds = 5): Promise<void> {
  const [alice, bob, carol] = await Promise.all([t.connect(`alice-${tag}`, 0), t.connect(`bob-${tag}`, 1), t.connect(`carol-${tag}`, 1)]);
  try {
    for (let round = 0; round < rounds; round++) {
      const groupId = await createGroup(alice, `rm-${round}`, [`bob-${tag}`, `carol-${tag}`]);
      const conversationId = `g:${groupId}`;
      const secret = `secret-${tag}-${round}`;
      const [removed, sent] = await together(alice, [
        { case: 'group', value: { op: { case: 'remove', value: { groupId, userIds: [`bob-${tag}`] } } } },
        { case: 'send', value: { clientMsgId: `m-${tag}-${round}`, conversationId, text: secret } },
      ]);
      ok(removed!, 'groupResult');
      ok(sent!, 'sendAck');
      await waitUntil(() => texts(pushedTo(carol)).includes(secret), () => `carol gets ${secret}`);
      const carolView = pushedTo(carol).filter((m) => m.conversationId === conversationId);
      const removal = carolView.find((m) => m.event?.type === 'members_removed');
      const message = carolView.find((m) => m.text === secret)!;
      assert.ok(removal && removal.seq < message.seq, `round ${round}: the removal (seq ${removal?.seq}) is before the message (seq ${message.seq})`);
      await pipelined(bob, { case: 'ping', value: {} });
      await sleep(200);
      assert.ok(!texts(pushedTo(bob)).includes(secret), `round ${round}: bob was pushed the message sent after his removal`);
      assert.ok(!texts(await synced(bob, conversationId)).includes(secret), `round ${round}: bob synced the message sent after his removal`);
    }
  } finally {
    for (const c of [alice, bob, carol]) c.close();
  }
}

/** "add yann" then "send welcome", pipelined: yann receives the welcome (push and sync), after the add. */
export async function addThenSend(t: Target, tag: string, rounds = 5): Promise<void> {
  const [alice, carol, yann] = await Promise.all([t.connect(`alice-${tag}`, 0), t.connect(`carol-${tag}`, 1), t.connect(`yann-${tag}`, 1)]);
  try {
    for (let round = 0; round < rounds; round++) {
      const groupId = await createGroup(alice, `add-${round}`, [`carol-${tag}`]);
      const conversationId = `g:${groupId}`;
      const welcome = `welcome-${tag}-${round}`;
      const [added, sent] = await together(alice, [
        { case: 'group', value: { op: { case: 'add', value: { groupId, userIds: [`yann-${tag}`] } } } },
        { case: 'send', value: { clientMsgId: `w-${tag}-${round}`, conversationId, text: welcome } },
      ]);
      ok(added!, 'groupResult');
      ok(sent!, 'sendAck');
      await waitUntil(() => texts(pushedTo(yann)).includes(welcome), () => `yann gets ${welcome}; got ${texts(pushedTo(yann)).join(',')}`);
      const view = await synced(yann, conversationId);
      assert.ok(texts(view).includes(welcome), `round ${round}: yann's sync has the welcome`);
      const join = view.find((m) => m.event?.type === 'members_added');
      assert.ok(join && join.seq < view.find((m) => m.text === welcome)!.seq, `round ${round}: the add is before the welcome`);
    }
  } finally {
    for (const c of [alice, carol, yann]) c.close();
  }
}

/** A group create resent with the same request id (pipelined, then again later) makes one group and gets the same reply. */
export async function resentCreate(t: Target, tag: string): Promise<void> {
  const alice = await t.connect(`alice-${tag}`, 0);
  try {
    const create: FrameBodyInit = { case: 'group', value: { op: { case: 'create', value: { name: `once-${tag}`, memberIds: [`bob-${tag}`] } } } };
    const requestId = `create-${tag}`;
    const replies = await Promise.all([pipelined(alice, create, requestId), pipelined(alice, create, requestId)]);
    replies.push(await pipelined(alice, create, requestId));
    for (const r of replies) ok(r, 'groupResult');
    const ids = replies.map((r) => (r.body.value as { group?: { groupId: string } }).group!.groupId);
    assert.equal(new Set(ids).size, 1, `one group id for one request id: ${ids.join(', ')}`);
    const list = await pipelined(alice, { case: 'conversations', value: {} });
    ok(list, 'conversationsResult');
    const named = (list.body.value as { conversations: { name: string }[] }).conversations.filter((c) => c.name === `once-${tag}`);
    assert.equal(named.length, 1, 'one group in the list');
    const created = (await synced(alice, `g:${ids[0]}`)).filter((m) => m.event?.type === 'group_created');
    assert.equal(created.length, 1, 'one creation event');
    // Another request id makes another group.
    const other = await createGroup(alice, `once-${tag}`, [], `create-${tag}-2`);
    assert.notEqual(other, ids[0]);
  } finally {
    alice.close();
  }
}

/**
 * POST /api/v1/messages interleaved with client sends to the same user:
 * each POST answers with its seq, the recipient gets everything in seq order,
 * no gap, nothing twice.
 */
export async function httpPushInOrder(t: Target, tag: string, count = 30): Promise<void> {
  const [alice, bob] = await Promise.all([t.connect(`alice-${tag}`, 0), t.connect(`bob-${tag}`, 1)]);
  try {
    const conversationId = directConversationId(`alice-${tag}`, `bob-${tag}`);
    const posts: Promise<{ status: number; body: Record<string, unknown> }>[] = [];
    const sends: Promise<Frame>[] = [];
    for (let i = 0; i < count; i++) {
      posts.push(t.post('/api/v1/messages', { from: `alice-${tag}`, to: `bob-${tag}`, text: `http-${i}`, client_msg_id: `h-${tag}-${i}` }));
      sends.push(pipelined(alice, { case: 'send', value: { clientMsgId: `c-${tag}-${i}`, toUser: `bob-${tag}`, text: `client-${i}` } }));
    }
    const answered = await Promise.all(posts);
    const seqs = answered.map((r) => {
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.conversation_id, conversationId);
      return r.body.seq as number;
    });
    for (const s of await Promise.all(sends)) ok(s, 'sendAck');
    assert.equal(new Set(seqs).size, count, 'every POST has its own seq');
    await waitUntil(() => pushedTo(bob).filter((m) => m.conversationId === conversationId).length >= 2 * count,
      () => `bob gets ${2 * count} pushes; got ${pushedTo(bob).length}`);
    const got = pushedTo(bob).filter((m) => m.conversationId === conversationId).map((m) => m.seq);
    assert.deepEqual(got, Array.from({ length: 2 * count }, (_, i) => got[0]! + i), 'bob sees seq order, no gap, nothing twice');
    for (const s of seqs) assert.ok(got.includes(s), `the POSTed seq ${s} reached bob`);
    // A repeated POST (same client_msg_id) is the same message.
    const again = await t.post('/api/v1/messages', { from: `alice-${tag}`, to: `bob-${tag}`, text: 'http-0', client_msg_id: `h-${tag}-0` });
    assert.equal(again.status, 200);
    assert.equal(again.body.seq, seqs[0]);
    assert.equal(again.body.duplicate, true);
  } finally {
    alice.close();
    bob.close();
  }
}

/**
 * A member removed and added back before its device synced: the sync brings
 * what was stored while it was a member (before and after), never what was
 * stored while it was out, each once, in seq order; paged, too.
 */
export async function rejoinedMemberSyncs(t: Target, tag: string): Promise<void> {
  const alice = await t.connect(`alice-${tag}`, 0);
  try {
    const groupId = await createGroup(alice, `rejoin-${tag}`, [`carol-${tag}`]);
    const conversationId = `g:${groupId}`;
    const say = async (text: string) => ok(await pipelined(alice, { case: 'send', value: { clientMsgId: `${tag}-${text}`, conversationId, text } }), 'sendAck');
    const member = (op: 'add' | 'remove') => pipelined(alice, { case: 'group', value: { op: { case: op, value: { groupId, userIds: [`carol-${tag}`] } } } });
    await say('in-1');
    await say('in-2');
    ok(await member('remove'), 'groupResult');
    await say('out-1');
    ok(await member('add'), 'groupResult');
    await say('in-3');
    ok(await member('remove'), 'groupResult');
    await say('out-2');
    ok(await member('add'), 'groupResult');
    await say('in-4');
    // carol's device never connected until now: its cursor is 0.
    const carol = await t.connect(`carol-${tag}`, 1);
    try {
      const all = await synced(carol, conversationId);
      assert.deepEqual(texts(all), ['in-1', 'in-2', 'in-3', 'in-4'], 'every message of her membership windows, none from outside them');
      const seqs = all.map((m) => m.seq);
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'in seq order');
      assert.equal(new Set(seqs).size, seqs.length, 'each once');
      // Paged one message at a time, the same.
      const paged: ChatMessage[] = [];
      let cursors: { conversationId: string; seq: bigint }[] = [];
      for (let page = 0; page < 40; page++) {
        const reply = await pipelined(carol, { case: 'sync', value: { cursors, conversationIds: [conversationId], limit: 1 } });
        ok(reply, 'syncResult');
        const r = reply.body.value as { messages: Parameters<typeof messageFromWire>[0][]; cursors: typeof cursors; hasMore: boolean };
        paged.push(...r.messages.map(messageFromWire));
        cursors = r.cursors;
        if (!r.hasMore) break;
      }
      assert.deepEqual(paged.map((m) => m.seq), seqs, 'paged sync: the same messages');
      // History, newest page first, one message a page: the same messages, back to her first join.
      const older: ChatMessage[] = [];
      let beforeSeq = 0n;
      for (let page = 0; page < 40; page++) {
        const reply = await pipelined(carol, { case: 'history', value: { conversationId, beforeSeq, limit: 1 } });
        ok(reply, 'historyResult');
        const r = reply.body.value as { messages: Parameters<typeof messageFromWire>[0][]; hasMore: boolean };
        const ms = r.messages.map(messageFromWire);
        older.unshift(...ms);
        if (!r.hasMore || ms.length === 0) break;
        beforeSeq = BigInt(ms[0]!.seq);
      }
      assert.deepEqual(older.map((m) => m.seq), seqs, 'paged history: the same messages');
    } finally {
      carol.close();
    }
  } finally {
    alice.close();
  }
}

/**
 * POST /api/v1/messages into a group while its owner removes and adds a
 * member back, all interleaved: every POST is answered with its seq, a
 * member gets exactly the messages stored while it was a member (never one
 * stored after its removal), each device in seq order with no gap.
 */
export async function httpGroupPushesAmongMembershipChanges(t: Target, tag: string, rounds = 6): Promise<void> {
  const [alice, bob, carol] = await Promise.all([t.connect(`alice-${tag}`, 0), t.connect(`bob-${tag}`, 1), t.connect(`carol-${tag}`, 1)]);
  try {
    const groupId = await createGroup(alice, `http-${tag}`, [`bob-${tag}`, `carol-${tag}`]);
    const conversationId = `g:${groupId}`;
    const posts: Promise<{ status: number; body: Record<string, unknown> }>[] = [];
    const post = (i: number) => t.post('/api/v1/messages', { group_id: groupId, text: `post-${i}`, client_msg_id: `${tag}-p${i}` });
    const member = (op: 'add' | 'remove') => pipelined(alice, { case: 'group', value: { op: { case: op, value: { groupId, userIds: [`bob-${tag}`] } } } });
    let n = 0;
    for (let round = 0; round < rounds; round++) {
      // Not awaited: the POSTs race the membership changes; the partition owner orders them.
      posts.push(post(n++), post(n++));
      const removed = member('remove');
      posts.push(post(n++));
      ok(await removed, 'groupResult');
      posts.push(post(n++));
      const added = member('add');
      posts.push(post(n++));
      ok(await added, 'groupResult');
    }
    const answers = await Promise.all(posts);
    const seqs = answers.map((r) => {
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.conversation_id, conversationId);
      return r.body.seq as number;
    });
    assert.equal(new Set(seqs).size, seqs.length, 'every POST has its own seq');
    // The timeline as stored: bob's windows from the membership events.
    const timeline = await synced(alice, conversationId);
    const last = timeline.at(-1)!.seq;
    assert.deepEqual(timeline.map((m) => m.seq), Array.from({ length: last }, (_, i) => i + 1), 'the timeline has no gap');
    const windows: [number, number][] = [];
    let joined: number | undefined = 1;
    for (const m of timeline) {
      if (!m.event?.userIds?.includes(`bob-${tag}`)) continue;
      if (m.event.type === 'members_removed' && joined !== undefined) {
        windows.push([joined, m.seq]);
        joined = undefined;
      } else if (m.event.type === 'members_added') joined = m.seq;
    }
    if (joined !== undefined) windows.push([joined, last]);
    const isBobs = (seq: number) => windows.some(([a, b]) => seq >= a && seq <= b);
    await waitUntil(() => (pushedTo(carol).filter((m) => m.conversationId === conversationId).at(-1)?.seq ?? 0) >= last,
      () => `carol gets up to seq ${last}`);
    await pipelined(bob, { case: 'ping', value: {} });
    await sleep(300);
    const carolSeqs = [...new Set(pushedTo(carol).filter((m) => m.conversationId === conversationId).map((m) => m.seq))];
    assert.deepEqual(carolSeqs, Array.from({ length: last }, (_, i) => i + 1), 'carol: every message and event, in seq order, no gap');
    const bobGot = pushedTo(bob).filter((m) => m.conversationId === conversationId);
    const outside = bobGot.filter((m) => !isBobs(m.seq));
    assert.deepEqual(outside.map((m) => `${m.seq} ${m.text}`), [], `bob was given messages stored while he was out (windows ${JSON.stringify(windows)})`);
    const bobSeqs = bobGot.map((m) => m.seq);
    assert.deepEqual(bobSeqs, [...bobSeqs].sort((a, b) => a - b), 'bob: seq order');
    const bobSynced = await synced(bob, conversationId);
    assert.deepEqual(bobSynced.map((m) => m.seq), timeline.map((m) => m.seq).filter(isBobs), 'bob syncs exactly his windows');
  } finally {
    for (const c of [alice, bob, carol]) c.close();
  }
}

/** What the late-writer scenario does behind the server's back: a commit, and its publish later. */
export interface LateWriter {
  /** Store a message as a writer would, without publishing it; the stored message. `members`: a 1:1 conversation's two users (else a group). */
  commit(conversationId: string, fromUser: string, text: string, members?: string[]): Promise<ChatMessage>;
  /** Publish it at last, as that writer would. */
  publish(message: ChatMessage): Promise<void>;
}

/**
 * A writer committed a message and has not published it yet (another
 * service, slower, or dead between its commit and its publish): the next
 * message's push brings it first, from the store, so members are pushed both
 * in seq order; its own publish, when it comes, is not pushed again.
 */
export async function lateCommitPushedInOrder(t: Target, tag: string, late: LateWriter): Promise<void> {
  const [alice, carol] = await Promise.all([t.connect(`alice-${tag}`, 0), t.connect(`carol-${tag}`, 1)]);
  try {
    const groupId = await createGroup(alice, `late-${tag}`, [`carol-${tag}`]);
    const conversationId = `g:${groupId}`;
    const send = async (text: string) => ok(await pipelined(alice, { case: 'send', value: { clientMsgId: `${tag}-${text}`, conversationId, text } }), 'sendAck');
    const carolGot = () => pushedTo(carol).filter((m) => m.conversationId === conversationId);
    await send('before');
    await waitUntil(() => texts(carolGot()).includes('before'), () => 'carol gets "before"');
    const stored = await late.commit(conversationId, `alice-${tag}`, 'late');
    await send('after');
    await waitUntil(() => texts(carolGot()).includes('after'), () => 'carol gets "after"');
    await late.publish(stored);
    await send('last');
    await waitUntil(() => texts(carolGot()).includes('last'), () => 'carol gets "last"');
    await sleep(200);
    const seqs = carolGot().map((m) => m.seq);
    assert.deepEqual(seqs, Array.from({ length: seqs.at(-1)! }, (_, i) => i + 1), 'carol: pushed every seq, in order, once');
    assert.deepEqual(texts(carolGot()), ['before', 'late', 'after', 'last']);
  } finally {
    for (const c of [alice, carol]) c.close();
  }
}

/**
 * The late writer's message is the first of a 1:1 conversation: the push
 * consumer knows nothing of it when the next message comes (nothing to fill
 * from), so it pushes that one, and the late one when its own publish comes,
 * late but once.
 */
export async function lateFirstCommitPushed(t: Target, tag: string, late: LateWriter): Promise<void> {
  const [alice, carol] = await Promise.all([t.connect(`alice-${tag}`, 0), t.connect(`carol-${tag}`, 1)]);
  try {
    const conversationId = directConversationId(`alice-${tag}`, `carol-${tag}`);
    const stored = await late.commit(conversationId, `alice-${tag}`, 'late', [`alice-${tag}`, `carol-${tag}`]);
    ok(await pipelined(alice, { case: 'send', value: { clientMsgId: `${tag}-after`, conversationId, text: 'after' } }), 'sendAck');
    const carolGot = () => pushedTo(carol).filter((m) => m.conversationId === conversationId);
    await waitUntil(() => texts(carolGot()).includes('after'), () => 'carol gets "after"');
    await late.publish(stored);
    await waitUntil(() => texts(carolGot()).includes('late'), () => 'carol gets "late" when it is published');
    await sleep(200);
    assert.deepEqual(carolGot().map((m) => m.seq).sort(), [1, 2], 'carol: each seq once');
  } finally {
    for (const c of [alice, carol]) c.close();
  }
}
