// The Store contract on PostgreSQL, against a real server started for this file,
// plus what only a shared, concurrent database adds: several stores (processes)
// on one database, concurrent migrations, races on one idempotency key,
// the change slack under writes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { storeContract } from './store.contract.js';
import { PostgresStore } from '../../src/engines/store-postgres.js';
import { SqliteStore } from '../../src/engines/store-sqlite.js';
import { SendersRefusedError, type Effect, type MessageDraft, type Store } from '../../src/engines/store.js';
import type { Origin } from '../../src/engines/bus.js';
import { Reads } from '../../src/logic/reads.js';
import { cursorToWire, directConversationId, directMembers, messageFromWire, type TimelineEventData } from '../../src/protocol/index.js';
import { startPostgres, type PostgresServer } from '../helpers/services.js';

let server: PostgresServer;
before(async () => {
  server = await startPostgres();
});
after(async () => {
  await server.stop();
});

let n = 0;
/** Every migration, recorded once. */
const VERSIONS = Array.from({ length: 14 }, (_, i) => ({ version: i + 1 }));
const homes = new WeakMap<Store, { url: string; schema?: string }>();

async function openAt(url: string, schema?: string, poolSize?: number, changeSlack?: number): Promise<PostgresStore> {
  const store = await PostgresStore.open({ url, schema, poolSize, ...(changeSlack === undefined ? {} : { changeSlack }) });
  homes.set(store, { url, schema });
  return store;
}

function databaseUrl(database: string): string {
  return `postgres://postgres@127.0.0.1:${server.port}/${database}`;
}

async function sql<R extends pg.QueryResultRow>(text: string, options: { url?: string; schema?: string } = {}): Promise<R[]> {
  const client = new pg.Client({
    connectionString: options.url ?? server.url,
    ...(options.schema ? { options: `-c search_path=${options.schema}` } : {}),
  });
  await client.connect();
  try {
    return (await client.query<R>(text)).rows;
  } finally {
    await client.end();
  }
}

function reopenOf(closed: Store): Promise<Store> {
  const home = homes.get(closed);
  assert.ok(home, 'reopen of a store this file opened');
  return openAt(home.url, home.schema);
}

// Each test on a schema of its own in the server's database: cheap and empty.
storeContract('PostgresStore (a schema per test)', {
  open: (options) => openAt(server.url, `contract_${++n}`, undefined, options?.changeSlack),
  reopen: reopenOf,
});

// Each test on a database of its own, on the default search_path, through a pool of 2.
storeContract('PostgresStore (a database per test, pool of 2)', {
  open: async (options) => {
    const database = `contract_db_${++n}`;
    await sql(`CREATE DATABASE ${database}`);
    return openAt(databaseUrl(database), undefined, 2, options?.changeSlack);
  },
  reopen: reopenOf,
});

const AB = directConversationId('alice', 'bob');
const AC = directConversationId('alice', 'carol');
const BC = directConversationId('bob', 'carol');

let serial = 0;
function draft(conversationId: string, fromUser: string, clientMsgId: string, sentAtMs = 1_700_000_000_000 + ++serial): MessageDraft {
  serial++;
  return {
    conversationId, kind: 'direct', members: directMembers(conversationId)!, fromUser, fromDevice: `${fromUser}-phone`,
    clientMsgId, serverMsgId: `srv-${serial}`, text: `text ${serial}`, sentAtMs,
  };
}

describe('PostgresStore', () => {
  test('migrations: idempotent, and safe when several processes migrate one schema at once', async () => {
    const schema = `migrate_${++n}`;
    const stores = await Promise.all([1, 2, 3, 4].map(() => openAt(server.url, schema)));
    try {
      assert.deepEqual(await sql('SELECT version FROM schema_version ORDER BY version', { schema }), VERSIONS);
      assert.equal((await stores[0]!.append([draft(AB, 'alice', 'm1')]))[0]?.message.seq, 1);
      assert.equal((await stores[3]!.append([draft(AB, 'bob', 'm2')]))[0]?.message.seq, 2);
    } finally {
      for (const s of stores) await s.close();
    }
    const again = await openAt(server.url, schema);
    await again.close();
    assert.deepEqual(await sql('SELECT version FROM schema_version ORDER BY version', { schema }), VERSIONS);
    // Concurrent migrations of the default schema of one new database, too.
    await sql('CREATE DATABASE migrate_db');
    const url = databaseUrl('migrate_db');
    const onDefault = await Promise.all([1, 2, 3].map(() => openAt(url)));
    for (const s of onDefault) await s.close();
    assert.deepEqual(await sql('SELECT version FROM schema_version ORDER BY version', { url }), VERSIONS);
  });

  test('a group send checks its sender again in its own transaction: a removal or mute committed before it wins, and nothing is written', async () => {
    const store = await openAt(server.url, `senders_${++n}`);
    const G = 'g:team';
    let k = 0;
    const group = (fromUser: string, extra: Partial<MessageDraft> = {}): MessageDraft => ({
      conversationId: G, kind: 'group', members: [], fromUser, fromDevice: 'd', clientMsgId: extra.event ? '' : `s-${++k}`,
      serverMsgId: `srv-${++k}`, text: extra.event ? '' : `text ${k}`, sentAtMs: 1000 + k, ...extra,
    });
    try {
      await store.append([group('alice', {
        event: { type: 'group_created', actor: 'alice', name: 'Team', userIds: ['bob', 'carol', 'dave'] },
        effect: { op: 'create-group', groupId: 'team', name: 'Team', owner: 'alice', members: ['bob', 'carol', 'dave'] },
      })]);
      // What the message service checked before: all three were members. Then the group service removed carol and muted dave.
      await store.append([group('alice', { event: { type: 'members_removed', actor: 'alice', userIds: ['carol'] }, effect: { op: 'remove-members', userIds: ['carol'] } })]);
      await store.append([group('alice', { event: { type: 'mute_changed', actor: 'alice', userIds: ['dave'], muted: true }, effect: { op: 'mute', userId: 'dave', muted: true } })]);
      const batch = [group('bob', { checkSender: true }), group('carol', { checkSender: true }), group('dave', { checkSender: true })];
      const err = await store.append(batch).then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof SendersRefusedError, String(err));
      assert.deepEqual([...err.refused].map(([i, e]) => [i, e.codeName]), [[1, 'NOT_MEMBER'], [2, 'MUTED']]);
      assert.equal((await store.after(G, 0, 10)).length, 3, 'nothing of the batch was written');
      const [ok] = await store.append([batch[0]!]);
      assert.equal(ok!.message.seq, 4, 'bob may send: the next seq, no gap');
      await store.append([group('alice', { event: { type: 'dismissed', actor: 'alice' }, effect: { op: 'dismiss' } })]);
      const late = await store.append([group('bob', { checkSender: true })]).then(() => undefined, (e: unknown) => e);
      assert.ok(late instanceof SendersRefusedError);
      assert.equal([...late.refused.values()][0]!.codeName, 'GROUP_DISMISSED');
    } finally {
      await store.close();
    }
  });

  test('schema names: lowercase identifiers, reserved words included; anything else is refused', async () => {
    await assert.rejects(PostgresStore.open({ url: server.url, schema: 'Bad; DROP' }), /schema must be/);
    const store = await openAt(server.url, 'select');
    try {
      assert.equal((await store.append([draft(AB, 'alice', 'in-select')]))[0]?.message.seq, 1);
      assert.deepEqual(await sql('SELECT count(*)::int AS n FROM "select".messages'), [{ n: 1 }]);
    } finally {
      await store.close();
    }
  });

  test('two stores (processes) appending batches to the same conversations at once: no gaps, no deadlocks', async () => {
    const schema = `race_${++n}`;
    const [one, two] = [await openAt(server.url, schema, 4), await openAt(server.url, schema, 4)];
    try {
      // Each batch touches all three conversations, in opposite orders from the two stores.
      const batch = (store: string, b: number, order: string[]) =>
        Array.from({ length: 12 }, (_, i) => {
          const c = order[i % 3]!;
          return draft(c, directMembers(c)![i % 2]!, `${store}-${b}-${i}`);
        });
      const work = [
        ...Array.from({ length: 15 }, (_, b) => one.append(batch('one', b, [AB, AC, BC]))),
        ...Array.from({ length: 15 }, (_, b) => two.append(batch('two', b, [BC, AC, AB]))),
      ];
      const results = (await Promise.all(work)).flat();
      assert.equal(results.length, 360);
      assert.ok(results.every((r) => !r.duplicate));
      for (const c of [AB, AC, BC]) {
        const mine = results.filter((r) => r.message.conversationId === c).map((r) => r.message.seq).sort((a, b) => a - b);
        assert.deepEqual(mine, Array.from({ length: 120 }, (_, i) => i + 1), `${c}: every seq once`);
        const stored = await one.after(c, 0, 1000);
        assert.deepEqual(stored.map((m) => m.seq), mine);
        // What each append returned is what was stored at that seq.
        const bySeq = new Map(results.filter((r) => r.message.conversationId === c).map((r) => [r.message.seq, r.message]));
        for (const m of stored) assert.deepEqual(m, bySeq.get(m.seq));
      }
      // A batch's messages of one conversation are consecutive: the row lock holds to commit.
      for (const [i] of work.entries()) {
        const ofBatch = results.slice(i * 12, i * 12 + 12).filter((r) => r.message.conversationId === AB).map((r) => r.message.seq);
        assert.deepEqual(ofBatch, ofBatch.map((_, k) => ofBatch[0]! + k));
      }
    } finally {
      await one.close();
      await two.close();
    }
  });

  test('appends and acks over the same member rows, in opposite orders, from two stores at once: every ack lands, no deadlock', async () => {
    // Change slack 0: every append writes every member row of its conversations (the change index), as acks write them
    // (delivered marks). The appends list their conversations in one order, the acks in the other.
    const database = `lock_order_${++n}`;
    await sql(`CREATE DATABASE ${database}`);
    const url = databaseUrl(database);
    const [writer, acker] = [await openAt(url, undefined, 4, 0), await openAt(url, undefined, 4, 0)];
    const peers = Array.from({ length: 24 }, (_, i) => `p${String(i).padStart(2, '0')}`);
    const conversations = peers.map((p) => directConversationId('alice', p));
    const deadlocks = async () => Number((await sql<{ n: string }>(`SELECT deadlocks AS n FROM pg_stat_database WHERE datname = '${database}'`))[0]!.n);
    const before = await deadlocks();
    const last = new Map<string, number>();
    const failed: unknown[] = [];
    try {
      for (const r of await writer.append(conversations.map((c, i) => draft(c, peers[i]!, `hello-${c}`)))) last.set(r.message.conversationId, r.message.seq);
      let writing = true;
      const appends = Array.from({ length: 4 }, async (_, w) => {
        for (let b = 0; b < 15; b++) {
          // Each message from the peer, then one from alice: both member rows of every conversation, in ascending order.
          const batch = conversations.flatMap((c, i) => [draft(c, peers[i]!, `w${w}-${b}-${c}`), draft(c, 'alice', `a${w}-${b}-${c}`)]);
          for (const r of await writer.append(batch)) last.set(r.message.conversationId, Math.max(last.get(r.message.conversationId) ?? 0, r.message.seq));
        }
      });
      // Alice's phone and each peer's phone ack what they got, conversations in descending order.
      const acks = [['alice'], peers].map(async (users) => {
        while (writing) {
          const updates = [...conversations].reverse().flatMap((c) => users.filter((u) => directMembers(c)!.includes(u))
            .map((userId) => ({ userId, deviceId: 'phone', conversationId: c, seq: last.get(c)! })));
          await acker.advanceDelivered(updates).catch((e: unknown) => failed.push(e));
        }
      });
      await Promise.all(appends);
      writing = false;
      await Promise.all(acks);
      assert.deepEqual(failed.map(String), [], 'every ack batch landed');
      const final = conversations.map((c) => ({ userId: 'alice', deviceId: 'phone', conversationId: c, seq: last.get(c)! }));
      await acker.advanceDelivered(final);
      assert.deepEqual(await acker.delivered('alice', 'phone'), new Map(final.map((u) => [u.conversationId, u.seq])));
    } finally {
      await writer.close();
      await acker.close();
    }
    // A deadlock's victim counts it (an append's is retried, so only the count shows it) when its session ends.
    await sleep(1000);
    assert.equal(await deadlocks(), before, 'no deadlock');
  });

  test('the change slack: a busy 1:1\'s member rows are not written per message; devices syncing meanwhile miss nothing', async () => {
    const schema = `slack_${++n}`;
    const [writerStore, readerStore] = [await openAt(server.url, schema, 4, 16), await openAt(server.url, schema, 4, 16)];
    const rowVersion = async (userId: string) =>
      (await sql<{ v: string }>(`SELECT xmin::text AS v FROM members WHERE user_id = '${userId}' AND conversation_id = '${AB}'`, { schema }))[0]!.v;
    try {
      await writerStore.append([draft(AB, 'bob', 'first')]);
      const alice = await rowVersion('alice');
      for (let i = 0; i < 5; i++) await writerStore.append([draft(AB, 'bob', `busy-${i}`)]);
      assert.equal(await rowVersion('alice'), alice, 'her row: within the slack, not written again');
      // Transactions go by (anything that writes draws an id): past the slack, the next message writes it again.
      for (let i = 0; i < 20; i++) await writerStore.markRead(AB, 'bob', 1);
      await writerStore.append([draft(AB, 'bob', 'later')]);
      assert.notEqual(await rowVersion('alice'), alice, 'past the slack: written');

      // Meanwhile devices sync with their tokens while batches commit: each gets every message once, in order.
      const reads = new Reads({ syncPageLimit: 50, historyPageLimit: 100, maxBytes: 256 * 1024 }, { store: readerStore });
      const peers = ['p0', 'p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7'].map((p) => directConversationId('alice', p));
      const stop = { now: false };
      let sent = 0;
      const writing = (async () => {
        for (let b = 0; !stop.now && b < 300; b++) {
          await writerStore.append(peers.filter((_, i) => (b + i) % 3 === 0).map((c) => draft(c, directMembers(c)!.find((u) => u !== 'alice')!, `w-${b}-${c}`)));
          sent++;
        }
      })();
      // A device keeps its cursors and token from pass to pass, as the SDK does.
      const device = async (deviceId: string, state: { base: Map<string, number>; token: string }, passes: number) => {
        const { base } = state;
        for (let round = 0; round < passes; round++) {
          for (let page = 0; page < 1000; page++) {
            const reply = await reads.sync({ userId: 'alice', deviceId } as Origin, {
              cursors: [...base].map(([id, seq]) => cursorToWire(id, seq)), conversationIds: [], limit: 7, syncToken: state.token,
            } as never) as { case: 'syncResult'; value: { messages: never[]; cursors: { conversationId: string; seq: bigint }[]; hasMore: boolean; syncToken: string } };
            const seen = new Set<string>();
            for (const m of reply.value.messages.map(messageFromWire)) {
              if (!seen.has(m.conversationId)) base.set(m.conversationId, Math.max(base.get(m.conversationId) ?? 0, m.seq - 1));
              seen.add(m.conversationId);
              assert.equal(m.seq, (base.get(m.conversationId) ?? 0) + 1, `${deviceId}: ${m.conversationId} #${m.seq} once, in order`);
              base.set(m.conversationId, m.seq);
            }
            for (const c of reply.value.cursors) if (!seen.has(c.conversationId)) base.set(c.conversationId, Math.max(base.get(c.conversationId) ?? 0, Number(c.seq)));
            state.token = reply.value.syncToken;
            if (!reply.value.hasMore) break;
          }
        }
      };
      const phone = { base: new Map<string, number>(), token: '' };
      const tablet = { base: new Map<string, number>(), token: '' };
      await Promise.all([device('phone', phone, 40), device('tablet', tablet, 40)]);
      stop.now = true;
      await writing;
      assert.ok(sent > 0);
      // One more pass each, after the last write, from the token the last pass left: everything, nothing twice.
      await Promise.all([device('phone', phone, 1), device('tablet', tablet, 1)]);
      for (const c of peers) {
        const lastSeq = (await readerStore.after(c, 0, 10_000)).at(-1)?.seq ?? 0;
        assert.equal(phone.base.get(c) ?? 0, lastSeq, `phone ${c}`);
        assert.equal(tablet.base.get(c) ?? 0, lastSeq, `tablet ${c}`);
      }
      // And a device that lost its data (same device id, no token) reads it all again.
      const wiped = { base: new Map<string, number>(), token: '' };
      await device('phone', wiped, 1);
      assert.deepEqual(wiped.base, phone.base);
    } finally {
      await writerStore.close();
      await readerStore.close();
    }
  });

  test('one (fromUser, clientMsgId) sent through two stores at once is stored once', async () => {
    const schema = `dedupe_${++n}`;
    const [one, two] = [await openAt(server.url, schema), await openAt(server.url, schema)];
    try {
      await one.append([draft(AB, 'alice', 'warm-up')]);
      for (let i = 0; i < 20; i++) {
        const [a, b] = await Promise.all([
          one.append([draft(AB, 'alice', `same-${i}`), draft(AB, 'bob', `other-one-${i}`)]),
          two.append([draft(AB, 'bob', `other-two-${i}`), draft(AB, 'alice', `same-${i}`)]),
        ]);
        const pair = [a[0]!, b[1]!];
        assert.deepEqual(pair.map((r) => r.duplicate).sort(), [false, true], `race ${i}: one stored, one duplicate`);
        assert.deepEqual(pair[0]!.message.seq, pair[1]!.message.seq);
        assert.deepEqual(pair.find((r) => r.duplicate)!.message, pair.find((r) => !r.duplicate)!.message);
      }
      const stored = await two.after(AB, 0, 1000);
      assert.equal(stored.length, 1 + 20 * 3);
      assert.deepEqual(stored.map((m) => m.seq), Array.from({ length: 61 }, (_, i) => i + 1));
    } finally {
      await one.close();
      await two.close();
    }
  });

  test('retention on two nodes at once, while writes (recalls of old messages too) go on: each message removed once, no deadlock, seqs go on', async () => {
    const schema = `retention_${++n}`;
    const [one, two] = [await openAt(server.url, schema, 4), await openAt(server.url, schema, 4)];
    try {
      const OLD = 1_000_000;
      const NEW = 3_000_000;
      const conversations = [AB, AC, BC];
      for (let b = 0; b < 10; b++) {
        await one.append(Array.from({ length: 30 }, (_, i) => {
          const c = conversations[(b + i) % 3]!;
          return draft(c, directMembers(c)![i % 2]!, `old-${b}-${i}`, OLD + b * 30 + i);
        }));
      }
      let removed = 0;
      const expire = async (store: Store) => {
        for (let i = 0; i < 200 && removed < 300; i++) {
          const n = await store.expireBefore(2_000_000, 7);
          removed += n;
          await new Promise((r) => setImmediate(r));
        }
      };
      const write = async (store: Store, who: string) => {
        for (let i = 0; i < 20; i++) {
          const c = conversations[i % 3]!;
          const [from] = directMembers(c)!;
          const recall: MessageDraft = {
            ...draft(c, from!, `${who}-recall-${i}`, NEW + i), text: '',
            event: { type: 'recalled', actor: from!, targetSeq: 1 + i }, effect: { op: 'recall', targetSeq: 1 + i, by: from! },
          };
          await store.append([draft(c, from!, `${who}-new-${i}`, NEW + i), recall]);
        }
      };
      await Promise.all([expire(one), expire(two), write(one, 'one'), write(two, 'two')]);
      while (removed < 300) {
        const n = await one.expireBefore(2_000_000, 50);
        if (n === 0) break;
        removed += n;
      }
      assert.equal(removed, 300, 'every old message removed, once');
      assert.equal(await one.expireBefore(2_000_000, 50), 0);
      for (const c of conversations) {
        const held = await two.after(c, 0, 1000);
        assert.ok(held.every((m) => m.sentAtMs >= NEW), `${c}: only new messages held`);
        assert.deepEqual(held.map((m) => m.seq), held.map((_, i) => 101 + i), `${c}: seqs go on after the 100 old ones`);
        const state = (await two.listForUser(directMembers(c)![0]!)).find((x) => x.conversationId === c);
        assert.deepEqual([state?.retainedFromSeq, state?.lastSeq], [101, 100 + held.length]);
      }
    } finally {
      await one.close();
      await two.close();
    }
  });

  test('a 1,000-message batch appends in one call', async () => {
    const store = await openAt(server.url, `big_${++n}`);
    try {
      const drafts = Array.from({ length: 1000 }, (_, i) => {
        const c = i % 4 === 0 ? AC : AB;
        // Every 50th draft has no idempotency key; every 100th repeats the one before it.
        const id = i % 50 === 0 ? '' : i % 100 === 1 ? `big-${i - 1}` : `big-${i}`;
        return draft(c, directMembers(c)![i % 2]!, id);
      });
      const results = await store.append(drafts);
      assert.equal(results.length, 1000);
      const ab = await store.after(AB, 0, 2000);
      const ac = await store.after(AC, 0, 2000);
      assert.equal(ab.length + ac.length, results.filter((r) => !r.duplicate).length);
      assert.deepEqual(ab.map((m) => m.seq), ab.map((_, i) => i + 1));
      assert.deepEqual(ac.map((m) => m.seq), ac.map((_, i) => i + 1));
      assert.equal((await store.listForUser('alice')).find((c) => c.conversationId === AB)?.lastSeq, ab.length);
    } finally {
      await store.close();
    }
  });

  test('BIGINT columns come back as JS numbers', async () => {
    const store = await openAt(server.url, `numbers_${++n}`);
    try {
      const big = 2 ** 52 + 1;
      await store.append([draft(AB, 'alice', 'n1', big), draft(AB, 'bob', 'n2', big + 2)]);
      const [m] = await store.after(AB, 0, 1);
      assert.equal(typeof m!.seq, 'number');
      assert.equal(m!.sentAtMs, big);
      const [c] = await store.listForUser('alice');
      assert.deepEqual([typeof c!.lastSeq, c!.lastAtMs, c!.readSeq], ['number', big + 2, 1]);
      assert.equal(await store.unreadCount(AB, 'alice', 0, 2), 1);
      assert.equal(await store.markRead(AB, 'alice', 2), 2);
    } finally {
      await store.close();
    }
  });

  test('text PostgreSQL cannot hold (a NUL character) rejects the whole batch', async () => {
    const store = await openAt(server.url, `nul_${++n}`);
    try {
      await assert.rejects(store.append([draft(AB, 'alice', 'fine'), { ...draft(AB, 'bob', 'nul'), text: 'a\u0000b' }]));
      assert.deepEqual(await store.after(AB, 0, 10), []);
      assert.equal((await store.append([draft(AB, 'alice', 'fine')]))[0]?.message.seq, 1);
    } finally {
      await store.close();
    }
  });

  test('does what SqliteStore does on a random workload of messages, duplicates and group events', async () => {
    const pgStore = await openAt(server.url, `twin_${++n}`, 3);
    const sqlite = new SqliteStore({ path: ':memory:' });
    let seed = 12345;
    const random = (k: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % k;
    };
    const pick = <T>(items: readonly T[]): T => items[random(items.length)]!;
    const users = ['alice', 'bob', 'carol', 'dave', 'erin'];
    const groups = ['g:team', 'g:club'];
    const conversations = [AB, AC, BC, ...groups];
    let at = 1_700_000_000_000;
    let k = 0;
    const groupEffect = (conversationId: string): { event: TimelineEventData; effect: Effect } => {
      const actor = pick(users);
      const someone = pick(users);
      switch (random(8)) {
        case 0: {
          const members = [pick(users), pick(users), pick(users)];
          return {
            event: { type: 'group_created', actor, name: conversationId, userIds: members },
            effect: { op: 'create-group', groupId: conversationId.slice(2), name: conversationId, owner: actor, members },
          };
        }
        case 1: return { event: { type: 'members_added', actor, userIds: [someone, someone] }, effect: { op: 'add-members', userIds: [someone, someone] } };
        case 2: return { event: { type: 'members_removed', actor, userIds: [someone] }, effect: { op: 'remove-members', userIds: [someone] } };
        case 3: {
          const role = pick(['owner', 'admin', 'member'] as const);
          return { event: { type: 'role_changed', actor, userIds: [someone], role }, effect: { op: 'set-role', userId: someone, role } };
        }
        case 4: return { event: { type: 'mute_changed', actor, userIds: [someone], muted: true }, effect: { op: 'mute', userId: someone, muted: random(2) === 0 } };
        case 5: return { event: { type: 'mute_changed', actor, muted: true }, effect: { op: 'mute', muted: random(2) === 0 } };
        case 6: return { event: { type: 'dismissed', actor }, effect: { op: 'dismiss' } };
        default: {
          const targetSeq = 1 + random(40);
          return { event: { type: 'recalled', actor, targetSeq }, effect: { op: 'recall', targetSeq, by: actor } };
        }
      }
    };
    const randomDraft = (): MessageDraft => {
      const conversationId = pick(conversations);
      const group = conversationId.startsWith('g:');
      const fromUser = group ? pick(users) : pick(directMembers(conversationId)!);
      at += random(3) - 1; // sometimes earlier than the last: last_at_ms keeps the max
      k++;
      const base: MessageDraft = {
        conversationId, kind: group ? 'group' : 'direct', members: group ? [] : directMembers(conversationId)!,
        fromUser, fromDevice: `${fromUser}-${random(2)}`, clientMsgId: random(5) === 0 ? '' : `id-${random(60)}`,
        serverMsgId: `srv-${k}`, text: `text ${k}`, sentAtMs: at,
      };
      if (group && random(3) === 0) return { ...base, text: '', clientMsgId: random(2) === 0 ? '' : base.clientMsgId, ...groupEffect(conversationId) };
      if (!group && random(10) === 0) {
        const targetSeq = 1 + random(30);
        return { ...base, text: '', event: { type: 'recalled', actor: fromUser, targetSeq }, effect: { op: 'recall', targetSeq, by: fromUser } };
      }
      return base;
    };
    const outcome = async <T>(work: Promise<T>): Promise<{ ok: T } | { failed: true }> => {
      try {
        return { ok: await work };
      } catch {
        return { failed: true };
      }
    };
    let expired = 0;
    try {
      for (let round = 0; round < 60; round++) {
        const drafts = Array.from({ length: 1 + random(12) }, randomDraft);
        const [fromSqlite, fromPg] = [await outcome(sqlite.append(drafts)), await outcome(pgStore.append(drafts))];
        assert.deepEqual(fromPg, fromSqlite, `round ${round}: append`);
        const acks = Array.from({ length: random(4) }, () => ({
          userId: pick(users), deviceId: `d${random(2)}`, conversationId: pick([...conversations, 'nowhere']), seq: random(50) - 2,
        }));
        await sqlite.advanceDelivered(acks);
        await pgStore.advanceDelivered(acks);
        if (round % 7 === 6) {
          // Retention now and then: the same head goes (both in storage order), the same floors stay.
          const [cutoff, limit] = [at - 5 + random(20), 1 + random(15)];
          const removed = await sqlite.expireBefore(cutoff, limit);
          assert.equal(await pgStore.expireBefore(cutoff, limit), removed, `round ${round}: expireBefore`);
          expired += removed;
        }
        const read = { conversationId: pick(conversations), userId: pick(users), seq: random(40) };
        assert.equal(await pgStore.markRead(read.conversationId, read.userId, read.seq), await sqlite.markRead(read.conversationId, read.userId, read.seq));
        // The reads' arguments, drawn once, so both stores answer the same questions.
        const asks = conversations.map((c) => ({
          c, afterSeq: random(3), afterLimit: 1 + random(50), beforeSeq: random(30) - 2, beforeLimit: 1 + random(10), minSeq: random(5),
          seq: 1 + random(20), reader: pick(users), unreadAfter: random(10), unreadMax: random(40),
        }));
        const view = async (s: Store) => ({
          conversations: await Promise.all(asks.map(async (a) => ({
            after: await s.after(a.c, a.afterSeq, a.afterLimit),
            before: await s.before(a.c, a.beforeSeq, a.beforeLimit, a.minSeq),
            message: await s.message(a.c, a.seq),
            members: await s.members(a.c),
            readCursors: [...(await s.readCursors(a.c))].sort(),
            unread: await s.unreadCount(a.c, a.reader, a.unreadAfter, a.unreadMax),
            memberships: await Promise.all(users.map(async (u) => [await s.membership(a.c, u), await s.isMember(a.c, u)])),
          }))),
          users: await Promise.all(users.map(async (u) => ({
            list: await s.listForUser(u), d0: [...(await s.delivered(u, 'd0'))].sort(), d1: [...(await s.delivered(u, 'd1'))].sort(),
          }))),
          groups: await Promise.all(groups.map(async (g) => [await s.group(g.slice(2)), await s.groupMeta(g.slice(2))])),
        });
        const expected = await view(sqlite);
        assert.deepEqual(await view(pgStore), expected, `round ${round}: state`);
      }
      assert.ok(expired > 0, 'retention removed some');
    } finally {
      await pgStore.close();
      await sqlite.close();
    }
  });

  test('close is idempotent', async () => {
    const store = await openAt(server.url, `close_${++n}`);
    await store.close();
    await store.close();
  });

  // Last: it restarts the server this file shares.
  test('carries on after the server restarts', async () => {
    const store = await openAt(server.url, `restart_${++n}`, 3);
    try {
      await Promise.all([1, 2, 3].map((i) => store.append([draft(AB, 'alice', `before-${i}`)])));
      await server.restart();
      const [next] = await store.append([draft(AB, 'bob', 'after')]);
      assert.equal(next?.message.seq, 4);
      assert.deepEqual((await store.after(AB, 0, 10)).map((m) => m.seq), [1, 2, 3, 4]);
    } finally {
      await store.close();
    }
  });
});
