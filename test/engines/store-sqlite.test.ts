import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { storeContract } from './store.contract.js';
import { SqliteStore } from '../../src/engines/store-sqlite.js';
import type { Store } from '../../src/engines/store.js';

const dir = mkdtempSync(join(tmpdir(), 'longlink-store-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const paths = new WeakMap<Store, string>();
let databases = 0;

function openAt(path: string, synchronous?: 'full' | 'normal', changeSlack?: number): SqliteStore {
  const store = new SqliteStore({ path, synchronous, ...(changeSlack === undefined ? {} : { changeSlack }) });
  paths.set(store, path);
  return store;
}

storeContract('SqliteStore (file)', {
  open: async (options) => openAt(join(dir, `contract-${++databases}.sqlite`), 'normal', options?.changeSlack),
  // Reopen with the default ('full') to cover both settings.
  reopen: async (closed) => {
    const path = paths.get(closed);
    assert.ok(path, 'reopen of a store this runner opened');
    return openAt(path);
  },
});

storeContract('SqliteStore (:memory:)', {
  open: async (options) => new SqliteStore({ path: ':memory:', ...options }),
});

test('SqliteStore creates the directories of its path', async () => {
  const path = join(dir, 'nested', 'deeper', 'longlink.sqlite');
  const store = new SqliteStore({ path });
  await store.close();
  assert.equal(existsSync(path), true);
});

test('SqliteStore close is idempotent', async () => {
  const store = new SqliteStore({ path: ':memory:' });
  await store.close();
  await store.close();
});
