// Sync tokens (docs/protocol.md, "Sync"), against a server: a client that keeps
// its own cursors sends sync_token (empty when it has none) and gets one back
// from every page of a full sync; a conversation it names no cursor for is
// read from its start. With a token only what changed since is read; without
// one (a new client, or one that lost its data on the same device id)
// everything is, again. A client before tokens (no field) keeps the delivered
// cursor as its default and gets no token back.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { RawClient } from '../helpers/raw.js';
import { ErrorCode } from '../../src/protocol/index.js';
import { expectError, online, sendOk, sleep, syncOnce, withServer } from './support.js';

const T = { timeout: 60_000 };
const AB = 'u:alice:bob';
const BC = 'u:bob:carol';

/** A device that keeps its cursors and token, as the SDK does: pages until has_more is false; what it got, in order. */
async function syncPass(c: RawClient, state: { cursors: Map<string, number>; token: string }, limit = 0): Promise<string[]> {
  const got: string[] = [];
  for (let page = 0; page < 100; page++) {
    const r = await syncOnce(c, state.cursors, [], limit, state.token);
    assert.notEqual(r.syncToken, '', 'every page of a full sync carries a token');
    const first = new Set<string>();
    for (const m of r.messages) {
      if (!first.has(m.conversationId)) state.cursors.set(m.conversationId, Math.max(state.cursors.get(m.conversationId) ?? 0, m.seq - 1));
      first.add(m.conversationId);
      assert.equal(m.seq, (state.cursors.get(m.conversationId) ?? 0) + 1, `${m.conversationId} #${m.seq}: once, in order`);
      state.cursors.set(m.conversationId, m.seq);
      got.push(m.text);
    }
    for (const [id, seq] of r.cursors) if (!first.has(id)) state.cursors.set(id, Math.max(state.cursors.get(id) ?? 0, seq));
    state.token = r.syncToken;
    if (!r.hasMore) return got;
  }
  assert.fail('the sync did not end');
}

describe('sync tokens', () => {
  test('a client before sync tokens resumes what it names no cursor for after the device\'s delivered cursor, and gets no token; one with the field, at the start', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      await sendOk(alice, { toUser: 'bob', text: 'one' });
      await sendOk(alice, { toUser: 'bob', text: 'two' });
      const bob = await online(s, 'ws', 'bob', 'phone');
      const old = await syncOnce(bob);
      assert.deepEqual([old.messages.map((m) => m.text), old.syncToken], [['one', 'two'], '']);
      bob.send({ case: 'pushAck', value: { conversationId: AB, seq: 2n } });
      await sleep(400); // acks are gathered for up to 100 ms
      assert.deepEqual((await syncOnce(bob)).messages, [], 'acked: nothing from the delivered cursor on');
      const fresh = await syncOnce(bob, new Map(), [], 0, '');
      assert.deepEqual(fresh.messages.map((m) => m.text), ['one', 'two'], 'with sync_token (empty): from the start');
      assert.notEqual(fresh.syncToken, '');
      // conversation_ids too: from the start with the field, from the delivered cursor without; never a token.
      const named = await syncOnce(bob, new Map(), [AB], 0, '');
      assert.deepEqual([named.messages.map((m) => m.text), named.syncToken], [['one', 'two'], '']);
      assert.deepEqual((await syncOnce(bob, new Map(), [AB])).messages, []);
      alice.close();
      bob.close();
    });
  });

  test('with its token a client reads only what changed since; the same device without it (its data lost) reads everything again', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const carol = await online(s, 'tcp', 'carol');
      for (const text of ['a1', 'a2', 'a3']) await sendOk(alice, { toUser: 'bob', text });
      for (const text of ['c1', 'c2']) await sendOk(carol, { toUser: 'bob', text });
      const bob = await online(s, 'ws', 'bob', 'phone');
      const phone = { cursors: new Map<string, number>(), token: '' };
      assert.deepEqual((await syncPass(bob, phone, 2)).sort(), ['a1', 'a2', 'a3', 'c1', 'c2']);
      assert.deepEqual(Object.fromEntries(phone.cursors), { [AB]: 3, [BC]: 2 });
      assert.deepEqual(await syncPass(bob, phone), [], 'nothing changed');

      await sendOk(alice, { toUser: 'bob', text: 'a4' });
      assert.deepEqual(await syncPass(bob, phone), ['a4']);
      assert.deepEqual(await syncPass(bob, phone), []);

      // Its data lost (no token, no cursors), same device id: every conversation again.
      const wiped = { cursors: new Map<string, number>(), token: '' };
      assert.deepEqual((await syncPass(bob, wiped, 3)).sort(), ['a1', 'a2', 'a3', 'a4', 'c1', 'c2']);
      // A token that is not one, or from another database (past this one's horizon): as none.
      const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64url');
      for (const token of [
        'not a token', 't1.999999999999999.0.', 't2.0.0.', 't1.-1.0.', 't1.1e3.0.', 't1.99999999999999999999.0.', 't1.1.2.!!', '\u0000', '🙂',
        `t1.1.2.${b64('u:carol:bob')}`, `t1.1.2.${b64('g:')}`, `t1.1.2.${b64('\u{fffd}')}`, `t1.1.2.${'A'.repeat(200)}`, 'x'.repeat(256),
      ]) {
        const other = { cursors: new Map<string, number>(), token };
        assert.deepEqual((await syncPass(bob, other)).sort(), ['a1', 'a2', 'a3', 'a4', 'c1', 'c2'], token);
      }
      // One longer than any token: refused, with a code; the connection goes on.
      const refused = await expectError(bob, { case: 'sync', value: { cursors: [], conversationIds: [], limit: 0, syncToken: 't'.repeat(257) } }, ErrorCode.BAD_REQUEST);
      assert.match(refused.message, /sync_token must be at most 256 characters/);
      await expectError(bob, { case: 'sync', value: { cursors: [], conversationIds: [AB], limit: 0, syncToken: 't'.repeat(10_000) } }, ErrorCode.BAD_REQUEST);
      assert.deepEqual((await syncPass(bob, phone)), [], 'still served, its token still good');
      alice.close();
      carol.close();
      bob.close();
    });
  });

  test('a message stored in a conversation while a pass pages on comes with the next sync, if not with that pass', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const carol = await online(s, 'tcp', 'carol');
      for (const text of ['a1', 'a2']) await sendOk(alice, { toUser: 'bob', text });
      for (const text of ['c1', 'c2', 'c3', 'c4']) await sendOk(carol, { toUser: 'bob', text });
      const bob = await online(s, 'ws', 'bob', 'phone');
      const phone = { cursors: new Map<string, number>(), token: '' };
      const first = await syncOnce(bob, phone.cursors, [], 2, phone.token);
      assert.equal(first.hasMore, true);
      assert.deepEqual(first.messages.map((m) => m.text), ['a1', 'a2'], 'the first page: the first conversation in change order');
      for (const m of first.messages) phone.cursors.set(m.conversationId, m.seq);
      phone.token = first.syncToken;
      await sendOk(alice, { toUser: 'bob', text: 'a3' });
      const rest = await syncPass(bob, phone, 2);
      assert.deepEqual(rest.filter((t) => t.startsWith('c')), ['c1', 'c2', 'c3', 'c4']);
      const next = await syncPass(bob, phone);
      assert.deepEqual([...rest, ...next].filter((t) => t === 'a3'), ['a3'], 'a3 once, in the pass or the next sync');
      alice.close();
      carol.close();
      bob.close();
    });
  });
});
