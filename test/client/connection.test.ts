// The SDK's connection half against a real server over real sockets: a send
// whose connection dies after it was written but before its ack arrived is
// resent and stored once; reconnect delays are jittered under a doubling cap;
// the state an app shows (connecting, online, reconnecting in N ms, offline)
// and why.
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createClient, memoryStore, nodeConnector, LonglinkError, ErrorCode, type ClientConnection, type Connector,
} from '../../src/client/index.js';
import { decodeFrame } from '../../src/protocol/index.js';
import { TRANSPORTS, TcpProxy, sleep, until, urlOf, withServer, within } from '../logic/support.js';
import { closeAll, closedPort, connected, makeClient, texts, waitMessages } from './harness.js';

const T = { timeout: 120_000 };
const AB = 'u:alice:bob';

afterEach(closeAll);

describe('resend across a forced disconnect', () => {
  for (const t of TRANSPORTS) {
    test(`${t}: the server stored the send, the socket dies before the ack gets through: resent, stored and delivered once`, T, async () => {
      await withServer(async (s) => {
        const proxy = await TcpProxy.start(t === 'tcp' ? s.tcpPort : s.httpPort);
        try {
          const bob = await connected(s, 'tcp', 'bob', 'phone');
          const alice = await connected(s, proxy.url(t), 'alice', 'phone');

          // From here on alice hears nothing: her send reaches the server, its ack does not reach her.
          proxy.swallowDown = true;
          let settled = false;
          const sending = alice.client.send({ to: 'bob', text: 'exactly once', clientMsgId: 'once-1' });
          void sending.then(() => (settled = true), () => (settled = true));
          await waitMessages(bob, 1);
          await until(() => proxy.swallowed > 0, 5_000, () => 'the ack swallowed by the proxy');
          assert.equal(settled, false, 'no ack heard, no resolve');
          assert.equal(alice.client.pendingSends, 1);
          assert.deepEqual(alice.client.getPendingSends().map((p) => [p.clientMsgId, p.text, p.to]), [['once-1', 'exactly once', 'bob']]);

          // The socket dies with the ack in it; the network is fine again for the next connection.
          proxy.swallowDown = false;
          proxy.cut();
          const r = await within(sending, 5_000, 'the resend after reconnecting');
          assert.equal(r.clientMsgId, 'once-1');
          assert.equal(r.seq, 1);
          assert.equal(alice.client.pendingSends, 0);
          assert.ok(alice.logins >= 2, 'it reconnected');
          assert.deepEqual(alice.sent.map((x) => [x.result.clientMsgId, x.result.seq, x.send.text]), [['once-1', 1, 'exactly once']]);

          // What users see: one message for bob, one stored; the conversation goes on at seq 2.
          await sleep(200);
          assert.deepEqual(texts(bob.messages), ['exactly once']);
          const h = await bob.client.history(AB);
          assert.deepEqual(h.messages.map((m) => [m.seq, m.clientMsgId, m.text]), [[1, 'once-1', 'exactly once']]);
          assert.equal((await alice.client.send({ to: 'bob', text: 'next' })).seq, 2);
          assert.deepEqual(alice.messages, [], 'her own message is not shown to her as incoming');
          assert.deepEqual(alice.errors, []);
        } finally {
          await proxy.close();
        }
      });
    });

    test(`${t}: the connection is closed right after the send frame was written: resent, stored and delivered once`, T, async () => {
      await withServer(async (s) => {
        // The first Send this connector writes is followed at once by closing its socket;
        // from then on that connection hears nothing (as if the socket were destroyed).
        let killed = 0;
        const killer: Connector = async (url, events) => {
          let dead = false;
          const inner = await nodeConnector(url, {
            onFrame: (bytes) => {
              if (!dead) events.onFrame(bytes);
            },
            onClose: (reason) => events.onClose(reason),
          });
          const conn: ClientConnection = {
            send: (bytes) => {
              if (dead) return;
              inner.send(bytes);
              if (killed === 0 && decodeFrame(bytes).body.case === 'send') {
                killed++;
                dead = true;
                inner.close();
              }
            },
            close: () => inner.close(),
          };
          return conn;
        };
        const bob = await connected(s, 'ws', 'bob', 'phone');
        const alice = await connected(s, t, 'alice', 'phone', { connector: killer });
        const r = await within(alice.client.send({ to: 'bob', text: 'written, then the socket died', clientMsgId: 'k-1' }), 10_000, 'the send');
        assert.equal(killed, 1);
        assert.equal(r.seq, 1);
        assert.ok(alice.logins >= 2, 'it reconnected');
        await waitMessages(bob, 1);
        await sleep(200);
        assert.deepEqual(texts(bob.messages), ['written, then the socket died']);
        assert.deepEqual((await bob.client.history(AB)).messages.map((m) => m.clientMsgId), ['k-1']);
      });
    });
  }
});

describe('reconnect backoff', () => {
  test('against a closed port: every delay in [0, cap), jittered, the cap doubling up to the maximum; each wait is kept', T, async () => {
    await withServer(async (s) => {
      const proxy = await TcpProxy.start(s.tcpPort);
      try {
        const initial = 4;
        const max = 64;
        const samples = 40;
        const alice = makeClient(s, proxy.url('tcp'), 'alice', 'phone', { initialBackoffMs: initial, maxBackoffMs: max });
        await alice.client.connect();
        assert.equal(alice.client.nextRetryAtMs, undefined);

        // The gateway's port closes: every attempt is refused.
        const mark = alice.states.length;
        let seenNextRetry = 0;
        const off = alice.client.on('state', (state, d) => {
          if (state === 'reconnecting' && d.retryAtMs !== undefined && alice.client.nextRetryAtMs === d.retryAtMs) seenNextRetry++;
        });
        await proxy.close();
        const retries = () => alice.states.slice(mark).filter((x) => x.state === 'reconnecting' && x.retryInMs !== undefined);
        await until(() => retries().length >= samples, 30_000, () => `${samples} attempts; got ${retries().length}`);
        off();
        const got = retries().slice(0, samples);
        const delays = got.map((x) => x.retryInMs!);
        const caps = got.map((_, k) => Math.min(max, initial * 2 ** k));

        // Each attempt announced in order, with a delay under its cap.
        assert.deepEqual(got.map((x) => x.attempt), got.map((_, k) => k + 1));
        delays.forEach((d, k) => {
          assert.ok(Number.isInteger(d) && d >= 0 && d < caps[k]!, `attempt ${k + 1}: ${d} ms in [0, ${caps[k]}); delays ${JSON.stringify(delays)}`);
        });
        assert.ok(delays.every((d) => d < max), 'never above the maximum');
        // Jitter: not one fixed delay (35 capped samples from [0, 64) are never all alike).
        const capped = delays.slice(5);
        assert.ok(new Set(capped).size >= 8, `jittered: ${JSON.stringify(capped)}`);
        // The cap grew: later delays go past what the early caps allowed, and spread over the whole maximum.
        assert.ok(Math.max(...capped) >= 2 * initial * 2 ** 2, `delays past the third cap: ${JSON.stringify(capped)}`);
        const mean = capped.reduce((a, b) => a + b, 0) / capped.length;
        assert.ok(mean > max / 4 && mean < (3 * max) / 4, `mean of capped delays ${mean} near ${max / 2}`);
        // Each announced wait was kept: the next attempt came no earlier.
        for (let k = 1; k < got.length; k++) {
          const waited = got[k]!.atMs - got[k - 1]!.atMs;
          assert.ok(waited >= delays[k - 1]! - 2, `attempt ${k + 1} came ${waited} ms after the one announced for ${delays[k - 1]} ms`);
        }
        // What a UI shows: when, and why.
        assert.ok(got.every((x) => x.retryAtMs !== undefined && Math.abs(x.retryAtMs - (x.atMs + x.retryInMs!)) <= 20));
        assert.ok(seenNextRetry >= samples - 1, `nextRetryAtMs matched the announced time ${seenNextRetry} times`);
        assert.match(got[got.length - 1]!.reason ?? '', /ECONNREFUSED/);
        assert.equal(alice.client.state, 'reconnecting');
        assert.ok(alice.client.nextRetryAtMs === undefined || alice.client.nextRetryAtMs >= Date.now() - max);

        // The port opens again: back online, and the next loss starts from the first cap again.
        await proxy.listen();
        await until(() => alice.client.state === 'online', max + 5_000, () => `online; state ${alice.client.state}`);
        assert.equal(alice.client.nextRetryAtMs, undefined);
        const mark2 = alice.states.length;
        proxy.cut();
        await until(() => alice.states.slice(mark2).some((x) => x.state === 'reconnecting'), 5_000, () => 'reconnecting after the second loss');
        const first = alice.states.slice(mark2).find((x) => x.state === 'reconnecting')!;
        assert.equal(first.attempt, 1);
        assert.ok(first.retryInMs! < initial, `first retry after a good connection: ${first.retryInMs} ms < ${initial}`);
        await until(() => alice.client.state === 'online', 5_000, () => `online again; state ${alice.client.state}`);
      } finally {
        await proxy.close();
      }
    });
  });
});

describe('connection state', () => {
  test('connecting → online → reconnecting (in N ms, why) → online → offline (closed)', T, async () => {
    await withServer(async (s) => {
      const proxy = await TcpProxy.start(s.httpPort);
      try {
        const alice = makeClient(s, proxy.url('ws'), 'alice', 'phone', { initialBackoffMs: 100, maxBackoffMs: 200 });
        assert.equal(alice.client.state, 'idle');
        await alice.client.connect();
        assert.equal(alice.client.state, 'online');
        proxy.cut();
        await until(() => alice.client.state === 'online' && alice.logins === 2, 5_000, () => `back; state ${alice.client.state}`);
        await alice.client.close();
        const seen = alice.states.map((x) => x.state);
        assert.deepEqual(seen, ['connecting', 'online', 'reconnecting', 'online', 'offline']);
        const reconnecting = alice.states[2]!;
        assert.equal(reconnecting.attempt, 1);
        assert.ok(reconnecting.retryInMs! >= 0 && reconnecting.retryInMs! < 100);
        assert.match(reconnecting.reason ?? '', /closed/);
        assert.equal(alice.states[4]!.reason, 'closed');
        assert.equal(alice.client.nextRetryAtMs, undefined);
      } finally {
        await proxy.close();
      }
    });
  });

  test('a first connect that cannot reach the gateway: offline with the reason, sends wait for a later connect', T, async () => {
    await withServer(async (s) => {
      const port = await closedPort();
      let url = `tcp://127.0.0.1:${port}`;
      const alice = makeClient(s, () => Promise.resolve(url), 'alice', 'phone');
      await assert.rejects(alice.client.connect());
      assert.equal(alice.client.state, 'offline');
      assert.match(alice.states.at(-1)!.reason ?? '', /ECONNREFUSED/);
      await sleep(300);
      assert.deepEqual(alice.states.map((x) => x.state), ['connecting', 'offline'], 'no retries behind the app\'s back');

      const queued = alice.client.send({ to: 'bob', text: 'queued while offline' });
      assert.deepEqual(alice.client.getPendingSends().map((p) => [p.text, p.restored]), [['queued while offline', false]]);
      url = urlOf(s, 'tcp');
      await alice.client.connect();
      assert.equal((await within(queued, 5_000, 'the queued send')).seq, 1);
    });
  });

  test('a kick that says not to reconnect: offline with its code; sends made after it wait in the store', T, async () => {
    await withServer(async (s) => {
      const store = memoryStore();
      const alice = await connected(s, 'tcp', 'alice', 'phone', { store });
      const kicks: LonglinkError[] = [];
      alice.client.on('kick', (e) => kicks.push(e));
      // The same device logs in elsewhere: the server replaces this session.
      const other = createClient({ url: urlOf(s, 'ws'), token: await s.token('alice', 'phone') });
      try {
        await other.connect();
        await until(() => alice.client.state === 'offline', 5_000, () => `offline; state ${alice.client.state}`);
        assert.deepEqual(kicks.map((k) => k.code), [ErrorCode.REPLACED]);
        assert.match(alice.states.at(-1)!.reason ?? '', /REPLACED/);
        const after = alice.client.send({ to: 'bob', text: 'after the kick' });
        await sleep(300);
        assert.equal(alice.client.state, 'offline', 'no reconnect after REPLACED');
        assert.equal(alice.client.pendingSends, 1);
        await alice.client.close();
        await assert.rejects(after, (e: unknown) => e instanceof LonglinkError && e.code === ErrorCode.UNAVAILABLE);
        assert.deepEqual(store.snapshot?.outbox.map((o) => o.text), ['after the kick']);
        assert.equal(alice.client.pendingSends, 0);
      } finally {
        await other.close();
      }
    });
  });
});
