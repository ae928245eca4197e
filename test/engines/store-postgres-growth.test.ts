// PostgreSQL that grows (issue 19), against a real server started for this
// file: messages partitioned by storage order (partitions made as retention
// rolls, messages landing in them, a database from before partitions
// converted in place), retention dropping whole partitions while a device
// syncs, and a sync that reads only the conversations that changed since the
// client's sync token (proved on the statement's plan: a user in 5,000
// conversations of which 3 changed reads 3 rows), a client without one
// reading everything again, and devices syncing while writers append (the
// change slack).
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { PostgresStore } from '../../src/engines/store-postgres.js';
import { CHANGE_ALWAYS, CHANGE_FANOUT_MAX, type MessageDraft } from '../../src/engines/store.js';
import type { Origin } from '../../src/engines/bus.js';
import { Reads, decodeSyncToken } from '../../src/logic/reads.js';
import { cursorToWire, directConversationId, directMembers, messageFromWire, type ChatMessage } from '../../src/protocol/index.js';
import { startPostgres, type PostgresServer } from '../helpers/services.js';

let server: PostgresServer;
before(async () => {
  server = await startPostgres();
});
after(async () => {
  await server.stop();
});

const DAY_MS = 86_400_000;
let n = 0;
const opened: PostgresStore[] = [];
async function open(schema: string, migrations?: number, changeSlack?: number): Promise<PostgresStore> {
  const store = await PostgresStore.open({
    url: server.url, schema, poolSize: 4, ...(migrations === undefined ? {} : { migrations }), ...(changeSlack === undefined ? {} : { changeSlack }),
  });
  opened.push(store);
  return store;
}
after(async () => {
  for (const s of opened) await s.close();
});

async function sql<R extends pg.QueryResultRow>(schema: string, text: string, values: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: server.url, options: `-c search_path=${schema}` });
  await client.connect();
  try {
    return (await client.query<R>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/** How many rows of each partition of `messages`, by partition name. */
async function rowsByPartition(schema: string): Promise<Record<string, number>> {
  const rows = await sql<{ part: string; n: number }>(schema, 'SELECT tableoid::regclass::text AS part, count(*)::int AS n FROM messages GROUP BY 1 ORDER BY 1');
  return Object.fromEntries(rows.map((r) => [r.part, r.n]));
}

/** The partitions attached to `messages`. */
async function partitions(schema: string): Promise<string[]> {
  const rows = await sql<{ name: string }>(schema,
    `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'messages'::regclass ORDER BY c.relname`);
  return rows.map((r) => r.name);
}

let serial = 0;
function draft(conversationId: string, fromUser: string, sentAtMs: number, clientMsgId = `k-${++serial}`): MessageDraft {
  serial++;
  return {
    conversationId, kind: 'direct', members: directMembers(conversationId)!, fromUser, fromDevice: `${fromUser}-phone`,
    clientMsgId, serverMsgId: `srv-${serial}`, text: `text ${serial}`, sentAtMs,
  };
}

/** `count` messages to alice from the other member of `conversationId`, stamped from `at` on. */
function toAlice(conversationId: string, count: number, at: number): MessageDraft[] {
  const peer = directMembers(conversationId)!.find((u) => u !== 'alice')!;
  return Array.from({ length: count }, (_, i) => draft(conversationId, peer, at + i));
}

const seqs = (ms: ChatMessage[]) => ms.map((m) => m.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * A device syncing through the storage service's sync (logic/reads.ts) as the
 * SDK does: its cursors and sync token carried from page to page, a
 * conversation's base moved to just before the first message of it a page
 * brings, every message delivered once (one at or below the base is a
 * duplicate: the test fails).
 */
class Device {
  readonly base = new Map<string, number>();
  readonly got = new Map<string, number[]>();
  /** The last token a page gave. */
  token: string | undefined;
  private readonly reads: Reads;

  constructor(store: PostgresStore, readonly userId: string, readonly deviceId: string, readonly limit: number) {
    this.reads = new Reads({ syncPageLimit: 200, historyPageLimit: 100, maxBytes: 256 * 1024 }, { store });
  }

  /** One page; whether the server has more. */
  async page(): Promise<boolean> {
    const reply = await this.reads.sync({ userId: this.userId, deviceId: this.deviceId } as Origin, {
      cursors: [...this.base].map(([id, seq]) => cursorToWire(id, seq)), conversationIds: [], limit: this.limit, syncToken: this.token ?? '',
    } as never);
    assert.equal(reply?.case, 'syncResult');
    const result = (reply as unknown as {
      value: { messages: never[]; cursors: { conversationId: string; seq: bigint }[]; hasMore: boolean; syncToken: string };
    }).value;
    const messages = result.messages.map(messageFromWire);
    const first = new Set<string>();
    for (const m of messages) {
      const base = this.base.get(m.conversationId) ?? 0;
      assert.ok(m.seq > base, `${this.deviceId}: ${m.conversationId} #${m.seq} again (its base is ${base})`);
      if (!first.has(m.conversationId)) {
        first.add(m.conversationId);
        this.base.set(m.conversationId, m.seq - 1);
      }
      assert.equal(m.seq, this.base.get(m.conversationId)! + 1, `${this.deviceId}: ${m.conversationId} in order`);
      this.base.set(m.conversationId, m.seq);
      this.got.set(m.conversationId, [...(this.got.get(m.conversationId) ?? []), m.seq]);
    }
    for (const c of result.cursors) {
      if (!first.has(c.conversationId)) this.base.set(c.conversationId, Math.max(this.base.get(c.conversationId) ?? 0, Number(c.seq)));
    }
    assert.notEqual(result.syncToken, '', 'a full sync page carries a token');
    this.token = result.syncToken;
    return result.hasMore;
  }

  /** Where its next sync's scan starts (its token's place), for explainSyncScan. */
  scanFrom(): { delivered: false; from?: { changeNo: number; conversationId: string } } {
    const t = this.token === undefined ? undefined : decodeSyncToken(this.token);
    return t ? { delivered: false, from: t.place } : { delivered: false };
  }

  async syncAll(between?: () => Promise<unknown>): Promise<number> {
    for (let pages = 1; pages <= 10_000; pages++) {
      const more = await this.page();
      if (!more) return pages;
      await between?.();
    }
    assert.fail('sync did not end');
  }
}

/** Rows each relation's scans returned, over a plan from EXPLAIN (ANALYZE, FORMAT JSON): rows × loops of every node on it. */
function rowsRead(plan: unknown): Record<string, number> {
  const out: Record<string, number> = {};
  const walk = (node: Record<string, unknown>) => {
    const relation = node['Relation Name'];
    if (typeof relation === 'string') out[relation] = (out[relation] ?? 0) + Number(node['Actual Rows']) * Number(node['Actual Loops']);
    for (const child of (node.Plans as Record<string, unknown>[] | undefined) ?? []) walk(child);
  };
  walk((plan as { Plan: Record<string, unknown> }[])[0]!.Plan);
  return out;
}

const AB = directConversationId('alice', 'bob');
const AC = directConversationId('alice', 'carol');
const AD = directConversationId('alice', 'dave');

describe('PostgresStore: partitions', () => {
  test('messages land in the partitions retention rolls to; reads, history and idempotency keys span them', async () => {
    const schema = `parts_${++n}`;
    const store = await open(schema);
    const NOW = Date.now();
    const [k1] = await store.append([draft(AB, 'bob', NOW, 'first'), draft(AB, 'alice', NOW + 1), draft(AB, 'bob', NOW + 2)]);
    assert.deepEqual(await partitions(schema), ['messages_0']);
    // A roll (a span of 0: now), nothing due (a cutoff of 0): the next messages go to a new partition.
    assert.deepEqual(await store.expireByPartition(0, 0, 100), { removed: 0, more: true });
    assert.deepEqual(await store.expireByPartition(0, 0, 100), { removed: 0, more: false }, 'the new one is empty: no roll; nothing due');
    await store.append([...toAlice(AB, 3, NOW + 10), ...toAlice(AC, 2, NOW + 20)]);
    assert.deepEqual(await store.expireByPartition(0, 0, 100), { removed: 0, more: true });
    await store.append(toAlice(AB, 1, NOW + 30));
    assert.deepEqual(await partitions(schema), ['messages_0', 'messages_1', 'messages_2']);
    assert.deepEqual(await rowsByPartition(schema), { messages_0: 3, messages_1: 5, messages_2: 1 });
    const ids = await sql<{ part: string; lo: string; hi: string }>(schema,
      'SELECT tableoid::regclass::text AS part, min(id)::text AS lo, max(id)::text AS hi FROM messages GROUP BY 1 ORDER BY 1');
    assert.deepEqual(ids.map((r) => [r.part, r.lo]), [['messages_0', '1'], ['messages_1', String(2 ** 32)], ['messages_2', String(2 ** 33)]]);

    assert.deepEqual(seqs(await store.after(AB, 0, 100)), range(1, 7));
    assert.deepEqual(seqs(await store.after(AB, 2, 3)), [3, 4, 5]);
    assert.deepEqual(seqs(await store.before(AB, 0, 5)), range(3, 7));
    assert.equal((await store.message(AB, 4))?.sentAtMs, NOW + 10);
    // A resend of a key stored two partitions back is the same message; nothing new is stored.
    const [again] = await store.append([{ ...draft(AB, 'bob', NOW + 40), clientMsgId: 'first' }]);
    assert.deepEqual(again, { message: k1!.message, duplicate: true });
    assert.equal(await store.messageByRequest('bob', 'first').then((m) => m?.seq), 1);
    assert.deepEqual(await rowsByPartition(schema), { messages_0: 3, messages_1: 5, messages_2: 1 });
    // One key sent by two stores (processes) at once, right across a roll: stored once.
    const other = await open(schema);
    for (let i = 0; i < 5; i++) {
      const same = draft(AC, 'carol', NOW + 50 + i, `race-${i}`);
      const [a, b] = await Promise.all([store.append([same]), other.append([same]), store.expireByPartition(0, 0, 100)]);
      assert.deepEqual([a[0]!.duplicate, b[0]!.duplicate].sort(), [false, true], `race ${i}`);
      assert.equal(a[0]!.message.seq, b[0]!.message.seq);
    }
    assert.deepEqual(seqs(await store.after(AC, 0, 100)), range(1, 7));
  });

  test('a database from before partitions is converted in place: every row kept in the first partition, ids and seqs go on; its due head is expired row by row until it goes whole', async () => {
    const schema = `legacy_${++n}`;
    await (await open(schema, 9)).close();
    const OLD = 1_000_000;
    const NEW = 3_000_000;
    // As version 9 left it: AB 1..50 old, AC 1..20 old, AB 51..100 new, in that storage order.
    await sql(schema, `INSERT INTO conversations (id, kind, last_seq, last_at_ms) VALUES ($1, 'direct', 100, $3), ($2, 'direct', 20, $4)`, [AB, AC, NEW + 99, OLD + 99]);
    await sql(schema, `INSERT INTO members (user_id, conversation_id, joined_at_ms) VALUES ('alice', $1, 0), ('bob', $1, 0), ('alice', $2, 0), ('carol', $2, 0)`, [AB, AC]);
    const insert = `INSERT INTO messages (conversation_id, seq, server_msg_id, from_user, from_device, client_msg_id, text, sent_at_ms)
      SELECT $1, s, 'srv-' || $1 || s, $2, 'd', 'key-' || $1 || s, 'legacy ' || s, $3 + s FROM generate_series($4::int, $5::int) s`;
    await sql(schema, insert, [AB, 'bob', OLD, 1, 50]);
    await sql(schema, insert, [AC, 'carol', OLD, 1, 20]);
    await sql(schema, insert, [AB, 'bob', NEW, 51, 100]);

    const store = await open(schema);
    assert.deepEqual((await sql<{ v: number }>(schema, 'SELECT max(version) AS v FROM schema_version'))[0]?.v, 14, 'migrated to the latest version');
    assert.deepEqual(await partitions(schema), ['messages_0']);
    assert.deepEqual(await rowsByPartition(schema), { messages_0: 120 });
    const ab = await store.after(AB, 0, 1000);
    assert.deepEqual(seqs(ab), range(1, 100));
    assert.deepEqual([ab[0]?.text, ab[0]?.clientMsgId, ab[99]?.sentAtMs], ['legacy 1', `key-${AB}1`, NEW + 100]);
    assert.deepEqual((await store.append([draft(AB, 'bob', NEW + 200, `key-${AB}7`)]))[0]?.duplicate, true, 'an old key still dedupes');
    const [next] = await store.append([draft(AB, 'alice', NEW + 201)]);
    assert.equal(next?.message.seq, 101);
    assert.deepEqual(await sql(schema, `SELECT id::int, tableoid::regclass::text AS part FROM messages WHERE conversation_id = $1 AND seq = 101`, [AB]),
      [{ id: 121, part: 'messages_0' }], 'the identity goes on after the highest id');
    // A device that never synced reads everything once (no token: from before every row).
    const phone = new Device(store, 'alice', 'phone', 200);
    await phone.syncAll();
    assert.deepEqual([phone.got.get(AB)?.length, phone.got.get(AC)?.length], [101, 20]);

    // Retention, no roll yet: the rows from before partitions go row by row, the due head first.
    const CUTOFF = 2_000_000;
    assert.deepEqual(await store.expireByPartition(CUTOFF, DAY_MS, 1000), { removed: 70, more: false });
    assert.deepEqual(await rowsByPartition(schema), { messages_0: 51 });
    assert.deepEqual((await store.listForUser('alice')).map((c) => [c.conversationId, c.retainedFromSeq]).sort(), [[AB, 51], [AC, 21]]);
    // Rolled, everything due: the first partition goes whole; the new one stays.
    assert.deepEqual(await store.expireByPartition(CUTOFF, 0, 1000), { removed: 0, more: true });
    await store.append(toAlice(AB, 2, Date.now()));
    let removed = 0;
    for (let i = 0; i < 10; i++) {
      const step = await store.expireByPartition(NEW + 1000, DAY_MS, 1000);
      removed += step.removed;
      if (!step.more) break;
    }
    assert.equal(removed, 51);
    assert.deepEqual(await partitions(schema), ['messages_1']);
    assert.deepEqual(seqs(await store.after(AB, 0, 1000)), [102, 103]);
    assert.equal((await store.listForUser('alice')).find((c) => c.conversationId === AB)?.retainedFromSeq, 102);
  });

  test('retention drops whole partitions while a device syncs: it ends with every kept message exactly once, in order; the oldest kept seq is reported', async (t: TestContext) => {
    const schema = `dropping_${++n}`;
    const store = await open(schema);
    const OLD = 1_000_000;
    const LATER = 1_500_000;
    const CUTOFF = 2_000_000;
    const NOW = Date.now();
    // Partition 0: AB 1..30, AC 1..30 (old). Partition 1: AB 31..60, AC 31..40, AD 1..20 (old). Partition 2: AB 61..80, AD 21..30 (kept).
    for (let i = 0; i < 6; i++) await store.append([...toAlice(AB, 5, OLD + i * 10), ...toAlice(AC, 5, OLD + i * 10 + 5)]);
    assert.equal((await store.expireByPartition(0, 0, 10)).more, true);
    for (let i = 0; i < 6; i++) await store.append([...toAlice(AB, 5, LATER + i * 10), ...(i < 2 ? toAlice(AC, 5, LATER + i * 10 + 5) : []), ...(i < 4 ? toAlice(AD, 5, LATER + i * 10 + 7) : [])]);
    assert.equal((await store.expireByPartition(0, 0, 10)).more, true);
    await store.append([...toAlice(AB, 20, NOW), ...toAlice(AD, 10, NOW + 100)]);
    assert.deepEqual(await rowsByPartition(schema), { messages_0: 60, messages_1: 60, messages_2: 30 });

    // Two devices page 7 messages at a time while retention runs, one conversation's floor a step: the phone with a step
    // between each two of its pages, the laptop beside them both, as they come.
    const phone = new Device(store, 'alice', 'phone', 7);
    const laptop = new Device(store, 'alice', 'laptop', 7);
    let steps = 0;
    let removed = 0;
    let done = false;
    const step = async () => {
      if (done) return;
      const r = await store.expireByPartition(CUTOFF, DAY_MS, 1);
      steps++;
      removed += r.removed;
      done = !r.more;
    };
    const [phonePages, laptopPages] = await Promise.all([phone.syncAll(step), laptop.syncAll(() => new Promise((r) => setImmediate(r)))]);
    t.diagnostic(`sync pages: phone ${phonePages}, laptop ${laptopPages}; ${steps} retention steps`);
    assert.ok(done, 'both partitions were dropped before the phone\'s sync ended');
    const early = (c: string, below: number) => (phone.got.get(c) ?? []).filter((s) => s < below).length;
    assert.ok(early(AB, 61) + early(AC, 41) + early(AD, 21) > 0, 'after it had got some of what they held');
    assert.equal(removed, 120, 'the two old partitions, counted once');
    assert.deepEqual(await partitions(schema), ['messages_2']);
    assert.deepEqual(await rowsByPartition(schema), { messages_2: 30 });

    // Every kept message exactly once, in order (Device checks once and order as it goes); of the expired ones, those it
    // got before they went. A device that got some of AC, all expired now, is told where it stands (its last seq).
    const kept = { [AB]: range(61, 80), [AC]: [] as number[], [AD]: range(21, 30) };
    for (const device of [phone, laptop]) {
      // One more page each: what is held past where it stands is nothing.
      assert.equal(await device.page(), false);
      for (const [c, seqsKept] of Object.entries(kept)) {
        const got = device.got.get(c) ?? [];
        assert.deepEqual(got.filter((s) => seqsKept.includes(s)), seqsKept, `${device.deviceId} ${c}: every kept message`);
      }
      assert.deepEqual([device.base.get(AB), device.base.get(AC) ?? 40, device.base.get(AD)], [80, 40, 30], device.deviceId);
    }
    // The oldest kept seq, as the list and sync report it.
    const states = new Map((await store.listForUser('alice')).map((c) => [c.conversationId, [c.retainedFromSeq, c.lastSeq]]));
    assert.deepEqual(Object.fromEntries(states), { [AB]: [61, 80], [AC]: [41, 40], [AD]: [21, 30] });
    assert.deepEqual(seqs(await store.before(AB, 0, 100)), range(61, 80), 'history ends at the oldest kept');
    // Another device, after: exactly what is kept.
    const tablet = new Device(store, 'alice', 'tablet', 7);
    await tablet.syncAll();
    assert.deepEqual(Object.fromEntries(tablet.got), { [AB]: range(61, 80), [AD]: range(21, 30) });
  });
});

describe('PostgresStore: the change index', () => {
  test('migration 12 on a database in service: the previous version\'s device positions stay where they were (its nodes still write them, without error, to no effect); a conversation from before it has its member rows written at its next message', async () => {
    const schema = `tokens_migration_${++n}`;
    await (await open(schema, 11)).close();
    // As version 11 left it: alice and bob with one message, alice's phone positioned past their rows.
    await sql(schema, `INSERT INTO conversations (id, kind, last_seq, last_at_ms) VALUES ($1, 'direct', 1, 1000)`, [AB]);
    await sql(schema, `INSERT INTO members (user_id, conversation_id, joined_at_ms, change_no) VALUES ('alice', $1, 0, 5), ('bob', $1, 0, 5)`, [AB]);
    await sql(schema, `INSERT INTO messages (conversation_id, seq, server_msg_id, from_user, from_device, client_msg_id, text, sent_at_ms)
      VALUES ($1, 1, 'srv-old', 'bob', 'd', 'old-1', 'old', 1000)`, [AB]);
    await sql(schema, `INSERT INTO device_sync (user_id, device_id, change_no, conversation_id) VALUES ('alice', 'phone', 6, '')`);

    const store = await open(schema, undefined, 2 ** 40); // a change slack past every transaction id: only the 0 says its rows are due
    assert.deepEqual((await sql<{ v: number }>(schema, 'SELECT max(version) AS v FROM schema_version'))[0]?.v, 14, 'migrated to the latest version');
    await store.append([draft(AB, 'bob', 2000)]);
    const rows = await sql<{ user_id: string; change_no: string }>(schema, `SELECT user_id, change_no FROM members WHERE conversation_id = $1 ORDER BY user_id`, [AB]);
    assert.ok(rows.every((r) => Number(r.change_no) > 6), `written at that message: ${JSON.stringify(rows)}`);
    const phone = new Device(store, 'alice', 'phone', 200);
    phone.base.set(AB, 1);
    await phone.syncAll();
    assert.deepEqual(phone.got.get(AB), [2]);

    // What a node of the previous version runs at every sync: the position read, then moved on (or a device's first).
    const moveSyncPosition = `INSERT INTO device_sync AS s (user_id, device_id, change_no, conversation_id) VALUES ($1, $2, $3, $4)
      ON CONFLICT (user_id, device_id) DO UPDATE SET change_no = excluded.change_no, conversation_id = excluded.conversation_id
      WHERE (s.change_no, s.conversation_id) < (excluded.change_no, excluded.conversation_id)`;
    await sql(schema, moveSyncPosition, ['alice', 'phone', 999_999, AB]);
    await sql(schema, moveSyncPosition, ['alice', 'tablet', 999_999, '']);
    assert.deepEqual(await sql(schema, `SELECT coalesce(s.change_no, 0)::int AS change_no, coalesce(s.conversation_id, '') AS conversation_id
      FROM (SELECT 1) one LEFT JOIN device_sync s ON s.user_id = $1 AND s.device_id = $2`, ['alice', 'phone']), [{ change_no: 6, conversation_id: '' }]);
    assert.deepEqual(await sql(schema, 'SELECT user_id, device_id FROM device_sync ORDER BY 1, 2'), [{ user_id: 'alice', device_id: 'phone' }]);
  });

  test('a user in 5,000 conversations of which 3 changed: the sync with its token reads 3 rows and gets those 3', async (t: TestContext) => {
    const schema = `changes_${++n}`;
    const store = await open(schema, undefined, 0); // change slack 0: nothing read again for being recent
    const peers = Array.from({ length: 5000 }, (_, i) => `p${String(i).padStart(4, '0')}`);
    const NOW = Date.now();
    for (let b = 0; b < 5; b++) {
      await store.append(peers.slice(b * 1000, b * 1000 + 1000).map((p, i) => draft(directConversationId('u', p), p, NOW + b * 1000 + i)));
    }
    // The device syncs everything (25 pages of 200), then once more: it stands at the end of every conversation.
    const phone = new Device(store, 'u', 'phone', 200);
    const pages = await phone.syncAll();
    assert.equal(pages, 25);
    assert.equal(phone.got.size, 5000);
    assert.equal(await phone.page(), false);
    // 3 conversations change.
    const changed = ['p0042', 'p2500', 'p4999'];
    await store.append(changed.map((p) => draft(directConversationId('u', p), p, NOW + 10_000)));

    // What the next sync's scan reads, with the device's 5,000 cursors and its token in the request (as the SDK sends them).
    const cursors = new Map(phone.base);
    assert.equal(cursors.size, 5000);
    const plan = await store.explainSyncScan('u', 'phone', cursors, 200, phone.scanFrom());
    const read = rowsRead(plan);
    t.diagnostic(`rows read by the sync's scan: ${JSON.stringify(read)}`);
    assert.equal(read.members, 3, 'the 3 changed memberships, not 5,000');
    assert.equal(read.conversations, 3);
    assert.ok(Object.values(read).reduce((a, b) => a + b, 0) <= 12, JSON.stringify(read));
    // What reading every membership costs (listForUser, what sync read before the change index).
    const [whole] = await sql<{ 'QUERY PLAN': unknown }>(schema,
      `EXPLAIN (ANALYZE, FORMAT JSON) SELECT m.conversation_id FROM members m JOIN conversations c ON c.id = m.conversation_id WHERE m.user_id = 'u'`);
    t.diagnostic(`rows read by a scan of every membership: ${JSON.stringify(rowsRead(whole!['QUERY PLAN']))}`);

    // And what the user gets: those 3 messages, nothing else.
    const before = new Map([...phone.got].map(([c, s]) => [c, s.length]));
    assert.equal(await phone.page(), false);
    const grown = [...phone.got].filter(([c, s]) => s.length !== before.get(c)).map(([c, s]) => [c, s.slice(before.get(c))]);
    assert.deepEqual(grown, changed.map((p) => [directConversationId('u', p), [2]]));
    // The token of that sync is past them: the next one reads nothing.
    assert.equal(rowsRead(await store.explainSyncScan('u', 'phone', new Map(phone.base), 200, phone.scanFrom())).members ?? 0, 0);
    assert.equal(await phone.page(), false);

    // The same device id without its data (no token, no cursors: an app reinstalled, a client on a memory store
    // restarted) reads every conversation again; with its old cursors but no token, only what they miss.
    const wiped = new Device(store, 'u', 'phone', 200);
    assert.equal(await wiped.syncAll(), 26, '5,003 messages, 200 a page');
    assert.equal(wiped.got.size, 5000);
    assert.deepEqual(wiped.got.get(directConversationId('u', 'p2500')), [1, 2]);
    const restored = new Device(store, 'u', 'phone', 200);
    for (const [c, seq] of phone.base) restored.base.set(c, c === directConversationId('u', 'p0007') ? 0 : seq);
    assert.equal(await restored.syncAll(), 1);
    assert.deepEqual([...restored.got], [[directConversationId('u', 'p0007'), [1]]]);
  });

  test(`a group of more than ${CHANGE_FANOUT_MAX} members is not written to per message: its members' rows are read at every sync`, async () => {
    const schema = `crowd_${++n}`;
    const store = await open(schema);
    const G = 'g:crowd';
    const crowd = Array.from({ length: CHANGE_FANOUT_MAX + 1 }, (_, i) => `m${i}`);
    let k = 0;
    const group = (fromUser: string, extra: Partial<MessageDraft> = {}): MessageDraft => ({
      conversationId: G, kind: 'group', members: [], fromUser, fromDevice: 'd', clientMsgId: extra.event ? '' : `c-${++k}`,
      serverMsgId: `cs-${++k}`, text: extra.event ? '' : `crowd ${k}`, sentAtMs: Date.now(), ...extra,
    });
    await store.append([group('owner', {
      event: { type: 'group_created', actor: 'owner', name: 'Crowd', userIds: crowd },
      effect: { op: 'create-group', groupId: 'crowd', name: 'Crowd', owner: 'owner', members: crowd },
    })]);
    const changeNos = async () => (await sql<{ change_no: string; n: number }>(schema,
      'SELECT change_no::text, count(*)::int AS n FROM members WHERE conversation_id = $1 GROUP BY 1', [G])).map((r) => [r.change_no, r.n]);
    assert.deepEqual(await changeNos(), [[String(CHANGE_ALWAYS), CHANGE_FANOUT_MAX + 2]]);
    const m5 = new Device(store, 'm5', 'phone', 50);
    await m5.syncAll();
    await store.append([group('m1'), group('owner')]);
    assert.deepEqual(await changeNos(), [[String(CHANGE_ALWAYS), CHANGE_FANOUT_MAX + 2]], 'no member row written');
    await m5.syncAll();
    assert.deepEqual(m5.got.get(G), [1, 2, 3]);
  });
});
