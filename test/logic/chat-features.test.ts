// What chat users expect, through the SDK over real sockets (TCP and
// WebSocket): read receipts and unread counts across devices, recall (online
// and at a later sync), typing, presence, the conversation list, broadcast,
// and business push to a list of users or a group through the HTTP API.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createClient, directConversationId, ErrorCode, errorName, LonglinkError,
  type BroadcastInfo, type ChatMessage, type ConversationInfo, type DeliveryInfo, type LonglinkClient, type PresenceInfo, type ReceiptInfo,
} from '../../src/client/index.js';
import { ADMIN_KEY, type TestServer } from '../helpers/server.js';
import { online, pushed, range, rejected, sleep, syncAll, until, urlOf, waitPushed, withServer, type Transport } from './support.js';

/** No test may hang the suite. */
const T = { timeout: 120_000 };

const AB = 'u:alice:bob';

interface Handle {
  client: LonglinkClient;
  user: string;
  device: string;
  messages: ChatMessage[];
  receipts: ReceiptInfo[];
  deliveries: DeliveryInfo[];
  typing: { conversationId: string; userId: string }[];
  presence: PresenceInfo[];
  recalls: { conversationId: string; seq: number; by: string }[];
  broadcasts: BroadcastInfo[];
  errors: LonglinkError[];
}

/** SDK clients of one test; all closed at its end. */
class Clients {
  private readonly all: Handle[] = [];
  constructor(private readonly s: TestServer) {}

  async connect(t: Transport, user: string, device = 'd1', platform = 'other'): Promise<Handle> {
    const client = createClient({ url: urlOf(this.s, t), token: await this.s.token(user, device, 3600, platform), reconnect: false });
    const h: Handle = { client, user, device, messages: [], receipts: [], deliveries: [], typing: [], presence: [], recalls: [], broadcasts: [], errors: [] };
    let synced = false;
    client.on('message', (m) => h.messages.push(m));
    client.on('receipt', (r) => h.receipts.push(r));
    client.on('delivered', (d) => h.deliveries.push(d));
    client.on('typing', (x) => h.typing.push(x));
    client.on('presence', (p) => h.presence.push(p));
    client.on('recall', (r) => h.recalls.push(r));
    client.on('broadcast', (b) => h.broadcasts.push(b));
    client.on('error', (e) => h.errors.push(e));
    client.on('synced', () => {
      synced = true;
    });
    await client.connect();
    await until(() => synced, 10_000, () => `${user}/${device}: initial sync`);
    this.all.push(h);
    return h;
  }

  async closeAll(): Promise<void> {
    for (const h of this.all) await h.client.close();
  }
}

async function withClients(fn: (c: Clients, s: TestServer) => Promise<void>, overrides: Record<string, string> = {}): Promise<void> {
  await withServer(async (s) => {
    const c = new Clients(s);
    try {
      await fn(c, s);
    } finally {
      await c.closeAll();
    }
  }, overrides);
}

async function waitMessages(h: Handle, n: number, timeoutMs = 10_000): Promise<ChatMessage[]> {
  await until(() => h.messages.length >= n, timeoutMs, () => `${h.user}/${h.device}: ${n} messages, got ${h.messages.length}`);
  return h.messages;
}

async function conv(h: Handle, conversationId: string): Promise<ConversationInfo> {
  const found = (await h.client.conversations()).find((c) => c.conversationId === conversationId);
  assert.ok(found, `${h.user}/${h.device} lists ${conversationId}`);
  return found;
}


interface Http {
  status: number;
  body: Record<string, unknown>;
}

async function post(s: TestServer, path: string, json: unknown, auth: string | null = `Bearer ${ADMIN_KEY}`): Promise<Http> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (auth !== null) headers.authorization = auth;
  const res = await fetch(`${s.httpUrl}${path}`, { method: 'POST', headers, body: JSON.stringify(json) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

function errorCode(r: Http): unknown {
  return (r.body.error as { code?: unknown } | undefined)?.code;
}

describe('read receipts and unread counts', () => {
  test('bob on two devices: 3 from alice → unread 3 on both; device 1 reads → device 2 gets a receipt and unread 0; alice sees the read mark', T, async () => {
    await withClients(async (c) => {
      const alice = await c.connect('tcp', 'alice', 'a1');
      const bob1 = await c.connect('tcp', 'bob', 'b1');
      const bob2 = await c.connect('ws', 'bob', 'b2');
      for (const text of ['one', 'two', 'three']) await alice.client.send({ to: 'bob', text });
      await waitMessages(bob1, 3);
      await waitMessages(bob2, 3);

      for (const b of [bob1, bob2]) {
        const x = await conv(b, AB);
        assert.equal(x.kind, 'direct');
        assert.equal(x.peerUser, 'alice');
        assert.equal(x.unread, 3, `${b.device}: unread 3`);
        assert.equal(x.lastSeq, 3);
        assert.equal(x.readSeq, 0);
        assert.equal(x.lastMessage?.text, 'three');
        assert.equal(x.lastMessage?.fromUser, 'alice');
      }
      const before = await conv(alice, AB);
      assert.equal(before.unread, 0, 'one\'s own messages are not unread');
      assert.equal(before.peerReadSeq, 0);
      assert.equal(before.peerUser, 'bob');

      await bob1.client.markRead(AB);
      await until(() => bob2.receipts.length > 0, 10_000, () => 'a receipt on bob\'s other device');
      assert.deepEqual(bob2.receipts, [{ conversationId: AB, userId: 'bob', seq: 3 }]);
      await until(() => alice.receipts.length > 0, 10_000, () => 'a receipt at alice');
      assert.deepEqual(alice.receipts, [{ conversationId: AB, userId: 'bob', seq: 3 }]);
      for (const b of [bob2, bob1]) {
        const x = await conv(b, AB);
        assert.equal(x.unread, 0, `${b.device}: unread 0 after reading on b1`);
        assert.equal(x.readSeq, 3);
      }
      assert.equal((await conv(alice, AB)).peerReadSeq, 3, 'alice sees how far bob read');

      // New messages count again, on both devices; reading up to a seq counts what is after it.
      await alice.client.send({ to: 'bob', text: 'four' });
      await alice.client.send({ to: 'bob', text: 'five' });
      await waitMessages(bob2, 5);
      assert.equal((await conv(bob1, AB)).unread, 2);
      assert.equal((await conv(bob2, AB)).unread, 2);
      await bob2.client.markRead(AB, 4);
      await until(() => bob1.receipts.some((r) => r.seq === 4), 10_000, () => 'receipt 4 on b1');
      assert.equal((await conv(bob1, AB)).unread, 1);
      assert.equal((await conv(bob1, AB)).readSeq, 4);
      // The read cursor never moves back.
      await bob1.client.markRead(AB, 2);
      assert.equal((await conv(bob2, AB)).readSeq, 4);
      assert.equal((await conv(bob2, AB)).unread, 1);
      // Whoever writes has read what it wrote; the peer's unread counts it.
      await bob1.client.send({ to: 'alice', text: 'back at you' });
      assert.equal((await conv(bob2, AB)).unread, 0);
      assert.equal((await conv(alice, AB)).unread, 1);
    });
  });

  test('1:1 delivered marks come from the receiver\'s devices acking, not from being online when sent', T, async () => {
    await withClients(async (c) => {
      const alice = await c.connect('tcp', 'alice');
      await alice.client.send({ to: 'bob', text: 'one' });
      await alice.client.send({ to: 'bob', text: 'two' });
      assert.equal((await conv(alice, AB)).peerDeliveredSeq, 0, 'bob has no device online: nothing delivered');

      // bob's device comes online and syncs: its acks move his mark, alice hears of it once per move.
      const bob = await c.connect('ws', 'bob');
      await waitMessages(bob, 2);
      await until(() => alice.deliveries.length > 0, 10_000, () => 'a delivery event at alice');
      assert.deepEqual(alice.deliveries, [{ conversationId: AB, userId: 'bob', seq: 2 }]);
      assert.equal((await conv(alice, AB)).peerDeliveredSeq, 2);
      assert.equal((await conv(alice, AB)).peerReadSeq, 0, 'delivered is not read');

      // Live: pushed to bob, acked by his device, delivered at alice; bob's own mark stays apart from alice's.
      await alice.client.send({ to: 'bob', text: 'three' });
      await until(() => alice.deliveries.some((d) => d.seq === 3), 10_000, () => 'delivered 3 at alice');
      assert.equal((await conv(alice, AB)).peerDeliveredSeq, 3);
      assert.deepEqual(bob.deliveries, [], 'alice\'s device acking her own sends tells bob nothing');

      // A second device of bob catching up does not move the mark again: no repeated event.
      const bob2 = await c.connect('tcp', 'bob', 'd2');
      await waitMessages(bob2, 3);
      await bob.client.markRead(AB);
      await until(() => alice.receipts.length > 0, 10_000, () => 'a read receipt at alice');
      assert.deepEqual(alice.deliveries.map((d) => d.seq), [2, 3]);
    });
  });

  test('with presence visible to contacts only, a delivered mark is shown only once the receiver has written back', T, async () => {
    await withClients(async (c) => {
      const alice = await c.connect('tcp', 'alice');
      const deliveries = alice.deliveries; // the same array, as it fills (the assertion below narrows alice.deliveries to never[])
      await alice.client.send({ to: 'bob', text: 'hello stranger' });
      const bob = await c.connect('ws', 'bob');
      await waitMessages(bob, 1);
      await bob.client.markRead(AB); // a sync point after bob's ack: a read mark is not presence
      await until(() => alice.receipts.length > 0, 10_000, () => 'a read receipt at alice');
      assert.deepEqual(alice.deliveries, [], 'bob coming online is not told to a stranger');
      assert.equal((await conv(alice, AB)).peerDeliveredSeq, 0);

      await bob.client.send({ to: 'alice', text: 'hi alice' });
      await alice.client.send({ to: 'bob', text: 'now we talk' });
      // Bob's device acks seq 1 after a short delay, so that ack may reach the server only now:
      // then alice learns "delivered up to 1" or "up to 2" first, which is true once they talk.
      await until(() => deliveries.at(-1)?.seq === 3, 10_000, () => `a delivery event of seq 3 once bob wrote; got ${JSON.stringify(deliveries)}`);
      const seqs = deliveries.map((d) => d.seq);
      assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), 'marks only move forward');
      for (const d of deliveries) assert.deepEqual({ ...d, seq: 0 }, { conversationId: AB, userId: 'bob', seq: 0 });
      assert.equal((await conv(alice, AB)).peerDeliveredSeq, 3);
    }, { 'presence-visibility': 'contacts' });
  });

  test('group: a member reads → the other members get a receipt; each member\'s unread counts others\' messages, not events', T, async () => {
    await withClients(async (c) => {
      const alice = await c.connect('tcp', 'alice');
      const bob = await c.connect('ws', 'bob');
      const carol = await c.connect('tcp', 'carol');
      const g = await alice.client.createGroup('readers', ['bob', 'carol']);
      await alice.client.send({ groupId: g.groupId, text: 'g1' });
      await alice.client.send({ groupId: g.groupId, text: 'g2' });
      await waitMessages(bob, 3);
      await waitMessages(carol, 3);
      const bobView = await conv(bob, g.conversationId);
      assert.equal(bobView.kind, 'group');
      assert.equal(bobView.groupId, g.groupId);
      assert.equal(bobView.name, 'readers');
      assert.equal(bobView.unread, 2);
      await bob.client.markRead(g.conversationId);
      for (const h of [alice, carol]) {
        await until(() => h.receipts.length > 0, 10_000, () => `${h.user}: receipt`);
        assert.deepEqual(h.receipts, [{ conversationId: g.conversationId, userId: 'bob', seq: 3 }]);
      }
      assert.equal((await conv(bob, g.conversationId)).unread, 0);
      assert.equal((await conv(carol, g.conversationId)).unread, 2, 'carol has not read');
      assert.equal((await conv(alice, g.conversationId)).unread, 0);
      // Group info carries every member's read mark, so a page opened later can say "read by N".
      const readMarks = (await carol.client.groupInfo(g.groupId)).members.map((m) => [m.userId, m.readSeq]);
      assert.deepEqual(readMarks, [['alice', 3], ['bob', 3], ['carol', 0]], 'alice wrote up to 3 (a writer has read what it wrote); bob read');
    });
  });
});

describe('recall', () => {
  test('an online device sees a recall event and a recalled timeline message; a device that syncs later never sees the text', T, async () => {
    await withClients(async (c) => {
      const alice = await c.connect('tcp', 'alice');
      const bob1 = await c.connect('ws', 'bob', 'b1');
      await alice.client.send({ to: 'bob', text: 'oops, secret' });
      await alice.client.send({ to: 'bob', text: 'keep this' });
      await waitMessages(bob1, 2);
      await alice.client.recall(AB, 1);
      await until(() => bob1.recalls.length > 0, 10_000, () => 'a recall event');
      assert.deepEqual(bob1.recalls, [{ conversationId: AB, seq: 1, by: 'alice' }]);
      const [, , marker] = await waitMessages(bob1, 3);
      assert.equal(marker!.seq, 3);
      assert.equal(marker!.text, '');
      assert.deepEqual(marker!.event, { type: 'recalled', actor: 'alice', targetSeq: 1 });
      // Recalling again changes nothing.
      await alice.client.recall(AB, 1);

      // A device that was never online gets the message with its text gone, and the marker.
      const bob2 = await c.connect('tcp', 'bob', 'b2');
      const synced = await waitMessages(bob2, 3);
      await sleep(200);
      assert.equal(synced.length, 3);
      assert.deepEqual(synced.map((m) => [m.seq, m.text, m.recalledBy, m.event?.type]), [
        [1, '', 'alice', undefined], [2, 'keep this', undefined, undefined], [3, '', undefined, 'recalled'],
      ]);
      assert.deepEqual(bob2.recalls, [{ conversationId: AB, seq: 1, by: 'alice' }], 'the synced marker is reported as a recall too');
      const h = await bob2.client.history(AB);
      assert.deepEqual(h.messages.map((m) => [m.seq, m.text, m.recalledBy]), [[1, '', 'alice'], [2, 'keep this', undefined], [3, '', undefined]]);
      assert.ok(!JSON.stringify(h.messages).includes('secret'), 'the recalled text is gone from history');
    });
  });

  test('refusals: past the window RECALL_EXPIRED, someone else\'s message NOT_SENDER, no such message NOT_FOUND', T, async () => {
    await withClients(async (c) => {
      const alice = await c.connect('ws', 'alice');
      const bob = await c.connect('tcp', 'bob');
      const eve = await c.connect('tcp', 'eve');
      const sent = await alice.client.send({ to: 'bob', text: 'soon too late' });
      await rejected(bob.client.recall(AB, sent.seq), ErrorCode.NOT_SENDER, 'the peer recalls alice\'s message');
      await rejected(eve.client.recall(AB, sent.seq), ErrorCode.FORBIDDEN, 'an outsider recalls');
      await rejected(alice.client.recall(AB, 99), ErrorCode.NOT_FOUND, 'no such seq');
      await sleep(700);
      await rejected(alice.client.recall(AB, sent.seq), ErrorCode.RECALL_EXPIRED, 'past a 300 ms window');
      const h = await bob.client.history(AB);
      assert.deepEqual(h.messages.map((m) => [m.text, m.recalledBy]), [['soon too late', undefined]], 'refused recalls change nothing');
    }, { 'recall-window-ms': '300' });
  });

  test('group: the sender recalls its own; an admin or the owner recalls anyone\'s; a member cannot recall others\' (NOT_SENDER)', T, async () => {
    await withClients(async (c) => {
      const alice = await c.connect('tcp', 'alice');
      const bob = await c.connect('ws', 'bob');
      const carol = await c.connect('tcp', 'carol');
      const g = await alice.client.createGroup('moderated', ['bob', 'carol']);
      await alice.client.setRole(g.groupId, 'bob', 'admin');
      const a = await alice.client.send({ groupId: g.groupId, text: 'from alice' });
      const b = await bob.client.send({ groupId: g.groupId, text: 'from bob' });
      const c1 = await carol.client.send({ groupId: g.groupId, text: 'from carol 1' });
      const c2 = await carol.client.send({ groupId: g.groupId, text: 'from carol 2' });
      await rejected(carol.client.recall(g.conversationId, a.seq), ErrorCode.NOT_SENDER, 'member recalls the owner\'s');
      await rejected(carol.client.recall(g.conversationId, b.seq), ErrorCode.NOT_SENDER, 'member recalls an admin\'s');
      await rejected(carol.client.recall(g.conversationId, 1), ErrorCode.NOT_FOUND, 'recall of a timeline event');
      await bob.client.recall(g.conversationId, c1.seq); // admin
      await alice.client.recall(g.conversationId, b.seq); // owner
      await carol.client.recall(g.conversationId, c2.seq); // sender
      await until(() => carol.recalls.length >= 3, 10_000, () => `carol: ${carol.recalls.length} recalls`);
      assert.deepEqual(carol.recalls.map((r) => [r.seq, r.by]), [[c1.seq, 'bob'], [b.seq, 'alice'], [c2.seq, 'carol']]);
      const h = await alice.client.history(g.conversationId);
      const bySeq = new Map(h.messages.map((m) => [m.seq, m]));
      assert.deepEqual([a, b, c1, c2].map((x) => [bySeq.get(x.seq)!.text, bySeq.get(x.seq)!.recalledBy]), [
        ['from alice', undefined], ['', 'alice'], ['', 'bob'], ['', 'carol'],
      ]);
    });
  });
});

describe('typing', () => {
  test('delivered to the peer (not the typist), never stored, at most about one event per second', T, async () => {
    await withClients(async (c, s) => {
      const alice = await c.connect('ws', 'alice');
      const bob = await c.connect('tcp', 'bob');
      alice.client.typing(AB);
      await until(() => bob.typing.length === 1, 10_000, () => 'bob sees alice typing');
      assert.deepEqual(bob.typing, [{ conversationId: AB, userId: 'alice' }]);

      // A burst within a second: at most one more event.
      await sleep(1100);
      for (let i = 0; i < 30; i++) alice.client.typing(AB);
      await until(() => bob.typing.length === 2, 10_000, () => 'the burst\'s event');
      await sleep(500);
      assert.equal(bob.typing.length, 2, 'a burst of 30 makes one event');

      // Typing steadily for 2.5 s: no more than one event per second.
      await sleep(1100);
      const start = Date.now();
      const before = bob.typing.length;
      while (Date.now() - start < 2500) {
        alice.client.typing(AB);
        await sleep(50);
      }
      const elapsed = Date.now() - start;
      await sleep(300);
      const steady = bob.typing.length - before;
      assert.ok(steady >= 1 && steady <= Math.ceil(elapsed / 1000) + 1, `${steady} events in ${elapsed} ms`);
      assert.deepEqual(alice.typing, [], 'the typist gets nothing back');

      // Not stored: no message, no history, nothing to sync, nothing in the list.
      assert.deepEqual(bob.messages, []);
      assert.deepEqual((await bob.client.history(AB)).messages, []);
      assert.deepEqual(await bob.client.conversations(), []);
      const raw = await online(s, 'tcp', 'bob', 'b-raw');
      assert.deepEqual((await syncAll(raw)).messages, []);
      raw.close();
      assert.deepEqual(alice.errors, []);
    });
  });

  test('group typing reaches the other members; typing where one is not a member is refused (FORBIDDEN)', T, async () => {
    await withClients(async (c) => {
      const alice = await c.connect('tcp', 'alice');
      const bob = await c.connect('ws', 'bob');
      const carol = await c.connect('tcp', 'carol');
      const eve = await c.connect('ws', 'eve');
      const g = await alice.client.createGroup('typists', ['bob', 'carol']);
      await waitMessages(carol, 1);
      bob.client.typing(g.conversationId);
      for (const h of [alice, carol]) {
        await until(() => h.typing.length === 1, 10_000, () => `${h.user} sees bob typing`);
        assert.deepEqual(h.typing, [{ conversationId: g.conversationId, userId: 'bob' }]);
      }
      eve.client.typing(g.conversationId);
      await until(() => eve.errors.length > 0, 10_000, () => 'eve is told off');
      assert.equal(errorName(eve.errors[0]!.code), 'FORBIDDEN');
      await sleep(200);
      assert.equal(alice.typing.length + carol.typing.length, 2, 'nobody sees the outsider typing');
    });
  });
});

describe('presence', () => {
  test('query: online with its platforms (sorted, unique), or offline; follows devices coming and going', T, async () => {
    await withClients(async (c) => {
      const alice = await c.connect('tcp', 'alice');
      const bobWeb = await c.connect('ws', 'bob', 'laptop', 'web');
      await c.connect('tcp', 'bob', 'phone', 'ios');
      await c.connect('tcp', 'bob', 'tablet', 'ios');
      assert.deepEqual(await alice.client.presence(['bob', 'carol', 'bob']), [
        { userId: 'bob', online: true, platforms: ['ios', 'web'] },
        { userId: 'carol', online: false, platforms: [] },
      ]);
      await bobWeb.client.close();
      let last: PresenceInfo[] = [];
      const deadline = Date.now() + 10_000;
      do {
        last = await alice.client.presence(['bob']);
        if (last[0]!.platforms.join() === 'ios') break;
        await sleep(50);
      } while (Date.now() < deadline);
      assert.deepEqual(last, [{ userId: 'bob', online: true, platforms: ['ios'] }]);
      await rejected(alice.client.presence(range(1, 101).map((i) => `u${i}`)), ErrorCode.BAD_REQUEST, 'over 100 users');
      await rejected(alice.client.presence(['not valid']), ErrorCode.BAD_REQUEST, 'an invalid id');
    });
  });

  test('watchPresence: the current state, then online and offline events as the watched user\'s connection comes and goes', T, async () => {
    await withClients(async (c, s) => {
      const alice = await c.connect('ws', 'alice');
      const initial = await alice.client.watchPresence(['carol', 'dave']);
      assert.deepEqual(initial, [
        { userId: 'carol', online: false, platforms: [] },
        { userId: 'dave', online: false, platforms: [] },
      ]);
      const carol = createClient({ url: s.tcpUrl, token: await s.token('carol', 'c1', 3600, 'android'), reconnect: false, autoSync: false });
      await carol.connect();
      await until(() => alice.presence.length >= 1, 10_000, () => 'an online event');
      assert.deepEqual(alice.presence, [{ userId: 'carol', online: true, platforms: ['android'] }]);
      await carol.close();
      await until(() => alice.presence.length >= 2, 10_000, () => 'an offline event');
      assert.deepEqual(alice.presence[1], { userId: 'carol', online: false, platforms: [] });
      // A user nobody watches comes and goes: no event.
      const zed = await c.connect('tcp', 'zed');
      await zed.client.close();
      await sleep(300);
      assert.equal(alice.presence.length, 2);
      // Watching another list replaces the old one.
      assert.deepEqual(await alice.client.watchPresence(['zed']), [{ userId: 'zed', online: false, platforms: [] }]);
      const carolAgain = createClient({ url: s.wsUrl, token: await s.token('carol', 'c2', 3600, 'ios'), reconnect: false, autoSync: false });
      await carolAgain.connect();
      const zedAgain = createClient({ url: s.wsUrl, token: await s.token('zed', 'z2', 3600, 'web'), reconnect: false, autoSync: false });
      await zedAgain.connect();
      await until(() => alice.presence.length >= 3, 10_000, () => 'zed online');
      await sleep(300);
      assert.deepEqual(alice.presence.slice(2), [{ userId: 'zed', online: true, platforms: ['web'] }], 'carol is no longer watched');
      await carolAgain.close();
      await zedAgain.close();
    });
  });
});

describe('conversation list', () => {
  test('ordered by last activity, with last message, unread counts and group ids; the same on another device and after a reconnect', T, async () => {
    await withClients(async (c) => {
      const alice = await c.connect('tcp', 'alice', 'a1');
      const bob = await c.connect('ws', 'bob');
      const carol = await c.connect('tcp', 'carol');
      await alice.client.send({ to: 'bob', text: 'hi bob' });
      await sleep(20);
      await alice.client.send({ to: 'carol', text: 'hi carol' });
      await sleep(20);
      const g = await alice.client.createGroup('trio', ['bob', 'carol']);
      await sleep(20);
      await carol.client.send({ groupId: g.groupId, text: 'carol in the group' });
      await sleep(20);
      await bob.client.send({ to: 'alice', text: 'bob replies' });
      await waitMessages(alice, 3);

      const AC = directConversationId('alice', 'carol');
      const summary = (list: ConversationInfo[]) => list.map((x) => ({
        id: x.conversationId, kind: x.kind, group: x.groupId, name: x.name, peer: x.peerUser,
        last: x.lastMessage?.text, from: x.lastMessage?.fromUser, lastSeq: x.lastSeq, unread: x.unread, at: x.lastAtMs,
      }));
      const list = await alice.client.conversations();
      const seen = summary(list);
      assert.deepEqual(seen.map(({ at: _at, ...rest }) => rest), [
        { id: AB, kind: 'direct', group: undefined, name: undefined, peer: 'bob', last: 'bob replies', from: 'bob', lastSeq: 2, unread: 1 },
        { id: g.conversationId, kind: 'group', group: g.groupId, name: 'trio', peer: undefined, last: 'carol in the group', from: 'carol', lastSeq: 2, unread: 1 },
        { id: AC, kind: 'direct', group: undefined, name: undefined, peer: 'carol', last: 'hi carol', from: 'alice', lastSeq: 1, unread: 0 },
      ]);
      assert.ok(seen.every((x, i) => i === 0 || x.at <= seen[i - 1]!.at), 'last activity descending');

      // Another device of alice, and a reconnect of the first: the same list.
      const a2 = await c.connect('ws', 'alice', 'a2');
      assert.deepEqual(summary(await a2.client.conversations()), seen);
      await alice.client.close();
      const a1again = await c.connect('ws', 'alice', 'a1');
      assert.deepEqual(summary(await a1again.client.conversations()), seen);

      // Reading on one device shows on the other; new activity moves a conversation to the top.
      await a2.client.markRead(g.conversationId);
      await a2.client.markRead(AB);
      await sleep(20);
      await a2.client.send({ to: 'carol', text: 'carol, again' });
      const after = summary(await a1again.client.conversations());
      assert.deepEqual(after.map((x) => [x.id, x.unread, x.last]), [
        [AC, 0, 'carol, again'], [AB, 0, 'bob replies'], [g.conversationId, 0, 'carol in the group'],
      ]);
      // bob's and carol's lists name the group too.
      assert.equal((await conv(bob, g.conversationId)).groupId, g.groupId);
      assert.equal((await conv(carol, AC)).unread, 2);
    });
  });

  test('a member removed from a group: the group sorts by the last activity that member saw', T, async () => {
    await withClients(async (c) => {
      const alice = await c.connect('tcp', 'alice');
      const carol = await c.connect('ws', 'carol');
      const dave = await c.connect('tcp', 'dave');
      const g = await alice.client.createGroup('left behind', ['carol']);
      await alice.client.send({ groupId: g.groupId, text: 'before' });
      await sleep(20);
      await alice.client.removeMembers(g.groupId, ['carol']);
      await sleep(20);
      await dave.client.send({ to: 'carol', text: 'hi carol' });
      await sleep(20);
      await alice.client.send({ groupId: g.groupId, text: 'carol cannot see this' });
      await waitMessages(carol, 4);
      const list = await carol.client.conversations();
      assert.ok(!JSON.stringify(list).includes('carol cannot see this'));
      const entry = list.find((x) => x.conversationId === g.conversationId)!;
      assert.equal(entry.lastMessage?.event?.type, 'members_removed');
      assert.ok(list.every((x, i) => i === 0 || x.lastAtMs <= list[i - 1]!.lastAtMs),
        `sorted by the activity carol saw: ${list.map((x) => `${x.conversationId}@${x.lastAtMs}`).join(', ')}`);
      assert.deepEqual(list.map((x) => x.conversationId), [directConversationId('carol', 'dave'), g.conversationId]);
    });
  });
});

describe('broadcast', () => {
  test('POST /api/v1/broadcast reaches every online connection (TCP and WS) as an event, and is not stored', T, async () => {
    await withClients(async (c, s) => {
      const alice = await c.connect('tcp', 'alice');
      const bob1 = await c.connect('ws', 'bob', 'b1');
      const bob2 = await c.connect('tcp', 'bob', 'b2');
      const raw = await online(s, 'ws', 'carol');
      const r = await post(s, '/api/v1/broadcast', { text: 'maintenance at noon' });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(typeof r.body.id, 'string');
      for (const h of [alice, bob1, bob2]) {
        await until(() => h.broadcasts.length > 0, 10_000, () => `${h.user}/${h.device}: broadcast`);
        assert.deepEqual(h.broadcasts, [{ id: r.body.id, text: 'maintenance at noon', sentAtMs: r.body.sent_at_ms }]);
      }
      const ev = await raw.next((f) => f.body.case === 'event', 10_000);
      assert.equal(ev.id, 0);
      assert.equal(ev.body.case === 'event' && ev.body.value.body.case === 'broadcast' ? ev.body.value.body.value.text : undefined, 'maintenance at noon');

      // Not stored: no message, nothing in the list, nothing to sync for a device connecting later.
      assert.deepEqual(alice.messages, []);
      assert.deepEqual(await bob1.client.conversations(), []);
      const later = await c.connect('tcp', 'dave');
      await sleep(200);
      assert.deepEqual(later.broadcasts, []);
      assert.deepEqual(later.messages, []);
      assert.deepEqual((await syncAll(raw)).messages, []);

      // Guarded by the admin key.
      const none = await post(s, '/api/v1/broadcast', { text: 'no key' }, null);
      assert.equal(none.status, 401);
      assert.equal(errorCode(none), 'UNAUTHORIZED');
      const wrong = await post(s, '/api/v1/broadcast', { text: 'bad key' }, 'Bearer not-the-admin-key');
      assert.equal(wrong.status, 401);
      assert.equal((await post(s, '/api/v1/broadcast', { text: '' })).status, 400);
      await sleep(200);
      assert.equal(alice.broadcasts.length, 1, 'refused broadcasts reach nobody');
      raw.close();
    });
  });
});

describe('business push (POST /api/v1/messages)', () => {
  test('to_users: one 1:1 message from the system to each; online users get it now, offline ones at sync', T, async () => {
    await withClients(async (c, s) => {
      const bob = await c.connect('ws', 'bob');
      const r = await post(s, '/api/v1/messages', { to_users: ['bob', 'carol'], text: 'your order shipped' });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const out = r.body.messages as { conversation_id: string; seq: number }[];
      assert.deepEqual(out.map((m) => [m.conversation_id, m.seq]), [
        [directConversationId('system', 'bob'), 1], [directConversationId('system', 'carol'), 1],
      ]);
      const [m] = await waitMessages(bob, 1);
      assert.equal(m!.fromUser, 'system');
      assert.equal(m!.text, 'your order shipped');
      assert.equal(m!.conversationId, directConversationId('system', 'bob'));
      const carol = await c.connect('tcp', 'carol');
      assert.deepEqual(carol.messages.map((x) => [x.fromUser, x.text]), [['system', 'your order shipped']]);
      assert.equal((await conv(carol, directConversationId('system', 'carol'))).unread, 1);

      const none = await post(s, '/api/v1/messages', { to_users: ['bob'], text: 'x' }, null);
      assert.equal(none.status, 401);
      await sleep(200);
      assert.equal(bob.messages.length, 1, 'an unauthorized push stores nothing');
    });
  });

  test('group_id: every member gets it (online now, offline at sync), from the system or a named member; refusals are coded', T, async () => {
    await withClients(async (c, s) => {
      const alice = await c.connect('tcp', 'alice');
      const bob = await c.connect('ws', 'bob');
      const g = await alice.client.createGroup('announcements', ['bob', 'carol']);
      const r = await post(s, '/api/v1/messages', { group_id: g.groupId, text: 'welcome, everyone' });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.conversation_id, g.conversationId);
      assert.equal(r.body.seq, 2);
      const fromAlice = await post(s, '/api/v1/messages', { group_id: g.groupId, from: 'alice', text: 'alice via the api' });
      assert.equal(fromAlice.status, 200, JSON.stringify(fromAlice.body));
      for (const h of [alice, bob]) {
        const ms = await waitMessages(h, 3);
        assert.deepEqual(ms.slice(1).map((m) => [m.seq, m.fromUser, m.text]), [[2, 'system', 'welcome, everyone'], [3, 'alice', 'alice via the api']], h.user);
      }
      const carol = await c.connect('tcp', 'carol');
      assert.deepEqual(carol.messages.map((m) => [m.seq, m.fromUser, m.text]), [
        [1, 'alice', ''], [2, 'system', 'welcome, everyone'], [3, 'alice', 'alice via the api'],
      ]);

      const outsider = await post(s, '/api/v1/messages', { group_id: g.groupId, from: 'eve', text: 'let me in' });
      assert.equal(outsider.status, 403);
      assert.equal(errorCode(outsider), 'NOT_MEMBER');
      const unknown = await post(s, '/api/v1/messages', { group_id: 'nosuchgroup', text: 'hello?' });
      assert.equal(unknown.status, 404);
      assert.equal(errorCode(unknown), 'NOT_FOUND');
      const noKey = await post(s, '/api/v1/messages', { group_id: g.groupId, text: 'no key' }, null);
      assert.equal(noKey.status, 401);
      await alice.client.dismissGroup(g.groupId);
      const dismissed = await post(s, '/api/v1/messages', { group_id: g.groupId, text: 'too late' });
      assert.equal(dismissed.status, 400);
      assert.equal(errorCode(dismissed), 'GROUP_DISMISSED');
      const h = await bob.client.history(g.conversationId);
      assert.deepEqual(h.messages.filter((m) => !m.event).map((m) => m.text), ['welcome, everyone', 'alice via the api'], 'refused pushes store nothing');
    });
  });
});

// Raw check that a receipt is an Event frame (id 0) and not a stored message.
test('receipts are transient events: not pushed as messages, not synced', T, async () => {
  await withServer(async (s) => {
    const alice = await online(s, 'tcp', 'alice');
    const bob = await online(s, 'ws', 'bob');
    alice.send({ case: 'send', value: { clientMsgId: 'r1', toUser: 'bob', text: 'read me' } });
    await waitPushed(bob, 1);
    const id = bob.send({ case: 'markRead', value: { conversationId: AB, seq: 0n } });
    const done = await bob.next((f) => f.id === id);
    assert.equal(done.body.case, 'done');
    const ev = await alice.next((f) => f.body.case === 'event', 10_000);
    assert.equal(ev.id, 0);
    assert.ok(ev.body.case === 'event' && ev.body.value.body.case === 'receipt');
    assert.deepEqual(pushed(alice), []);
    assert.deepEqual((await syncAll(bob)).messages.map((m) => m.text), ['read me']);
    alice.close();
    bob.close();
  });
});
