// The split layout (the 10M stage): a process per service of the logic tier
// (auth, message, group, storage, risk) beside two gateways, on real Redis
// and PostgreSQL. Each service fails alone, scales by adding processes, and
// every consumer group of the committed stream sees every committed message
// exactly once: push (its fan-out is what clients receive), risk (its
// counters), and an audit group this test adds at run time, which counts
// each message it is given by (conversation, seq) in the step that acks it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import pg from 'pg';
import { SPLIT } from '../../src/dev/cluster.js';
import { RedisBus } from '../../src/engines/bus-redis.js';
import type { Subscription } from '../../src/engines/bus.js';
import { ErrorCode, LonglinkError, directConversationId } from '../../src/protocol/index.js';
import {
  assertExactlyOnceInOrder, connectClient, sleep, startTestCluster, texts, until, within,
  type TestClient, type TestCluster,
} from './helpers.js';

const SHARDS = 8;
const T = { timeout: 180_000 };

let cluster: TestCluster;
let audit: RedisBus;
let auditSub: Subscription;
let db: pg.Client;

/** The audit group's count per `conversation#seq`. */
async function audited(): Promise<Map<string, number>> {
  return audit.committedCounters('audit');
}

async function stored(): Promise<string[]> {
  const { rows } = await db.query<{ k: string }>(`SELECT conversation_id || '#' || seq AS k FROM messages ORDER BY 1`);
  return rows.map((r) => r.k);
}

async function metric(url: string, name: string, labels: string): Promise<number | undefined> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** A client on one gateway, once it synced what it missed (pushes to a device with no history wait for that sync). */
async function online(user: string, gateway: string, device = 'd1'): Promise<TestClient> {
  const c = await connectClient(cluster, user, { gateway, device });
  await within(c.client.sync(), 30_000, () => `${user}'s sync\n${cluster.logs()}`);
  return c;
}

/** Sends `list` from `from` one after another (the SDK resends until acked); resolves with the acked seqs. */
async function sendAll(from: TestClient, to: { to?: string; conversationId?: string }, list: readonly string[], gapMs = 0): Promise<number[]> {
  const seqs: number[] = [];
  for (const text of list) {
    const ack = await within(from.client.send({ ...to, text }), 60_000, () => `the ack of ${text}\n${cluster.logs()}`);
    seqs.push(ack.seq);
    if (gapMs > 0) await sleep(gapMs);
  }
  return seqs;
}

before(async () => {
  cluster = await startTestCluster({ routing: 'targeted', logic: 0, services: SPLIT, shards: SHARDS });
  audit = new RedisBus({ url: cluster.redis.url, nodeId: 'audit-1', shards: SHARDS, leaseMs: 1500 });
  auditSub = audit.consumeCommitted('audit', async (batch) => ({
    counters: Object.fromEntries(batch.map((c) => [`${c.message!.conversationId}#${c.message!.seq}`, 1])),
  }));
  db = new pg.Client({ connectionString: cluster.postgres.url });
  await db.connect();
});

after(async () => {
  await auditSub?.close();
  await audit?.close();
  await db?.end();
  await cluster?.stop();
});

describe('split layout: auth, message, group, storage and risk each in its own process', () => {
  test('1:1 and group chat work; /api/v1/nodes lists every process with its role and services', T, async () => {
    const alice = await online('alice', 'gw-1');
    const bob = await online('bob', 'gw-2');
    try {
      await sendAll(alice, { to: 'bob' }, texts('hello', 5));
      const ab = directConversationId('alice', 'bob');
      await until(() => bob.in(ab).length >= 5, 15_000, () => `bob got ${bob.in(ab).length}`);
      assertExactlyOnceInOrder(bob.in(ab), texts('hello', 5), 'bob');

      const g = await alice.client.createGroup('split', ['bob']);
      await sendAll(alice, { conversationId: g.conversationId }, texts('g', 3));
      await until(() => bob.in(g.conversationId).filter((m) => !m.event).length >= 3, 15_000, () => 'group messages at bob');
      assertExactlyOnceInOrder(bob.in(g.conversationId).filter((m) => !m.event), texts('g', 3), 'bob in the group');

      const res = await fetch(`${cluster.apiUrl()}/api/v1/nodes`, { headers: { authorization: `Bearer ${cluster.adminKey}` } });
      assert.equal(res.status, 200);
      const { nodes } = await res.json() as { nodes: { id: string; role: string; services: string[] | null; http_url: string | null }[] };
      const byId = Object.fromEntries(nodes.map((n) => [n.id, n]));
      assert.deepEqual(nodes.map((n) => n.id).sort(), ['auth-1', 'group-1', 'gw-1', 'gw-2', 'message-1', 'risk-1', 'storage-1']);
      assert.deepEqual(byId['message-1']!.services, ['message', 'presence', 'push', 'notify']);
      assert.deepEqual(byId['group-1']!.services, ['group']);
      assert.deepEqual(byId['storage-1']!.services, ['storage', 'search', 'retention']);
      assert.deepEqual(byId['risk-1']!.services, ['risk', 'webhooks']);
      assert.deepEqual(byId['auth-1']!.services, ['auth']);
      assert.equal(byId['storage-1']!.http_url, cluster.node('storage-1').httpUrl);
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  test('with group down, 1:1 messages are acked and delivered; a group request sent just as it died is served once it is back; past its lease, refused UNAVAILABLE at once', T, async () => {
    const alice = await online('alice', 'gw-1');
    const bob = await online('bob', 'gw-2');
    try {
      // Just killed: its lease still runs, so the request waits in the group stream for whoever serves it next.
      await cluster.kill('group-1', 'SIGKILL');
      const creating = alice.client.createGroup('queued', ['bob']);
      await sleep(300);
      await cluster.restart('group-1');
      const queued = await within(creating, 30_000, () => `the create, once group is back\n${cluster.logs('group-1')}`);
      assert.equal(queued.name, 'queued');

      await cluster.kill('group-1', 'SIGKILL');
      const ab = directConversationId('alice', 'bob');
      const before = bob.in(ab).length;
      await sendAll(alice, { to: 'bob' }, texts('while-group-down', 10));
      await until(() => bob.in(ab).length >= before + 10, 15_000, () => `bob got ${bob.in(ab).length - before} of 10`);
      assertExactlyOnceInOrder(bob.in(ab).slice(before), texts('while-group-down', 10), 'bob, group down');

      // Past its lease (1.5 s, on Redis's clock) and two looks of the gateways in a row (one a second) that found
      // nobody: nobody runs it, so nothing is queued for nobody.
      const redis = new Redis(cluster.redis.url);
      const groupNodesLive = async () => {
        const [secs, micros] = await redis.time();
        return redis.zcount('ll:group-nodes', Number(secs) * 1000 + Math.floor(Number(micros) / 1000), '+inf');
      };
      let g;
      try {
        await until(async () => await groupNodesLive() === 0, 15_000, () => 'the group service\'s lease to end');
        await sleep(3000);
        const asked = Date.now();
        await assert.rejects(alice.client.createGroup('nobody', ['bob']), (err: LonglinkError) => err.code === ErrorCode.UNAVAILABLE && /group service/.test(err.message));
        assert.ok(Date.now() - asked < 3000, `refused at once, not after the client's timeout (${Date.now() - asked} ms)`);

        // Back: as soon as its process is in the live set, its requests are served (the gateway, which last saw it
        // down, looks again before refusing), not refused until the gateway's next look.
        await cluster.restart('group-1');
        await until(async () => await groupNodesLive() > 0, 15_000, () => 'the group service live again');
        g = await alice.client.createGroup('after', ['bob']);
      } finally {
        redis.disconnect();
      }
      await sendAll(alice, { conversationId: g.conversationId }, ['in the new group']);
      await until(() => bob.in(g.conversationId).some((m) => m.text === 'in the new group'), 15_000, () => 'the group message at bob');
    } finally {
      if (!cluster.node('group-1').running) await cluster.restart('group-1');
      await alice.close();
      await bob.close();
    }
  });

  test('with storage down, sends are acked and pushed; a device that was offline syncs everything once storage is back', T, async () => {
    const alice = await online('alice', 'gw-1');
    const bob = await online('bob', 'gw-2');
    const ab = directConversationId('alice', 'bob');
    // Bob's device places a push by the base it knows; a device that knows none asks storage first (it may have seen it).
    await sendAll(alice, { to: 'bob' }, ['before storage goes']);
    await until(() => bob.in(ab).some((m) => m.text === 'before storage goes'), 15_000, () => 'bob knows where he stands');
    try {
      await cluster.kill('storage-1', 'SIGKILL');
      const before = bob.in(ab).length;
      await sendAll(alice, { to: 'bob' }, texts('while-storage-down', 10));
      await until(() => bob.in(ab).length >= before + 10, 15_000, () => `bob got ${bob.in(ab).length - before} of 10`);
      assertExactlyOnceInOrder(bob.in(ab).slice(before), texts('while-storage-down', 10), 'bob, storage down');

      // A second device of bob's that never saw any of it connects while storage is down: its sync waits.
      const bob2 = await connectClient(cluster, 'bob', { gateway: 'gw-1', device: 'tablet' });
      try {
        await sleep(1000);
        assert.equal(bob2.in(ab).length, 0, 'nothing synced while storage is down');
        await cluster.restart('storage-1');
        const { rows } = await db.query<{ text: string }>('SELECT text FROM messages WHERE conversation_id = $1 ORDER BY seq', [ab]);
        await until(() => bob2.in(ab).length >= rows.length, 45_000,
          () => `bob's tablet synced ${bob2.in(ab).length} of ${rows.length}\n${cluster.logs('storage-1')}`);
        assertExactlyOnceInOrder(bob2.in(ab), rows.map((r) => r.text), 'bob\'s tablet after storage returned: the whole conversation');
      } finally {
        await bob2.close();
      }
    } finally {
      if (!cluster.node('storage-1').running) await cluster.restart('storage-1');
      await alice.close();
      await bob.close();
    }
  });

  test('with risk down, chat goes on and its lag grows; back, it catches up and has counted every message once', T, async () => {
    const alice = await online('alice', 'gw-1');
    const bob = await online('bob', 'gw-2');
    let restarted = false;
    try {
      await cluster.kill('risk-1', 'SIGKILL');
      await sendAll(alice, { to: 'bob' }, texts('while-risk-down', 20));
      const ab = directConversationId('alice', 'bob');
      await until(() => bob.in(ab).some((m) => m.text === 'while-risk-down-20'), 15_000, () => 'chat goes on');
      const lag = await metric(cluster.node('message-1').httpUrl, 'longlink_consumer_lag', 'group="risk"');
      assert.ok(lag !== undefined && lag >= 20, `risk's lag, seen from another process: ${lag}`);

      const risk = await cluster.restart('risk-1');
      restarted = true;
      await until(async () => (await metric(risk.httpUrl, 'longlink_consumer_lag', 'group="risk"')) === 0, 30_000, () => 'risk caught up');
      const total = (await stored()).length;
      await until(async () => {
        const handled = (await metric(risk.httpUrl, 'longlink_consumer_handled_total', 'group="risk",kind="messages"') ?? 0)
          + (await metric(risk.httpUrl, 'longlink_consumer_handled_total', 'group="risk",kind="events"') ?? 0);
        return handled === total;
      }, 15_000, () => `risk counted every committed message once (${total} stored)`);
    } finally {
      if (!restarted) await cluster.restart('risk-1');
      await alice.close();
      await bob.close();
    }
  });

  test('each service SIGKILLed and restarted, then SIGTERMed and restarted, under load: nothing lost, repeated or reordered', T, async () => {
    const alice = await online('alice', 'gw-1');
    const bob = await online('bob', 'gw-2');
    const carol = await online('carol', 'gw-1');
    try {
      const ab = directConversationId('alice', 'bob');
      const g = await carol.client.createGroup('load', ['bob']);
      const before = { direct: bob.in(ab).length, group: bob.in(g.conversationId).filter((m) => !m.event).length };
      const direct = texts('load', 120);
      const inGroup = texts('gload', 60);
      let stop = false;
      const load = Promise.all([sendAll(alice, { to: 'bob' }, direct, 40), sendAll(carol, { conversationId: g.conversationId }, inGroup, 80)])
        .finally(() => (stop = true));
      for (const name of ['message-1', 'group-1', 'storage-1', 'risk-1', 'auth-1']) {
        for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
          if (stop) break;
          await sleep(300);
          await cluster.kill(name, signal);
          await sleep(300);
          await cluster.restart(name);
        }
      }
      await within(load, 120_000, () => `the load finished\n${cluster.logs()}`);
      await until(() => bob.in(ab).length >= before.direct + direct.length && bob.in(g.conversationId).filter((m) => !m.event).length >= before.group + inGroup.length,
        30_000, () => `bob got ${bob.in(ab).length - before.direct}/${direct.length} direct, group ${bob.in(g.conversationId).length - before.group}/${inGroup.length}`);
      await sleep(500); // a late duplicate would show up here
      assertExactlyOnceInOrder(bob.in(ab).slice(before.direct), direct, 'bob, 1:1 under kills');
      assertExactlyOnceInOrder(bob.in(g.conversationId).filter((m) => !m.event).slice(before.group), inGroup, 'bob, group under kills');
    } finally {
      await Promise.all([alice.close(), bob.close(), carol.close()]);
    }
  });

  test('a second message process added under load takes over part of the send path with nothing lost', T, async () => {
    const alice = await online('alice', 'gw-1');
    const bob = await online('bob', 'gw-2');
    const leaseOwners = async () => {
      const { Redis } = await import('ioredis');
      const r = new Redis(cluster.redis.url);
      try {
        return await r.mget(Array.from({ length: SHARDS }, (_, s) => `ll:lease:${s}`));
      } finally {
        r.disconnect();
      }
    };
    try {
      const ab = directConversationId('alice', 'bob');
      const before = bob.in(ab).length;
      const list = texts('rebalance', 100);
      const load = sendAll(alice, { to: 'bob' }, list, 20);
      await sleep(500);
      await cluster.add('message');
      await within(load, 90_000, () => 'the load finished');
      let owners: (string | null)[] = [];
      await until(async () => new Set(owners = await leaseOwners()).size === 2, 20_000, () => `the send path's shards: ${JSON.stringify(owners)}`);
      assert.ok(owners.filter((o) => o === 'message-2').length >= SHARDS / 2 - 1, `message-2 holds its share: ${JSON.stringify(owners)}`);
      await until(() => bob.in(ab).length >= before + list.length, 30_000, () => `bob got ${bob.in(ab).length - before}`);
      await sleep(300);
      assertExactlyOnceInOrder(bob.in(ab).slice(before), list, 'bob, while message-2 joined');
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  test('every consumer group saw every committed message exactly once: the audit group added at run time, and risk', T, async () => {
    const all = await stored();
    let counts = new Map<string, number>();
    await until(async () => (counts = await audited()).size >= all.length, 30_000, () => `audit saw ${counts.size} of ${all.length}`);
    assert.deepEqual([...counts.keys()].sort(), all, 'the audit group saw what the store holds, nothing else');
    const repeated = [...counts].filter(([, n]) => n !== 1);
    assert.deepEqual(repeated, [], 'each once');
    const risk = cluster.node('risk-1').httpUrl;
    await until(async () => {
      const m = (await metric(risk, 'longlink_consumer_handled_total', 'group="risk",kind="messages"') ?? 0)
        + (await metric(risk, 'longlink_consumer_handled_total', 'group="risk",kind="events"') ?? 0);
      return m === all.length;
    }, 30_000, () => `risk counted ${all.length}`);
  });
});
