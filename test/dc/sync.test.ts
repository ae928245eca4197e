// The sync service's copy of a peer's commits (src/dc/sync.ts), on real
// stores (SQLite): a gap below a committed entry is filled from the peer's
// store first, FILL_MAX messages at a time (a batch that meets a longer gap
// stores what it filled and is handed again), so the copy never has a hole
// and one batch never holds a whole long gap in memory.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../src/engines/store-sqlite.js';
import { SyncService } from '../../src/dc/sync.js';
import { committed, type Committed } from '../../src/engines/bus.js';
import { isUnavailable, type MessageDraft } from '../../src/engines/store.js';
import { messageToWire } from '../../src/protocol/index.js';

const dir = mkdtempSync(join(tmpdir(), 'longlink-sync-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const AB = 'u:alice:bob';

function drafts(from: number, to: number): MessageDraft[] {
  return Array.from({ length: to - from + 1 }, (_, i) => ({
    conversationId: AB, kind: 'direct', members: ['alice', 'bob'], fromUser: 'alice', fromDevice: 'phone',
    clientMsgId: `m-${from + i}`, serverMsgId: `s-${from + i}`, text: `m-${from + i}`, sentAtMs: 1000 + from + i,
  }));
}

test('a gap longer than a batch fills is filled over several tries, in order, with nothing twice; every copy published here once', async () => {
  const home = new SqliteStore({ path: join(dir, 'home.sqlite') });
  const here = new SqliteStore({ path: join(dir, 'here.sqlite') });
  try {
    for (let from = 1; from <= 12_000; from += 1000) await home.append(drafts(from, from + 999));
    const last = (await home.message(AB, 12_000))!;
    const published: Committed[] = [];
    const peer = { name: 'a', bus: { consumeCommitted: () => ({ close: async () => undefined }), consumerLag: async () => new Map() }, store: async () => home };
    const sync = new SyncService({ dc: 'b' }, {
      bus: { publishCommitted: async (entries) => void published.push(...entries) },
      store: here,
      peers: [peer],
    });
    // Only the last message reached this sync service (the stream was trimmed past the rest): its batch is handed again until done.
    const batch = [committed({ message: messageToWire(last), originDc: 'a' })];
    let tries = 0;
    for (;;) {
      tries++;
      try {
        await sync.copy(peer, batch);
        break;
      } catch (err) {
        assert.ok(isUnavailable(err), `handed again, not failed: ${(err as Error).message}`);
        assert.ok(tries < 10, 'progress at every try');
      }
    }
    assert.equal(tries, 3, '5,000 filled per try: 11,999 missing take three');
    const copied = await here.after(AB, 0, 20_000);
    assert.deepEqual(copied.map((m) => m.seq), Array.from({ length: 12_000 }, (_, i) => i + 1), 'every seq once, in order');
    assert.deepEqual(copied.map((m) => m.text), (await home.after(AB, 0, 20_000)).map((m) => m.text));
    assert.deepEqual(published.map((c) => Number(c.message!.seq)), Array.from({ length: 12_000 }, (_, i) => i + 1), 'each published here once, in order');
    assert.ok(published.every((c) => c.replicated && c.originDc === 'a'));
    assert.deepEqual([sync.progress.get('a')?.applied, sync.progress.get('a')?.filled], [12_000, 11_999]);
  } finally {
    await home.close();
    await here.close();
  }
});

test('a gap whose start the peer expired (retention) is filled from what the peer still holds; the batch does not stall', async () => {
  const home = new SqliteStore({ path: join(dir, 'home-expired.sqlite') });
  const here = new SqliteStore({ path: join(dir, 'here-expired.sqlite') });
  try {
    for (let from = 1; from <= 9000; from += 1000) await home.append(drafts(from, from + 999));
    // The home expired the first 7,000 (sent at 1001..8000).
    assert.equal(await home.expireBefore(1000 + 7001, 100_000), 7000);
    const last = (await home.message(AB, 9000))!;
    const published: Committed[] = [];
    const peer = { name: 'a', bus: { consumeCommitted: () => ({ close: async () => undefined }), consumerLag: async () => new Map() }, store: async () => home };
    const sync = new SyncService({ dc: 'b' }, { bus: { publishCommitted: async (entries) => void published.push(...entries) }, store: here, peers: [peer] });
    let tries = 0;
    for (;;) {
      tries++;
      try {
        await sync.copy(peer, [committed({ message: messageToWire(last), originDc: 'a' })]);
        break;
      } catch (err) {
        assert.ok(isUnavailable(err) && tries < 5, `handed again a few times at most: ${(err as Error).message}`);
      }
    }
    assert.deepEqual((await here.after(AB, 0, 20_000)).map((m) => m.seq), Array.from({ length: 2000 }, (_, i) => 7001 + i), 'what the home still holds, once each, in order');
  } finally {
    await home.close();
    await here.close();
  }
});
