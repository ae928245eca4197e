// Full-text search through the SDK over real sockets: what a user finds is
// only what it may read — its conversations, within its membership windows,
// never recalled, deleted, expired or hidden messages, nor those of users it
// blocks — ranked and paged, with snippets; edits are found by their new
// text; bad queries are refused with their codes. Indexing runs beside the
// send path, so every check first waits for a later marker to be findable.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { databasePath } from '../../src/config.js';
import { createClient, ErrorCode, type LonglinkClient, type SearchHit } from '../../src/client/index.js';
import type { TestServer } from '../helpers/server.js';
import { rejected, urlOf, withServer, type Transport } from './support.js';

const T = { timeout: 120_000 };

async function connect(s: TestServer, t: Transport, user: string): Promise<LonglinkClient> {
  const client = createClient({ url: urlOf(s, t), token: await s.token(user, 'd1'), reconnect: false, autoSync: false });
  await client.connect();
  return client;
}

async function withUsers<U extends string>(t: Transport, users: readonly U[], fn: (c: Record<U, LonglinkClient>, s: TestServer) => Promise<void>, overrides: Record<string, string> = {}): Promise<void> {
  await withServer(async (s) => {
    const clients = {} as Record<U, LonglinkClient>;
    try {
      for (const u of users) clients[u] = await connect(s, t, u);
      await fn(clients, s);
    } finally {
      for (const c of Object.values<LonglinkClient>(clients)) await c.close();
    }
  }, overrides);
}

function texts(hits: SearchHit[]): string[] {
  return hits.map((h) => h.message.text).sort();
}

/** Searches until `ready` holds for the hits (indexing is asynchronous), then returns them. */
async function searchUntil(c: LonglinkClient, query: string, ready: (hits: SearchHit[]) => boolean, options: { conversationId?: string } = {}): Promise<SearchHit[]> {
  let hits: SearchHit[] = [];
  const deadline = Date.now() + 10_000;
  for (;;) {
    hits = (await c.search(query, options)).hits;
    if (ready(hits)) return hits;
    if (Date.now() > deadline) assert.fail(`search ${JSON.stringify(query)} never got ready: ${JSON.stringify(texts(hits))}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Sends a marker to the conversation and waits until `reader` finds it: everything written there before is indexed. */
async function indexed(writer: LonglinkClient, reader: LonglinkClient, target: { to?: string; groupId?: string }): Promise<void> {
  const word = `marker${Math.random().toString(36).slice(2, 10)}`;
  await writer.send({ ...target, text: word });
  await searchUntil(reader, word, (hits) => hits.length === 1);
}

for (const t of ['tcp', 'ws'] as const) {
  describe(`search (${t})`, () => {
    test('finds a 1:1 message by whole words and a prefix, with a snippet; a user outside the conversation finds nothing', T, async () => {
      await withUsers(t, ['alice', 'bob', 'carol'], async ({ alice, bob, carol }) => {
        await alice.send({ to: 'bob', text: 'Lunch at the Noon café tomorrow?' });
        await alice.send({ to: 'bob', text: 'dinner instead' });
        const hits = await searchUntil(bob, 'lunch', (h) => h.length === 1);
        assert.equal(hits[0]!.message.text, 'Lunch at the Noon café tomorrow?');
        assert.equal(hits[0]!.message.conversationId, 'u:alice:bob');
        assert.equal(hits[0]!.message.fromUser, 'alice');
        assert.match(hits[0]!.snippet, /\[Lunch\] at the Noon café/);
        assert.deepEqual(texts((await bob.search('lun')).hits), ['Lunch at the Noon café tomorrow?'], 'the last word is a prefix');
        assert.deepEqual(texts((await bob.search('noon LUNCH')).hits), ['Lunch at the Noon café tomorrow?'], 'every word, any case, any order');
        assert.deepEqual(texts((await bob.search('cafe')).hits), ['Lunch at the Noon café tomorrow?'], 'accents are folded');
        assert.deepEqual(texts((await bob.search('lunch dinner')).hits), [], 'all the words must match');
        assert.deepEqual(texts((await alice.search('lunch')).hits), ['Lunch at the Noon café tomorrow?'], 'the sender finds it too');
        assert.deepEqual((await carol.search('lunch')).hits, [], 'carol is not in the conversation');
        await rejected(carol.search('lunch', { conversationId: 'u:alice:bob' }), ErrorCode.FORBIDDEN, 'carol naming the conversation');
      });
    });

    test('a group member finds only what was sent within its membership windows', T, async () => {
      await withUsers(t, ['alice', 'bob', 'carol'], async ({ alice, bob, carol }) => {
        const g = await alice.createGroup('team', ['bob']);
        await alice.send({ groupId: g.groupId, text: 'quarterly plan one (before carol)' });
        await alice.addMembers(g.groupId, ['carol']);
        await alice.send({ groupId: g.groupId, text: 'quarterly plan two (with carol)' });
        await alice.removeMembers(g.groupId, ['bob']);
        await alice.send({ groupId: g.groupId, text: 'quarterly plan three (after bob)' });
        await indexed(alice, alice, { groupId: g.groupId });
        assert.deepEqual(texts((await alice.search('quarterly')).hits), [
          'quarterly plan one (before carol)', 'quarterly plan three (after bob)', 'quarterly plan two (with carol)',
        ]);
        assert.deepEqual(texts((await carol.search('quarterly')).hits), ['quarterly plan three (after bob)', 'quarterly plan two (with carol)'],
          'carol: from her joining on');
        assert.deepEqual(texts((await bob.search('quarterly')).hits), ['quarterly plan one (before carol)', 'quarterly plan two (with carol)'],
          'bob: up to his removal');
        await alice.addMembers(g.groupId, ['bob']);
        await alice.send({ groupId: g.groupId, text: 'quarterly plan four (bob back)' });
        await indexed(alice, bob, { groupId: g.groupId });
        assert.deepEqual(texts((await bob.search('quarterly')).hits), [
          'quarterly plan four (bob back)', 'quarterly plan one (before carol)', 'quarterly plan two (with carol)',
        ], 'bob back: both of his windows, not the gap between');
      });
    });

    test('recalled, deleted and hidden messages are not found; an edit is found by its new text only; a blocked user\'s messages are left out', T, async () => {
      await withUsers(t, ['alice', 'bob'], async ({ alice, bob }) => {
        const recalled = await alice.send({ to: 'bob', text: 'secret gamma' });
        const deleted = await alice.send({ to: 'bob', text: 'secret delta' });
        const edited = await alice.send({ to: 'bob', text: 'secret epsilon' });
        const hidden = await alice.send({ to: 'bob', text: 'secret zeta' });
        await bob.send({ to: 'alice', text: 'secret eta from bob' });
        await searchUntil(bob, 'secret', (h) => h.length === 5);
        await alice.recall('u:alice:bob', recalled.seq);
        await alice.deleteMessage('u:alice:bob', deleted.seq);
        await alice.edit('u:alice:bob', edited.seq, { text: 'public theta' });
        await bob.deleteForMe('u:alice:bob', hidden.seq);
        await indexed(alice, bob, { to: 'bob' });
        assert.deepEqual(texts((await bob.search('secret')).hits), ['secret eta from bob'], 'bob: no recalled, deleted, edited-away or hidden text');
        assert.deepEqual(texts((await alice.search('secret')).hits), ['secret eta from bob', 'secret zeta'], 'alice hid nothing');
        assert.deepEqual(texts((await bob.search('theta')).hits), ['public theta'], 'the edit is found by its new text');
        await bob.block('alice');
        assert.deepEqual(texts((await bob.search('secret')).hits), ['secret eta from bob'], 'bob blocks alice: her messages are left out');
        assert.deepEqual(texts((await bob.search('theta')).hits), []);
        await bob.unblock('alice');
        assert.deepEqual(texts((await bob.search('theta')).hits), ['public theta']);
      });
    });

    test('pages through the hits by cursor, none twice, within one conversation when asked', T, async () => {
      await withUsers(t, ['alice', 'bob', 'carol'], async ({ alice, bob }) => {
        for (let i = 1; i <= 25; i++) await alice.send({ to: 'bob', text: `report number ${i}` });
        await alice.send({ to: 'carol', text: 'report for carol' });
        await searchUntil(alice, 'report', (h) => h.length === 20);
        await indexed(alice, alice, { to: 'carol' });
        const seen: string[] = [];
        let cursor = '';
        let pages = 0;
        do {
          const page = await bob.search('report', { limit: 10, cursor });
          assert.ok(page.hits.length <= 10);
          seen.push(...page.hits.map((h) => h.message.text));
          cursor = page.nextCursor;
          pages++;
        } while (cursor !== '' && pages < 10);
        assert.equal(pages, 3);
        assert.equal(seen.length, 25);
        assert.equal(new Set(seen).size, 25, 'no hit twice');
        const mine = await alice.search('report', { conversationId: 'u:alice:carol', limit: 1000 });
        assert.deepEqual(texts(mine.hits), ['report for carol']);
        assert.equal((await alice.search('report', { limit: 1000 })).hits.length, 26, 'all 26 fit in one page of at most 50');
      });
    });

    test('bad queries are refused with their codes', T, async () => {
      await withUsers(t, ['alice'], async ({ alice }) => {
        await rejected(alice.search(''), ErrorCode.BAD_REQUEST, 'empty');
        await rejected(alice.search('?! ** ()'), ErrorCode.BAD_REQUEST, 'no word');
        await rejected(alice.search('a '.repeat(150)), ErrorCode.BAD_REQUEST, 'over 200 characters');
        await rejected(alice.search('a b c d e f g h i'), ErrorCode.BAD_REQUEST, 'nine words');
        await rejected(alice.search('hello', { cursor: 'garbage' }), ErrorCode.BAD_REQUEST, 'a cursor not ours');
        await rejected(alice.search('hello', { conversationId: 'nope' }), ErrorCode.BAD_REQUEST, 'not a conversation id');
        // FTS syntax is data, not syntax: quotes, stars and NEAR are words or separators, never an error or a match-all.
        assert.deepEqual((await alice.search('"NEAR(a b)" OR * -x')).hits, []);
      });
    });
  });
}

test('at most 200 hits in all: the cursor ends there', T, async () => {
  await withUsers('tcp', ['alice', 'bob'], async ({ alice, bob }) => {
    await Promise.all(Array.from({ length: 230 }, (_, i) => alice.send({ to: 'bob', text: `flood item ${i}` })));
    await searchUntil(bob, 'flood', (h) => h.length === 20);
    await indexed(alice, bob, { to: 'bob' });
    let total = 0;
    let cursor = '';
    for (let i = 0; i < 10; i++) {
      const page = await bob.search('flood', { limit: 50, cursor });
      total += page.hits.length;
      cursor = page.nextCursor;
      if (cursor === '') break;
    }
    assert.equal(total, 200);
    assert.equal(cursor, '');
  });
});

test('with search turned off (LONGLINK_SEARCH=0) nothing is indexed and a search is refused FORBIDDEN', T, async () => {
  await withUsers('tcp', ['alice', 'bob'], async ({ alice, bob }, s) => {
    await alice.send({ to: 'bob', text: 'private words' });
    await alice.send({ to: 'bob', text: 'and more' });
    await rejected(bob.search('private'), ErrorCode.FORBIDDEN, 'search off');
    // Read beside the running server: its messages are there, its text index empty.
    const db = new Database(databasePath(s.config), { readonly: true, fileMustExist: true });
    try {
      assert.equal((db.prepare('SELECT count(*) AS n FROM messages').get() as { n: number }).n, 2);
      assert.equal((db.prepare('SELECT count(*) AS n FROM search_fts').get() as { n: number }).n, 0);
    } finally {
      db.close();
    }
  }, { search: '0' });
});
