// Large groups at O(gateways), on a real cluster (2 gateways, 2 logic nodes,
// Redis and PostgreSQL, targeted routing), seen from SDK clients:
// - a group of more than 200 members with its online members on both
//   gateways: every message reaches each of them once, in order;
// - a member removed mid-stream gets nothing stored after its removal, one
//   added gets nothing stored before its addition;
// - what a message costs Redis does not grow with the members: the same 50
//   online members in a group of 1,000 and of 5,000, the Redis commands
//   (INFO commandstats, less what Redis does by the clock, watched idle
//   before) and downlink entries per message about the same, no
//   session lookup per member (HGETALL), and the members' PushAcks spread
//   over the storage shards (by user) instead of one;
// - a presence change goes only to the gateways with a connection watching
//   that user;
// - on a Redis Cluster (3 masters, 3 replicas): a group of 300 goes once per
//   gateway and reaches its members once each, in order; presence follows
//   the watches there too.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import {
  assertExactlyOnceInOrder, connectClient, sleep, startTestCluster, texts, until, within,
  type TestClient, type TestCluster,
} from './helpers.js';
import type { ChatMessage, PresenceInfo } from '../../src/client/index.js';

const SHARDS = 8;
const chats = (ms: readonly ChatMessage[]): ChatMessage[] => ms.filter((m) => m.event === undefined);

/** Calls per command since Redis started (INFO commandstats), and their sum. */
async function commandStats(redis: Redis): Promise<{ total: number; by: Map<string, number> }> {
  const by = new Map<string, number>();
  let total = 0;
  for (const line of (await redis.info('commandstats')).split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
    if (!m) continue;
    by.set(m[1]!, Number(m[2]));
    total += Number(m[2]);
  }
  return { total, by };
}

/** Entries ever added to a stream (XINFO STREAM entries-added: trimming does not lower it); 0 when it does not exist. */
async function entriesAdded(redis: Redis, key: string): Promise<number> {
  try {
    const info = (await redis.call('XINFO', 'STREAM', key)) as unknown[];
    const i = info.indexOf('entries-added');
    return i >= 0 ? Number(info[i + 1]) : 0;
  } catch {
    return 0;
  }
}

describe('large groups on 2 gateways + 2 logic nodes', () => {
  let cluster: TestCluster;
  let redis: Redis;
  const open: TestClient[] = [];

  const connect = async (user: string, gateway: 1 | 2): Promise<TestClient> => {
    const c = await connectClient(cluster, user, { gateway: `gw-${gateway}` });
    open.push(c);
    return c;
  };
  /** A group of `size` members (owner included) named `prefix-0` … made by `owner` (create, then adds of 999 at most). */
  const makeGroup = async (owner: TestClient, name: string, members: readonly string[]) => {
    const others = members.filter((u) => u !== owner.client.session?.userId);
    const g = await owner.client.createGroup(name, others.slice(0, 999));
    for (let i = 999; i < others.length; i += 999) await owner.client.addMembers(g.groupId, others.slice(i, i + 999));
    return g;
  };

  before(async () => {
    cluster = await startTestCluster({ routing: 'targeted', shards: SHARDS });
    redis = new Redis(cluster.redis.url);
  });

  after(async () => {
    await Promise.all(open.splice(0).map((c) => c.close()));
    redis?.disconnect();
    await cluster?.stop();
  });

  test('a group of 250 with members online on both gateways: every message once, in order; a member removed mid-stream gets nothing after, one added nothing before', { timeout: 120_000 }, async () => {
    const users = Array.from({ length: 250 }, (_, i) => `lg-${i}`);
    const owner = await connect('lg-0', 1);
    const online = [await connect('lg-1', 1), await connect('lg-2', 2), await connect('lg-3', 2), await connect('lg-4', 1)];
    const newcomer = await connect('lg-new', 2); // not a member yet
    const leaving = online[1]!; // lg-2, on gw-2
    const g = await makeGroup(owner, 'large', users);
    const conv = g.conversationId;

    // First stream: everyone online gets all of it, once, in order.
    const first = texts('first', 40);
    await within(Promise.all(first.map((text) => owner.client.send({ conversationId: conv, text }))), 30_000, () => 'first stream acked');
    await until(() => online.every((c) => chats(c.in(conv)).length >= first.length), 30_000,
      () => online.map((c) => `${c.client.session?.userId}: ${chats(c.in(conv)).length}`).join(', '));
    for (const c of online) assertExactlyOnceInOrder(chats(c.in(conv)), first, `${c.client.session?.userId} (first stream)`);

    // Then, pipelined from the owner without waiting: messages, remove lg-2, add lg-new, more messages.
    const before = texts('before', 15);
    const afterward = texts('after', 15);
    const sends = before.map((text) => owner.client.send({ conversationId: conv, text }));
    const removed = owner.client.removeMembers(g.groupId, [leaving.client.session!.userId]);
    const added = owner.client.addMembers(g.groupId, ['lg-new']);
    sends.push(...afterward.map((text) => owner.client.send({ conversationId: conv, text })));
    const acks = await within(Promise.all(sends), 30_000, () => 'second stream acked');
    await within(Promise.all([removed, added]), 30_000, () => 'membership changes answered');
    const removalSeq = Math.max(...acks.slice(0, before.length).map((a) => a.seq)); // the removal came after these
    const stay = online.filter((c) => c !== leaving);
    await until(() => stay.every((c) => chats(c.in(conv)).length >= first.length + before.length + afterward.length)
      && chats(newcomer.in(conv)).length >= afterward.length, 30_000,
    () => [...stay, newcomer].map((c) => `${c.client.session?.userId}: ${chats(c.in(conv)).length}`).join(', '));
    await sleep(1000); // anything that should not come would have by now

    for (const c of stay) assertExactlyOnceInOrder(chats(c.in(conv)), [...first, ...before, ...afterward], `${c.client.session?.userId}`);
    assertExactlyOnceInOrder(chats(leaving.in(conv)), [...first, ...before], 'the member removed mid-stream: nothing after its removal');
    assert.ok(leaving.in(conv).some((m) => m.event?.type === 'members_removed'), 'the removed member learns of its removal');
    assertExactlyOnceInOrder(chats(newcomer.in(conv)), afterward, 'the member added mid-stream: nothing before its addition');
    assert.ok(chats(newcomer.in(conv)).every((m) => m.seq > removalSeq), 'the newcomer\'s messages all come after its addition');
    assert.ok(newcomer.in(conv).some((m) => m.event?.type === 'members_added'), 'the added member gets its addition');
  });

  test('what a message costs Redis does not grow with the members: 50 online in a group of 1,000 and of 5,000', { timeout: 300_000 }, async (t) => {
    const ONLINE = 50;
    // Enough that the housekeeping Redis does every second or five (trims, reads that return empty) averages out.
    const MESSAGES = 100;
    const sender = await connect('cost-0', 1);
    const receivers: TestClient[] = [];
    for (let i = 1; i < ONLINE; i++) receivers.push(await connect(`cost-${i}`, ((i % 2) + 1) as 1 | 2));
    const onlineIds = ['cost-0', ...receivers.map((c) => c.client.session!.userId)];
    const storageShards = Array.from({ length: SHARDS }, (_, s) => `ll:up:storage:${s}`);
    const downStreams = ['ll:down:gw-1', 'll:down:gw-2'];

    const measure = async (size: number) => {
      const members = [...onlineIds, ...Array.from({ length: size - ONLINE }, (_, i) => `cost-${size}-off-${i}`)];
      const g = await makeGroup(sender, `cost ${size}`, members);
      const conv = g.conversationId;
      // Warm-up: the gateways load the group's members once.
      await sender.client.send({ conversationId: conv, text: 'warm-up' });
      await until(() => receivers.every((c) => chats(c.in(conv)).length >= 1), 30_000, () => `warm-up of ${size}`);
      await sleep(1500); // acks and loads settle
      // What Redis does by the clock alone (leases of 1.5 s, the registry, blocking reads), watched idle, kind by kind.
      const idle0 = await commandStats(redis);
      const idleStart = Date.now();
      await sleep(3000);
      const stats0 = await commandStats(redis);
      const idleMs = Date.now() - idleStart;
      const down0 = await Promise.all(downStreams.map((k) => entriesAdded(redis, k)));
      const acks0 = await Promise.all(storageShards.map((k) => entriesAdded(redis, k)));
      const t0 = Date.now();
      const list = texts(`cost-${size}`, MESSAGES);
      await within(Promise.all(list.map((text) => sender.client.send({ conversationId: conv, text }))), 60_000, () => `${size}: acked`);
      await until(() => receivers.every((c) => chats(c.in(conv)).length >= MESSAGES + 1), 60_000,
        () => `${size}: ${receivers.map((c) => chats(c.in(conv)).length).join(',')}`);
      await sleep(1000); // the PushAcks gathered at the gateways (every 100 ms) reach the storage service
      const elapsed = Date.now() - t0;
      const stats1 = await commandStats(redis);
      const down1 = await Promise.all(downStreams.map((k) => entriesAdded(redis, k)));
      const acks1 = await Promise.all(storageShards.map((k) => entriesAdded(redis, k)));
      for (const c of receivers) assertExactlyOnceInOrder(chats(c.in(conv)), ['warm-up', ...list], `${c.client.session?.userId} in the group of ${size}`);
      const delta = (name: string) => (stats1.by.get(name) ?? 0) - (stats0.by.get(name) ?? 0);
      let net = 0;
      const byKind: [string, number][] = [];
      for (const [kind, v] of stats1.by) {
        if (kind === 'info' || kind.startsWith('xinfo')) continue; // this test's own reads
        const d = v - (stats0.by.get(kind) ?? 0);
        const clock = (((stats0.by.get(kind) ?? 0) - (idle0.by.get(kind) ?? 0)) / idleMs) * elapsed;
        net += Math.max(0, d - clock);
        if (d - clock >= MESSAGES / 2) byKind.push([kind, (d - clock) / MESSAGES]);
      }
      const perMessage = net / MESSAGES;
      const downPerMessage = down1.reduce((s, v, i) => s + v - down0[i]!, 0) / MESSAGES;
      const ackShards = acks1.filter((v, i) => v > acks0[i]!).length;
      const kinds = byKind.sort((x, y) => y[1] - x[1]).slice(0, 8).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ');
      t.diagnostic(`${size} members, ${ONLINE} online: ${perMessage.toFixed(1)} Redis commands per message less the clock's (${stats1.total - stats0.total} in all in ${elapsed} ms; ${kinds}), `
        + `${downPerMessage.toFixed(2)} downlink entries per message, HGETALL ${delta('hgetall')}, acks on ${ackShards} of ${SHARDS} storage shards`);
      return { perMessage, downPerMessage, hgetall: delta('hgetall'), ackShards };
    };

    const small = await measure(1000);
    const big = await measure(5000);
    // Per member, the old way: a session lookup (HGETALL) per member per message, 1,000 and 5,000 per message.
    assert.ok(small.hgetall < MESSAGES && big.hgetall < MESSAGES, `no session lookup per member: HGETALL ${small.hgetall}, ${big.hgetall} for ${MESSAGES} messages`);
    assert.ok(big.perMessage <= small.perMessage * 1.5 + 5, `commands per message less the clock's: ${small.perMessage.toFixed(1)} at 1,000 members, ${big.perMessage.toFixed(1)} at 5,000`);
    assert.ok(big.downPerMessage <= small.downPerMessage * 1.3 + 1, `downlink entries per message: ${small.downPerMessage.toFixed(2)}, ${big.downPerMessage.toFixed(2)}`);
    // The acks of 49 members are by user: several storage shards take them (by conversation, one would).
    assert.ok(small.ackShards >= 3 && big.ackShards >= 3, `PushAcks on ${small.ackShards} and ${big.ackShards} of ${SHARDS} storage shards`);
  });

  test('a presence change goes only to the gateways with a connection watching that user', { timeout: 60_000 }, async () => {
    const watcher = await connect('pw-watcher', 1);
    const seen: PresenceInfo[] = [];
    watcher.client.on('presence', (p) => seen.push(p));
    await watcher.client.watchPresence(['pw-target']);
    seen.length = 0; // (the answer's state: offline)
    await sleep(500); // the watch reached gw-1, which wrote it to Redis
    const gw2 = 'll:down:gw-2';
    const before = await entriesAdded(redis, gw2);
    // The target comes and goes on gw-1; gw-2 has nobody watching it.
    const target = await connect('pw-target', 1);
    await until(() => seen.some((p) => p.userId === 'pw-target' && p.online), 15_000, () => `presence seen: ${JSON.stringify(seen)}`);
    await target.close();
    open.splice(open.indexOf(target), 1);
    await until(() => seen.some((p) => p.userId === 'pw-target' && !p.online), 15_000, () => `presence seen: ${JSON.stringify(seen)}`);
    await sleep(500);
    assert.equal(await entriesAdded(redis, gw2) - before, 0, 'gw-2, watching nobody, got no downlink entry for the changes');

    // A watcher on gw-2 too: now both get the next change.
    const second = await connect('pw-watcher-2', 2);
    const seen2: PresenceInfo[] = [];
    second.client.on('presence', (p) => seen2.push(p));
    await second.client.watchPresence(['pw-target']);
    seen2.length = 0;
    await sleep(500);
    await connect('pw-target', 1);
    await until(() => seen2.some((p) => p.userId === 'pw-target' && p.online), 15_000, () => `presence seen on gw-2: ${JSON.stringify(seen2)}`);
    await until(() => seen.filter((p) => p.userId === 'pw-target' && p.online).length >= 2, 15_000, () => `the first watcher saw it again: ${JSON.stringify(seen)}`);
  });
});

describe('large groups on a Redis Cluster (3 masters, 3 replicas; 2 gateways + 2 logic nodes)', () => {
  let cluster: TestCluster;
  const open: TestClient[] = [];

  before(async () => {
    cluster = await startTestCluster({ routing: 'targeted', shards: SHARDS, redisCluster: true });
  });

  after(async () => {
    await Promise.all(open.splice(0).map((c) => c.close()));
    await cluster?.stop();
  });

  test('a group of 300 with members online on both gateways: every message once, in order, to members only; presence only where watched', { timeout: 120_000 }, async () => {
    const connect = async (user: string, gateway: 1 | 2): Promise<TestClient> => {
      const c = await connectClient(cluster, user, { gateway: `gw-${gateway}` });
      open.push(c);
      return c;
    };
    const users = Array.from({ length: 300 }, (_, i) => `rcg-${i}`);
    const owner = await connect('rcg-0', 1);
    const online = [await connect('rcg-1', 1), await connect('rcg-2', 2), await connect('rcg-3', 2)];
    const outsider = await connect('rcg-outsider', 2);
    const g = await owner.client.createGroup('large on a cluster', users.slice(1));
    const conv = g.conversationId;
    const list = texts('rc-large', 60);
    await within(Promise.all(list.map((text) => owner.client.send({ conversationId: conv, text }))), 60_000, () => 'acked');
    await until(() => online.every((c) => chats(c.in(conv)).length >= list.length), 60_000,
      () => online.map((c) => `${c.client.session?.userId}: ${chats(c.in(conv)).length}`).join(', '));
    await sleep(500);
    for (const c of online) assertExactlyOnceInOrder(chats(c.in(conv)), list, `${c.client.session?.userId}`);
    assert.equal(outsider.in(conv).length, 0, 'a user outside the group gets none of it');
    // It went once per gateway: each gateway keeps the group's membership (loaded through the bus on the cluster).
    for (const gw of ['gw-1', 'gw-2']) {
      const text = await (await fetch(`${cluster.node(gw).httpUrl}/metrics`)).text();
      const kept = Number(/^longlink_gateway_large_groups (\d+)/m.exec(text)?.[1] ?? 0);
      assert.ok(kept >= 1, `${gw} keeps the large group's membership (longlink_gateway_large_groups ${kept})`);
    }

    // A watch written on the cluster (watch:{user} and node-watch:{node} in slots of their own) routes presence.
    const seen: PresenceInfo[] = [];
    online[1]!.client.on('presence', (p) => seen.push(p));
    await online[1]!.client.watchPresence(['rcg-late']);
    await sleep(500);
    await connect('rcg-late', 1);
    await until(() => seen.some((p) => p.userId === 'rcg-late' && p.online), 15_000, () => `presence seen on gw-2: ${JSON.stringify(seen)}`);
  });
});
