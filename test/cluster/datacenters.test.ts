// Two datacenters on loopback (`npm run cluster -- --dcs 2`'s launcher): each
// its own Redis, PostgreSQL, gateway, logic and sync processes, joined by
// links that delay every packet 20 ms each way, acking in `replicated` mode
// (a write is acked once the other datacenter holds it too). Users of a and b
// chat 1:1 and in groups in both directions: a conversation's seqs are
// assigned in its home only (writes from the other datacenter are forwarded
// there), and the sync services copy each datacenter's commits into the
// other, where its own gateways push them; read marks, cursors and
// revocations follow. Then the faults of faults/dc/scenarios.ts: the link cut
// for 30 s (neither takes the other's homes over: both renew their leases at
// the witness, a Redis beside them), and all of a killed under load, failed
// over to b by b itself 5 s after a's lease ran out, started again and
// handed its homes back.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startDatacenters, type Datacenters } from '../../src/dev/datacenters.js';
import { directHome } from '../../src/dc/homes.js';
import { directConversationId, type ChatMessage } from '../../src/protocol/index.js';
import { connectClient, sleep, texts, until, within, type TestClient } from './helpers.js';
import { dcLoss, linkCut } from '../../faults/dc/scenarios.js';

const T = { timeout: 180_000 };

let dcs: Datacenters;
const lines: string[] = [];
const dbs = new Map<string, pg.Client>();
const clients: TestClient[] = [];

function logs(): string {
  return lines.slice(-80).join('\n');
}

async function online(dc: string, user: string, device = 'd1'): Promise<TestClient> {
  const c = await connectClient(dcs.dc(dc).cluster, user, { gateway: `${dc}-gw-1`, device });
  clients.push(c);
  await within(c.client.sync(), 30_000, () => `${user}'s sync in ${dc}\n${logs()}`);
  return c;
}

/** Each text sent in turn (the SDK resends until acked); the acked seqs. */
async function sendAll(from: TestClient, to: { to?: string; conversationId?: string }, list: readonly string[]): Promise<number[]> {
  const seqs: number[] = [];
  for (const text of list) seqs.push((await within(from.client.send({ ...to, text }), 60_000, () => `the ack of ${text}\n${logs()}`)).seq);
  return seqs;
}

/** A conversation's rows as a datacenter's store holds them. */
async function rows(dc: string, conversationId: string): Promise<string[]> {
  const { rows: r } = await dbs.get(dc)!.query<{ row: string }>(
    `SELECT seq || ' ' || from_user || ' ' || text || ' ' || coalesce(event, '') || ' ' || coalesce(recalled_by, '') AS row
     FROM messages WHERE conversation_id = $1 ORDER BY seq`, [conversationId]);
  return r.map((x) => x.row);
}

async function memberRows(dc: string, conversationId: string): Promise<string[]> {
  const { rows: r } = await dbs.get(dc)!.query<{ row: string }>(
    `SELECT user_id || ' ' || role || ' ' || joined_seq || ' ' || coalesce(left_seq::text, '-') || ' ' || muted AS row
     FROM members WHERE conversation_id = $1 ORDER BY user_id`, [conversationId]);
  return r.map((x) => x.row);
}

/** Both datacenters hold the same rows of the conversation (the copy catches up within the timeout). */
async function converged(conversationId: string, least: number): Promise<string[]> {
  let a: string[] = [];
  let b: string[] = [];
  await until(async () => {
    [a, b] = await Promise.all([rows('a', conversationId), rows('b', conversationId)]);
    return a.length >= least && a.join('\n') === b.join('\n');
  }, 30_000, () => {
    const i = a.findIndex((row, k) => row !== b[k]);
    return `${conversationId}: a holds ${a.length}, b ${b.length}; first difference: a ${a[i] ?? '-'} | b ${b[i] ?? '-'}\n${logs()}`;
  });
  return a;
}

function seqsOf(list: readonly ChatMessage[]): number[] {
  return list.map((m) => m.seq);
}

function increasing(list: readonly ChatMessage[], what: string): void {
  for (let i = 1; i < list.length; i++) assert.ok(list[i]!.seq > list[i - 1]!.seq, `${what}: seq ${list[i]!.seq} after ${list[i - 1]!.seq}`);
}

describe('two datacenters', { timeout: 600_000 }, () => {
  before(async () => {
    dcs = await startDatacenters({
      names: ['a', 'b'], delayMs: 20, gateways: 1, logic: 1, services: { sync: 1 }, routing: 'targeted',
      shards: 8, leaseMs: 1500, nodeTtlMs: 1500, durable: false, witness: true,
      env: { LONGLINK_DC_ACK: 'replicated', LONGLINK_DC_FAILOVER_AFTER_MS: '5000', LONGLINK_GROUP_ADD_POLICY: 'anyone', LONGLINK_PING_INTERVAL_MS: '1000', LONGLINK_RATE_LIMIT: '5000', LONGLINK_RATE_BURST: '10000' },
      onLine: (node, line) => {
        lines.push(`[${node}] ${line}`);
        if (lines.length > 4000) lines.splice(0, 2000);
      },
    });
    for (const d of dcs.dcs) {
      const db = new pg.Client({ connectionString: d.cluster.postgres.url });
      db.on('error', () => undefined); // a's PostgreSQL is killed by the last test; this client is not used after it
      await db.connect();
      dbs.set(d.name, db);
    }
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    for (const db of dbs.values()) await db.end().catch(() => undefined);
    await dcs?.stop();
  });

  test('1:1 across datacenters, both ways: each side gets every message once, in seq order; one seq order in both stores', T, async () => {
    // Two pairs, so one conversation is homed in each datacenter.
    const pairs = [['alice', 'bob'], ['anna', 'ben'], ['amy', 'bill'], ['ada', 'bo']].map(([x, y]) => [x!, y!] as const);
    const homes = pairs.map(([x, y]) => directHome(directConversationId(x, y), ['a', 'b']));
    const chosen = [pairs[homes.indexOf('a')]!, pairs[homes.indexOf('b')]!];
    assert.equal(chosen.length, 2, `one pair homed in each datacenter: ${homes.join(', ')}`);
    for (const [x, y] of chosen) {
      const conversation = directConversationId(x, y);
      const inA = await online('a', x);
      const inB = await online('b', y);
      const fromA = texts(`${x}-to-${y}`, 25);
      const fromB = texts(`${y}-to-${x}`, 25);
      const [seqsA, seqsB] = await Promise.all([sendAll(inA, { to: y }, fromA), sendAll(inB, { to: x }, fromB)]);
      assert.deepEqual([...seqsA, ...seqsB].sort((p, q) => p - q), Array.from({ length: 50 }, (_, i) => i + 1), 'one seq each, no gap');
      await until(() => inB.in(conversation).length >= 25 && inA.in(conversation).length >= 25, 30_000,
        () => `${y} in b got ${inB.in(conversation).length}, ${x} in a got ${inA.in(conversation).length}\n${logs()}`);
      assert.deepEqual(inB.in(conversation).map((m) => m.text), fromA, `${y} (b) gets ${x}'s messages once, in order`);
      assert.deepEqual(inA.in(conversation).map((m) => m.text), fromB, `${x} (a) gets ${y}'s messages once, in order`);
      assert.deepEqual(seqsOf(inB.in(conversation)), seqsA);
      assert.deepEqual(seqsOf(inA.in(conversation)), seqsB);
      const stored = await converged(conversation, 50);
      assert.equal(stored.length, 50);
      // Both devices read the same history, from their own datacenter.
      const [ha, hb] = await Promise.all([inA.client.history(conversation, { limit: 100 }), inB.client.history(conversation, { limit: 100 })]);
      assert.deepEqual(ha.messages.map((m) => `${m.seq} ${m.text}`), hb.messages.map((m) => `${m.seq} ${m.text}`));
    }
  });

  test('groups homed in either datacenter: members of both write, every device sees one order; group state copied', T, async () => {
    for (const [home, away] of [['a', 'b'], ['b', 'a']] as const) {
      const owner = await online(home, `${home}-owner`);
      const local = await online(home, `${home}-local`);
      const remote = await online(away, `${home}-remote`);
      const group = await within(owner.client.createGroup(`homed in ${home}`, [`${home}-local`, `${home}-remote`]), 30_000, logs);
      const conversation = group.conversationId;
      // The remote member learns of the group from its own datacenter, then writes into it (forwarded home).
      await until(async () => (await memberRows(away, conversation)).length === 3, 30_000, () => `the group copied to ${away}\n${logs()}`);
      const said = { owner: texts(`${home}-owner-says`, 10), local: texts(`${home}-local-says`, 10), remote: texts(`${home}-remote-says`, 10) };
      await Promise.all([
        sendAll(owner, { conversationId: conversation }, said.owner),
        sendAll(local, { conversationId: conversation }, said.local),
        sendAll(remote, { conversationId: conversation }, said.remote),
      ]);
      // The remote member is removed, then added back, from the home datacenter; then it writes again.
      await within(owner.client.removeMembers(group.groupId, [`${home}-remote`]), 30_000, logs);
      await within(owner.client.addMembers(group.groupId, [`${home}-remote`]), 30_000, logs);
      await sendAll(remote, { conversationId: conversation }, [`${home}-remote-back`]);
      const stored = await converged(conversation, 34);
      assert.deepEqual(await memberRows(away, conversation), await memberRows(home, conversation), 'members copied');
      for (const [who, c] of [['owner', owner], ['local', local], ['remote', remote]] as const) {
        const others = Object.entries(said).filter(([k]) => k !== who).flatMap(([, v]) => v);
        await until(() => others.every((t) => c.in(conversation).some((m) => m.text === t)), 30_000,
          () => `${who} got ${c.in(conversation).filter((m) => !m.event).length} of ${others.length}\n${logs()}`);
        const got = c.in(conversation);
        increasing(got, `${who} in ${who === 'remote' ? away : home}`);
        assert.equal(new Set(got.map((m) => m.seq)).size, got.length, `${who}: no message twice`);
      }
      assert.equal(stored.length, (await rows(home, conversation)).length);
    }
  });

  test('read marks, delivered cursors and revocations made in one datacenter reach the other: receipts pushed there, its store updated, the revoked user kicked there', T, async () => {
    const rita = await online('a', 'rita');
    const rob = await online('b', 'rob');
    const conversation = directConversationId('rita', 'rob');
    await sendAll(rob, { to: 'rita' }, texts('rob-says', 3));
    await until(() => rita.in(conversation).length >= 3, 30_000, () => `rita got ${rita.in(conversation).length}\n${logs()}`);
    await converged(conversation, 3);
    const receipts: { userId: string; seq: number }[] = [];
    rob.client.on('receipt', (r) => {
      if (r.conversationId === conversation) receipts.push({ userId: r.userId, seq: r.seq });
    });
    // Rita reads in a: rob, connected in b, is told by b; b's store holds her mark.
    await within(rita.client.markRead(conversation, 0), 30_000, logs);
    await until(() => receipts.some((r) => r.userId === 'rita' && r.seq === 3), 30_000, () => `rob's receipts: ${JSON.stringify(receipts)}\n${logs()}`);
    const readIn = async (dc: string) => (await dbs.get(dc)!.query<{ read_seq: string }>(
      `SELECT read_seq FROM members WHERE conversation_id = $1 AND user_id = 'rita'`, [conversation])).rows[0]?.read_seq;
    assert.equal(Number(await readIn('b')), 3);
    // Rita's device acked the pushes in a: its delivered cursor is held in b too.
    const cursorIn = async (dc: string) => (await dbs.get(dc)!.query<{ delivered_seq: string }>(
      `SELECT delivered_seq FROM device_cursors WHERE user_id = 'rita' AND device_id = 'd1' AND conversation_id = $1`, [conversation])).rows[0]?.delivered_seq;
    let cursor: string | undefined;
    await until(async () => Number(cursor = await cursorIn('b')) === 3, 30_000, () => `rita's cursor in b: ${cursor}\n${logs()}`);

    // Rob's tokens revoked through a's API: his connection in b is kicked, and his old token refused there.
    const kicked = new Promise<string>((resolve) => rob.client.on('kick', (err) => resolve(err.message)));
    const a = dcs.dc('a').cluster;
    const res = await fetch(`${a.apiUrl()}/api/v1/revoke`, {
      method: 'POST', headers: { authorization: `Bearer ${a.adminKey}`, 'content-type': 'application/json' }, body: JSON.stringify({ user_id: 'rob' }),
    });
    assert.equal(res.status, 200, await res.text());
    await within(kicked, 30_000, () => `rob kicked in b\n${logs()}`);
    const { rows: revoked } = await dbs.get('b')!.query<{ before_ms: string }>(`SELECT before_ms FROM revocations WHERE user_id = 'rob' AND device_id = ''`);
    assert.equal(revoked.length, 1, 'b holds the revocation');
  });

  test('the sync service SIGKILLed and restarted: the other datacenter ends with no duplicate and no gap', T, async () => {
    const sender = await online('a', 'kate');
    const reader = await online('b', 'kim');
    const conversation = directConversationId('kate', 'kim');
    const list = texts('kate-while-sync-dies', 40);
    const sending = sendAll(sender, { to: 'kim' }, list);
    await sleep(300);
    await dcs.dc('b').cluster.kill('b-sync-1', 'SIGKILL');
    await sleep(1500);
    await dcs.dc('b').cluster.restart('b-sync-1');
    await sending;
    await until(() => reader.in(conversation).length >= 40, 60_000, () => `kim got ${reader.in(conversation).length}\n${logs()}`);
    assert.deepEqual(reader.in(conversation).map((m) => m.text), list, 'kim gets each once, in order');
    const stored = await converged(conversation, 40);
    assert.deepEqual(stored.map((r) => Number(r.split(' ')[0])), Array.from({ length: 40 }, (_, i) => i + 1), 'b holds 1..40, no gap, none twice');
  });

  test('the link between the datacenters cut for 30 s, then healed: nothing acked is lost, repeated or reordered; both stores hold the same rows', T, async () => {
    const v = await linkCut(dcs, 'replicated', 30_000);
    assert.ok(v.acked >= 20, `enough traffic: ${v.acked} acked`);
    assert.deepEqual({ lost: v.lost, duplicated: v.duplicated, reordered: v.reordered, storeDiffs: v.storeDiffs, homesMoved: v.homesMoved },
      { lost: 0, duplicated: 0, reordered: 0, storeDiffs: 0, homesMoved: [] }, `${JSON.stringify(v)}\n${logs()}`);
  });

  test('all of datacenter a killed under load, failed over to b by b itself once a\'s lease at the witness ran out: a\'s clients go on through b with nothing acked lost, repeated or reordered; a back, caught up, its homes handed back', T, async () => {
    const v = await dcLoss(dcs, 'replicated', () => undefined, 'witness');
    assert.ok(v.acked >= 20, `enough traffic: ${v.acked} acked`);
    assert.deepEqual({ lost: v.lost, duplicated: v.duplicated, reordered: v.reordered, storeDiffs: v.storeDiffs }, { lost: 0, duplicated: 0, reordered: 0, storeDiffs: 0 },
      `${JSON.stringify(v)}\n${logs()}`);
    assert.ok(v.recoveryMs !== undefined && v.recoveryMs < 60_000, `a's clients were acked by b again: ${v.recoveryMs} ms`);
  });
});
