// Every read is bounded in rows and bytes, and one user's reads wait their
// turn: conversation lists come in pages with previews, history and sync
// pages stop at about replyMaxBytes, a user with too many reads waiting gets
// BUSY for the next, and a gateway that lost its registry entry keeps its
// connections (they are told to sync).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULTS } from '../../src/config.js';
import { ErrorCode, encodeFrame, makeFrame, type Frame } from '../../src/protocol/index.js';
import { createClient } from '../../src/client/index.js';
import {
  bigintJson, history, online, request, sendMany, sendOk, syncAll, until, withServer,
} from './support.js';

const T = { timeout: 120_000 };
/** Sends as fast as the test wants (the per-user message rate is not what these tests are about). */
const FAST = { 'user-messages-per-second': '100000', 'rate-limit': '100000', 'rate-burst': '100000' };

function conversationsOf(f: Frame): { ids: string[]; last?: { atMs: bigint; id: string }; hasMore: boolean; frame: Frame } {
  assert.ok(f.body.case === 'conversationsResult', `expected a ConversationsResult, got ${f.body.case}: ${JSON.stringify(f.body.value, bigintJson)}`);
  const list = f.body.value.conversations;
  const last = list.at(-1);
  return { ids: list.map((c) => c.conversationId), last: last && { atMs: last.lastAtMs, id: last.conversationId }, hasMore: f.body.value.hasMore, frame: f };
}

describe('bounded reads', () => {
  test('the conversation list comes in pages (default 100, at most 500) that chain to the whole list, with previews of long messages', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      await sendMany(alice, 260, (i) => ({ toUser: `peer${String(i).padStart(3, '0')}`, text: `hello ${i}` }));
      const long = 'L'.repeat(10_000);
      await sendOk(alice, { toUser: 'peer000', text: long });

      const first = conversationsOf(await request(alice, { case: 'conversations', value: {} }));
      assert.equal(first.ids.length, DEFAULTS.logic.conversationsPageLimit);
      assert.equal(first.hasMore, true);
      assert.equal(first.ids[0], 'u:alice:peer000', 'the most recent first');
      const top = first.frame.body.case === 'conversationsResult' ? first.frame.body.value.conversations[0]! : assert.fail();
      assert.equal(top.lastMessage?.text, 'L'.repeat(200), 'a preview of the last message');
      assert.equal(top.lastMessageTruncated, true);
      assert.ok(encodeFrame(first.frame).length < 64 * 1024, `a page of 100 is small: ${encodeFrame(first.frame).length} bytes`);

      const seen = [...first.ids];
      for (let page = first; page.hasMore;) {
        page = conversationsOf(await request(alice, {
          case: 'conversations', value: { limit: 70, afterAtMs: page.last!.atMs, afterConversationId: page.last!.id },
        }));
        assert.ok(page.ids.length <= 70);
        seen.push(...page.ids);
        assert.ok(seen.length <= 260, 'no page repeats another');
      }
      assert.equal(seen.length, 260);
      assert.equal(new Set(seen).size, 260);

      const big = conversationsOf(await request(alice, { case: 'conversations', value: { limit: 100_000 } }));
      assert.equal(big.ids.length, DEFAULTS.logic.conversationsPageMax > 260 ? 260 : DEFAULTS.logic.conversationsPageMax);

      // The SDK pages for its caller.
      const client = createClient({ url: s.tcpUrl, token: await s.token('alice', 'sdk') });
      await client.connect();
      try {
        const all = await client.conversations();
        assert.equal(all.length, 260);
        assert.equal(all[0]!.lastMessageTruncated, true);
        assert.equal((await client.conversations({ max: 150 })).length, 150);
      } finally {
        await client.close();
      }
      alice.close();
    }, FAST);
  });

  test('history and sync pages stop at about replyMaxBytes of messages, and page on to the rest', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const bob = await online(s, 'ws', 'bob');
      const text = 'x'.repeat(16 * 1024);
      await sendMany(alice, 100, () => ({ toUser: 'bob', text }));
      const limit = DEFAULTS.logic.replyMaxBytes;

      const reply = await request(bob, { case: 'history', value: { conversationId: 'u:alice:bob', beforeSeq: 0n, limit: 100 } });
      const size = encodeFrame(reply).length;
      assert.ok(reply.body.case === 'historyResult');
      assert.ok(size <= limit + 20 * 1024, `a history page is ${size} bytes; the bound is about ${limit}`);
      assert.ok(reply.body.value.hasMore, 'more before it');
      assert.equal(reply.body.value.messages.at(-1)?.seq, 100n, 'the newest messages first');
      // Paging back reaches every message once.
      const seqs: number[] = [];
      for (let before = 0, more = true; more;) {
        const page = await history(bob, 'u:alice:bob', before, 100);
        seqs.unshift(...page.messages.map((m) => m.seq));
        more = page.hasMore;
        before = page.messages[0]!.seq;
      }
      assert.deepEqual(seqs, Array.from({ length: 100 }, (_, i) => i + 1));

      const synced = await syncAll(bob);
      assert.deepEqual(synced.messages.map((m) => m.seq), Array.from({ length: 100 }, (_, i) => i + 1));
      assert.ok(synced.pages.length >= 6, `${synced.pages.length} pages of at most ~${limit} bytes`);
      alice.close();
      bob.close();
    }, FAST);
  });

  test('a user with too many reads waiting gets BUSY for the next; every request gets one reply; another user is not held', T, async () => {
    await withServer(async (s) => {
      const mallory = await online(s, 'tcp', 'mallory');
      const honest = await online(s, 'ws', 'honest');
      await sendMany(mallory, 50, () => ({ toUser: 'victim', text: 'y'.repeat(16 * 1024) }));
      // 300 history requests in one write, never waiting.
      const ids: number[] = [];
      const frames = [];
      for (let i = 0; i < 300; i++) {
        const id = 10_000 + i;
        ids.push(id);
        frames.push(encodeFrame(makeFrame(id, { case: 'history', value: { conversationId: 'u:mallory:victim', beforeSeq: 0n, limit: 100 } })));
      }
      mallory.sendPayloads(frames);
      const t0 = Date.now();
      await sendOk(honest, { toUser: 'friend', text: 'still here' });
      const list = await request(honest, { case: 'conversations', value: {} });
      assert.equal(list.body.case, 'conversationsResult');
      const honestMs = Date.now() - t0;
      await until(() => ids.every((id) => mallory.frames.some((f) => f.id === id)), 60_000, () => `every request answered: ${mallory.describe().slice(-300)}`);
      const replies = mallory.frames.filter((f) => ids.includes(f.id));
      assert.equal(replies.length, ids.length, 'exactly one reply per request');
      const busy = replies.filter((f) => f.body.case === 'error' && f.body.value.code === ErrorCode.BUSY).length;
      const answered = replies.filter((f) => f.body.case === 'historyResult').length;
      assert.ok(busy > 0, 'some refused BUSY');
      assert.ok(answered >= DEFAULTS.logic.readsQueuedPerUser, `the queue's worth answered: ${answered}`);
      assert.equal(busy + answered, ids.length, 'nothing but results and BUSY');
      assert.ok(honestMs < 2000, `the honest user's send and list took ${honestMs} ms`);
      mallory.close();
      honest.close();
    }, FAST);
  });

  test('a gateway whose registry entry lapsed (its event loop held) keeps its connections: each is told to resync, pushes go on', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const bob = await online(s, 'ws', 'bob');
      // Hold the event loop past the registry TTL.
      const until0 = Date.now() + 1500;
      while (Date.now() < until0) { /* held */ }
      await until(() => [alice, bob].every((c) => c.frames.some((f) => f.body.case === 'event' && f.body.value.body.case === 'resync')), 5000,
        () => `resync events: ${alice.describe().slice(-200)} / ${bob.describe().slice(-200)}`);
      assert.equal(alice.closed || bob.closed, false, 'nobody disconnected');
      assert.ok(!alice.frames.some((f) => f.body.case === 'kick') && !bob.frames.some((f) => f.body.case === 'kick'), 'nobody kicked');
      await sendOk(alice, { toUser: 'bob', text: 'after the stall' });
      await until(() => bob.frames.some((f) => f.body.case === 'push'), 5000, () => `bob gets the push: ${bob.describe().slice(-200)}`);
      alice.close();
      bob.close();
    }, { 'node-ttl-ms': '600' });
  });
});
