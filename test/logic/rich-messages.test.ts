// Rich messages through the SDK over real sockets, on both transports: custom
// payloads, replies (quoted as the message is now), forwards, mentions (the
// conversation's mentioned flag), edits and deletes ordered with the messages
// around them and seen by devices that sync later, blocking in every path
// (sends, typing, presence; groups unaffected), refusals with their codes, and
// a client that knows only text.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createClient, payloadJson, ErrorCode,
  type ChatMessage, type EditInfo, type LonglinkClient, type PresenceInfo, type ReactionsInfo, type RecallInfo, type TypingInfo,
} from '../../src/client/index.js';
import { ADMIN_KEY, type TestServer } from '../helpers/server.js';
import { putRules } from '../risk/support.js';
import { online, pushed, rejected, request, sleep, TRANSPORTS, until, urlOf, withServer, type Transport } from './support.js';

const T = { timeout: 120_000 };
const AB = 'u:alice:bob';

interface Handle {
  client: LonglinkClient;
  user: string;
  messages: ChatMessage[];
  edits: EditInfo[];
  deletes: RecallInfo[];
  typing: TypingInfo[];
  presence: PresenceInfo[];
  reactions: ReactionsInfo[];
}

async function connect(s: TestServer, t: Transport, user: string, device = 'd1'): Promise<Handle> {
  const client = createClient({ url: urlOf(s, t), token: await s.token(user, device), reconnect: false });
  const h: Handle = { client, user, messages: [], edits: [], deletes: [], typing: [], presence: [], reactions: [] };
  client.on('reactions', (r) => h.reactions.push(r));
  let synced = false;
  client.on('message', (m) => h.messages.push(m));
  client.on('edit', (e) => h.edits.push(e));
  client.on('delete', (d) => h.deletes.push(d));
  client.on('typing', (x) => h.typing.push(x));
  client.on('presence', (p) => h.presence.push(p));
  client.on('synced', () => {
    synced = true;
  });
  await client.connect();
  await until(() => synced, 10_000, () => `${user}/${device}: initial sync`);
  return h;
}

/** Runs `fn` with a server and closes every client it connected. */
async function withClients(fn: (connectAs: (t: Transport, user: string, device?: string) => Promise<Handle>, s: TestServer) => Promise<void>, overrides: Record<string, string> = {}): Promise<void> {
  await withServer(async (s) => {
    const all: Handle[] = [];
    try {
      await fn(async (t, user, device) => {
        const h = await connect(s, t, user, device);
        all.push(h);
        return h;
      }, s);
    } finally {
      for (const h of all) await h.client.close();
    }
  }, overrides);
}


async function waitMessages(h: Handle, n: number): Promise<ChatMessage[]> {
  await until(() => h.messages.length >= n, 10_000, () => `${h.user}: ${n} messages, got ${h.messages.length}`);
  return h.messages;
}

async function mentioned(h: Handle, conversationId: string): Promise<boolean> {
  return (await h.client.conversations()).find((c) => c.conversationId === conversationId)?.mentioned === true;
}

for (const t of TRANSPORTS) {
  const other: Transport = t === 'tcp' ? 'ws' : 'tcp';

  describe(`rich messages (${t})`, () => {
    test('a custom payload is delivered as is; a reply quotes its message as it is now; a forward says where it came from', T, async () => {
      await withClients(async (connectAs) => {
        const alice = await connectAs(t, 'alice');
        const bob = await connectAs(other, 'bob');
        const carol = await connectAs(t, 'carol');
        const order = await alice.client.send({ to: 'bob', text: '[order #7]', type: 'app.order', payload: { id: 7, total: '9.50' } });
        const bytes = new Uint8Array([0, 255, 1, 254]);
        await alice.client.send({ to: 'bob', text: '', type: 'app.blob', payload: bytes });
        const [first, second] = await waitMessages(bob, 2);
        assert.equal(first!.content?.type, 'app.order');
        assert.deepEqual(payloadJson(first!), { id: 7, total: '9.50' });
        assert.equal(first!.text, '[order #7]', 'the fallback text travels too');
        assert.deepEqual([second!.text, second!.content?.type, [...second!.content!.payload!]], ['', 'app.blob', [...bytes]], 'bytes come back byte for byte');

        const reply = await bob.client.send({ to: 'alice', text: 'paid', replyTo: order.seq });
        await until(() => alice.messages.length >= 1, 10_000, () => 'alice gets the reply');
        assert.deepEqual(alice.messages[0]!.reply, { seq: order.seq, fromUser: 'alice', text: '[order #7]', type: 'app.order' });
        assert.equal(alice.messages[0]!.content?.replyToSeq, order.seq);

        const fwd = await bob.client.send({ to: 'carol', forward: { conversationId: AB, seq: order.seq } });
        const [forwarded] = await waitMessages(carol, 1);
        assert.equal(forwarded!.seq, fwd.seq);
        assert.equal(forwarded!.text, '[order #7]');
        assert.deepEqual(payloadJson(forwarded!), { id: 7, total: '9.50' });
        assert.deepEqual(forwarded!.content?.forward, { conversationId: AB, seq: order.seq, fromUser: 'alice', sentAtMs: order.sentAtMs });
        await rejected(carol.client.send({ to: 'dave', forward: { conversationId: AB, seq: 1 } }), ErrorCode.FORBIDDEN, 'forwarding from a conversation carol is not in');

        // The quote follows the message: recalled, it is gone (history quotes it as it is now).
        await alice.client.recall(AB, order.seq);
        const h = await alice.client.history(AB);
        const quoted = h.messages.find((m) => m.seq === reply.seq)!;
        assert.deepEqual(quoted.reply, { seq: order.seq, fromUser: 'alice', text: '', gone: true });
        assert.ok(!JSON.stringify(quoted).includes('order #7'), 'a recalled message is not quoted');
      });
    });

    test('edits: ordered with the messages around them, pushed as an edit event, and the latest version for a device that syncs later', T, async () => {
      await withClients(async (connectAs, s) => {
        const alice = await connectAs(t, 'alice');
        const bob = await connectAs(other, 'bob', 'b1');
        await alice.client.send({ to: 'bob', text: 'one' });
        const two = await alice.client.send({ to: 'bob', text: 'twoo', replyTo: 1 });
        await alice.client.edit(AB, two.seq, { text: 'two', type: 'app.note', payload: { v: 2 } });
        await alice.client.send({ to: 'bob', text: 'three' });
        const seen = await waitMessages(bob, 4);
        assert.deepEqual(seen.map((m) => [m.seq, m.event?.type ?? m.text]), [[1, 'one'], [2, 'twoo'], [3, 'edited'], [4, 'three']], 'the edit sits between what came before and after it');
        assert.equal(bob.edits.length, 1);
        assert.deepEqual([bob.edits[0]!.seq, bob.edits[0]!.by, bob.edits[0]!.text, bob.edits[0]!.content?.type], [2, 'alice', 'two', 'app.note']);
        assert.deepEqual(payloadJson({ ...seen[1]!, content: bob.edits[0]!.content }), { v: 2 });

        // A device that was never online reads the latest version, with its reply kept and when it was edited.
        const later = await connectAs(t, 'bob', 'b2');
        const synced = await waitMessages(later, 4);
        const edited = synced.find((m) => m.seq === 2)!;
        assert.deepEqual([edited.text, edited.content?.type, edited.content?.replyToSeq, typeof edited.editedAtMs], ['two', 'app.note', 1, 'number']);
        assert.deepEqual(later.edits.map((e) => e.seq), [2], 'the synced event is reported as an edit too');
        const h = await bob.client.history(AB);
        assert.equal(h.messages.find((m) => m.seq === 2)!.text, 'two');

        // Refusals: someone else's message, an event, a forward in an edit; the content rules see the new text.
        await rejected(bob.client.edit(AB, 1, { text: 'mine now' }), ErrorCode.NOT_SENDER, 'bob edits alice\'s message');
        await rejected(alice.client.edit(AB, 3, { text: 'x' }), ErrorCode.NOT_FOUND, 'an event is not a message');
        await rejected(alice.client.edit(AB, 2, { text: '' }), ErrorCode.TEXT_EMPTY, 'an edit to nothing');
        await putRules(s, { block_words: ['forbidden'], mask_words: ['darn'] });
        await rejected(alice.client.edit(AB, 1, { text: 'now forbidden' }), ErrorCode.CONTENT_BLOCKED, 'a blocked word in an edit');
        await alice.client.edit(AB, 1, { text: 'darn it' });
        await until(() => bob.edits.length >= 2, 10_000, () => 'the second edit');
        assert.equal(bob.edits[1]!.text, '**** it', 'an edit is masked as a send is');
        assert.equal((await bob.client.history(AB)).messages[0]!.text, '**** it');
      });
    });

    test('a reply resent after what it replied to was recalled is acked as the duplicate it is', T, async () => {
      await withServer(async (s) => {
        const alice = await online(s, t, 'alice');
        await request(alice, { case: 'send', value: { clientMsgId: 'first', toUser: 'bob', text: 'oops' } });
        const reply = { case: 'send' as const, value: { clientMsgId: 'answer', toUser: 'bob', text: 'see above', content: { replyToSeq: 1n } } };
        const first = await request(alice, reply);
        assert.equal(first.body.case, 'sendAck');
        const recalled = await request(alice, { case: 'recall', value: { conversationId: AB, seq: 1n } });
        assert.equal(recalled.body.case, 'done');
        const again = await request(alice, reply);
        assert.equal(again.body.case, 'sendAck', again.body.case === 'error' ? again.body.value.message : '');
        assert.deepEqual([(again.body.value as { duplicate: boolean; seq: bigint }).duplicate, (again.body.value as { seq: bigint }).seq], [true, 2n]);
        alice.close();
      });
    });

    test('an edit resent with its request id is applied once', T, async () => {
      await withServer(async (s) => {
        const alice = await online(s, t, 'alice');
        const bob = await online(s, other, 'bob');
        await request(alice, { case: 'send', value: { clientMsgId: 'm1', toUser: 'bob', text: 'helo' } });
        const edit = { case: 'edit' as const, value: { conversationId: AB, seq: 1n, text: 'hello' } };
        for (let i = 0; i < 2; i++) {
          const from = alice.frames.length;
          const id = alice.send(edit, undefined, 'edit-1');
          const reply = await alice.next((f) => f.id === id, 10_000, from);
          assert.equal(reply.body.case, 'done');
        }
        await until(() => pushed(bob).length >= 3, 10_000, () => 'bob gets the message and the edit (twice: a repeat is pushed again)');
        await sleep(200);
        const seqs = [...new Set(pushed(bob).map((m) => m.seq))];
        assert.deepEqual(seqs, [1, 2], 'one edit event stored');
        alice.close();
        bob.close();
      });
    });

    test('delete for everyone: a tombstone for every device; only the sender (in the window) or a group\'s admins may', T, async () => {
      await withClients(async (connectAs) => {
        const alice = await connectAs(t, 'alice');
        const bob = await connectAs(other, 'bob');
        const carol = await connectAs(t, 'carol');
        const g = await alice.client.createGroup('team', ['bob', 'carol']);
        const spam = await carol.client.send({ groupId: g.groupId, text: 'buy now', type: 'app.ad', payload: 'x' });
        const own = await bob.client.send({ groupId: g.groupId, text: 'typo' });
        await rejected(bob.client.deleteMessage(g.conversationId, spam.seq), ErrorCode.NOT_SENDER, 'a member deletes another\'s message');
        await sleep(400);
        await rejected(bob.client.deleteMessage(g.conversationId, own.seq), ErrorCode.RECALL_EXPIRED, 'past the (300 ms) window');
        await alice.client.deleteMessage(g.conversationId, spam.seq);
        await until(() => bob.deletes.length > 0 && carol.deletes.length > 0, 10_000, () => 'the delete reaches bob and carol');
        assert.deepEqual(bob.deletes, [{ conversationId: g.conversationId, seq: spam.seq, by: 'alice' }]);
        const late = await connectAs(other, 'carol', 'd2');
        await until(() => late.messages.some((m) => m.event?.type === 'deleted'), 10_000, () => 'a later device syncs the delete');
        const tomb = late.messages.find((m) => m.seq === spam.seq)!;
        assert.deepEqual([tomb.text, tomb.content, tomb.deletedBy], ['', undefined, 'alice']);
        assert.ok(!JSON.stringify((await bob.client.history(g.conversationId)).messages).includes('buy now'));
      }, { 'recall-window-ms': '300' });
    });

    test('mentions: the mentioned user\'s conversation says so until read; mention of everyone by the owner only', T, async () => {
      await withClients(async (connectAs) => {
        const alice = await connectAs(t, 'alice');
        const bob = await connectAs(other, 'bob');
        const carol = await connectAs(t, 'carol');
        const g = await alice.client.createGroup('team', ['bob', 'carol']);
        const m = await bob.client.send({ groupId: g.groupId, text: '@carol look', mentions: ['carol'] });
        await waitMessages(carol, 2);
        assert.deepEqual(carol.messages.at(-1)!.content?.mentions, ['carol']);
        assert.deepEqual([await mentioned(alice, g.conversationId), await mentioned(carol, g.conversationId)], [false, true]);
        await carol.client.markRead(g.conversationId, m.seq);
        assert.equal(await mentioned(carol, g.conversationId), false, 'read past the mention');
        await rejected(bob.client.send({ groupId: g.groupId, text: '@all', mentionAll: true }), ErrorCode.NOT_ADMIN, 'a member mentions everyone');
        await alice.client.send({ groupId: g.groupId, text: '@all meeting', mentionAll: true });
        await until(() => bob.messages.some((x) => x.content?.mentionAll === true), 10_000, () => 'bob gets the @all');
        assert.deepEqual([await mentioned(bob, g.conversationId), await mentioned(carol, g.conversationId), await mentioned(alice, g.conversationId)], [true, true, false]);
        await rejected(alice.client.send({ to: 'bob', text: '@all', mentionAll: true }), ErrorCode.BAD_REQUEST, 'mention_all in a 1:1');
      });
    });

    test('blocking: 1:1 sends refused BLOCKED, typing not relayed, presence offline; group messages still flow; unblock restores', T, async () => {
      await withClients(async (connectAs) => {
        const alice = await connectAs(t, 'alice');
        const bob = await connectAs(other, 'bob');
        await alice.client.send({ to: 'bob', text: 'hi' });
        const g = await alice.client.createGroup('team', ['bob']);
        await waitMessages(bob, 2);
        assert.deepEqual((await alice.client.presence(['bob'])).map((p) => p.online), [true]);
        assert.deepEqual(await bob.client.block('alice'), ['alice']);
        assert.deepEqual(await bob.client.blocked(), ['alice']);
        await rejected(alice.client.send({ to: 'bob', text: 'are you there?' }), ErrorCode.BLOCKED, 'alice writes bob after the block');
        await rejected(alice.client.edit(AB, 1, { text: 'hi again, edited' }), ErrorCode.BLOCKED, 'nor through an edit of an old message');
        await rejected(alice.client.react(AB, 1, '👋'), ErrorCode.BLOCKED, 'nor through a reaction');
        assert.deepEqual((await alice.client.presence(['bob'])).map((p) => p.online), [false], 'bob looks offline to alice');
        assert.deepEqual((await alice.client.watchPresence(['bob'])).map((p) => p.online), [false]);
        alice.client.typing(AB);
        await bob.client.send({ to: 'alice', text: 'bob may still write' });
        await alice.client.send({ groupId: g.groupId, text: 'in the group' });
        await until(() => bob.messages.some((m) => m.text === 'in the group'), 10_000, () => 'group messages still reach bob');
        await sleep(300);
        assert.deepEqual(bob.typing, [], 'alice\'s typing is not relayed to bob');
        assert.ok(!bob.messages.some((m) => m.text === 'are you there?'));
        assert.deepEqual(await bob.client.unblock('alice'), []);
        await alice.client.send({ to: 'bob', text: 'hello again' });
        await until(() => bob.messages.some((m) => m.text === 'hello again'), 10_000, () => 'after the unblock');
        await rejected(bob.client.block('bob'), ErrorCode.BAD_REQUEST, 'blocking yourself');
      });
    });

    test('reactions: pushed to the members as the message\'s reactions now, gathered; read back with history and sync; taken back; bounded', T, async () => {
      await withClients(async (connectAs) => {
        const alice = await connectAs(t, 'alice');
        const bob = await connectAs(other, 'bob');
        const carol = await connectAs(t, 'carol');
        const g = await alice.client.createGroup('team', ['bob', 'carol']);
        const m = await alice.client.send({ groupId: g.groupId, text: 'lunch?' });
        await bob.client.react(g.conversationId, m.seq, '👍');
        await until(() => alice.reactions.length > 0 && carol.reactions.length > 0, 10_000, () => 'the reaction reaches alice and carol');
        assert.deepEqual(alice.reactions.at(-1), { conversationId: g.conversationId, seq: m.seq, reactions: [{ emoji: '👍', count: 1, users: ['bob'] }] });
        // Many changes at once reach a member as a few events holding the end result.
        const before = carol.reactions.length;
        await Promise.all([
          carol.client.react(g.conversationId, m.seq, '👍'), alice.client.react(g.conversationId, m.seq, '👍'),
          bob.client.react(g.conversationId, m.seq, '🍕'), alice.client.react(g.conversationId, m.seq, '🍕'), carol.client.react(g.conversationId, m.seq, '🌮'),
        ]);
        await until(() => carol.reactions.at(-1)?.reactions.length === 3, 10_000, () => `carol sees 3 emojis: ${JSON.stringify(carol.reactions.at(-1))}`);
        assert.ok(carol.reactions.length - before <= 3, `5 reactions at once: ${carol.reactions.length - before} events`);
        // Sent at once, they may be applied in any order: emojis come in the order first used, so compare by emoji.
        const counts = (r: ReactionsInfo | undefined) => Object.fromEntries((r?.reactions ?? []).map((x) => [x.emoji, x.count]));
        assert.deepEqual(counts(carol.reactions.at(-1)), { '👍': 3, '🍕': 2, '🌮': 1 });
        const thumbs = carol.reactions.at(-1)!.reactions.find((x) => x.emoji === '👍')!;
        assert.equal(thumbs.users[0], 'bob', 'earliest first');
        assert.deepEqual(new Set(thumbs.users), new Set(['alice', 'bob', 'carol']));
        await bob.client.unreact(g.conversationId, m.seq, '🍕');
        await until(() => counts(alice.reactions.at(-1))['🍕'] === 1, 10_000, () => 'the taken-back reaction');
        const h = await carol.client.history(g.conversationId);
        assert.deepEqual(counts({ conversationId: '', seq: 0, reactions: h.messages.find((x) => x.seq === m.seq)!.reactions! }), { '👍': 3, '🍕': 1, '🌮': 1 });
        const later = await connectAs(other, 'carol', 'd2');
        await until(() => later.messages.some((x) => x.seq === m.seq), 10_000, () => 'a later device syncs the message');
        assert.deepEqual(counts({ conversationId: '', seq: 0, reactions: later.messages.find((x) => x.seq === m.seq)!.reactions! }), { '👍': 3, '🍕': 1, '🌮': 1 },
          'a synced message carries its reactions');
        await rejected(bob.client.react(g.conversationId, m.seq, 'two words'), ErrorCode.BAD_REQUEST, 'an emoji with a space');
        await rejected(bob.client.react(g.conversationId, 999, '👍'), ErrorCode.NOT_FOUND, 'no such message');
        const dave = await connectAs(t, 'dave');
        await rejected(dave.client.react(g.conversationId, m.seq, '👍'), ErrorCode.FORBIDDEN, 'not a member');
        for (let i = 0; i < 19; i++) await bob.client.react(g.conversationId, m.seq, `e${i}`); // with his 👍: 20
        await rejected(bob.client.react(g.conversationId, m.seq, 'e19'), ErrorCode.TOO_MANY_REACTIONS, 'a 21st emoji of bob on one message');
      });
    });

    test('delete for me: the user\'s other devices stop showing it, now and at a later sync; nobody else\'s do', T, async () => {
      await withClients(async (connectAs) => {
        const alice = await connectAs(t, 'alice');
        const bob1 = await connectAs(other, 'bob', 'b1');
        const bob2 = await connectAs(t, 'bob', 'b2');
        const hides: { conversationId: string; seq: number }[] = [];
        bob2.client.on('hide', (x) => hides.push(x));
        await alice.client.send({ to: 'bob', text: 'embarrassing' });
        await alice.client.send({ to: 'bob', text: 'fine' });
        await waitMessages(bob2, 2);
        await bob1.client.deleteForMe(AB, 1);
        await until(() => hides.length > 0, 10_000, () => 'bob\'s other device learns it');
        assert.deepEqual(hides, [{ conversationId: AB, seq: 1 }]);
        const mine = await bob2.client.history(AB);
        assert.deepEqual(mine.messages.map((m) => [m.seq, m.text, m.hidden ?? false]), [[1, '', true], [2, 'fine', false]]);
        const theirs = await alice.client.history(AB);
        assert.deepEqual(theirs.messages.map((m) => [m.seq, m.text, m.hidden ?? false]), [[1, 'embarrassing', false], [2, 'fine', false]], 'alice still has it');
        // A device of bob that was never online learns it from its sync, and gets the message as hidden.
        const later = await connectAs(other, 'bob', 'b3');
        await until(() => later.messages.some((m) => m.event?.type === 'hidden') && later.messages.some((m) => m.conversationId === AB && m.seq === 2),
          10_000, () => 'the later device syncs');
        const synced = later.messages.find((m) => m.conversationId === AB && m.seq === 1)!;
        assert.deepEqual([synced.text, synced.hidden], ['', true]);
        await rejected(bob1.client.deleteForMe(AB, 9), ErrorCode.NOT_FOUND, 'no such message');
        const eve = await connectAs(t, 'eve');
        await rejected(eve.client.deleteForMe(AB, 1), ErrorCode.FORBIDDEN, 'not in the conversation');
      });
    });

    test('refusals: an oversized payload, too many mentions, a payload without type, a bad type, a reply to nothing, an empty message', T, async () => {
      await withClients(async (connectAs) => {
        const alice = await connectAs(t, 'alice');
        const big = new Uint8Array(16 * 1024 + 1);
        await rejected(alice.client.send({ to: 'bob', type: 'app.x', payload: big }), ErrorCode.CONTENT_TOO_LARGE, 'a payload over 16 KiB');
        await rejected(alice.client.send({ to: 'bob', text: 'hi', mentions: Array.from({ length: 51 }, (_, i) => `u${i}`) }), ErrorCode.CONTENT_TOO_LARGE, '51 mentions');
        await rejected(alice.client.send({ to: 'bob', text: 'hi', payload: 'x' }), ErrorCode.BAD_REQUEST, 'a payload without a type');
        await rejected(alice.client.send({ to: 'bob', text: 'hi', type: 'bad type!' }), ErrorCode.BAD_REQUEST, 'a type with a space');
        await rejected(alice.client.send({ to: 'bob', text: 'hi', replyTo: 5 }), ErrorCode.NOT_FOUND, 'a reply to a seq that is not there');
        await rejected(alice.client.send({ to: 'bob', text: '' }), ErrorCode.TEXT_EMPTY, 'nothing at all');
        await rejected(alice.client.send({ to: 'bob', forward: { conversationId: AB, seq: 1 }, text: 'and more' }), ErrorCode.BAD_REQUEST, 'a forward with text');
        const ok = await alice.client.send({ to: 'bob', text: 'still fine' });
        assert.equal(ok.seq, 1, 'nothing refused was stored');
        // The conversation list stays bounded: a last message's payload is left out (its type stays).
        await alice.client.send({ to: 'bob', text: '[big]', type: 'app.big', payload: new Uint8Array(16 * 1024) });
        const last = (await alice.client.conversations()).find((c) => c.conversationId === AB)!.lastMessage!;
        assert.deepEqual([last.text, last.content?.type, last.content?.payload], ['[big]', 'app.big', undefined]);
      });
    });
  });
}

test('a client that knows only text keeps working: it sends text and reads a custom message\'s fallback text', T, async () => {
  await withServer(async (s) => {
    const old = await online(s, 'tcp', 'bob');
    const alice = createClient({ url: urlOf(s, 'ws'), token: await s.token('alice', 'd1'), reconnect: false });
    await alice.connect();
    try {
      await request(old, { case: 'send', value: { clientMsgId: 'old-1', toUser: 'alice', text: 'plain' } });
      await alice.send({ to: 'bob', text: '[an order: update your app]', type: 'app.order', payload: { id: 1 } });
      await until(() => pushed(old).length >= 1, 10_000, () => 'the old client gets the message');
      assert.equal(pushed(old)[0]!.text, '[an order: update your app]');
    } finally {
      old.close();
      await alice.close();
    }
  });
});

test('reactions in a large group (past 200 members) go once per gateway and reach each online member as few events', T, async () => {
  await withClients(async (connectAs) => {
    const owner = await connectAs('tcp', 'owner');
    const members = Array.from({ length: 240 }, (_, i) => `m${i}`);
    const g = await owner.client.createGroup('big', members);
    const watchers = [await connectAs('ws', 'm0'), await connectAs('tcp', 'm1')];
    const m = await owner.client.send({ groupId: g.groupId, text: 'vote' });
    await until(() => watchers.every((w) => w.messages.some((x) => x.seq === m.seq)), 10_000, () => 'the members get the message');
    // 40 members react (each on its own connection, one after another, fast).
    for (const user of members.slice(2, 42)) {
      const c = await connectAs('tcp', user);
      await c.client.react(g.conversationId, m.seq, '✅');
      await c.client.close();
    }
    await until(() => watchers.every((w) => w.reactions.at(-1)?.reactions[0]?.count === 40), 15_000, () => `the members see 40: ${JSON.stringify(watchers.map((w) => w.reactions.at(-1)))}`);
    for (const w of watchers) assert.ok(w.reactions.length < 40, `${w.user}: ${w.reactions.length} events for 40 reactions`);
    assert.equal(watchers[0]!.reactions.at(-1)!.reactions[0]!.users.length, 20, 'the first 20 named, the count says the rest');
  });
});

for (const t of TRANSPORTS) {
  test(`profiles (${t}): set by the user or by the business, read by anyone; bad names and URLs refused`, T, async () => {
    await withClients(async (connectAs, s) => {
      const alice = await connectAs(t, 'alice');
      const bob = await connectAs(t === 'tcp' ? 'ws' : 'tcp', 'bob');
      const mine = await alice.client.setProfile({ name: '  Alice Liddell ', avatarUrl: 'https://example.com/alice.png' });
      assert.deepEqual([mine.userId, mine.name, mine.avatarUrl], ['alice', 'Alice Liddell', 'https://example.com/alice.png']);
      const put = await fetch(`${s.httpUrl}/api/v1/users/bob/profile`, {
        method: 'PUT', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'Bob (support)', avatar_url: 'https://cdn.example.com/b.jpg' }),
      });
      assert.equal(put.status, 200);
      assert.equal(((await put.json()) as { name: string }).name, 'Bob (support)');
      const seen = await bob.client.profiles(['alice', 'bob', 'nobody']);
      assert.deepEqual(seen.map((p) => [p.userId, p.name, p.avatarUrl, p.updatedAtMs > 0]), [
        ['alice', 'Alice Liddell', 'https://example.com/alice.png', true],
        ['bob', 'Bob (support)', 'https://cdn.example.com/b.jpg', true],
        ['nobody', '', '', false],
      ]);
      const got = await fetch(`${s.httpUrl}/api/v1/users/alice/profile`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
      assert.deepEqual(((await got.json()) as { name: string }).name, 'Alice Liddell');
      assert.equal((await fetch(`${s.httpUrl}/api/v1/users/alice/profile`)).status, 401, 'the admin key is required');
      await rejected(alice.client.setProfile({ name: 'x'.repeat(65) }), ErrorCode.BAD_REQUEST, 'a 65-character name');
      await rejected(alice.client.setProfile({ name: 'bell\u0007' }), ErrorCode.BAD_REQUEST, 'a control character');
      await rejected(alice.client.setProfile({ avatarUrl: 'javascript:alert(1)' }), ErrorCode.BAD_REQUEST, 'a URL that is not http(s)');
      await rejected(alice.client.setProfile({ avatarUrl: 'https://example.com/a\u0000.png' }), ErrorCode.BAD_REQUEST, 'a URL with a NUL in it');
      await rejected(alice.client.profiles(Array.from({ length: 101 }, (_, i) => `u${i}`)), ErrorCode.BAD_REQUEST, '101 users');
      assert.equal((await bob.client.profiles(['alice']))[0]!.name, 'Alice Liddell', 'refused changes changed nothing');
    });
  });
}
