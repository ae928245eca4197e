// Local persistence against a real server: what an app restarted on the same
// store sees. Unacked sends come back (restored) and go out once with their
// client_msg_id; stored cursors keep a restarted receiver from showing old
// messages again; state of another user is never used.
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileStore, memoryStore, parseSnapshot, LonglinkError, ErrorCode } from '../../src/client/index.js';
import { TRANSPORTS, TcpProxy, online, sendOk, sleep, syncOnce, until, urlOf, withServer, within } from '../logic/support.js';
import { Wire, closeAll, closedPort, connected, makeClient, texts, waitMessages } from './harness.js';

const T = { timeout: 120_000 };
const AB = 'u:alice:bob';

afterEach(closeAll);

function tempDir(): { dir: string; [Symbol.dispose]: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'longlink-client-store-'));
  return { dir, [Symbol.dispose]: () => rmSync(dir, { recursive: true, force: true }) };
}

function onDisk(path: string) {
  return parseSnapshot(JSON.parse(readFileSync(path, 'utf8')) as unknown);
}

describe('restart with the file store', () => {
  for (const t of TRANSPORTS) {
    test(`${t}: a send made while the gateway was unreachable goes out once after a restart; old messages are not shown again`, T, async () => {
      const tmp = tempDir();
      try {
        await withServer(async (s) => {
          const path = join(tmp.dir, 'alice-phone.json');
          const proxy = await TcpProxy.start(t === 'tcp' ? s.tcpPort : s.httpPort);
          try {
            const bob = await connected(s, 'ws', 'bob', 'phone');

            // Run 1. Alice's app is online and gets two messages; it dies before its delivery acks go out.
            const run1 = await connected(s, proxy.url(t), 'alice', 'phone', { store: fileStore(path), ackDelayMs: 3_600_000 });
            await bob.client.send({ to: 'alice', text: 'b1' });
            await bob.client.send({ to: 'alice', text: 'b2' });
            await waitMessages(run1, 2);
            assert.deepEqual(texts(run1.messages), ['b1', 'b2']);

            // The gateway becomes unreachable; she writes a message anyway, and the app is closed.
            await proxy.stopListening();
            proxy.cut();
            await until(() => run1.client.state === 'reconnecting', 5_000, () => `state ${run1.client.state}`);
            const lost = run1.client.send({ to: 'bob', text: 'written while unreachable', clientMsgId: 'offline-1' });
            const lostOutcome = lost.then(() => undefined, (e: unknown) => e);
            await sleep(200);
            assert.equal(run1.client.pendingSends, 1);
            await run1.client.close();
            const err = await lostOutcome;
            assert.ok(err instanceof LonglinkError && err.code === ErrorCode.UNAVAILABLE, String(err));

            const saved = onDisk(path);
            assert.deepEqual(saved.cursors, { [AB]: 2 });
            assert.deepEqual([saved.userId, saved.deviceId], ['alice', 'phone']);
            assert.deepEqual(saved.outbox.map((o) => [o.clientMsgId, o.to, o.text]), [['offline-1', 'bob', 'written while unreachable']]);
            assert.deepEqual(readdirSync(tmp.dir), ['alice-phone.json'], 'no temp files left');

            // While she is away bob writes once more.
            await bob.client.send({ to: 'alice', text: 'b3' });
            // The server alone would give this device everything again: its acks never arrived.
            const raw = await online(s, 'tcp', 'alice', 'phone');
            assert.deepEqual(texts((await syncOnce(raw)).messages), ['b1', 'b2', 'b3']);
            raw.close();
            await raw.waitClosed();

            // Run 2: a new client on the same file, the server reachable.
            const run2 = makeClient(s, urlOf(s, t), 'alice', 'phone', { store: fileStore(path) });
            const restored = await run2.client.restore();
            assert.deepEqual(restored.map((p) => [p.clientMsgId, p.to, p.text, p.restored]), [['offline-1', 'bob', 'written while unreachable', true]]);
            assert.deepEqual(run2.client.getPendingSends(), restored, 'the app can show it as pending before connecting');
            assert.equal(run2.restored.length, 1);
            await run2.client.connect();
            await until(() => run2.sent.length === 1 && run2.synced > 0, 5_000, () => `the restored send acked; sent ${JSON.stringify(run2.sent)}`);
            const [sent] = run2.sent;
            assert.deepEqual([sent!.result.clientMsgId, sent!.result.seq, sent!.result.conversationId, sent!.send.text],
              ['offline-1', 4, AB, 'written while unreachable']);
            assert.equal(run2.client.pendingSends, 0);

            // Bob gets it once; the restarted app shows only what it had not shown; one copy stored.
            await waitMessages(bob, 1);
            await sleep(300);
            assert.deepEqual(texts(bob.messages), ['written while unreachable']);
            assert.deepEqual(texts(run2.messages), ['b3'], 'b1 and b2 were shown by the first run');
            const h = await run2.client.history(AB);
            assert.deepEqual(h.messages.map((m) => [m.seq, m.text]), [[1, 'b1'], [2, 'b2'], [3, 'b3'], [4, 'written while unreachable']]);
            assert.deepEqual(run2.sent.length, 1);
            assert.deepEqual(run2.errors, []);

            await run2.client.close();
            const after = onDisk(path);
            assert.deepEqual(after.cursors, { [AB]: 4 });
            assert.deepEqual(after.outbox, []);
          } finally {
            await proxy.close();
          }
        });
      } finally {
        tmp[Symbol.dispose]();
      }
    });
  }

  test('the sync token is stored with the cursors and survives a restart: the restarted app sends it with its first sync, and gets only what it missed', T, async () => {
    const tmp = tempDir();
    try {
      await withServer(async (s) => {
        const path = join(tmp.dir, 'alice-phone.json');
        const bob = await online(s, 'tcp', 'bob');
        const carol = await online(s, 'tcp', 'carol');
        const run1 = await connected(s, 'ws', 'alice', 'phone', { store: fileStore(path, { debounceMs: 10 }) });
        await sendOk(bob, { toUser: 'alice', text: 'b1' });
        await sendOk(carol, { toUser: 'alice', text: 'c1' });
        await waitMessages(run1, 2);
        await run1.client.sync();
        await run1.client.close();
        const saved = onDisk(path);
        assert.equal(typeof saved.syncToken, 'string');
        assert.notEqual(saved.syncToken, '');
        assert.deepEqual(saved.cursors, { [AB]: 1, 'u:alice:carol': 1 });

        await sendOk(bob, { toUser: 'alice', text: 'b2' });
        const wire = new Wire();
        const run2 = await connected(s, urlOf(s, 'tcp'), 'alice', 'phone', { store: fileStore(path), connector: wire.connector });
        await waitMessages(run2, 1);
        await sleep(200);
        assert.deepEqual(texts(run2.messages), ['b2'], 'only what it missed');
        const [first] = wire.sent('sync');
        assert.equal(first?.syncToken, saved.syncToken, 'the stored token went with its first sync');
        assert.deepEqual(new Map(first!.cursors.map((c) => [c.conversationId, Number(c.seq)])), new Map([[AB, 1], ['u:alice:carol', 1]]));
        await run2.client.close();
        assert.notEqual(onDisk(path).syncToken, undefined);
        bob.close();
        carol.close();
      });
    } finally {
      tmp[Symbol.dispose]();
    }
  });

  test('a send the server stored whose ack the app never heard: resent after the restart with the same id, stored once', T, async () => {
    const tmp = tempDir();
    try {
      await withServer(async (s) => {
        const path = join(tmp.dir, 'alice.json');
        const proxy = await TcpProxy.start(s.tcpPort);
        try {
          const bob = await connected(s, 'tcp', 'bob', 'phone');
          const run1 = await connected(s, proxy.url('tcp'), 'alice', 'phone', { store: fileStore(path, { debounceMs: 10 }) });
          proxy.swallowDown = true;
          const lost = run1.client.send({ to: 'bob', text: 'stored, never acked', clientMsgId: 'na-1' }).then(() => undefined, (e: unknown) => e);
          await waitMessages(bob, 1); // the server has it
          await run1.client.close();
          assert.ok((await lost) instanceof LonglinkError);
          proxy.cut();
          assert.deepEqual(onDisk(path).outbox.map((o) => o.clientMsgId), ['na-1']);

          const run2 = makeClient(s, urlOf(s, 'ws'), 'alice', 'phone', { store: fileStore(path) });
          await run2.client.connect();
          await until(() => run2.sent.length === 1, 5_000, () => 'the restored send acked');
          assert.deepEqual([run2.sent[0]!.result.clientMsgId, run2.sent[0]!.result.seq], ['na-1', 1]);
          assert.deepEqual(run2.restored.map((r) => r.map((p) => p.clientMsgId)), [['na-1']]);
          await sleep(300);
          assert.deepEqual(texts(bob.messages), ['stored, never acked']);
          assert.deepEqual(run2.messages, [], 'her own message is not shown to her as incoming');
          assert.deepEqual((await run2.client.history(AB)).messages.map((m) => m.clientMsgId), ['na-1']);
          assert.equal(run2.sent.length, 1, 'one sent event, whichever of the ack and the sync came first');
          await run2.client.close();
          assert.deepEqual(onDisk(path).outbox, []);
        } finally {
          await proxy.close();
        }
      });
    } finally {
      tmp[Symbol.dispose]();
    }
  });
});

describe('the memory store and what a store may hold', () => {
  test('a store shared by successive clients: restored sends go first, then new ones, each stored once, in order', T, async () => {
    await withServer(async (s) => {
      const store = memoryStore();
      const port = await closedPort();
      const first = makeClient(s, `tcp://127.0.0.1:${port}`, 'alice', 'phone', { store });
      await assert.rejects(first.client.connect());
      const both = Promise.allSettled([
        first.client.send({ to: 'bob', text: 'one', clientMsgId: 'm-1' }),
        first.client.send({ to: 'bob', text: 'two', clientMsgId: 'm-2' }),
      ]);
      await first.client.close();
      assert.deepEqual((await both).map((r) => r.status), ['rejected', 'rejected']);
      assert.deepEqual(store.snapshot?.outbox.map((o) => o.text), ['one', 'two']);

      const bob = await connected(s, 'tcp', 'bob', 'phone');
      const second = makeClient(s, urlOf(s, 'ws'), 'alice', 'phone', { store });
      // A send before connecting (and before the store was loaded): it goes after the restored ones.
      const three = second.client.send({ to: 'bob', text: 'three', clientMsgId: 'm-3' });
      await second.client.restore();
      // The app sends 'two' again with its id: it waits for the restored send instead of making another.
      const twoAgain = second.client.send({ to: 'bob', text: 'two', clientMsgId: 'm-2' });
      assert.deepEqual(second.client.getPendingSends().map((p) => [p.clientMsgId, p.restored]), [['m-1', true], ['m-2', true], ['m-3', false]]);
      await second.client.connect();
      const [r2, r3] = await within(Promise.all([twoAgain, three]), 5_000, 'the sends');
      assert.deepEqual([r2.seq, r3.seq], [2, 3]);
      await until(() => second.sent.length === 3, 5_000, () => 'three sent events');
      assert.deepEqual(second.sent.map((x) => [x.result.clientMsgId, x.result.seq]), [['m-1', 1], ['m-2', 2], ['m-3', 3]]);
      await waitMessages(bob, 3);
      await sleep(200);
      assert.deepEqual(texts(bob.messages), ['one', 'two', 'three']);
      assert.deepEqual(second.messages, []);
      // The client learns where it stands in the new conversation (kept in the store) ...
      await until(() => store.snapshot?.cursors[AB] === 3, 5_000, () => `cursor 3 stored: ${JSON.stringify(store.snapshot)}`);
      await second.client.close();
      assert.deepEqual(store.snapshot?.outbox, []);

      // ... so the next run does not show its own messages back to it as incoming, and sees what is new.
      await bob.client.send({ to: 'alice', text: 'reply' });
      const third = await connected(s, 'tcp', 'alice', 'phone', { store });
      await waitMessages(third, 1);
      await sleep(200);
      assert.deepEqual(texts(third.messages), ['reply']);
      assert.deepEqual(third.restored, []);
    });
  });

  test('state stored for another user is not used: its sends fail and are not stored, its cursors are dropped', T, async () => {
    await withServer(async (s) => {
      const store = memoryStore({
        version: 1, userId: 'alice', deviceId: 'phone', cursors: { [AB]: 7 },
        outbox: [{ clientMsgId: 'alice-1', to: 'bob', text: 'alice wrote this', createdAtMs: Date.now() }],
      });
      const bob = await connected(s, 'tcp', 'bob', 'phone');
      const carol = await connected(s, 'ws', 'carol', 'phone', { store });
      await until(() => carol.failed.length === 1, 5_000, () => 'the foreign send failed');
      assert.equal(carol.failed[0]!.error.code, ErrorCode.FORBIDDEN);
      assert.equal(carol.failed[0]!.send.clientMsgId, 'alice-1');
      assert.deepEqual(carol.sent, []);
      assert.equal(carol.client.pendingSends, 0);
      await carol.client.send({ to: 'bob', text: 'carol here' });
      await waitMessages(bob, 1);
      await sleep(200);
      assert.deepEqual(texts(bob.messages), ['carol here']);
      await carol.client.close();
      const snap = store.snapshot!;
      assert.deepEqual([snap.userId, snap.deviceId], ['carol', 'phone']);
      assert.deepEqual(snap.outbox, []);
      assert.equal(snap.cursors[AB], undefined);
    });
  });

  test('a corrupt store is reported and treated as empty; the client works and rewrites it', T, async () => {
    const tmp = tempDir();
    try {
      await withServer(async (s) => {
        const path = join(tmp.dir, 'bad.json');
        writeFileSync(path, '{"version":1,"cursors":');
        const alice = await connected(s, 'tcp', 'alice', 'phone', { store: fileStore(path) });
        assert.equal(alice.errors.length, 1);
        assert.match(alice.errors[0]!.message, /client store load failed/);
        assert.equal((await alice.client.send({ to: 'bob', text: 'fine' })).seq, 1);
        await alice.client.sync();
        await alice.client.close();
        const snap = onDisk(path);
        assert.deepEqual([snap.userId, snap.deviceId, snap.cursors, snap.outbox], ['alice', 'phone', { [AB]: 1 }, []]);
      });
    } finally {
      tmp[Symbol.dispose]();
    }
  });
});
