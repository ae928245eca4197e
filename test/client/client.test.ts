// The client SDK against a real embedded server, over TCP and WebSocket:
// login, sends acked, messages received once and in order, resends across
// broken connections stored once, gaps filled by sync, reconnects with backoff.
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createClient, memoryStore, requestToken, listGateways, LonglinkError, ErrorCode, errorName, type ClientState,
} from '../../src/client/index.js';
import { ADMIN_KEY, startTestServer } from '../helpers/server.js';
import {
  TRANSPORTS, TcpProxy, online, sendMany, sendOk, sleep, until, urlOf, withServer, within,
} from '../logic/support.js';
import { Wire, closeAll, connected, makeClient, seqs, texts, track, waitMessages } from './harness.js';

/** No test may hang the suite. */
const T = { timeout: 120_000 };

const AB = 'u:alice:bob';

afterEach(closeAll);

// ---- tests -----------------------------------------------------------------

describe('login', () => {
  for (const t of TRANSPORTS) {
    test(`${t}: connect logs in and reports the session`, T, async () => {
      await withServer(async (s) => {
        const h = makeClient(s, urlOf(s, t), 'alice', 'phone');
        const info = await h.client.connect();
        assert.deepEqual(info, {
          userId: 'alice', deviceId: 'phone', platform: 'other', nodeId: 'test-node', pingIntervalMs: s.config.pingIntervalMs, maxFileBytes: s.config.files.maxBytes,
        });
        assert.deepEqual(h.client.session, info);
        assert.equal(h.client.state, 'online');
        assert.deepEqual(h.states.map((x) => x.state), ['connecting', 'online']);
        assert.equal(h.logins, 1);
        await until(() => h.synced === 1, 5_000, () => 'initial sync');
        await h.client.close();
        assert.equal(h.client.state, 'offline');
      });
    });

    test(`${t}: a refused token rejects connect with its code, and the client does not retry`, T, async () => {
      await withServer(async (s) => {
        for (const [token, code] of [['not-a-jwt', ErrorCode.TOKEN_INVALID], [await s.token('alice', 'phone', -60), ErrorCode.TOKEN_EXPIRED]] as const) {
          const wire = new Wire();
          const client = createClient({ url: urlOf(s, t), token, connector: wire.connector, initialBackoffMs: 20 });
          track(client);
          const states: ClientState[] = [];
          client.on('state', (st) => states.push(st));
          await assert.rejects(client.connect(), (err: unknown) => {
            assert.ok(err instanceof LonglinkError, String(err));
            assert.equal(errorName(err.code), errorName(code));
            return true;
          });
          await sleep(300);
          assert.equal(wire.connects, 1, 'no reconnect after a refused login');
          assert.notEqual(client.state, 'online');
          // What an app shows: after the refusal the client is not "connecting" any more.
          assert.equal(client.state, 'offline', `state after a refused login (states: ${states.join(' → ')})`);
        }
      });
    });
  }
});

describe('send and receive', () => {
  for (const [from, to] of [['tcp', 'ws'], ['ws', 'tcp']] as const) {
    test(`${from} → ${to}: send resolves with the ack; the peer and the sender's other device get each message once, in order`, T, async () => {
      await withServer(async (s) => {
        const bob = await connected(s, to, 'bob', 'phone');
        const laptop = await connected(s, to, 'alice', 'laptop');
        const phone = await connected(s, from, 'alice', 'phone');
        const t0 = Date.now();
        const results = await Promise.all([1, 2, 3, 4, 5].map((i) => phone.client.send({ to: 'bob', text: `m${i}`, clientMsgId: `cm-${i}` })));
        assert.deepEqual(results.map((r) => r.seq), [1, 2, 3, 4, 5]);
        for (const [i, r] of results.entries()) {
          assert.equal(r.clientMsgId, `cm-${i + 1}`);
          assert.equal(r.conversationId, AB);
          assert.equal(r.duplicate, false);
          assert.match(r.serverMsgId, /^[0-9a-f-]{36}$/);
          assert.ok(r.sentAtMs >= t0 - 5 && r.sentAtMs <= Date.now() + 5);
        }
        assert.equal(phone.client.pendingSends, 0);

        for (const h of [bob, laptop]) {
          await waitMessages(h, 5);
          await sleep(150);
          assert.deepEqual(texts(h.messages), ['m1', 'm2', 'm3', 'm4', 'm5']);
          assert.deepEqual(seqs(h.messages), [1, 2, 3, 4, 5]);
          assert.deepEqual(h.messages.map((m) => m.serverMsgId), results.map((r) => r.serverMsgId));
          assert.ok(h.messages.every((m) => m.conversationId === AB && m.fromUser === 'alice' && m.fromDevice === 'phone'));
        }
        assert.deepEqual(phone.messages, [], 'the sending device is not told of its own messages');

        // The reply comes back to both of alice's devices, after her own.
        const reply = await bob.client.send({ to: 'alice', text: 'got them' });
        assert.equal(reply.seq, 6);
        for (const h of [phone, laptop]) {
          await until(() => h.messages.some((m) => m.text === 'got them'), 10_000, () => 'the reply');
        }
        assert.deepEqual(texts(phone.messages), ['got them']);
        assert.deepEqual(texts(laptop.messages), ['m1', 'm2', 'm3', 'm4', 'm5', 'got them']);
        assert.deepEqual(bob.errors.concat(phone.errors, laptop.errors), []);
      });
    });
  }

  test('history pages through the SDK', T, async () => {
    await withServer(async (s) => {
      const alice = await connected(s, 'tcp', 'alice', 'phone');
      for (let i = 1; i <= 12; i++) await alice.client.send({ to: 'bob', text: `h${i}` });
      const latest = await alice.client.history(AB, { limit: 5 });
      assert.deepEqual(seqs(latest.messages), [8, 9, 10, 11, 12]);
      assert.equal(latest.hasMore, true);
      const older = await alice.client.history(AB, { beforeSeq: 8, limit: 10 });
      assert.deepEqual(seqs(older.messages), [1, 2, 3, 4, 5, 6, 7]);
      assert.equal(older.hasMore, false);
      await assert.rejects(alice.client.history('u:bob:carol'), (e: unknown) => e instanceof LonglinkError && e.code === ErrorCode.FORBIDDEN);
    });
  });

  test('a send the server refuses rejects with its code and is not retried', T, async () => {
    await withServer(async (s) => {
      const alice = await connected(s, 'ws', 'alice', 'phone');
      await assert.rejects(alice.client.send({ to: 'bob', text: '' }), (e: unknown) => e instanceof LonglinkError && e.code === ErrorCode.TEXT_EMPTY);
      await assert.rejects(alice.client.send({ conversationId: 'u:bob:carol', text: 'x' }), (e: unknown) => e instanceof LonglinkError && e.code === ErrorCode.FORBIDDEN);
      assert.equal(alice.client.pendingSends, 0);
      assert.equal((await alice.client.send({ to: 'bob', text: 'fine' })).seq, 1);
    });
  });
});

describe('resend across a broken connection', () => {
  for (const t of TRANSPORTS) {
    test(`${t}: the ack is lost and the connection drops: the resend is stored once and send resolves`, T, async () => {
      await withServer(async (s) => {
        const bob = await connected(s, 'tcp', 'bob', 'phone');
        const wire = new Wire();
        const alice = await connected(s, t, 'alice', 'phone', { connector: wire.connector });
        let loseAcks = true;
        wire.onIncoming = (f, b, deliver) => {
          if (loseAcks && f.body.case === 'sendAck') return;
          deliver(b);
        };
        let settled = false;
        const sending = alice.client.send({ to: 'bob', text: 'must arrive once', clientMsgId: 'important' });
        void sending.then(() => (settled = true), () => (settled = true));
        await waitMessages(bob, 1); // stored and pushed, but alice never heard
        await sleep(100);
        assert.equal(settled, false, 'no ack, no resolve');
        assert.equal(alice.client.pendingSends, 1);

        loseAcks = false;
        wire.drop();
        // Promptly after the reconnect, not at some later timer.
        const r = await within(sending, 5_000, 'the resend after reconnecting');
        assert.equal(r.seq, 1);
        assert.equal(r.duplicate, true, 'the server recognised the resend');
        assert.equal(r.clientMsgId, 'important');
        assert.equal(wire.connects, 2);
        assert.equal(wire.sent('send').filter((x) => x.clientMsgId === 'important').length, 2, 'sent on both connections');

        await sleep(200);
        assert.deepEqual(texts(bob.messages), ['must arrive once']);
        const h = await alice.client.history(AB);
        assert.deepEqual(h.messages.map((m) => m.clientMsgId), ['important']);
        // The conversation goes on with the next seq.
        assert.equal((await alice.client.send({ to: 'bob', text: 'next' })).seq, 2);
      });
    });

    test(`${t}: sends made while the network is down wait, then go out once each, in order`, T, async () => {
      await withServer(async (s) => {
        const proxy = await TcpProxy.start(t === 'tcp' ? s.tcpPort : s.httpPort);
        try {
          const bob = await connected(s, 'tcp', 'bob', 'phone');
          const alice = makeClient(s, proxy.url(t), 'alice', 'phone');
          await alice.client.connect();
          assert.equal((await alice.client.send({ to: 'bob', text: 'before' })).seq, 1);

          await proxy.stopListening();
          proxy.cut();
          await until(() => alice.client.state === 'reconnecting', 5_000, () => `state ${alice.client.state}`);
          const done: number[] = [];
          const sends = ['during 1', 'during 2', 'during 3'].map((text, i) =>
            alice.client.send({ to: 'bob', text }).then((r) => {
              done.push(i);
              return r;
            }));
          await sleep(500);
          assert.deepEqual(done, [], 'nothing acked while down');
          assert.equal(alice.client.pendingSends, 3);
          assert.equal(texts(bob.messages).length, 1);

          await proxy.listen();
          const results = await within(Promise.all(sends), 5_000, 'the queued sends after the network came back');
          assert.deepEqual(results.map((r) => r.seq), [2, 3, 4]);
          assert.ok(results.every((r) => !r.duplicate));
          await waitMessages(bob, 4);
          await sleep(200);
          assert.deepEqual(texts(bob.messages), ['before', 'during 1', 'during 2', 'during 3']);
          assert.deepEqual(seqs((await bob.client.history(AB)).messages), [1, 2, 3, 4]);
        } finally {
          await proxy.close();
        }
      });
    });
  }
});

describe('receive: gaps, duplicates, acks', () => {
  test('a lost push leaves a gap: the client syncs and delivers in order, once each', T, async () => {
    await withServer(async (s) => {
      const wire = new Wire();
      const bob = await connected(s, 'ws', 'bob', 'phone', { connector: wire.connector });
      const alice = await online(s, 'tcp', 'alice', 'phone');
      await sendOk(alice, { toUser: 'bob', text: 'one' });
      await waitMessages(bob, 1);

      // The push of seq 2 is lost on the way.
      wire.onIncoming = (f, b, deliver) => {
        if (f.body.case === 'push' && f.body.value.messages.some((m) => m.seq === 2n)) return;
        deliver(b);
      };
      const syncsBefore = wire.sent('sync').length;
      await sendOk(alice, { toUser: 'bob', text: 'two' });
      await sleep(300);
      assert.deepEqual(texts(bob.messages), ['one'], 'nothing shows seq 2 yet');

      await sendOk(alice, { toUser: 'bob', text: 'three' });
      await waitMessages(bob, 3);
      assert.deepEqual(texts(bob.messages), ['one', 'two', 'three']);
      assert.deepEqual(seqs(bob.messages), [1, 2, 3]);
      const gapSyncs = wire.sent('sync').slice(syncsBefore);
      assert.ok(gapSyncs.length >= 1, 'the gap made the client sync');
      assert.ok(gapSyncs.some((x) => x.conversationIds.includes(AB)));

      // Duplicated and reordered pushes: still once each, in seq order.
      let held: Uint8Array | undefined;
      wire.onIncoming = (f, b, deliver) => {
        if (f.body.case === 'push' && f.body.value.messages.some((m) => m.seq === 4n)) {
          held = b;
          return;
        }
        deliver(b);
        if (f.body.case === 'push' && f.body.value.messages.some((m) => m.seq === 5n) && held) {
          deliver(held);
          deliver(b);
          deliver(held);
        }
      };
      await sendOk(alice, { toUser: 'bob', text: 'four' });
      await sendOk(alice, { toUser: 'bob', text: 'five' });
      await waitMessages(bob, 5);
      await sleep(300);
      assert.deepEqual(texts(bob.messages), ['one', 'two', 'three', 'four', 'five']);
      assert.deepEqual(bob.errors, []);
      alice.close();
    });
  });

  test('delivery is acked; the same device with its store comes back to what it missed, without a store to where it acked, with an emptied store to its whole history, a new device to everything', T, async () => {
    await withServer(async (s) => {
      const wire = new Wire();
      const kept = memoryStore();
      const bob = await connected(s, 'tcp', 'bob', 'phone', { connector: wire.connector, store: kept });
      const alice = await connected(s, 'ws', 'alice', 'phone');
      for (const text of ['a', 'b', 'c']) await alice.client.send({ to: 'bob', text });
      await waitMessages(bob, 3);
      await until(() => wire.sent('pushAck').some((a) => a.conversationId === AB && a.seq === 3n), 5_000, () => 'a PushAck up to seq 3');
      // Every full sync carried a sync token (empty at first), and each page answered one, kept in the store.
      const syncs = wire.sent('sync');
      assert.ok(syncs.length > 0 && syncs.every((r) => r.syncToken !== undefined), JSON.stringify(syncs.map((r) => r.syncToken)));
      await bob.client.close();
      assert.notEqual(kept.snapshot?.syncToken, undefined, 'the token is stored with the cursors');

      // Offline: two more.
      await alice.client.send({ to: 'bob', text: 'd' });
      await alice.client.send({ to: 'bob', text: 'e' });

      const again = await connected(s, 'ws', 'bob', 'phone', { store: kept });
      await sleep(200);
      assert.deepEqual(texts(again.messages), ['d', 'e'], 'exactly what was missed');
      await again.client.close();
      // An SDK given no store keeps nothing across runs (a stream consumer, the CLI's listen): it resumes where the device acked.
      const stream = await connected(s, 'ws', 'bob', 'phone');
      await sleep(500);
      assert.deepEqual(texts(stream.messages), [], 'nothing it had acked');
      await stream.client.close();
      // An empty store on the same device id (a reinstall, data wiped): an empty token, no cursors: its history again.
      const fresh = await connected(s, 'ws', 'bob', 'phone', { store: memoryStore() });
      await waitMessages(fresh, 5);
      await sleep(200);
      assert.deepEqual(texts(fresh.messages), ['a', 'b', 'c', 'd', 'e'], 'its history again');
      const other = await connected(s, 'tcp', 'bob', 'tablet');
      await waitMessages(other, 5);
      await sleep(200);
      assert.deepEqual(texts(other.messages), ['a', 'b', 'c', 'd', 'e']);
    });
  });

  test('more than a sync page missed: all of it arrives at login, in order, once', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice', 'phone');
      await sendMany(alice, 450, (i) => ({ toUser: 'bob', text: `p${i + 1}` }));
      const bob = await connected(s, 'ws', 'bob', 'phone');
      await waitMessages(bob, 450);
      await sleep(200);
      assert.deepEqual(seqs(bob.messages), Array.from({ length: 450 }, (_, i) => i + 1));
      alice.close();
    });
  });
});

describe('reconnect', () => {
  for (const t of TRANSPORTS) {
    test(`${t}: after the connection drops the client reconnects with growing, capped backoff and catches up`, T, async () => {
      await withServer(async (s) => {
        const proxy = await TcpProxy.start(t === 'tcp' ? s.tcpPort : s.httpPort);
        try {
          const initial = 50;
          const max = 400;
          const alice = makeClient(s, proxy.url(t), 'alice', 'phone', { initialBackoffMs: initial, maxBackoffMs: max });
          await alice.client.connect();
          const bob = await connected(s, 'tcp', 'bob', 'phone');

          // A single drop: back quickly, within the first backoff step.
          proxy.cut();
          await until(() => alice.logins === 2 && alice.client.state === 'online', 5_000, () => `second login; state ${alice.client.state}`);
          const firstRetry = alice.states.find((x) => x.state === 'reconnecting');
          assert.ok(firstRetry && firstRetry.retryInMs !== undefined && firstRetry.retryInMs < initial, JSON.stringify(alice.states));

          // A longer outage: repeated attempts, each delay under its cap, doubling to the maximum.
          const mark = alice.states.length;
          await proxy.stopListening();
          proxy.cut();
          await bob.client.send({ to: 'alice', text: 'while you were out 1' });
          await bob.client.send({ to: 'alice', text: 'while you were out 2' });
          await sleep(1_500);
          const retries = alice.states.slice(mark).filter((x) => x.state === 'reconnecting' && x.retryInMs !== undefined);
          assert.ok(retries.length >= 3, `several attempts in 1.5 s: ${JSON.stringify(retries)}`);
          retries.forEach((x, k) => {
            const cap = Math.min(max, initial * 2 ** k);
            assert.ok(x.retryInMs! >= 0 && x.retryInMs! < cap, `attempt ${k}: ${x.retryInMs} ms under the cap ${cap} (${JSON.stringify(retries)})`);
          });
          assert.equal(alice.client.state, 'reconnecting');
          assert.deepEqual(alice.messages, []);

          await proxy.listen();
          await until(() => alice.client.state === 'online', max + 5_000, () => `back online; state ${alice.client.state}`);
          await waitMessages(alice, 2);
          await sleep(200);
          assert.deepEqual(texts(alice.messages), ['while you were out 1', 'while you were out 2']);
          assert.equal(proxy.live, 1, 'one connection, no leftovers');
        } finally {
          await proxy.close();
        }
      });
    });
  }

  for (const mode of ['reset', 'drop'] as const) {
    const what = mode === 'reset' ? 'resets new connections' : 'accepts connections and drops them during login';
    test(`a gateway that ${what}: one backoff step per attempt, then recovery`, T, async () => {
      await withServer(async (s) => {
        const proxy = await TcpProxy.start(s.tcpPort);
        try {
          const initial = 50;
          const max = 400;
          const alice = makeClient(s, proxy.url('tcp'), 'alice', 'phone', { initialBackoffMs: initial, maxBackoffMs: max });
          await alice.client.connect();
          const mark = alice.states.length;
          if (mode === 'reset') proxy.resetNew = true;
          else proxy.dropNewAfterMs = 30;
          const acceptedBefore = proxy.accepted;
          proxy.cut();
          await sleep(1_500);
          const attempts = proxy.accepted - acceptedBefore;
          const retries = alice.states.slice(mark).filter((x) => x.state === 'reconnecting' && x.retryInMs !== undefined);
          const delays = retries.map((r) => r.retryInMs!);
          assert.ok(attempts >= 3, `attempts: ${attempts}`);
          // One announced delay per failure (the last one may still be pending), each under its doubling cap.
          assert.ok(retries.length <= attempts + 1, `${retries.length} announced retries for ${attempts} attempts: delays ${JSON.stringify(delays)}`);
          delays.forEach((d, k) => {
            const cap = Math.min(max, initial * 2 ** k);
            assert.ok(d < cap, `delay ${k}: ${d} ms under the cap ${cap}; delays ${JSON.stringify(delays)}, attempts ${attempts}`);
          });
          proxy.resetNew = false;
          proxy.dropNewAfterMs = undefined;
          await until(() => alice.client.state === 'online', max + 5_000, () => `online; state ${alice.client.state}`);
          assert.equal((await alice.client.send({ to: 'bob', text: 'back' })).seq, 1);
        } finally {
          await proxy.close();
        }
      });
    });
  }

  test('server restart: kicked with SERVER_SHUTDOWN, the client reconnects to the new process and its queued send is stored once', T, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'longlink-client-restart-'));
    let s = await startTestServer({}, dir);
    try {
      const alice = makeClient(s, s.tcpUrl, 'alice', 'phone', { initialBackoffMs: 50, maxBackoffMs: 300 });
      await alice.client.connect();
      assert.equal((await alice.client.send({ to: 'bob', text: 'first' })).seq, 1);

      const ports = { 'http-port': String(s.httpPort), 'tcp-port': String(s.tcpPort) };
      await s.close();
      await until(() => alice.kicks.length === 1, 5_000, () => 'a kick');
      assert.deepEqual(alice.kicks, [{ code: ErrorCode.SERVER_SHUTDOWN, reconnect: true }]);
      await until(() => alice.client.state === 'reconnecting', 5_000, () => `state ${alice.client.state}`);
      const queued = alice.client.send({ to: 'bob', text: 'queued while the server was down' });
      await sleep(300);

      s = await startTestServer(ports, dir);
      const r = await within(queued, 5_000, 'the queued send after the restart');
      assert.equal(r.seq, 2);
      assert.equal(r.duplicate, false);
      assert.equal(alice.client.state, 'online');
      assert.ok(alice.logins >= 2);

      const bob = await connected(s, 'ws', 'bob', 'phone');
      await waitMessages(bob, 2);
      await sleep(200);
      assert.deepEqual(texts(bob.messages), ['first', 'queued while the server was down']);
    } finally {
      await closeAll();
      await s.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('close(): offline for good, pending sends rejected, no reconnect', T, async () => {
    await withServer(async (s) => {
      const wire = new Wire();
      const alice = await connected(s, 'tcp', 'alice', 'phone', { connector: wire.connector });
      wire.onIncoming = (f, b, deliver) => {
        if (f.body.case !== 'sendAck') deliver(b);
      };
      const pending = alice.client.send({ to: 'bob', text: 'never acked' });
      await sleep(100);
      await alice.client.close();
      await assert.rejects(pending, (e: unknown) => e instanceof LonglinkError && e.code === ErrorCode.UNAVAILABLE);
      await sleep(300);
      assert.equal(alice.client.state, 'offline');
      assert.equal(wire.connects, 1);
    });
  });
});

describe('HTTP helpers', () => {
  test('requestToken and listGateways drive a client end to end', T, async () => {
    await withServer(async (s) => {
      const gateways = await listGateways(s.httpUrl);
      assert.equal(gateways.length, 1);
      const tok = await requestToken(s.httpUrl, ADMIN_KEY, { user_id: 'alice', device_id: 'web-1', platform: 'web' });
      assert.equal(tok.device_id, 'web-1');
      for (const url of [gateways[0]!.tcp_url!, gateways[0]!.ws_url!]) {
        const c = createClient({ url, token: tok.token });
        track(c);
        const info = await c.connect();
        assert.deepEqual([info.userId, info.deviceId, info.platform], ['alice', 'web-1', 'web']);
        await c.close();
      }
      await assert.rejects(requestToken(s.httpUrl, 'wrong-admin-key', { user_id: 'alice' }), (e: unknown) => e instanceof LonglinkError && e.code === ErrorCode.FORBIDDEN);
    });
  });
});
