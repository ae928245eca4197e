// Devices of the page, and what happens to a closed tab's unsent messages.
//
// Each tab is its own device (its own session, so two tabs do not replace
// each other's, and its own IndexedDB store `longlink:{user}:{device}`). A
// message written while offline waits in that store's outbox. So that it is
// not lost when the tab is closed before it got through, every tab holds a
// Web Lock named after its store for as long as it lives: a store of this
// user whose lock is free belongs to a tab that is gone, and the next tab of
// the user on this browser adopts its unsent messages (sent again with their
// client_msg_id, which the server stores once however often it is sent) and
// then deletes it.
//
// A reload releases the lock for a moment: should another tab adopt the store
// then, the reloaded tab finds the lock taken (or the store gone) and goes on
// as a new device, its unsent messages being sent by the other tab.
//
// Web Locks exist only in secure contexts (https, or http on localhost /
// 127.0.0.1). Elsewhere no tab can tell whether another is alive: each tab
// keeps its own store and nothing is adopted.
import { indexedDbStore, type StoredSend } from '../client/browser.js';
import { randomId } from './dom.js';

const DEVICE_KEY = 'longlink.device';

/** The IndexedDB database (and Web Lock) of one user's device on this browser. */
export function storeName(userId: string, device: string): string {
  return `longlink:${userId}:${device}`;
}

function hasLocks(): boolean {
  return typeof navigator !== 'undefined' && 'locks' in navigator;
}

/**
 * Take the lock `name` for as long as this tab lives (or until the returned
 * function is called); undefined when another live tab holds it.
 */
function holdLock(name: string): Promise<(() => void) | undefined> {
  if (!hasLocks()) return Promise.resolve(() => undefined);
  let release = (): void => undefined;
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  return new Promise((resolve, reject) => {
    navigator.locks.request(name, { ifAvailable: true }, (lock) => {
      resolve(lock ? release : undefined);
      // The lock is held until this promise settles: never, unless released.
      return lock ? held : undefined;
    }).catch(reject);
  });
}

/**
 * This tab's device for `userId`, with its store's lock held. The id is kept
 * in sessionStorage, so a reload is the same device; a duplicated tab copies
 * sessionStorage, finds the lock taken by the original and takes a new id.
 */
export async function claimDevice(userId: string): Promise<{ device: string; store: string; release: () => void }> {
  for (;;) {
    let device = sessionStorage.getItem(DEVICE_KEY);
    if (!device) {
      device = `web-${randomId().slice(0, 8)}`;
      sessionStorage.setItem(DEVICE_KEY, device);
    }
    const store = storeName(userId, device);
    const release = await holdLock(store);
    if (release) return { device, store, release };
    sessionStorage.removeItem(DEVICE_KEY);
  }
}

function deleteDatabase(name: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = indexedDB.deleteDatabase(name);
    req.onsuccess = () => resolve();
    req.onerror = () => reject(req.error ?? new Error(`cannot delete IndexedDB database ${name}`));
  });
}

/**
 * Sends a closed tab's unsent messages again through this tab's client;
 * resolves true when each was stored or refused for good (false: some are
 * still waiting, e.g. this tab logged out first, so the store is kept).
 */
export type Adopt = (sends: StoredSend[]) => Promise<boolean>;

/** Stores being adopted by this tab (their locks are held meanwhile). */
const adopting = new Set<string>();

/**
 * Adopt the stores of this user's closed tabs (see the top of this file):
 * called after every login, and again whenever the connection is back.
 */
export async function adoptOrphans(userId: string, ownStore: string, adopt: Adopt): Promise<void> {
  if (!hasLocks() || typeof indexedDB.databases !== 'function') return;
  const prefix = storeName(userId, '');
  const names = (await indexedDB.databases())
    .map((d) => d.name ?? '')
    .filter((name) => name.startsWith(prefix) && name !== ownStore && !adopting.has(name));
  await Promise.all(names.map((name) => navigator.locks.request(name, { ifAvailable: true }, async (lock) => {
    if (!lock) return; // its tab is alive: its messages are its own
    adopting.add(name);
    try {
      const snapshot = await indexedDbStore(name).load();
      const sends = snapshot?.userId === undefined || snapshot.userId === userId ? snapshot?.outbox ?? [] : [];
      if (sends.length > 0 && !(await adopt(sends))) return;
      // Everything it had is stored now (its cursors only served its own sync): the store goes.
      await deleteDatabase(name);
    } catch (err) {
      console.warn('[longlink] could not adopt the unsent messages of', name, err);
    } finally {
      adopting.delete(name);
    }
  })));
}
