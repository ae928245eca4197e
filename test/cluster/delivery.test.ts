// Delivery across a real cluster (the built binary: 2 `longlink gateway` and
// 2 `longlink logic` processes on Redis and PostgreSQL), in both routing
// modes, seen from SDK clients: 1:1 and groups across gateways, order and no
// duplicates under concurrent senders, and graceful stops of a gateway and of
// a logic node while traffic flows. One cluster per routing mode, shared by
// its tests (each test has its own users); the stop tests come last.
//
// The shard lease is 6 s here (the helper's default is 1.5 s) so that test 5
// can tell "a stopping logic node hands its shards over at once" from "the
// survivor waits for the stopped node to expire": with a short lease both
// take about a second. Nothing else in this file waits on the lease.
import { describe, test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import {
  startTestCluster, connectClient, until, assertExactlyOnceInOrder, within, texts,
  type TestCluster, type TestClient, type ClientOptions,
} from './helpers.js';
import {
  directConversationId, listGateways, ErrorCode, errorName,
  type ChatMessage, type LoginInfo, type LonglinkError, type SendOptions, type SendResult,
} from '../../src/client/index.js';
import { shardOf } from '../../src/engines/bus-redis.js';

const SHARDS = 8;
const LEASE_MS = 6000;

const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
const ascending = (xs: readonly number[]): number[] => [...xs].sort((a, b) => a - b);
/** Chat messages only (no timeline events such as group_created). */
const chats = (ms: readonly ChatMessage[]): ChatMessage[] => ms.filter((m) => m.event === undefined);
const isOwn = (c: TestClient, m: ChatMessage): boolean =>
  m.event === undefined && m.fromUser === c.client.session?.userId && m.fromDevice === c.client.session.deviceId;
/** What a device received from others (its own sends, should the SDK show any, are checked apart by `assertNoEcho`). */
const fromOthers = (c: TestClient, ms: readonly ChatMessage[]): ChatMessage[] => ms.filter((m) => !isOwn(c, m));

/**
 * A device's own sends reach its app through `send()` only: the SDK must not
 * also emit them as 'message' events ("a message from someone else, or this
 * user's other device"), not even when a sync reply brings one back before
 * its SendAck (the race that showed this; the SDK now settles the send then).
 */
function assertNoEcho(c: TestClient, what: string): void {
  const echoes = c.inbox.filter((m) => isOwn(c, m));
  assert.deepEqual(echoes.map((m) => `${m.conversationId}#${m.seq} ${m.text}`), [],
    `${what}: its own messages came back as incoming 'message' events (${echoes.length})`);
}

/** Pipelined: every send is written at once, without waiting for earlier acks. Acks in send order. */
function sendAll(c: TestClient, list: readonly SendOptions[]): Promise<SendResult[]> {
  return Promise.all(list.map((o) => c.client.send(o)));
}

/** The conversation as this device knows it: what it received plus (for the sender) its own acked sends, seq → text. */
function timeline(received: readonly ChatMessage[], own: readonly SendResult[] = [], ownTexts: readonly string[] = []): Map<number, string> {
  const out = new Map<number, string>();
  for (const m of received) out.set(m.seq, m.event ? `<${m.event.type}>` : m.text);
  own.forEach((a, i) => out.set(a.seq, ownTexts[i]!));
  return out;
}

for (const mode of ['targeted', 'broadcast'] as const) {
  describe(`delivery on 2 gateways + 2 logic nodes (${mode} routing)`, () => {
    let cluster: TestCluster | undefined;
    const open: TestClient[] = [];
    const id = (name: string) => `${name}-${mode}`;
    const c = (): TestCluster => {
      assert.ok(cluster, 'cluster started');
      return cluster;
    };
    const connect = async (user: string, options: ClientOptions = {}): Promise<TestClient> => {
      const client = await connectClient(c(), user, options);
      open.push(client);
      return client;
    };
    const closeAll = () => Promise.all(open.splice(0).map((x) => x.close()));
    const gatewayIds = async () => (await listGateways(c().apiUrl())).map((g) => g.id).sort();

    before(async () => {
      cluster = await startTestCluster({ routing: mode, shards: SHARDS, leaseMs: LEASE_MS });
    });
    afterEach(closeAll);
    after(async () => {
      await closeAll();
      await cluster?.stop();
    });

    test('1:1 across gateways: alice (gw-1, TCP) and bob (gw-2, WebSocket) each get exactly the other\'s messages, once, in order', async () => {
      const [a, b] = [id('alice1'), id('bob1')];
      const alice = await connect(a, { gateway: 'gw-1' });
      const bob = await connect(b, { gateway: 'gw-2', transport: 'ws' });
      assert.equal(alice.client.session?.nodeId, 'gw-1');
      assert.equal(bob.client.session?.nodeId, 'gw-2');
      const conv = directConversationId(a, b);

      // Both ways at once, pipelined; then one fence each, sent after every ack:
      // once the fence arrived, nothing stored earlier can still be on its way.
      const fromAlice = texts('a2b', 40);
      const fromBob = texts('b2a', 40);
      const [acksA, acksB] = await within(Promise.all([
        sendAll(alice, fromAlice.map((text) => ({ to: b, text }))),
        sendAll(bob, fromBob.map((text) => ({ to: a, text }))),
      ]), 15_000, () => c().logs());
      const [fenceA, fenceB] = await Promise.all([alice.client.send({ to: b, text: 'a2b-fence' }), bob.client.send({ to: a, text: 'b2a-fence' })]);
      await until(() => bob.in(conv).some((m) => m.text === 'a2b-fence') && alice.in(conv).some((m) => m.text === 'b2a-fence'), 10_000,
        () => `bob has ${bob.in(conv).length}, alice ${alice.in(conv).length}\n${c().logs()}`);

      const atBob = fromOthers(bob, bob.in(conv));
      const atAlice = fromOthers(alice, alice.in(conv));
      assertExactlyOnceInOrder(atBob, [...fromAlice, 'a2b-fence'], 'bob');
      assertExactlyOnceInOrder(atAlice, [...fromBob, 'b2a-fence'], 'alice');
      assert.ok(atBob.every((m) => m.fromUser === a) && atAlice.every((m) => m.fromUser === b), 'the peer\'s messages are from the peer');
      // Bob sees alice's messages under the seqs alice was acked with, and each side's
      // own sends plus what it received are the whole conversation, 1..82 without gaps.
      assert.deepEqual(atBob.map((m) => m.seq), [...acksA, fenceA].map((x) => x.seq));
      assert.deepEqual(atAlice.map((m) => m.seq), [...acksB, fenceB].map((x) => x.seq));
      assert.deepEqual(ascending([...acksA, fenceA, ...atAlice].map((x) => x.seq)), range(1, 82));
      assert.deepEqual(ascending([...acksB, fenceB, ...atBob].map((x) => x.seq)), range(1, 82));
      assertNoEcho(alice, 'alice');
      assertNoEcho(bob, 'bob');
    });

    test('group across gateways: each member device gets the group\'s messages once, in order; the sender\'s other device too, its sending device only its ack', async () => {
      const [a, carol, dave, erin] = [id('alice2'), id('carol2'), id('dave2'), id('erin2')];
      const alice1 = await connect(a, { gateway: 'gw-1', device: 'phone' });
      const alice2 = await connect(a, { gateway: 'gw-2', device: 'laptop', transport: 'ws' });
      const carol1 = await connect(carol, { gateway: 'gw-1' });
      const dave1 = await connect(dave, { gateway: 'gw-1', device: 'phone' });
      const dave2 = await connect(dave, { gateway: 'gw-2', device: 'laptop' });
      const erin1 = await connect(erin, { gateway: 'gw-2', transport: 'ws' });
      const devices = { alice1, alice2, carol1, dave1, dave2, erin1 };

      const group = await alice1.client.createGroup('delivery', [carol, dave, erin]);
      const conv = group.conversationId;
      assert.deepEqual(group.members.map((m) => m.userId).sort(), [a, carol, dave, erin].sort());
      // Every device shows the new group before anyone writes (as an app would).
      await until(() => Object.values(devices).every((d) => d.in(conv).length > 0), 5000,
        () => Object.entries(devices).map(([n, d]) => `${n}: ${d.in(conv).length}`).join(', '));

      const fromAlice = texts('alice', 30);
      const acksAlice = await within(sendAll(alice1, fromAlice.map((text) => ({ groupId: group.groupId, text }))), 15_000, () => c().logs());
      const fromCarol = texts('carol', 10);
      const acksCarol = await within(sendAll(carol1, fromCarol.map((text) => ({ groupId: group.groupId, text }))), 15_000, () => c().logs());
      const lastSeq = acksCarol[acksCarol.length - 1]!.seq;
      assert.equal(lastSeq, 41, 'created event, 30 from alice, 10 from carol');

      const everyoneHasCarolsLast = () => Object.values(devices).filter((d) => d !== carol1).every((d) => d.in(conv).some((m) => m.text === 'carol-10'));
      await until(everyoneHasCarolsLast, 10_000, () => Object.entries(devices).map(([n, d]) => `${n}: ${d.in(conv).length}`).join(', ') + `\n${c().logs()}`);

      // Every device sees the creation event first (the actor's devices too).
      for (const [name, d] of Object.entries(devices)) {
        const first = d.in(conv)[0];
        assert.equal(first?.event?.type, 'group_created', `${name} first sees the group created`);
        assert.equal(first?.seq, 1);
      }
      // What each device shows: the sending device has its own messages from its acks only.
      assertExactlyOnceInOrder(chats(alice1.in(conv)), fromCarol, 'alice phone (the sending device)');
      assertExactlyOnceInOrder(chats(alice2.in(conv)), [...fromAlice, ...fromCarol], 'alice laptop (her other device)');
      assertExactlyOnceInOrder(chats(carol1.in(conv)), fromAlice, 'carol');
      assertExactlyOnceInOrder(chats(dave1.in(conv)), [...fromAlice, ...fromCarol], 'dave phone (gw-1)');
      assertExactlyOnceInOrder(chats(dave2.in(conv)), [...fromAlice, ...fromCarol], 'dave laptop (gw-2)');
      assertExactlyOnceInOrder(chats(erin1.in(conv)), [...fromAlice, ...fromCarol], 'erin');
      assert.ok(alice2.in(conv).filter((m) => m.text.startsWith('alice-')).every((m) => m.fromUser === a && m.fromDevice === 'phone'),
        'alice\'s laptop shows her phone\'s messages as hers, from the phone');

      // Every device agrees on the whole timeline 1..41 (received plus own acks), the same text at each seq.
      const reference = timeline(alice2.in(conv));
      assert.deepEqual([...reference.keys()], range(1, lastSeq), 'alice laptop: every seq, no gaps');
      const views: [string, Map<number, string>][] = [
        ['alice phone', timeline(alice1.in(conv), acksAlice, fromAlice)],
        ['carol', timeline(carol1.in(conv), acksCarol, fromCarol)],
        ['dave phone', timeline(dave1.in(conv))],
        ['dave laptop', timeline(dave2.in(conv))],
        ['erin', timeline(erin1.in(conv))],
      ];
      for (const [name, view] of views) {
        assert.deepEqual(view, reference, `${name} sees the same timeline`);
      }
    });

    test('4 senders on both gateways pipelining 100 group + 100 1:1 messages each: every receiver device gets each once, seqs 1..N without gaps, each sender\'s order kept', async () => {
      const N = 100;
      const senderIds = [1, 2, 3, 4].map((i) => id(`s${i}-3`));
      const r = id('r3');
      const placement: ClientOptions[] = [
        { gateway: 'gw-1' }, { gateway: 'gw-2' }, { gateway: 'gw-1', transport: 'ws' }, { gateway: 'gw-2', transport: 'ws' },
      ];
      const senders = await Promise.all(senderIds.map((u, i) => connect(u, placement[i])));
      const r1 = await connect(r, { gateway: 'gw-1', device: 'phone' });
      const r2 = await connect(r, { gateway: 'gw-2', device: 'laptop', transport: 'ws' });
      const group = await senders[0]!.client.createGroup('load', [...senderIds.slice(1), r]);
      const gconv = group.conversationId;
      await until(() => [...senders, r1, r2].every((d) => d.in(gconv).length > 0), 5000, () => 'every member device shows the group');

      const groupTexts = senderIds.map((_, i) => texts(`g-s${i + 1}`, N));
      const directTexts = senderIds.map((_, i) => texts(`d-s${i + 1}`, N));
      // Each sender interleaves its group and 1:1 sends, all 200 written at once; the 4 run concurrently.
      const results = await within(Promise.all(senders.map(async (s, i) => {
        const list: SendOptions[] = [];
        for (let k = 0; k < N; k++) {
          list.push({ groupId: group.groupId, text: groupTexts[i]![k]! }, { to: r, text: directTexts[i]![k]! });
        }
        const acks = await sendAll(s, list);
        return { group: acks.filter((_, k) => k % 2 === 0), direct: acks.filter((_, k) => k % 2 === 1) };
      })), 30_000, () => `acks pending: ${senders.map((s) => s.client.pendingSends).join(',')}\n${c().logs()}`);
      // Fences, sent after every ack.
      const groupFence = await senders[0]!.client.send({ groupId: group.groupId, text: 'g-fence' });
      const directFences = await Promise.all(senders.map((s, i) => s.client.send({ to: r, text: `d-s${i + 1}-fence` })));

      const total = 1 + 4 * N + 1; // created event, the messages, the fence
      assert.equal(groupFence.seq, total);
      const directConv = senderIds.map((u) => directConversationId(u, r));
      // A sender's own group view: what it received plus what it was acked.
      const senderView = (i: number) => timeline(fromOthers(senders[i]!, senders[i]!.in(gconv)), i === 0 ? [...results[i]!.group, groupFence] : results[i]!.group,
        i === 0 ? [...groupTexts[i]!, 'g-fence'] : groupTexts[i]!);
      const done = (d: TestClient) => d.in(gconv).some((m) => m.text === 'g-fence') && directConv.every((cv, i) => d.in(cv).some((m) => m.text === `d-s${i + 1}-fence`));
      await until(() => done(r1) && done(r2) && senders.every((_, i) => senderView(i).size === total), 20_000,
        () => `r1 ${r1.inbox.length}, r2 ${r2.inbox.length}, senders ${senders.map((s) => s.inbox.length).join(',')} of ${total - 1 + 4 * (N + 1)}\n${c().logs()}`);

      for (let i = 0; i < 4; i++) {
        // The sender's acks: its 1:1 conversation is fresh, so seq 1..100 in send order; its group seqs ascend.
        assert.deepEqual(results[i]!.direct.map((x) => x.seq), range(1, N), `s${i + 1}: 1:1 acks in send order`);
        const gs = results[i]!.group.map((x) => x.seq);
        assert.deepEqual(gs, ascending(gs), `s${i + 1}: group acks ascend in send order`);
      }
      for (const [name, d] of [['receiver phone (gw-1)', r1], ['receiver laptop (gw-2)', r2]] as const) {
        directConv.forEach((cv, i) => {
          assertExactlyOnceInOrder(d.in(cv), [...directTexts[i]!, `d-s${i + 1}-fence`], `${name}, 1:1 with s${i + 1}`);
          assert.deepEqual(d.in(cv).map((m) => m.seq), range(1, N + 1), `${name}, 1:1 with s${i + 1}: seqs`);
        });
        const g = d.in(gconv);
        assert.deepEqual(g.map((m) => m.seq), range(1, total), `${name}: group seqs 1..${total}, each once`);
        const all = [...groupTexts.flat(), 'g-fence'];
        assert.deepEqual(chats(g).map((m) => m.text).sort(), all.sort(), `${name}: every group message once`);
        senderIds.forEach((u, i) => {
          assert.deepEqual(chats(g).filter((m) => m.fromUser === u && m.text !== 'g-fence').map((m) => m.text), groupTexts[i], `${name}: s${i + 1}'s order kept`);
        });
      }
      // The senders are group members too: each gets the other three's messages once, and
      // its view (received plus own acks) is the receiver's timeline, seq for seq.
      const reference = timeline(r1.in(gconv));
      assert.deepEqual(timeline(r2.in(gconv)), reference, 'both receiver devices show the same timeline');
      senders.forEach((s, i) => {
        const others = senderIds.flatMap((_, j) => (j === i ? [] : groupTexts[j]!));
        const got = chats(fromOthers(s, s.in(gconv))).filter((m) => m.text !== 'g-fence').map((m) => m.text);
        assert.deepEqual([...got].sort(), [...others].sort(), `s${i + 1} gets the others' group messages once`);
        assert.deepEqual(senderView(i), reference, `s${i + 1} sees the receiver's timeline`);
      });
      assert.deepEqual(directFences.map((x) => x.seq), [N + 1, N + 1, N + 1, N + 1]);
      senders.forEach((s, i) => assertNoEcho(s, `s${i + 1} (sends and receives in the group)`));
    });

    test('gateway SIGTERM: its clients are kicked with SERVER_SHUTDOWN, move to the other gateway, it leaves the list, and no message is lost or doubled', async () => {
      const cl = c();
      const stayer = await connect(id('stay4'), { gateway: 'gw-1' });
      // Clients connected through the picker (so they may move); keep trying until each sits on gw-2.
      const moverOnGw2 = async (user: string, transport: 'tcp' | 'ws'): Promise<TestClient> => {
        for (let attempt = 0; attempt < 30; attempt++) {
          const m = await connect(user, { transport });
          if (m.client.session?.nodeId === 'gw-2') return m;
          await m.close();
        }
        return assert.fail(`the picker never chose gw-2 for ${user} in 30 tries`);
      };
      const movers = [await moverOnGw2(id('mvtcp4'), 'tcp'), await moverOnGw2(id('mvws4'), 'ws')];
      const kicks = movers.map(() => [] as LonglinkError[]);
      const kickReconnect = movers.map(() => [] as boolean[]);
      const logins = movers.map(() => [] as LoginInfo[]);
      movers.forEach((m, i) => {
        m.client.on('kick', (err, reconnect) => {
          kicks[i]!.push(err);
          kickReconnect[i]!.push(reconnect);
        });
        m.client.on('login', (info) => logins[i]!.push(info));
      });
      const convs = movers.map((m) => directConversationId(stayer.client.session!.userId, m.client.session!.userId));
      const moverIds = movers.map((m) => m.client.session!.userId);

      try {
        // Before the stop.
        const before = texts('before', 10);
        await within(Promise.all(movers.map((_, i) => sendAll(stayer, before.map((text) => ({ to: moverIds[i]!, text: `${text}-to${i}` }))))), 10_000, () => cl.logs());
        await within(Promise.all(movers.map((m, i) => sendAll(m, before.map((text) => ({ to: stayer.client.session!.userId, text: `${text}-from${i}` }))))), 10_000, () => cl.logs());

        // During: both sides pipeline while gw-2 stops (the movers' sends may be cut off and resent on gw-1).
        const during = texts('during', 40);
        const duringSends = Promise.all([
          ...movers.map((_, i) => sendAll(stayer, during.map((text) => ({ to: moverIds[i]!, text: `${text}-to${i}` })))),
          ...movers.map((m, i) => sendAll(m, during.map((text) => ({ to: stayer.client.session!.userId, text: `${text}-from${i}` })))),
        ]);
        duringSends.catch(() => undefined); // awaited below; a failure before that must not go unhandled
        const exit = await cl.kill('gw-2', 'SIGTERM');
        assert.equal(exit, 0, `gw-2 stopped cleanly\n${cl.logs('gw-2')}`);
        // It left the registry before it kicked anyone: not listed, without waiting for its TTL.
        assert.deepEqual(await gatewayIds(), ['gw-1'], 'GET /api/v1/gateways right after gw-2 exited');

        await until(() => movers.every((m, i) => kicks[i]!.length > 0 && m.client.state === 'online' && m.client.session?.nodeId === 'gw-1'), 10_000,
          () => `kicks ${kicks.map((k) => k.map((e) => e.codeName).join('|')).join(', ')}; states ${movers.map((m) => `${m.client.state}@${m.client.session?.nodeId}`).join(', ')}\n${cl.logs()}`);
        movers.forEach((_, i) => {
          assert.deepEqual(kicks[i]!.map((e) => errorName(e.code)), [errorName(ErrorCode.SERVER_SHUTDOWN)], `mover ${i}: one kick, SERVER_SHUTDOWN`);
          assert.deepEqual(kickReconnect[i], [true], `mover ${i}: told to reconnect`);
          assert.deepEqual(logins[i]!.map((l) => l.nodeId), ['gw-1'], `mover ${i}: logged in again, on gw-1`);
        });
        await within(duringSends, 15_000, () => `sends pending: stayer ${stayer.client.pendingSends}, movers ${movers.map((m) => m.client.pendingSends).join(',')}\n${cl.logs()}`);

        // After: both ways again, then fences.
        const afterTexts = texts('after', 10);
        await within(Promise.all([
          ...movers.map((_, i) => sendAll(stayer, [...afterTexts, 'fence'].map((text) => ({ to: moverIds[i]!, text: `${text}-to${i}` })))),
          ...movers.map((m, i) => sendAll(m, [...afterTexts, 'fence'].map((text) => ({ to: stayer.client.session!.userId, text: `${text}-from${i}` })))),
        ]), 10_000, () => cl.logs());
        await until(() => movers.every((m, i) => m.in(convs[i]!).some((x) => x.text === `fence-to${i}`) && stayer.in(convs[i]!).some((x) => x.text === `fence-from${i}`)), 10_000,
          () => `movers ${movers.map((m, i) => m.in(convs[i]!).length).join(',')}, stayer ${convs.map((cv) => stayer.in(cv).length).join(',')}\n${cl.logs()}`);
        const all = [...before, ...during, ...afterTexts, 'fence'];
        movers.forEach((m, i) => {
          const atMover = fromOthers(m, m.in(convs[i]!));
          const atStayer = fromOthers(stayer, stayer.in(convs[i]!));
          assertExactlyOnceInOrder(atMover, all.map((t) => `${t}-to${i}`), `mover ${i} (moved gw-2 → gw-1)`);
          assertExactlyOnceInOrder(atStayer, all.map((t) => `${t}-from${i}`), `stayer, from mover ${i}`);
          const seqs = ascending([...atMover, ...atStayer].map((x) => x.seq));
          assert.deepEqual(seqs, range(1, 2 * all.length), `conversation ${i}: seqs 1..${2 * all.length}, each once`);
        });

        // Restarted, gw-2 is listed again and serves.
        await cl.restart('gw-2');
        await until(async () => (await gatewayIds()).join() === 'gw-1,gw-2', 5000, () => 'gw-2 listed again');
        const late = await connect(id('late4'), { gateway: 'gw-2' });
        const lateConv = directConversationId(stayer.client.session!.userId, late.client.session!.userId);
        await stayer.client.send({ to: late.client.session!.userId, text: 'welcome back' });
        await until(() => late.in(lateConv).length > 0, 5000, () => cl.logs('gw-2'));
        assertExactlyOnceInOrder(late.in(lateConv), ['welcome back'], 'client on the restarted gw-2');

        assertNoEcho(stayer, 'stayer');
        movers.forEach((m, i) => assertNoEcho(m, `mover ${i} (its sends were cut off by the stop and resent)`));
      } finally {
        if (!cl.node('gw-2').running) await cl.restart('gw-2');
      }
    });

    test('logic SIGTERM while a sender pipelines: every message acked and delivered once in order, and the other logic node takes the shards over at once', async () => {
      const cl = c();
      const COUNT = 300;
      const redis = new Redis(cl.redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
      try {
        await redis.connect();
        const owners = async () => Promise.all(range(0, SHARDS - 1).map((s) => redis.get(`ll:lease:${s}`)));
        // Steady state first: each logic node holds its fair share.
        await until(async () => {
          const o = await owners();
          return o.filter((x) => x === 'logic-1').length === SHARDS / 2 && o.filter((x) => x === 'logic-2').length === SHARDS / 2;
        }, 15_000, () => 'shards split between logic-1 and logic-2');
        const o = await owners();
        // A receiver whose conversation with alice is on one of logic-1's shards, so the stop matters.
        const a = id('alice5');
        const b = range(0, 199).map((i) => id(`bob5-${i}`)).find((u) => o[shardOf(directConversationId(a, u), SHARDS)] === 'logic-1');
        assert.ok(b, 'a conversation on a logic-1 shard');
        const conv = directConversationId(a, b);
        const alice = await connect(a, { gateway: 'gw-1' });
        const bob = await connect(b, { gateway: 'gw-2', transport: 'ws' });

        const sentAt: number[] = [];
        const ackedAt: number[] = [];
        const acks: Promise<SendResult>[] = [];
        let stopped: Promise<number | string> | undefined;
        let sigtermAt = 0;
        const messages = texts('m', COUNT);
        for (let i = 0; i < COUNT; i++) {
          sentAt[i] = Date.now();
          acks.push(alice.client.send({ to: b, text: messages[i]! }).then((r) => {
            ackedAt[i] = Date.now();
            return r;
          }));
          if (i === COUNT / 3) {
            sigtermAt = Date.now();
            stopped = cl.kill('logic-1', 'SIGTERM');
          }
          await new Promise((r) => setTimeout(r, 5));
        }
        const allAcked = Promise.all(acks);
        allAcked.catch(() => undefined); // awaited below; a failure before that must not go unhandled
        assert.equal(await stopped, 0, `logic-1 stopped cleanly\n${cl.logs('logic-1')}`);
        const results = await within(allAcked, 20_000, () => `${alice.client.pendingSends} not acked\n${cl.logs()}`);
        const fence = await within(alice.client.send({ to: b, text: 'fence' }), 5000, () => cl.logs());
        await until(() => bob.in(conv).some((m) => m.text === 'fence'), 10_000, () => `bob has ${bob.in(conv).length}\n${cl.logs()}`);

        assert.deepEqual(results.map((r) => r.seq), range(1, COUNT), 'acked in send order with seqs 1..N');
        assertExactlyOnceInOrder(bob.in(conv), [...messages, 'fence'], 'bob');
        assert.deepEqual(alice.inbox, [], 'alice (who only sent) was shown nothing');
        assert.deepEqual(bob.in(conv).map((m) => m.seq), [...results, fence].map((r) => r.seq), 'bob sees the acked seqs');

        // The survivor serves every shard now: a message into a conversation on each shard is acked.
        const peers = range(0, SHARDS - 1).map((s) => range(0, 999).map((i) => id(`p5-${i}`)).find((u) => shardOf(directConversationId(a, u), SHARDS) === s)!);
        await within(sendAll(alice, peers.map((to) => ({ to, text: 'hello' }))), 5000, () => `not every shard is served\n${cl.logs()}`);

        // A graceful stop releases the shards so another node takes them over at once: no
        // message may wait for the stopped node's lease to run out (6 s here).
        const waits = results.map((_, i) => ackedAt[i]! - sentAt[i]!);
        const longest = Math.max(...waits);
        const worst = waits.indexOf(longest);
        assert.ok(longest < LEASE_MS / 2,
          `a message waited ${longest} ms for its ack (message ${worst + 1}, sent ${sentAt[worst]! - sigtermAt} ms after the SIGTERM; lease ${LEASE_MS} ms): ` +
          `the stopped node's shards were not taken over at once\n${cl.logs('logic-2')}`);
      } finally {
        redis.disconnect();
      }
    });
  });
}
