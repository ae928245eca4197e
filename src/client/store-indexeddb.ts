// A client store in the browser's IndexedDB (browser entry only): one
// database per store name, one object store, one record (the snapshot),
// written in a durable transaction, debounced like the file store.
//
// The project compiles without the DOM library, so the few IndexedDB types
// used here are declared locally (structurally the DOM's).
import { DebouncedWriter, parseSnapshot, type ClientSnapshot, type ClientStore } from './store.js';

interface IdbRequest<T> {
  readonly result: T;
  readonly error: unknown;
  onsuccess: (() => void) | null;
  onerror: (() => void) | null;
}

interface IdbOpenRequest extends IdbRequest<IdbDatabase> {
  onupgradeneeded: (() => void) | null;
  onblocked: (() => void) | null;
}

interface IdbObjectStore {
  get(key: string): IdbRequest<unknown>;
  put(value: unknown, key: string): IdbRequest<unknown>;
}

interface IdbTransaction {
  readonly error: unknown;
  objectStore(name: string): IdbObjectStore;
  oncomplete: (() => void) | null;
  onerror: (() => void) | null;
  onabort: (() => void) | null;
}

interface IdbDatabase {
  readonly objectStoreNames: { contains(name: string): boolean };
  createObjectStore(name: string): unknown;
  transaction(names: string, mode: 'readonly' | 'readwrite', options?: { durability?: 'default' | 'strict' | 'relaxed' }): IdbTransaction;
  close(): void;
  onversionchange: (() => void) | null;
}

interface IdbFactory {
  open(name: string, version?: number): IdbOpenRequest;
}

const OBJECT_STORE = 'state';
const KEY = 'snapshot';

export interface IndexedDbStoreOptions {
  /** Delay between a change and its write. @default 50 */
  debounceMs?: number;
  /** The IndexedDB factory; defaults to the global `indexedDB`. */
  indexedDB?: unknown;
}

function settle<T>(req: IdbRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error('IndexedDB request failed'));
  });
}

function finished(tx: IdbTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error('IndexedDB transaction failed'));
    tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
  });
}

/**
 * A store in the IndexedDB database `name` (e.g. `longlink-${userId}-${deviceId}`).
 * One client per database at a time: two tabs of one app should use different
 * device ids, and so different names.
 */
export function indexedDbStore(name: string, options: IndexedDbStoreOptions = {}): ClientStore {
  let db: Promise<IdbDatabase> | undefined;

  const factory = (): IdbFactory => {
    const f = (options.indexedDB ?? (globalThis as { indexedDB?: unknown }).indexedDB) as IdbFactory | undefined;
    if (!f) throw new Error('IndexedDB is not available here');
    return f;
  };

  const openDatabase = (): Promise<IdbDatabase> => new Promise<IdbDatabase>((resolve, reject) => {
    const req = factory().open(name, 1);
    req.onupgradeneeded = () => {
      if (!req.result.objectStoreNames.contains(OBJECT_STORE)) req.result.createObjectStore(OBJECT_STORE);
    };
    req.onsuccess = () => {
      const opened = req.result;
      // Another tab upgrades or deletes the database: let it, and reopen on next use.
      opened.onversionchange = () => {
        opened.close();
        db = undefined;
      };
      resolve(opened);
    };
    req.onerror = () => reject(req.error ?? new Error(`cannot open IndexedDB database ${name}`));
    req.onblocked = () => undefined; // waits until other connections close
  });

  const database = (): Promise<IdbDatabase> => {
    if (!db) {
      const opening = openDatabase();
      db = opening;
      // A failed open is tried again on next use.
      opening.catch(() => {
        if (db === opening) db = undefined;
      });
    }
    return db;
  };

  const writer = new DebouncedWriter(async (snapshot) => {
    const tx = (await database()).transaction(OBJECT_STORE, 'readwrite', { durability: 'strict' });
    const done = finished(tx);
    tx.objectStore(OBJECT_STORE).put(snapshot, KEY);
    await done;
  }, options.debounceMs ?? 50);

  return {
    async load(): Promise<ClientSnapshot | undefined> {
      await writer.flush().catch(() => undefined);
      const tx = (await database()).transaction(OBJECT_STORE, 'readonly');
      const value = await settle(tx.objectStore(OBJECT_STORE).get(KEY));
      return value === undefined ? undefined : parseSnapshot(value);
    },
    save: (snapshot) => writer.save(snapshot),
    flush: () => writer.flush(),
  };
}
