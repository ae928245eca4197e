// Message retention (LONGLINK_RETENTION_DAYS): the Retention loop on its own
// (batches, bounds, days 0), then end to end over real sockets on the
// embedded server, its clock moved a day on instead of waiting one: devices
// that were offline across the expired range sync what is still held, in
// order, without duplicates, and their syncs complete (no endless gap).
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Retention } from '../../src/logic/retention.js';
import { loadServerConfig } from '../../src/config.js';
import { memoryStore } from '../../src/client/index.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { closeAll, connected, makeClient, seqs, texts, waitMessages } from '../client/harness.js';
import { history, online, request, sleep, syncAll, syncOnce, until, urlOf } from './support.js';

const T = { timeout: 120_000 };
const DAY_MS = 86_400_000;
const AB = 'u:alice:bob';
const AC = 'u:alice:carol';

/** A store that holds `due` expired messages and records every call. */
function fakeStore(due: number) {
  const calls: { cutoffMs: number; limit: number }[] = [];
  return {
    calls,
    left: () => due,
    store: {
      expireBefore: async (cutoffMs: number, limit: number): Promise<number> => {
        calls.push({ cutoffMs, limit });
        const n = Math.min(due, limit);
        due -= n;
        return n;
      },
    },
  };
}

describe('Retention', () => {
  test('a pass calls the store with now - days until fewer than a batch come back', async () => {
    const fake = fakeStore(25);
    const retention = new Retention({ days: 2, batch: 10, now: () => 10 * DAY_MS }, { store: fake.store });
    assert.deepEqual(await retention.runOnce(), { removed: 25, batches: 3, cutoffMs: 8 * DAY_MS, more: false });
    assert.deepEqual(fake.calls, [1, 2, 3].map(() => ({ cutoffMs: 8 * DAY_MS, limit: 10 })));
    assert.deepEqual(await retention.runOnce(), { removed: 0, batches: 1, cutoffMs: 8 * DAY_MS, more: false });
  });

  test('a pass is bounded: at most maxBatchesPerPass calls, the rest in the next pass', async () => {
    const fake = fakeStore(55);
    const retention = new Retention({ days: 1, batch: 10, maxBatchesPerPass: 3, now: () => DAY_MS }, { store: fake.store });
    assert.deepEqual(await retention.runOnce(), { removed: 30, batches: 3, cutoffMs: 0, more: true });
    assert.deepEqual(await retention.runOnce(), { removed: 25, batches: 3, cutoffMs: 0, more: false });
    assert.equal(fake.left(), 0);
  });

  test('a store with partitions: a pass steps expireByPartition while it says more (partitions of an eighth of the period, at least an hour), never removing rows', async () => {
    const calls: [number, number, number][] = [];
    let left = 3;
    const store = {
      expireBefore: () => Promise.reject(new Error('rows are not removed one by one here')),
      expireByPartition: async (cutoffMs: number, spanMs: number, limit: number) => {
        calls.push([cutoffMs, spanMs, limit]);
        return { removed: left > 0 ? 100 : 0, more: --left > 0 };
      },
    };
    const retention = new Retention({ days: 16, batch: 10, now: () => 20 * DAY_MS }, { store });
    assert.deepEqual(await retention.runOnce(), { removed: 300, batches: 3, cutoffMs: 4 * DAY_MS, more: false });
    assert.deepEqual(calls, [1, 2, 3].map(() => [4 * DAY_MS, 2 * DAY_MS, 10]));
    const short = new Retention({ days: 1, now: () => 20 * DAY_MS }, { store });
    await short.runOnce();
    assert.equal(calls.at(-1)![1], 3 * 3_600_000, 'a day: 3-hour partitions');
    const bounded = new Retention({ days: 1, maxBatchesPerPass: 2, now: () => DAY_MS }, {
      store: { ...store, expireByPartition: async () => ({ removed: 1, more: true }) },
    });
    assert.deepEqual(await bounded.runOnce(), { removed: 2, batches: 2, cutoffMs: 0, more: true });
  });

  test('days 0 does nothing: no calls, no timer', async () => {
    const fake = fakeStore(5);
    const retention = new Retention({ days: 0, intervalMs: 5 }, { store: fake.store });
    assert.equal(retention.enabled, false);
    retention.start();
    await sleep(50);
    assert.deepEqual(await retention.runOnce(), { removed: 0, batches: 0, cutoffMs: 0, more: false });
    await retention.stop();
    assert.deepEqual(fake.calls, []);
  });

  test('start() runs a pass every interval until stop(); a failed pass is retried by the next one', async () => {
    let failures = 1;
    const fake = fakeStore(3);
    const store = {
      expireBefore: (cutoffMs: number, limit: number) => (failures-- > 0 ? Promise.reject(new Error('store down')) : fake.store.expireBefore(cutoffMs, limit)),
    };
    const retention = new Retention({ days: 1, intervalMs: 10, batch: 2 }, { store });
    retention.start();
    await until(() => fake.left() === 0 && fake.calls.length >= 3, 5_000, () => `passes: ${JSON.stringify(fake.calls)}`);
    await retention.stop();
    const calls = fake.calls.length;
    await sleep(50);
    assert.equal(fake.calls.length, calls, 'no pass after stop()');
  });

  test('the setting: --retention-days / LONGLINK_RETENTION_DAYS, 0 (forever) by default, 0..36500 days', () => {
    assert.equal(loadServerConfig({}, {}).retentionDays, 0);
    assert.equal(loadServerConfig({}, { LONGLINK_RETENTION_DAYS: '30' }).retentionDays, 30);
    assert.equal(loadServerConfig({ 'retention-days': '7' }, { LONGLINK_RETENTION_DAYS: '30' }).retentionDays, 7, 'the flag wins');
    assert.throws(() => loadServerConfig({ 'retention-days': '-1' }, {}), /--retention-days \/ LONGLINK_RETENTION_DAYS must be an integer in 0\.\.36500/);
    assert.throws(() => loadServerConfig({}, { LONGLINK_RETENTION_DAYS: '1.5' }), /must be an integer/);
  });
});

describe('retention end to end (embedded server, real sockets)', () => {
  let server: TestServer | undefined;
  afterEach(async () => {
    await closeAll();
    await server?.close();
    server = undefined;
  });

  /** The server's retention clock: real time, or where a test moved it. */
  let clock: number | undefined;
  async function start(days = '1'): Promise<TestServer> {
    clock = undefined;
    // The pass a test wants is run with runOnce(); the timer would fire only after an hour.
    server = await startTestServer({ 'retention-days': days }, undefined, {
      retention: { intervalMs: 3_600_000, now: () => clock ?? Date.now() },
    });
    return server;
  }

  /** A moment between what was sent before it and what is sent after it (sent_at_ms is the server's Date.now()). */
  async function split(): Promise<number> {
    await sleep(5);
    const at = Date.now();
    await sleep(5);
    return at;
  }

  test('a device offline across the expired range syncs what is held, in order, once; its sync completes and later pushes follow', T, async () => {
    const s = await start();
    const alice = await connected(s, 'ws', 'alice', 'laptop');
    const phoneStore = memoryStore();
    const phone = await connected(s, 'tcp', 'bob', 'phone', { store: phoneStore });
    await alice.client.send({ to: 'bob', text: 'a1' });
    await alice.client.send({ to: 'bob', text: 'a2' });
    await waitMessages(phone, 2);
    await phone.client.close();
    assert.deepEqual(phoneStore.snapshot?.cursors, { [AB]: 2 }, 'the phone stands at seq 2');

    // While the phone is away: two more, then the day turns, then two that stay.
    await alice.client.send({ to: 'bob', text: 'a3' });
    await alice.client.send({ to: 'bob', text: 'a4' });
    await alice.client.send({ to: 'carol', text: 'c1' });
    const cutoff = await split();
    await alice.client.send({ to: 'bob', text: 'a5' });
    await alice.client.send({ to: 'bob', text: 'a6' });

    clock = cutoff + DAY_MS;
    const pass = await s.retention.runOnce();
    assert.deepEqual([pass.removed, pass.cutoffMs, pass.more], [5, cutoff, false], 'a1..a4 and c1');

    // The phone comes back with its cursor (2) below what is held (5..6).
    const back = makeClient(s, urlOf(s, 'tcp'), 'bob', 'phone', { store: phoneStore });
    await back.client.connect();
    await until(() => back.synced > 0, 10_000, () => 'the phone\'s sync');
    assert.deepEqual(texts(back.messages), ['a5', 'a6']);
    assert.deepEqual(seqs(back.messages), [5, 6]);
    assert.deepEqual(back.errors, []);
    await alice.client.send({ to: 'bob', text: 'a7' });
    await waitMessages(back, 3);
    assert.deepEqual(seqs(back.messages), [5, 6, 7], 'the push after the sync follows on');
    await until(() => phoneStore.snapshot?.cursors[AB] === 7, 5_000, () => `the phone's cursor: ${JSON.stringify(phoneStore.snapshot?.cursors)}`);

    // A new device of bob's gets what is held, from 5.
    const tablet = await connected(s, 'ws', 'bob', 'tablet');
    assert.deepEqual(seqs(await waitMessages(tablet, 3)), [5, 6, 7]);
    assert.deepEqual(texts(tablet.messages), ['a5', 'a6', 'a7']);

    // Carol never came online: her whole conversation expired. Her sync completes with nothing, and the next message is 2.
    const carol = await connected(s, 'tcp', 'carol', 'phone');
    assert.deepEqual(carol.messages, []);
    await alice.client.send({ to: 'carol', text: 'c2' });
    assert.deepEqual(seqs(await waitMessages(carol, 1)), [2]);
    await sleep(300);
    assert.deepEqual([texts(back.messages).length, texts(tablet.messages).length, texts(carol.messages).length], [3, 3, 1], 'no duplicates');
    for (const h of [back, tablet, carol]) assert.deepEqual(h.errors, []);
  });

  test('a device whose base is below the floor gets a push past a gap: it syncs that conversation over the expired range and delivers in order', T, async () => {
    const s = await start();
    const alice = await connected(s, 'ws', 'alice', 'laptop');
    const phoneStore = memoryStore();
    const phone = await connected(s, 'tcp', 'bob', 'phone', { store: phoneStore });
    await alice.client.send({ to: 'bob', text: 'a1' });
    await waitMessages(phone, 1);
    await phone.client.close();
    await alice.client.send({ to: 'bob', text: 'a2' });
    const cutoff = await split();
    await alice.client.send({ to: 'bob', text: 'a3' });
    clock = cutoff + DAY_MS;
    assert.equal((await s.retention.runOnce()).removed, 2);

    // No sync at login: the phone's base is 1 (from its store) and the next push is seq 4, a gap.
    const back = makeClient(s, urlOf(s, 'tcp'), 'bob', 'phone', { store: phoneStore, autoSync: false });
    await back.client.connect();
    await alice.client.send({ to: 'bob', text: 'a4' });
    await waitMessages(back, 2);
    assert.deepEqual(texts(back.messages), ['a3', 'a4']);
    await sleep(200);
    assert.deepEqual(seqs(back.messages), [3, 4]);
    assert.deepEqual(back.errors, []);
  });

  test('the protocol: sync jumps over the expired range (cursors below it, pages of one), history ends at what is held, unread counts what is held', T, async () => {
    const s = await start();
    const alice = await online(s, 'tcp', 'alice', 'laptop');
    for (const text of ['a1', 'a2', 'a3']) await request(alice, { case: 'send', value: { clientMsgId: `k-${text}`, toUser: 'bob', text } });
    await request(alice, { case: 'send', value: { clientMsgId: 'k-c1', toUser: 'carol', text: 'c1' } });
    const cutoff = await split();
    for (const text of ['a4', 'a5']) await request(alice, { case: 'send', value: { clientMsgId: `k-${text}`, toUser: 'bob', text } });
    clock = cutoff + DAY_MS;
    assert.equal((await s.retention.runOnce()).removed, 4);

    const bob = await online(s, 'ws', 'bob', 'raw');
    // A new device (cursor 0): one page, what is held, and the cursor at the last seq.
    const all = await syncAll(bob);
    assert.deepEqual(all.messages.map((m) => [m.seq, m.text]), [[4, 'a4'], [5, 'a5']]);
    assert.deepEqual([all.pages.length, all.cursors.get(AB)], [1, 5]);
    // A cursor inside the expired range, pages of one message: each page moves on, and the last says no more.
    const paged = await syncAll(bob, { limit: 1 });
    assert.deepEqual(paged.pages.map((p) => [p.messages.map((m) => m.seq), p.cursors.get(AB), p.hasMore]), [[[4], 4, true], [[5], 5, false]]);
    const fromTwo = await syncOnce(bob, new Map([[AB, 2]]));
    assert.deepEqual([fromTwo.messages.map((m) => m.seq), fromTwo.cursors.get(AB), fromTwo.hasMore], [[4, 5], 5, false]);

    // Carol's conversation holds nothing: named, it reaches its last seq at once.
    const carol = await online(s, 'tcp', 'carol', 'raw');
    const named = await syncOnce(carol, new Map([[AC, 0]]));
    assert.deepEqual([named.messages, named.cursors.get(AC), named.hasMore], [[], 1, false]);
    const only = await syncOnce(carol, new Map(), [AC]);
    assert.deepEqual([only.messages, only.cursors.get(AC), only.hasMore], [[], 1, false]);
    assert.equal((await syncAll(carol)).pages.length, 1);

    // History: what is held, and nothing older.
    const h = await history(bob, AB);
    assert.deepEqual([h.messages.map((m) => m.seq), h.hasMore], [[4, 5], false]);
    const older = await history(bob, AB, 4);
    assert.deepEqual([older.messages, older.hasMore], [[], false]);

    // The list: last seq as before, unread only what is held.
    const list = await request(bob, { case: 'conversations', value: { limit: 0, afterAtMs: 0n, afterConversationId: '' } });
    assert.equal(list.body.case, 'conversationsResult');
    const ab = list.body.case === 'conversationsResult' ? list.body.value.conversations.find((c) => c.conversationId === AB) : undefined;
    assert.deepEqual([ab?.lastSeq, ab?.unread, ab?.lastMessage?.text], [5n, 2n, 'a5']);

    // A resend of an expired message's client_msg_id is a new message (its key went with it); a held one's is a duplicate.
    const again = await request(alice, { case: 'send', value: { clientMsgId: 'k-a1', toUser: 'bob', text: 'a1' } });
    assert.deepEqual(again.body.case === 'sendAck' ? [again.body.value.seq, again.body.value.duplicate] : again.body.case, [6n, false]);
    const dup = await request(alice, { case: 'send', value: { clientMsgId: 'k-a4', toUser: 'bob', text: 'a4' } });
    assert.deepEqual(dup.body.case === 'sendAck' ? [dup.body.value.seq, dup.body.value.duplicate] : dup.body.case, [4n, true]);
  });

  test('the server runs passes on its own every interval', T, async () => {
    server = await startTestServer({ 'retention-days': '1' }, undefined, { retention: { intervalMs: 50, now: () => Date.now() + 2 * DAY_MS } });
    const s = server;
    const alice = await online(s, 'tcp', 'alice', 'laptop');
    await request(alice, { case: 'send', value: { clientMsgId: 'soon-gone', toUser: 'bob', text: 'x' } });
    const bob = await online(s, 'ws', 'bob', 'raw');
    let left = 1;
    for (let i = 0; i < 100 && left > 0; i++) {
      left = (await syncAll(bob)).messages.length;
      if (left > 0) await sleep(20);
    }
    assert.equal(left, 0, 'the message expired without runOnce()');
  });

  test('days 0 (the default): nothing ever expires', T, async () => {
    const s = await start('0');
    const alice = await online(s, 'tcp', 'alice', 'laptop');
    await request(alice, { case: 'send', value: { clientMsgId: 'kept', toUser: 'bob', text: 'kept' } });
    clock = Date.now() + 1000 * DAY_MS;
    assert.deepEqual(await s.retention.runOnce(), { removed: 0, batches: 0, cutoffMs: 0, more: false });
    const bob = await online(s, 'ws', 'bob', 'raw');
    assert.deepEqual((await syncAll(bob)).messages.map((m) => m.text), ['kept']);
  });
});
