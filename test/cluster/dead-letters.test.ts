// Dead letters that lose nothing, on a cluster of 2 gateways and 2 logic
// nodes: PostgreSQL stopped for 60 s under load pauses consumption (readiness
// says so) and nothing is dead-lettered; once it is back every send is acked
// and delivered once, in order. One poison request among hundreds is set
// aside alone, with its error, shown by `longlink dead list`, and replayed
// once by `longlink dead replay`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import pg from 'pg';
import { RawClient } from '../helpers/raw.js';
import { startTestCluster, connectClient, until, assertExactlyOnceInOrder, within, type TestCluster, type TestClient } from './helpers.js';
import { requestToken } from '../../src/client/index.js';
import { directConversationId, messageFromWire, type Frame } from '../../src/protocol/index.js';

const T = { timeout: 300_000 };

/** `longlink <args>` with the cluster's admin key: its exit code and stdout lines. */
function cli(cluster: TestCluster, args: string[]): Promise<{ code: number | null; lines: string[]; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['bin/longlink.js', ...args], { env: { ...process.env, LONGLINK_ADMIN_KEY: cluster.adminKey } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => resolve({ code, lines: out.split('\n').filter((l) => l.trim() !== ''), err }));
  });
}

async function deadCount(cluster: TestCluster): Promise<number> {
  const res = await fetch(`${cluster.apiUrl()}/api/v1/dead-letters`, { headers: { authorization: `Bearer ${cluster.adminKey}` } });
  return ((await res.json()) as { count: number }).count;
}

describe('dead letters on 2 gateways + 2 logic nodes', () => {
  let cluster: TestCluster;
  const open: TestClient[] = [];
  const raws: RawClient[] = [];

  before(async () => {
    cluster = await startTestCluster({ routing: 'targeted', shards: 4 });
  });
  after(async () => {
    for (const r of raws) r.close();
    await Promise.all(open.map((c) => c.close()));
    await cluster?.stop();
  });

  test('PostgreSQL stopped for 60 s under load: consumption pauses, readiness says so, no dead letter; then everything is acked and delivered once, in order', T, async () => {
    const pairs = [0, 1, 2].map((i) => ({ from: `pgs-${i}`, to: `pgr-${i}` }));
    const senders = await Promise.all(pairs.map((p, i) => connectClient(cluster, p.from, { gateway: `gw-${(i % 2) + 1}` })));
    const receivers = await Promise.all(pairs.map((p, i) => connectClient(cluster, p.to, { gateway: `gw-${((i + 1) % 2) + 1}` })));
    open.push(...senders, ...receivers);
    const sent: string[][] = pairs.map(() => []);
    const acks: Promise<unknown>[] = [];
    let sending = true;
    const load = (async () => {
      for (let n = 1; sending && n <= 1000; n++) {
        pairs.forEach((p, i) => {
          const text = `${p.from}-${n}`;
          sent[i]!.push(text);
          acks.push(senders[i]!.client.send({ to: p.to, text }));
        });
        await new Promise((r) => setTimeout(r, 250));
      }
    })();
    await new Promise((r) => setTimeout(r, 2000));
    const outage = cluster.postgres.restart('fast', 60_000);
    // While it is down, every logic node says it is not ready, naming the store.
    await until(async () => {
      const res = await fetch(`${cluster.node('logic-1').httpUrl}/readyz`);
      return res.status === 503 && (await res.text()).includes('store');
    }, 30_000, () => 'logic-1 /readyz answers 503 naming the store');
    await outage;
    await new Promise((r) => setTimeout(r, 3000));
    sending = false;
    await load;
    await within(Promise.all(acks), 120_000, () => 'every send acked after PostgreSQL came back');
    for (const [i, p] of pairs.entries()) {
      const conversationId = directConversationId(p.from, p.to);
      await until(() => receivers[i]!.in(conversationId).length >= sent[i]!.length, 60_000,
        () => `${p.to} received ${receivers[i]!.in(conversationId).length} of ${sent[i]!.length}`);
      assertExactlyOnceInOrder(receivers[i]!.in(conversationId), sent[i]!, `${p.from} → ${p.to}`);
    }
    assert.equal(await deadCount(cluster), 0, 'nothing dead-lettered');
    for (const n of cluster.logics()) {
      const metrics = await (await fetch(`${n.httpUrl}/metrics`)).text();
      assert.match(metrics, /^longlink_dead_letters_total 0$/m, `${n.name} moved nothing to the dead letters`);
    }
  });

  test('one poison request among hundreds is dead-lettered alone with its error; `longlink dead replay` applies it once', T, async () => {
    const db = new pg.Client({ connectionString: cluster.postgres.url });
    await db.connect();
    try {
      // A request the store keeps refusing for a reason of its own (not data, not an outage): a trigger.
      await db.query(`CREATE OR REPLACE FUNCTION refuse_pill() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.text = 'poison-pill' THEN RAISE EXCEPTION 'refused by a trigger' USING ERRCODE = 'XX000'; END IF; RETURN NEW; END $$`);
      await db.query('CREATE TRIGGER refuse_pill BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse_pill()');
      const login = async (user: string, gw: number) => {
        const c = await RawClient.connect(cluster.node(`gw-${gw}`).tcpUrl!);
        await c.login((await requestToken(cluster.apiUrl(), cluster.adminKey, { user_id: user, device_id: 'd1' })).token);
        raws.push(c);
        // The test cluster expects a ping every second.
        setInterval(() => c.send({ case: 'ping', value: {} }), 500).unref();
        return c;
      };
      const [poisoner, crowd, bob] = await Promise.all([login('poisoner', 1), login('crowd', 1), login('pbob', 2)]);
      const replies = (c: RawClient, from: number, ids: Set<number>) => () => c.frames.slice(from).filter((f) => ids.has(f.id));
      // 300 healthy sends around one poisoned one, all in the same conversation's partition and others.
      const crowdIds = new Set<number>();
      const from = crowd.frames.length;
      for (let i = 0; i < 150; i++) crowdIds.add(crowd.send({ case: 'send', value: { clientMsgId: `ok-${i}`, toUser: 'pbob', text: `ok-${i}` } }));
      const pillId = poisoner.send({ case: 'send', value: { clientMsgId: 'pill', toUser: 'pbob', text: 'poison-pill' } });
      for (let i = 150; i < 300; i++) crowdIds.add(crowd.send({ case: 'send', value: { clientMsgId: `ok-${i}`, toUser: 'pbob', text: `ok-${i}` } }));
      await until(() => replies(crowd, from, crowdIds)().length >= 300, 60_000, () => `${replies(crowd, from, crowdIds)().length} of 300 healthy sends answered`);
      assert.ok(replies(crowd, from, crowdIds)().every((f: Frame) => f.body.case === 'sendAck'), 'every healthy send acked');
      await until(async () => (await deadCount(cluster)) >= 1, 60_000, () => 'the poison request dead-lettered');
      await new Promise((r) => setTimeout(r, 1000));

      const listed = await cli(cluster, ['dead', 'list', '--server', cluster.apiUrl()]);
      assert.equal(listed.code, 0, listed.err);
      assert.equal(listed.lines.length, 1, `exactly one dead letter: ${listed.lines.join('\n')}`);
      const letter = JSON.parse(listed.lines[0]!) as { id: string; operation: string; user_id: string; partition: string; error: string; attempts: number };
      assert.equal(letter.operation, 'send');
      assert.equal(letter.user_id, 'poisoner');
      assert.equal(letter.partition, directConversationId('poisoner', 'pbob'));
      assert.match(letter.error, /refused by a trigger/);
      assert.ok(!poisoner.frames.some((f) => f.id === pillId && f.body.case === 'sendAck'), 'the poison was not acked');

      // Fixed, then replayed twice: applied once, its sender acked, its recipient gets it once.
      await db.query('DROP TRIGGER refuse_pill ON messages');
      const replayed = await cli(cluster, ['dead', 'replay', letter.id, '--server', cluster.apiUrl()]);
      assert.equal(replayed.code, 0, replayed.err);
      assert.deepEqual(replayed.lines.map((l) => (JSON.parse(l) as { id: string }).id), [letter.id]);
      const twice = await cli(cluster, ['dead', 'replay', letter.id, '--server', cluster.apiUrl()]);
      assert.deepEqual(twice.lines, [], 'a second replay of the same id does nothing');
      await until(() => poisoner.frames.some((f) => f.id === pillId && f.body.case === 'sendAck'), 30_000, () => 'the replayed send acked');
      await until(() => bob.frames.some((f) => f.body.case === 'push' && f.body.value.messages.some((m) => m.text === 'poison-pill')), 30_000, () => 'bob gets it');
      await new Promise((r) => setTimeout(r, 1000));
      const pills = bob.frames.flatMap((f) => (f.body.case === 'push' ? f.body.value.messages.map(messageFromWire) : [])).filter((m) => m.text === 'poison-pill');
      assert.equal(pills.length, 1, 'once');
      assert.equal(await deadCount(cluster), 0);
    } finally {
      await db.query('DROP TRIGGER IF EXISTS refuse_pill ON messages').catch(() => undefined);
      await db.end();
    }
  });
});
