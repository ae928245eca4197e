// The web chat page in a real browser: Debian's chromium driven by
// playwright-core against a real embedded server. alice and bob log in from
// two browser contexts, see unread counts, chat both ways, see read marks,
// typing and presence, recall; bob loses his network while alice writes and
// catches up when it returns; history pages back. Screenshots of the page go
// to test-artifacts/web/.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { startTestServer, type TestServer } from '../helpers/server.js';
import {
  Proxy, T, conv, connState, launchBrowser, logIn, markOf, openDirect, peerOnline, postMessage, send, shot, texts, unread, until,
} from './helpers.js';

describe('web chat page in Chromium', () => {
  let server: TestServer;
  let proxy: Proxy;
  let browser: Browser;
  let aliceCtx: BrowserContext;
  let bobCtx: BrowserContext;
  let alice: Page;
  let bob: Page;
  const pageErrors: string[] = [];

  before(async () => {
    server = await startTestServer({ 'dev-login': '1' });
    proxy = new Proxy(server.httpPort);
    await proxy.start();
    browser = await launchBrowser();
    aliceCtx = await browser.newContext({ viewport: { width: 1000, height: 700 } });
    bobCtx = await browser.newContext({ viewport: { width: 1000, height: 700 } });
    alice = await aliceCtx.newPage();
    bob = await bobCtx.newPage();
    for (const [who, page] of [['alice', alice], ['bob', bob]] as const) {
      page.on('pageerror', (err) => pageErrors.push(`${who}: ${err.message}`));
    }
  });

  after(async () => {
    for (const [name, page] of [['alice-final', alice], ['bob-final', bob]] as const) {
      if (page && !page.isClosed()) await shot(page, name).catch(() => undefined);
    }
    await browser?.close();
    await proxy?.close();
    await server?.close();
  });

  test('alice logs in and writes to bob before he is online', T, async () => {
    await logIn(alice, server.httpUrl, 'alice');
    await openDirect(alice, 'bob');
    for (const text of ['hello bob', 'are you there?', 'third one']) await send(alice, text);
    await until('three sent marks', async () => Promise.all(['hello bob', 'are you there?', 'third one'].map((t) => markOf(alice, t))),
      (marks) => marks.every((m) => m === 'sent'));
    await until('bob shown offline', () => peerOnline(alice, 'bob'), (v) => v === 'false');
  });

  test('bob logs in and sees the conversation with 3 unread before opening it; a 4th arrives live', T, async () => {
    await logIn(bob, proxy.url, 'bob');
    await until('alice in bob\'s list with 3 unread', () => unread(bob, 'alice'), (n) => n === 3);
    assert.match(await conv(bob, 'alice').locator('.preview').textContent() ?? '', /third one/);
    // Presence: alice sees bob come online, and her messages as delivered.
    await until('bob online for alice', () => peerOnline(alice, 'bob'), (v) => v === 'true');
    await until('delivered mark', () => markOf(alice, 'third one'), (m) => m === 'delivered');
    await send(alice, 'fourth, live');
    await until('4 unread for bob', () => unread(bob, 'alice'), (n) => n === 4);
    await shot(bob, '1-bob-unread');
    assert.equal(await bob.locator('#message-list .msg').count(), 0, 'nothing open yet');
  });

  test('bob opens it: he sees alice\'s messages, the count clears, alice sees the read mark', T, async () => {
    await conv(bob, 'alice').click();
    await until('bob sees alice\'s 4 messages', () => texts(bob), (t) => t.join('|') === 'hello bob|are you there?|third one|fourth, live');
    await until('no unread left', () => unread(bob, 'alice'), (n) => n === 0);
    await until('read mark on alice\'s last message', () => markOf(alice, 'fourth, live'), (m) => m === 'read');
    assert.equal(await markOf(alice, 'hello bob'), 'read');
    await shot(alice, '2-alice-read');
  });

  test('bob types (alice sees it) and answers; they chat both ways', T, async () => {
    await bob.locator('#composer-text').fill('h');
    await until('alice sees bob typing', () => alice.locator('#typing').textContent(), (t) => t === 'bob is typing…');
    await send(bob, 'hi alice!');
    await until('alice sees bob\'s answer', () => texts(alice), (t) => t.at(-1) === 'hi alice!');
    await until('typing indicator gone', () => alice.locator('#typing').textContent(), (t) => t === '');
    await send(alice, 'how are you?');
    await send(bob, 'fine, thanks');
    await until('bob sees both', () => texts(bob), (t) => t.slice(-3).join('|') === 'hi alice!|how are you?|fine, thanks');
    await until('alice sees both', () => texts(alice), (t) => t.slice(-3).join('|') === 'hi alice!|how are you?|fine, thanks');
    await until('bob\'s answer read by alice', () => markOf(bob, 'fine, thanks'), (m) => m === 'read');
    assert.equal(await unread(alice, 'bob'), 0, 'an open conversation stays read');
  });

  test('bob loses his network while alice writes, then comes back and catches up', T, async () => {
    proxy.cut();
    await until('bob reconnecting', () => bob.locator('#conn').textContent(), (t) => /^reconnecting/.test(t ?? ''));
    await shot(bob, '3-bob-reconnecting');
    await until('bob offline for alice', () => peerOnline(alice, 'bob'), (v) => v === 'false');
    await send(alice, 'while you were away 1');
    await send(alice, 'while you were away 2');
    await until('stored, not delivered', () => markOf(alice, 'while you were away 2'), (m) => m === 'sent');
    assert.equal(await markOf(alice, 'while you were away 1'), 'sent');
    assert.ok(!(await texts(bob)).includes('while you were away 1'), 'bob cannot have it yet');
    // bob writes meanwhile: it waits in the SDK's outbox, marked pending.
    await send(bob, 'written offline');
    await until('pending mark', () => markOf(bob, 'written offline'), (m) => m === 'pending');
    proxy.restore();
    // The SDK's backoff (full jitter, 30 s cap) decides when it tries again.
    await until('bob online again', () => connState(bob), (s) => s === 'online', 45_000);
    await until('bob caught up', () => texts(bob), (t) => t.includes('while you were away 1') && t.includes('while you were away 2'));
    await until('alice sees them read', () => markOf(alice, 'while you were away 2'), (m) => m === 'read');
    await until('bob online for alice again', () => peerOnline(alice, 'bob'), (v) => v === 'true');
    await until('alice got what bob wrote offline', () => texts(alice), (t) => t.at(-1) === 'written offline');
    await until('and bob sees it read', () => markOf(bob, 'written offline'), (m) => m === 'read');
    await shot(bob, '4-bob-caught-up');
    // Each message shown once.
    const all = await texts(bob);
    assert.equal(new Set(all).size, all.length, `no duplicates: ${all.join('|')}`);
    // The page keeps bob's cursors and outbox in IndexedDB (the SDK's browser store).
    type Idb = { indexedDB: { databases(): Promise<{ name?: string }[]> } };
    const databases = await bob.evaluate(async () => (await (globalThis as unknown as Idb).indexedDB.databases()).map((d) => d.name ?? ''));
    assert.ok(databases.some((name) => name.startsWith('longlink:bob:')), `bob's state in IndexedDB: ${databases.join(', ')}`);
  });

  test('alice recalls her last message; both see it recalled', T, async () => {
    await send(alice, 'oops, wrong chat');
    await until('bob got it', () => texts(bob), (t) => t.at(-1) === 'oops, wrong chat');
    const own = alice.locator('#message-list .msg.own').last();
    await own.hover();
    await own.getByRole('button', { name: 'Recall' }).click();
    await until('alice sees it recalled', () => texts(alice), (t) => t.at(-1) === 'message recalled');
    await until('bob sees it recalled', () => texts(bob), (t) => t.at(-1) === 'message recalled');
    assert.ok(!(await texts(bob)).includes('oops, wrong chat'));
  });

  test('a group: alice creates it, bob sees it with its unread count, they talk', T, async () => {
    await alice.locator('#new-group-name').fill('Team');
    await alice.locator('#new-group-members').fill('bob, carol');
    await alice.getByRole('button', { name: 'Create' }).click();
    await until('alice in the group', () => alice.locator('#pane-title').textContent(), (t) => t === 'Team');
    await send(alice, 'welcome to the team');
    await until('group in bob\'s list with 1 unread', () => unread(bob, 'Team'), (n) => n === 1);
    await conv(bob, 'Team').click();
    await until('bob sees the group message', () => texts(bob), (t) => t.join('|') === 'welcome to the team');
    assert.match(await bob.locator('#message-list .msg.system').first().textContent() ?? '', /alice created the group/);
    await until('alice sees bob read it', () => markOf(alice, 'welcome to the team'), (m) => m === 'read');
    await send(bob, 'thanks!');
    await until('alice sees bob in the group', () => texts(alice), (t) => t.at(-1) === 'thanks!');
    assert.equal(await alice.locator('#message-list .msg.theirs .from').last().textContent(), 'bob');
    await shot(alice, '5-alice-group');
  });

  test('history pages back: 40 messages from carol, 30 shown, then the older ones', T, async () => {
    for (let i = 1; i <= 40; i++) await postMessage(server.httpUrl, 'carol', 'bob', `carol ${i}`);
    await until('carol in bob\'s list with 40 unread', () => unread(bob, 'carol'), (n) => n === 40);
    await conv(bob, 'carol').click();
    await until('the latest 30', () => texts(bob), (t) => t.length === 30 && t[0] === 'carol 11' && t[29] === 'carol 40');
    const older = bob.getByRole('button', { name: 'Load older messages' });
    await older.click();
    await until('all 40', () => texts(bob), (t) => t.length === 40 && t[0] === 'carol 1' && t[39] === 'carol 40');
    await until('no more to load', () => older.isVisible(), (v) => !v);
    await shot(bob, '6-bob-history');
  });

  test('a server without dev login: the page says why it cannot log in', T, async () => {
    const locked = await startTestServer();
    const page = await aliceCtx.newPage();
    page.on('pageerror', (err) => pageErrors.push(`locked: ${err.message}`));
    try {
      await page.goto(locked.httpUrl);
      await page.locator('#login-user').fill('mallory');
      await page.getByRole('button', { name: 'Log in' }).click();
      await until('the refusal shown', () => page.locator('#login-error').textContent(), (t) => /DEV_LOGIN_DISABLED/.test(t ?? ''));
      assert.ok(await page.locator('#login-form').isVisible());
      assert.ok(!(await page.locator('#chat').isVisible()));
      await shot(page, '7-dev-login-off');
    } finally {
      await page.close();
      await locked.close();
    }
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the pages');
  });
});
