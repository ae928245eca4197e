// The client stores on their own: the memory store, the file store (atomic,
// debounced, flushed on demand) and the snapshot checks every store applies
// to what it reads back.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DebouncedWriter, emptySnapshot, fileStore, memoryStore, parseSnapshot, type ClientSnapshot,
} from '../../src/client/index.js';
import { indexedDbStore } from '../../src/client/browser.js';
import { until } from '../logic/support.js';

function snap(n: number): ClientSnapshot {
  return {
    version: 1, userId: 'alice', deviceId: 'phone',
    cursors: { 'u:alice:bob': n },
    syncToken: `token-${n}`,
    outbox: [{ clientMsgId: `c-${n}`, to: 'bob', text: `text ${n}`, createdAtMs: 1_700_000_000_000 + n }],
  };
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'longlink-store-'));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('fileStore', () => {
  test('nothing saved yet: load gives undefined; the folder is made on the first write', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'nested', 'state.json');
      const store = fileStore(path);
      assert.equal(await store.load(), undefined);
      await store.save(snap(1));
      await store.flush();
      assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), snap(1));
      assert.deepEqual(await fileStore(path).load(), snap(1));
    });
  });

  test('debounced: a burst of saves becomes one write of the latest; no temp files are left', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'state.json');
      const store = fileStore(path, { debounceMs: 50 });
      for (let i = 1; i <= 100; i++) await store.save(snap(i));
      assert.deepEqual(readdirSync(dir), [], 'not written at once');
      await until(() => readdirSync(dir).includes('state.json'), 5_000, () => 'the debounced write');
      assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), snap(100));
      assert.deepEqual(readdirSync(dir), ['state.json']);
    });
  });

  test('flush writes now; a later save replaces the file whole (old or new, never a mix)', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'state.json');
      const store = fileStore(path, { debounceMs: 60_000 });
      await store.save(snap(1));
      await store.flush();
      assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), snap(1));
      await store.save(snap(2));
      assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), snap(1), 'the old snapshot until the write');
      // load() sees what was saved, even before the debounced write.
      assert.deepEqual(await store.load(), snap(2));
      assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), snap(2));
      assert.deepEqual(readdirSync(dir), ['state.json']);
    });
  });

  test('a file that is not a snapshot is refused on load', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'state.json');
      writeFileSync(path, '{"version":1,"cursors":{"c":-1},"outbox":[]}');
      await assert.rejects(fileStore(path).load(), /cursor of c/);
      writeFileSync(path, 'not json');
      await assert.rejects(fileStore(path).load(), SyntaxError);
    });
  });

  test('a write that fails is reported by flush and retried by the next one', async () => {
    await withDir(async (dir) => {
      // The path is a folder: rename onto it fails.
      const path = join(dir, 'state.json');
      const { mkdirSync } = await import('node:fs');
      mkdirSync(path);
      const store = fileStore(path, { debounceMs: 5 });
      await store.save(snap(1));
      await assert.rejects(store.flush());
      assert.deepEqual(readdirSync(dir), ['state.json'], 'the temp file was removed');
      rmSync(path, { recursive: true });
      await store.flush();
      assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), snap(1));
    });
  });
});

describe('DebouncedWriter', () => {
  test('writes never overlap, go out in order, and the last one is the latest snapshot', async () => {
    const written: number[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    const w = new DebouncedWriter(async (s) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise((r) => setTimeout(r, 5));
      written.push(s.cursors.c!);
      inFlight--;
    }, 1);
    for (let i = 1; i <= 50; i++) {
      await w.save({ ...emptySnapshot(), cursors: { c: i } });
      if (i % 7 === 0) await new Promise((r) => setTimeout(r, 3));
    }
    await w.flush();
    assert.equal(maxInFlight, 1);
    assert.equal(written.at(-1), 50);
    assert.deepEqual(written, [...written].sort((a, b) => a - b), 'in order');
    assert.ok(written.length < 50, `coalesced: ${written.length} writes`);
  });
});

describe('memoryStore and parseSnapshot', () => {
  test('the memory store keeps a copy, not the caller\'s object', async () => {
    const store = memoryStore();
    assert.equal(await store.load(), undefined);
    const s = snap(1);
    await store.save(s);
    s.cursors['u:alice:bob'] = 99;
    s.outbox.length = 0;
    assert.deepEqual(await store.load(), snap(1));
    assert.deepEqual(store.snapshot, snap(1));
  });

  test('parseSnapshot accepts a snapshot and names what is wrong with anything else', () => {
    assert.deepEqual(parseSnapshot(snap(3)), snap(3));
    assert.deepEqual(parseSnapshot({ version: 1, cursors: {}, outbox: [] }), emptySnapshot());
    assert.equal(parseSnapshot({ version: 1, cursors: {}, outbox: [] }).syncToken, undefined, 'a snapshot from before sync tokens: none');
    assert.equal(parseSnapshot({ version: 1, cursors: {}, syncToken: 'x'.repeat(257), outbox: [] }).syncToken, undefined, 'longer than the server takes: none');
    for (const [bad, why] of [
      [null, /not an object/],
      [{ version: 2, cursors: {}, outbox: [] }, /version 2/],
      [{ version: 1, cursors: [], outbox: [] }, /cursors/],
      [{ version: 1, cursors: { a: 1.5 }, outbox: [] }, /cursor of a/],
      [{ version: 1, cursors: {}, outbox: [{ text: 'x' }] }, /clientMsgId/],
      [{ version: 1, cursors: {}, outbox: [{ clientMsgId: 'a', text: 1 }] }, /text/],
      [{ version: 1, cursors: {}, outbox: [{ clientMsgId: 'a', text: 'x', to: 5 }] }, /to/],
      [{ version: 1, userId: 5, cursors: {}, outbox: [] }, /userId/],
      [{ version: 1, cursors: {}, syncToken: 7, outbox: [] }, /syncToken/],
    ] as const) {
      assert.throws(() => parseSnapshot(bad), why);
    }
  });
});

/**
 * A stand-in for the browser's IndexedDB with its asynchronous shape (events
 * fire later; upgrade before success; a transaction completes after its
 * requests; values are structured clones). The real one is exercised by the
 * browser tests; this checks the store's own logic.
 */
function fakeIndexedDb() {
  type Handler = (() => void) | null;
  interface Req { result: unknown; error: unknown; onsuccess: Handler; onerror: Handler }
  const later = (fn: () => void) => setTimeout(fn, 0);
  const databases = new Map<string, Map<string, Map<string, unknown>>>();
  const request = (run: () => unknown): Req => {
    const r: Req = { result: undefined, error: null, onsuccess: null, onerror: null };
    later(() => {
      try {
        r.result = run();
        r.onsuccess?.();
      } catch (err) {
        r.error = err;
        r.onerror?.();
      }
    });
    return r;
  };
  let opens = 0;
  return {
    get opens() {
      return opens;
    },
    open(name: string) {
      opens++;
      const req = { ...request(() => undefined), onupgradeneeded: null as Handler, onblocked: null as Handler };
      later(() => {
        let stores = databases.get(name);
        const fresh = stores === undefined;
        stores ??= new Map();
        databases.set(name, stores);
        const objectStores = stores;
        req.result = {
          objectStoreNames: { contains: (n: string) => objectStores.has(n) },
          createObjectStore: (n: string) => objectStores.set(n, new Map()),
          close: () => undefined,
          onversionchange: null,
          transaction: (n: string, mode: string) => {
            const os = objectStores.get(n);
            if (!os) throw new Error(`NotFoundError: ${n}`);
            const tx = {
              error: null, oncomplete: null as Handler, onerror: null as Handler, onabort: null as Handler,
              objectStore: () => ({
                get: (key: string) => request(() => structuredClone(os.get(key))),
                put: (value: unknown, key: string) => {
                  if (mode !== 'readwrite') throw new Error('ReadOnlyError');
                  return request(() => os.set(key, structuredClone(value)));
                },
              }),
            };
            later(() => later(() => tx.oncomplete?.()));
            return tx;
          },
        };
        if (fresh) req.onupgradeneeded?.();
        req.onsuccess?.();
      });
      return req;
    },
  };
}

describe('indexedDbStore', () => {
  test('outside a browser it says IndexedDB is not available', async () => {
    const store = indexedDbStore('longlink-test');
    await assert.rejects(store.load(), /IndexedDB is not available/);
  });

  test('against an IndexedDB stand-in: nothing, then the latest snapshot, across store objects, one open each', async () => {
    const idb = fakeIndexedDb();
    const store = indexedDbStore('longlink-alice-phone', { indexedDB: idb, debounceMs: 5 });
    assert.equal(await store.load(), undefined);
    for (let i = 1; i <= 20; i++) await store.save(snap(i));
    await store.flush();
    assert.deepEqual(await store.load(), snap(20));
    assert.equal(idb.opens, 1, 'the database is opened once');
    const again = indexedDbStore('longlink-alice-phone', { indexedDB: idb });
    assert.deepEqual(await again.load(), snap(20));
    assert.equal(await indexedDbStore('longlink-other', { indexedDB: idb }).load(), undefined);
  });
});
