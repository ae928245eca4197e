// The message path end to end over real sockets (TCP and WebSocket): online
// delivery, multi-device fan-out, offline sync, idempotent resends, ordering
// under concurrent senders, history and sync paging, and coded rejections.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, type ChatMessage } from '../../src/protocol/index.js';
import {
  TRANSPORTS, barrier, expectError, framesOf, history, online, pushed, range, request, sendMany, sendOk,
  sleep, syncAll, syncOnce, until, waitPushed, withServer,
} from './support.js';

/** No test may hang the suite. */
const T = { timeout: 120_000 };

const AB = 'u:alice:bob';

const seqs = (ms: readonly ChatMessage[]) => ms.map((m) => m.seq);
const texts = (ms: readonly ChatMessage[]) => ms.map((m) => m.text);

describe('online delivery', () => {
  test('TCP → WS and WS → TCP: the ack has seq, server id and time; the push carries conversation, seq, sender and text', T, async () => {
    await withServer(async (s) => {
      const cases = [
        { from: 'tcp', to: 'ws', text: 'hello over tcp', seq: 1 },
        { from: 'ws', to: 'tcp', text: 'hello over ws', seq: 2 },
      ] as const;
      for (const c of cases) {
        const bob = await online(s, c.to, 'bob', `bob-${c.to}`);
        const alice = await online(s, c.from, 'alice', `alice-${c.from}`);
        const before = Date.now();
        const ack = await sendOk(alice, { clientMsgId: `cm-${c.seq}`, toUser: 'bob', text: c.text });
        const after = Date.now();
        assert.equal(ack.clientMsgId, `cm-${c.seq}`);
        assert.equal(ack.conversationId, AB);
        assert.equal(ack.seq, BigInt(c.seq), `${c.from} → ${c.to}`);
        assert.match(ack.serverMsgId, /^[0-9a-f-]{36}$/);
        assert.equal(ack.duplicate, false);
        assert.ok(Number(ack.sentAtMs) >= before - 5 && Number(ack.sentAtMs) <= after + 5, `sent_at_ms ${ack.sentAtMs} within [${before}, ${after}]`);

        const [m, ...rest] = await waitPushed(bob, 1);
        assert.deepEqual(rest, []);
        assert.deepEqual(m, {
          conversationId: AB, seq: c.seq, serverMsgId: ack.serverMsgId, fromUser: 'alice', fromDevice: `alice-${c.from}`,
          clientMsgId: `cm-${c.seq}`, text: c.text, sentAtMs: Number(ack.sentAtMs),
        });
        // Push frames are server-initiated: id 0.
        assert.ok(bob.frames.filter((f) => f.body.case === 'push').every((f) => f.id === 0));
        assert.deepEqual(pushed(alice), [], 'the sending device gets no push of its own message');
        alice.close();
        bob.close();
      }
    });
  });

  test('a user on several devices gets the message on each; the sender\'s other devices too, the sending device not', T, async () => {
    await withServer(async (s) => {
      const alicePhone = await online(s, 'tcp', 'alice', 'phone');
      const aliceLaptop = await online(s, 'ws', 'alice', 'laptop');
      const bobPhone = await online(s, 'ws', 'bob', 'phone');
      const bobTablet = await online(s, 'tcp', 'bob', 'tablet');
      const all = [alicePhone, aliceLaptop, bobPhone, bobTablet];

      const a1 = await sendOk(alicePhone, { clientMsgId: 'from-alice-phone', toUser: 'bob', text: 'one' });
      const a2 = await sendOk(aliceLaptop, { clientMsgId: 'from-alice-laptop', conversationId: AB, text: 'two' });
      const a3 = await sendOk(bobTablet, { clientMsgId: 'from-bob-tablet', toUser: 'alice', text: 'three' });
      assert.deepEqual([a1.seq, a2.seq, a3.seq], [1n, 2n, 3n]);

      // Every device but the sender's own gets each message.
      const expected = new Map([
        [alicePhone, ['two', 'three']],
        [aliceLaptop, ['one', 'three']],
        [bobPhone, ['one', 'two', 'three']],
        [bobTablet, ['one', 'two']],
      ]);
      for (const [c, want] of expected) await waitPushed(c, want.length);
      // A push to the sender would be written before its ack; wait a little more anyway.
      for (const c of all) await barrier(c);
      await sleep(200);
      for (const [c, want] of expected) {
        const got = pushed(c);
        assert.deepEqual(texts(got), want);
        assert.ok(got.every((m) => m.conversationId === AB));
      }
      assert.deepEqual(seqs(pushed(bobPhone)), [1, 2, 3]);
      assert.deepEqual(pushed(bobPhone).map((m) => `${m.fromUser}/${m.fromDevice}`), ['alice/phone', 'alice/laptop', 'bob/tablet']);
      for (const c of all) c.close();
    });
  });
});

describe('offline and sync', () => {
  test('bob offline: alice sends 3; bob syncs exactly those in order; after PushAck a reconnect syncs nothing; a new device gets all', T, async () => {
    await withServer(async (s) => {
      for (const t of TRANSPORTS) {
        const alice = await online(s, t, 'alice');
        const acks = await sendMany(alice, 3, (i) => ({ toUser: 'bob', text: `offline ${t} ${i + 1}` }));
        const base = (t === 'tcp' ? 0 : 3);
        assert.deepEqual(acks.map((a) => Number(a.seq)), [base + 1, base + 2, base + 3]);
        alice.close();

        const bob = await online(s, t, 'bob', 'phone');
        const first = await syncOnce(bob);
        const mine = first.messages.filter((m) => m.text.startsWith(`offline ${t}`));
        assert.deepEqual(texts(first.messages), [`offline ${t} 1`, `offline ${t} 2`, `offline ${t} 3`], 'exactly the three missed');
        assert.deepEqual(seqs(mine), [base + 1, base + 2, base + 3]);
        assert.deepEqual(mine.map((m) => m.serverMsgId), acks.map((a) => a.serverMsgId));
        assert.ok(mine.every((m) => m.fromUser === 'alice' && m.conversationId === AB));
        assert.equal(first.hasMore, false);
        assert.equal(first.cursors.get(AB), base + 3);

        // Syncing alone does not move the cursor: without an ack, a reconnect gets them again.
        bob.close();
        let again = await online(s, t, 'bob', 'phone');
        assert.deepEqual(texts((await syncOnce(again)).messages), texts(first.messages));

        // Ack two of three: the next sync resumes after them.
        again.send({ case: 'pushAck', value: { conversationId: AB, seq: BigInt(base + 2) } });
        await barrier(again);
        again.close();
        again = await online(s, t, 'bob', 'phone');
        assert.deepEqual(texts((await syncOnce(again)).messages), [`offline ${t} 3`]);

        // Ack all: nothing new.
        again.send({ case: 'pushAck', value: { conversationId: AB, seq: BigInt(base + 3) } });
        await barrier(again);
        again.close();
        again = await online(s, t, 'bob', 'phone');
        const empty = await syncOnce(again);
        assert.deepEqual(empty.messages, []);
        assert.equal(empty.hasMore, false);
        again.close();

        // Another device of bob has its own cursor: it gets everything.
        const tablet = await online(s, t, 'bob', `tablet-${t}`);
        const all = await syncAll(tablet);
        assert.deepEqual(seqs(all.messages), range(1, base + 3));
        tablet.close();
      }
    });
  });
});

describe('idempotent resends', () => {
  test('the same client_msg_id twice: same seq and server id, second ack duplicate; bob shows it once; history has it once', T, async () => {
    await withServer(async (s) => {
      const bob = await online(s, 'ws', 'bob');
      const alice = await online(s, 'tcp', 'alice');
      const first = await sendOk(alice, { clientMsgId: 'dup-1', toUser: 'bob', text: 'only once' });
      const second = await sendOk(alice, { clientMsgId: 'dup-1', toUser: 'bob', text: 'only once' });
      assert.equal(first.duplicate, false);
      assert.equal(second.duplicate, true);
      assert.equal(second.seq, first.seq);
      assert.equal(second.serverMsgId, first.serverMsgId);
      assert.equal(second.sentAtMs, first.sentAtMs);
      assert.equal(second.conversationId, first.conversationId);

      // A resend on a new connection over the other transport, with changed text: still the original.
      alice.close();
      const aliceWs = await online(s, 'ws', 'alice');
      const third = await sendOk(aliceWs, { clientMsgId: 'dup-1', toUser: 'bob', text: 'changed on resend' });
      assert.equal(third.duplicate, true);
      assert.equal(third.seq, first.seq);
      assert.equal(third.serverMsgId, first.serverMsgId);

      // Two copies written back to back (likely one batch): one store, one duplicate.
      const pair = await sendMany(aliceWs, 2, () => ({ clientMsgId: 'dup-2', toUser: 'bob', text: 'pipelined' }));
      assert.equal(pair[0]!.seq, pair[1]!.seq);
      assert.equal(pair[0]!.serverMsgId, pair[1]!.serverMsgId);
      assert.deepEqual(pair.map((a) => a.duplicate).sort(), [false, true]);
      assert.equal(pair[0]!.seq, 2n);

      // The next new message takes the next seq: the duplicates consumed none.
      const next = await sendOk(aliceWs, { clientMsgId: 'fresh', toUser: 'bob', text: 'after' });
      assert.equal(next.seq, 3n);

      await until(() => pushed(bob).some((m) => m.seq === 3), 10_000, () => 'seq 3 at bob');
      await barrier(bob);
      await sleep(200);
      // A resend may push the stored message again (a crashed first attempt may never have
      // pushed it); the repeat carries the same seq and id, so a client drops it by seq.
      // What bob's client shows, deduped by seq as the protocol says, is each message once:
      const shown = new Map(pushed(bob).map((m) => [m.seq, m]));
      assert.deepEqual([...shown.values()].map((m) => [m.seq, m.clientMsgId, m.text]), [
        [1, 'dup-1', 'only once'], [2, 'dup-2', 'pipelined'], [3, 'fresh', 'after'],
      ]);
      for (const m of pushed(bob)) assert.equal(m.serverMsgId, shown.get(m.seq)!.serverMsgId, 'a repeat is the same message');
      assert.deepEqual([...new Set(pushed(bob).map((m) => m.seq))], [1, 2, 3], 'pushes arrive in seq order, repeats never go back past a newer seq');
      const h = await history(bob, AB);
      assert.deepEqual(h.messages.map((m) => [m.seq, m.clientMsgId, m.text]), [
        [1, 'dup-1', 'only once'], [2, 'dup-2', 'pipelined'], [3, 'fresh', 'after'],
      ]);
      bob.close();
      aliceWs.close();
    });
  });
});

describe('order under concurrency', () => {
  test('two devices of alice each pipeline 1,000 messages to bob at once: seq 1..2000 once each, per-device order kept', T, async () => {
    await withServer(async (s) => {
      const N = 1000;
      const bobWs = await online(s, 'ws', 'bob', 'phone');
      const bobTcp = await online(s, 'tcp', 'bob', 'laptop');
      const d1 = await online(s, 'tcp', 'alice', 'd1');
      const d2 = await online(s, 'ws', 'alice', 'd2');
      // Interleave the writes so both connections feed the server at the same time.
      const ids = { d1: [] as number[], d2: [] as number[] };
      for (let i = 0; i < N; i++) {
        ids.d1.push(d1.send({ case: 'send', value: { clientMsgId: `d1-${i}`, toUser: 'bob', text: `d1 #${i}` } }));
        ids.d2.push(d2.send({ case: 'send', value: { clientMsgId: `d2-${i}`, conversationId: AB, text: `d2 #${i}` } }));
      }
      const acksOf = (c: typeof d1) => framesOf(c, 'sendAck');
      await until(() => acksOf(d1).length >= N && acksOf(d2).length >= N, 90_000,
        () => `acks d1=${acksOf(d1).length} d2=${acksOf(d2).length}; d1 closed=${d1.closed} d2 closed=${d2.closed}`);

      for (const [name, c] of [['d1', d1], ['d2', d2]] as const) {
        // Both connections are alice's: her messages per second (all devices) throttle them too.
        const errors = framesOf(c, 'error').filter((e) => e.code !== ErrorCode.RATE_LIMITED && e.code !== ErrorCode.USER_RATE_LIMITED);
        assert.deepEqual(errors, [], `${name}: no errors but rate-limit notices`);
        assert.equal(c.closed, false, `${name} stays connected`);
        const acks = acksOf(c);
        assert.equal(acks.length, N);
        assert.deepEqual(acks.map((a) => a.clientMsgId), range(0, N - 1).map((i) => `${name}-${i}`), `${name}: acks in send order`);
        const ackSeqs = acks.map((a) => Number(a.seq));
        assert.ok(ackSeqs.every((q, i) => i === 0 || q > ackSeqs[i - 1]!), `${name}: seq grows with send order`);
        assert.ok(acks.every((a) => !a.duplicate));
      }
      const allSeqs = [...acksOf(d1), ...acksOf(d2)].map((a) => Number(a.seq)).sort((a, b) => a - b);
      assert.deepEqual(allSeqs, range(1, 2 * N), 'the acks name seq 1..2000 once each');

      const checkStream = (got: ChatMessage[], who: string) => {
        assert.deepEqual(seqs(got), range(1, 2 * N), `${who}: seq 1..2000 once each, in order`);
        for (const dev of ['d1', 'd2']) {
          const mine = got.filter((m) => m.fromDevice === dev);
          assert.deepEqual(mine.map((m) => m.clientMsgId), range(0, N - 1).map((i) => `${dev}-${i}`), `${who}: ${dev}'s order`);
          assert.ok(mine.every((m, i) => m.text === `${dev} #${i}` && m.fromUser === 'alice' && m.conversationId === AB));
        }
      };
      for (const [who, c] of [['bob ws', bobWs], ['bob tcp', bobTcp]] as const) {
        await waitPushed(c, 2 * N, 60_000);
        await barrier(c);
        await sleep(200);
        checkStream(pushed(c), who);
      }
      // Each of alice's devices gets the other's messages, not its own, in seq order.
      for (const [me, other, c] of [['d1', 'd2', d1], ['d2', 'd1', d2]] as const) {
        await waitPushed(c, N, 60_000);
        await sleep(100);
        const got = pushed(c);
        assert.ok(got.every((m) => m.fromDevice === other), `${me} got only ${other}'s messages`);
        assert.deepEqual(got.map((m) => m.clientMsgId), range(0, N - 1).map((i) => `${other}-${i}`));
        const q = seqs(got);
        assert.ok(q.every((x, i) => i === 0 || x > q[i - 1]!), `${me}: pushes in seq order`);
      }
      // What is stored says the same: a new device syncs exactly the 2,000.
      const fresh = await online(s, 'tcp', 'bob', 'fresh');
      const synced = await syncAll(fresh);
      checkStream(synced.messages, 'sync of a new device');
      for (const c of [bobWs, bobTcp, d1, d2, fresh]) c.close();
    });
  });
});

describe('history paging', () => {
  test('before_seq, limit and has_more page backwards; each page ascending', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      await sendMany(alice, 25, (i) => ({ toUser: 'bob', text: `h${i + 1}` }));
      const bob = await online(s, 'ws', 'bob');

      let page = await history(bob, AB, 0, 10);
      assert.deepEqual(seqs(page.messages), range(16, 25));
      assert.deepEqual(texts(page.messages), range(16, 25).map((i) => `h${i}`));
      assert.equal(page.hasMore, true);
      page = await history(bob, AB, 16, 10);
      assert.deepEqual(seqs(page.messages), range(6, 15));
      assert.equal(page.hasMore, true);
      page = await history(bob, AB, 6, 10);
      assert.deepEqual(seqs(page.messages), range(1, 5));
      assert.equal(page.hasMore, false);
      page = await history(bob, AB, 6, 5);
      assert.deepEqual(seqs(page.messages), range(1, 5), 'a page that ends exactly at the first message');
      assert.equal(page.hasMore, false);
      page = await history(bob, AB, 1, 10);
      assert.deepEqual(page.messages, []);
      assert.equal(page.hasMore, false);

      page = await history(alice, AB); // limit 0: the server default (100)
      assert.deepEqual(seqs(page.messages), range(1, 25));
      assert.equal(page.hasMore, false);
      page = await history(alice, AB, 1000, 3); // before a seq past the end: the latest
      assert.deepEqual(seqs(page.messages), [23, 24, 25]);
      assert.equal(page.hasMore, true);
      page = await history(alice, 'u:alice:nobody');
      assert.deepEqual(page.messages, [], 'a conversation with no messages yet');
      assert.equal(page.hasMore, false);
      alice.close();
      bob.close();
    });
  });
});

describe('sync paging', () => {
  test('over 200 messages: a new device pages with cursors until has_more is false and gets each once', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const frank = await online(s, 'ws', 'frank');
      await sendMany(alice, 450, (i) => ({ toUser: 'erin', text: `a${i + 1}` }));
      await sendMany(frank, 30, (i) => ({ toUser: 'erin', text: `f${i + 1}` }));
      const AE = 'u:alice:erin';
      const EF = 'u:erin:frank';

      for (const t of ['tcp', 'ws'] as const) {
        const erin = await online(s, t, 'erin', `new-${t}`);
        const all = await syncAll(erin);
        assert.deepEqual(all.pages.map((p) => p.messages.length), [200, 200, 80], 'default pages of 200');
        assert.deepEqual(all.pages.map((p) => p.hasMore), [true, true, false]);
        const byConv = (id: string) => all.messages.filter((m) => m.conversationId === id);
        assert.deepEqual(seqs(byConv(AE)), range(1, 450));
        assert.deepEqual(texts(byConv(AE)), range(1, 450).map((i) => `a${i}`));
        assert.deepEqual(seqs(byConv(EF)), range(1, 30));
        assert.equal(new Set(all.messages.map((m) => `${m.conversationId}#${m.seq}`)).size, 480, 'no message twice');
        assert.equal(all.cursors.get(AE), 450);
        assert.equal(all.cursors.get(EF), 30);
        // Past the end: nothing, and the cursors say where this device stands.
        const after = await syncOnce(erin, all.cursors);
        assert.deepEqual(after.messages, []);
        assert.equal(after.hasMore, false);
        erin.close();
      }

      // A client page size, and one conversation only.
      const erin = await online(s, 'tcp', 'erin', 'small-pages');
      const small = await syncAll(erin, { conversationIds: [AE], limit: 50 });
      assert.equal(small.pages.length, 9);
      assert.ok(small.pages.every((p) => p.messages.length === 50));
      assert.deepEqual(seqs(small.messages), range(1, 450));
      assert.ok(small.messages.every((m) => m.conversationId === AE));
      // A limit above the server's page size is capped.
      const big = await syncOnce(erin, new Map(), [AE], 100_000);
      assert.equal(big.messages.length, 200);
      assert.equal(big.hasMore, true);
      // So is a history page.
      const h = await history(erin, AE, 0, 100_000);
      assert.deepEqual(seqs(h.messages), range(351, 450));
      assert.equal(h.hasMore, true);
      for (const c of [alice, frank, erin]) c.close();
    });
  });
});

describe('sync paging of large messages', () => {
  test('pages stop near 1 MiB of text, never empty, and together hold every message once', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const big = s.config.limits.maxTextBytes;
      await sendMany(alice, 100, (i) => ({ toUser: 'bob', text: `${String(i + 1).padStart(3, '0')}`.padEnd(big, '.') }));
      for (const t of TRANSPORTS) {
        const bob = await online(s, t, 'bob', `big-${t}`);
        const all = await syncAll(bob);
        assert.ok(all.pages.length >= 2, `more than one page for ${100 * big} bytes of text`);
        assert.ok(all.pages.every((p) => p.messages.length > 0), 'no empty page');
        for (const p of all.pages) {
          const bytes = p.messages.reduce((n, m) => n + Buffer.byteLength(m.text), 0);
          assert.ok(bytes <= 1024 * 1024 + big, `a page of ${bytes} bytes of text`);
        }
        assert.deepEqual(seqs(all.messages), range(1, 100));
        assert.ok(all.messages.every((m, i) => m.text.length === big && m.text.startsWith(String(i + 1).padStart(3, '0'))));
        bob.close();
      }
      alice.close();
    });
  });
});

describe('validation', () => {
  for (const t of TRANSPORTS) {
    test(`${t}: bad sends get stable codes, are not stored, and the connection goes on`, T, async () => {
      await withServer(async (s) => {
        const bob = await online(s, t, 'bob');
        const alice = await online(s, t, 'alice');
        const login = alice.frames.find((f) => f.body.case === 'loginResult');
        assert.ok(login && login.body.case === 'loginResult');
        const maxText = login.body.value.maxTextBytes;
        assert.ok(maxText > 0);

        const send = (value: Record<string, string>) => ({ case: 'send' as const, value: { clientMsgId: `v-${Math.random()}`, toUser: 'bob', text: 'x', ...value } });
        const errors = [
          await expectError(alice, send({ text: '' }), ErrorCode.TEXT_EMPTY),
          // Bytes, not characters: 'é' is two UTF-8 bytes.
          await expectError(alice, send({ text: 'é'.repeat(maxText / 2 + 1) }), ErrorCode.TEXT_TOO_LARGE),
          await expectError(alice, send({ text: 'x'.repeat(maxText + 1) }), ErrorCode.TEXT_TOO_LARGE),
          await expectError(alice, send({ fromUser: 'mallory' }), ErrorCode.FORBIDDEN),
          await expectError(alice, send({ toUser: '', conversationId: 'u:bob:carol' }), ErrorCode.FORBIDDEN),
          await expectError(alice, send({ conversationId: AB }), ErrorCode.BAD_REQUEST),
          await expectError(alice, send({ toUser: '' }), ErrorCode.BAD_REQUEST),
          await expectError(alice, send({ clientMsgId: '' }), ErrorCode.BAD_REQUEST),
          await expectError(alice, send({ clientMsgId: 'x'.repeat(129) }), ErrorCode.BAD_REQUEST),
          await expectError(alice, send({ toUser: 'not:valid' }), ErrorCode.BAD_REQUEST),
          await expectError(alice, send({ text: 'a\u0000b' }), ErrorCode.BAD_REQUEST),
          await expectError(alice, send({ clientMsgId: 'id\u0000' }), ErrorCode.BAD_REQUEST),
        ];
        for (const e of errors) {
          assert.equal(e.fatal, false);
          assert.equal(e.reconnect, false);
          assert.ok(e.message.length > 0);
        }
        assert.equal(alice.closed, false);

        // Still usable: the limits are inclusive, the own name may be asserted, and no seq was used up.
        const ok = await sendOk(alice, { clientMsgId: 'valid', toUser: 'bob', fromUser: 'alice', text: 'x'.repeat(maxText) });
        assert.equal(ok.seq, 1n);
        const [m] = await waitPushed(bob, 1);
        assert.equal(m!.clientMsgId, 'valid');
        await barrier(bob);
        await sleep(100);
        assert.equal(pushed(bob).length, 1, 'bob got none of the refused sends');
        assert.deepEqual((await history(alice, AB)).messages.map((x) => x.clientMsgId), ['valid']);
        alice.close();
        bob.close();
      });
    });

    test(`${t}: history, sync and PushAck of someone else's conversation are FORBIDDEN and leak nothing`, T, async () => {
      await withServer(async (s) => {
        const bob = await online(s, t, 'bob');
        await sendOk(bob, { toUser: 'carol', text: 'private' });
        const alice = await online(s, t, 'alice');
        const BC = 'u:bob:carol';

        await expectError(alice, { case: 'history', value: { conversationId: BC } }, ErrorCode.FORBIDDEN);
        await expectError(alice, { case: 'sync', value: { conversationIds: [BC] } }, ErrorCode.FORBIDDEN);
        await expectError(alice, { case: 'pushAck', value: { conversationId: BC, seq: 1n } }, ErrorCode.FORBIDDEN);
        // A cursor for a foreign conversation is ignored, not served.
        const leak = await syncOnce(alice, new Map([[BC, 0]]));
        assert.deepEqual(leak.messages, []);
        assert.equal(alice.closed, false);
        // And the connection goes on.
        const ok = await sendOk(alice, { toUser: 'bob', text: 'still here' });
        assert.equal(ok.seq, 1n);
        alice.close();
        bob.close();
      });
    });
  }

  test('PushAcks sent in a burst count as the highest: a lower one after a higher one does not move the cursor back', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      for (const i of [1, 2, 3]) await sendOk(alice, { toUser: 'bob', text: `burst ${i}` });
      let bob = await online(s, 'ws', 'bob', 'phone');
      // The gateway gathers acks and sends up the highest per conversation; logic keeps the max.
      for (const seq of [3n, 1n, 2n]) bob.send({ case: 'pushAck', value: { conversationId: AB, seq } });
      bob.close();
      bob = await online(s, 'ws', 'bob', 'phone');
      assert.deepEqual((await syncOnce(bob)).messages, []);
      bob.send({ case: 'pushAck', value: { conversationId: AB, seq: 1n } });
      await new Promise((r) => setTimeout(r, 300)); // past the gateway's gathering interval, connection open
      bob.close();
      bob = await online(s, 'ws', 'bob', 'phone');
      assert.deepEqual((await syncOnce(bob)).messages, []);
      alice.close();
      bob.close();
    });
  });

  test('PushAck needs no reply, and one for an own conversation is not an error', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      await sendOk(alice, { toUser: 'bob' });
      const before = alice.frames.length;
      const reply = request(alice, { case: 'pushAck', value: { conversationId: AB, seq: 1n } }, 500);
      await assert.rejects(reply, /timed out/);
      assert.deepEqual(alice.frames.slice(before).map((f) => f.body.case), []);
      alice.close();
    });
  });
});
