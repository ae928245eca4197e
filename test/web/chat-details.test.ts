// The web chat page in Chromium, continued (see chat.test.ts for the main
// conversation): phone widths, the connection banner, presence while
// disconnected, reloads, the tab title, the "New messages" divider, the group
// form, real delivered and read marks, and a message written offline in a tab
// that is closed before it got through. quinn, at a desktop, is everyone's
// peer. Each user has a browser context of their own (as people on their own
// machines; zoe's tabs share hers). Screenshots go to test-artifacts/web/.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { startTestServer, type TestServer } from '../helpers/server.js';
import {
  Proxy, T, conv, connState, launchBrowser, logIn, markOf, markTextOf, openDirect, peerOnline, postMessage, send, shot, texts,
  unread, until,
} from './helpers.js';

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Whether the page is wider than the window (a horizontal scrollbar). */
const overflow = (page: Page): Promise<{ scrollWidth: number; innerWidth: number }> =>
  page.evaluate('({ scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth })');

const visible = (page: Page, selector: string): Promise<boolean> => page.locator(selector).isVisible();

/** The IndexedDB databases of `user` in the page's origin (the SDK's stores, one per device). */
const storesOf = (page: Page, user: string): Promise<string[]> =>
  page.evaluate(`indexedDB.databases().then((all) => all.map((d) => d.name).filter((n) => n.startsWith(${JSON.stringify(`longlink:${user}:`)})))`);

/** The texts waiting in the outboxes of `user`'s stores (read in the page, as the SDK stores them). */
const storedOutbox = (page: Page, user: string): Promise<string[]> => page.evaluate(`(async () => {
  const out = [];
  for (const { name } of await indexedDB.databases()) {
    if (!name.startsWith(${JSON.stringify(`longlink:${user}:`)})) continue;
    const db = await new Promise((resolve, reject) => {
      const req = indexedDB.open(name);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    try {
      const snapshot = await new Promise((resolve, reject) => {
        const req = db.transaction('state').objectStore('state').get('snapshot');
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
      for (const send of snapshot?.outbox ?? []) out.push(send.text);
    } finally {
      db.close();
    }
  }
  return out;
})()`);

describe('web chat page in Chromium: phones, reloads, marks, offline tabs', () => {
  let server: TestServer;
  let browser: Browser;
  let quinn: Page;
  let pia: Page;
  let xena: Page;
  const pageErrors: string[] = [];

  /** A page in a browser context of its own, or a new tab in `context`. */
  async function newPage(viewport = DESKTOP, context?: BrowserContext): Promise<Page> {
    const page = await (context ?? await browser.newContext({ viewport })).newPage();
    page.on('pageerror', (err) => pageErrors.push(`${page.url()}: ${err.message}`));
    return page;
  }

  before(async () => {
    server = await startTestServer({ 'dev-login': '1' });
    browser = await launchBrowser();
    quinn = await newPage();
    await logIn(quinn, server.httpUrl, 'quinn');
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test('phone width: the list and the chat are two screens with a back button; desktop side by side; nothing overflows at 360 px', T, async () => {
    pia = await newPage(PHONE);
    await logIn(pia, server.httpUrl, 'pia');
    await postMessage(server.httpUrl, 'quinn', 'pia', 'hi from quinn');
    await until('quinn in pia\'s list', () => unread(pia, 'quinn'), (n) => n === 1);
    assert.ok(await visible(pia, '#conversations'), 'the list is the first screen');
    assert.ok(!(await visible(pia, '.pane')), 'the chat waits behind the list');
    await shot(pia, 'phone-list-390');

    await conv(pia, 'quinn').click();
    await until('the chat open', () => pia.locator('#pane-title').textContent(), (t) => t === 'quinn');
    assert.ok(!(await visible(pia, '#conversations')), 'the chat replaces the list');
    const pane = await pia.locator('.pane').boundingBox();
    assert.ok(pane && pane.width >= 350, `the chat pane is ${pane?.width} px wide`);
    const input = await pia.locator('#composer-text').boundingBox();
    assert.ok(input && input.x >= 0 && input.x + input.width <= PHONE.width && input.y + input.height <= PHONE.height && input.width >= 200,
      `the message input is on screen and usable: ${JSON.stringify(input)}`);
    assert.ok(await visible(pia, '#back'));
    await until('quinn\'s message shown', () => texts(pia), (t) => t.join('|') === 'hi from quinn');
    await send(pia, 'typed on a phone');
    await until('pia in quinn\'s list', () => conv(quinn, 'pia').count(), (n) => n === 1);
    await conv(quinn, 'pia').click();
    await until('quinn got it', () => texts(quinn), (t) => t.join('|') === 'hi from quinn|typed on a phone');
    await shot(pia, 'phone-chat-390');

    // The desktop: both side by side, no back button.
    assert.ok(await visible(quinn, '#conversations'));
    assert.ok(!(await visible(quinn, '#back')));
    const desk = await quinn.locator('.pane').boundingBox();
    assert.ok(desk && desk.width >= 900, `the desktop chat pane is ${desk?.width} px wide`);
    await shot(quinn, 'desktop-1280');

    await pia.locator('#back').click();
    assert.ok(await visible(pia, '#conversations'), 'back shows the list');
    assert.ok(!(await visible(pia, '.pane')));
    assert.equal(await pia.evaluate('location.hash'), '', 'no conversation open any more');

    // 360 px: no horizontal scrolling on the list, the chat, or the login screen.
    await pia.setViewportSize({ width: 360, height: 740 });
    let o = await overflow(pia);
    assert.ok(o.scrollWidth <= o.innerWidth, `the list overflows at 360 px: ${JSON.stringify(o)}`);
    await conv(pia, 'quinn').click();
    await until('the chat open again', () => visible(pia, '#composer-text'), (v) => v);
    o = await overflow(pia);
    assert.ok(o.scrollWidth <= o.innerWidth, `the chat overflows at 360 px: ${JSON.stringify(o)}`);
    await shot(pia, 'phone-chat-360');
    const login = await newPage({ width: 360, height: 740 });
    await login.goto(server.httpUrl);
    await until('the login form', () => visible(login, '#login-form'), (v) => v);
    o = await overflow(login);
    assert.ok(o.scrollWidth <= o.innerWidth, `the login screen overflows at 360 px: ${JSON.stringify(o)}`);
    await login.context().close();
    await pia.locator('#back').click();
  });

  test('disconnected: a banner says so and goes once reconnected; a peer\'s presence is unknown, not green, meanwhile', T, async () => {
    const proxy = new Proxy(server.httpPort);
    await proxy.start();
    try {
      const rita = await newPage();
      await logIn(rita, proxy.url, 'rita');
      await openDirect(rita, 'quinn');
      await until('quinn online for rita', () => peerOnline(rita, 'quinn'), (v) => v === 'true');
      assert.equal(await rita.locator('#pane-dot').getAttribute('data-online'), 'true');
      assert.ok(!(await visible(rita, '#conn-notice')));

      proxy.cut();
      await until('the banner', () => visible(rita, '#conn-notice'), (v) => v);
      assert.match(await rita.locator('#conn-notice').textContent() ?? '', /^Connection lost\. Reconnecting/);
      // quinn is still online, but rita cannot know it: no green dot.
      assert.equal(await peerOnline(rita, 'quinn'), 'unknown');
      assert.equal(await rita.locator('#pane-dot').getAttribute('data-online'), 'unknown');
      await shot(rita, 'disconnected-banner');

      proxy.restore();
      await until('rita online again', () => connState(rita), (s) => s === 'online', 45_000);
      await until('the banner gone', () => visible(rita, '#conn-notice'), (v) => !v);
      await until('quinn online again for rita', () => peerOnline(rita, 'quinn'), (v) => v === 'true');
      await send(rita, 'back online');
      await until('delivered to quinn', () => markOf(rita, 'back online'), (m) => m === 'delivered');
      await rita.context().close();
    } finally {
      await proxy.close();
    }
  });

  test('a reload reopens the conversation that was open', T, async () => {
    await until('rita in quinn\'s list', () => unread(quinn, 'rita'), (n) => n === 1);
    await conv(quinn, 'rita').click();
    await until('rita\'s message', () => texts(quinn), (t) => t.join('|') === 'back online');
    assert.equal(await quinn.evaluate('location.hash'), '#c=u%3Aquinn%3Arita');
    await quinn.reload();
    await until('quinn online', () => connState(quinn), (s) => s === 'online');
    await until('the chat with rita open again', () => quinn.locator('#pane-title').textContent(), (t) => t === 'rita');
    await until('its messages shown', () => texts(quinn), (t) => t.join('|') === 'back online');
    await until('and read', () => unread(quinn, 'rita'), (n) => n === 0);
  });

  test('the tab title counts unread messages; opening a chat shows "New messages" before the first unread one', T, async () => {
    await until('nothing unread', () => quinn.title(), (t) => t === 'Longlink');
    for (const text of ['uma 1', 'uma 2']) await postMessage(server.httpUrl, 'uma', 'quinn', text);
    await until('the title counts 2', () => quinn.title(), (t) => t === '(2) Longlink');
    await conv(quinn, 'uma').click();
    await until('uma\'s messages', () => texts(quinn), (t) => t.join('|') === 'uma 1|uma 2');
    await until('the title back to plain', () => quinn.title(), (t) => t === 'Longlink');
    const firstUnread = (): Promise<string | null> =>
      quinn.locator('#message-list .divider + .msg .text').textContent({ timeout: 1000 }).catch(() => null);
    assert.equal(await firstUnread(), 'uma 1', 'all unread: the divider comes first');

    // Away in another chat, three more come from uma.
    await openDirect(quinn, 'vic');
    for (const text of ['uma 3', 'uma 4', 'uma 5']) await postMessage(server.httpUrl, 'uma', 'quinn', text);
    await until('the title counts 3', () => quinn.title(), (t) => t === '(3) Longlink');
    await conv(quinn, 'uma').click();
    await until('all five', () => texts(quinn), (t) => t.join('|') === 'uma 1|uma 2|uma 3|uma 4|uma 5');
    assert.equal(await quinn.locator('#message-list .divider').count(), 1);
    assert.equal(await quinn.locator('#message-list .divider').textContent(), 'New messages');
    assert.equal(await firstUnread(), 'uma 3');
    await until('the title back to plain', () => quinn.title(), (t) => t === 'Longlink');
    await shot(quinn, 'new-messages-divider');
  });

  test('create group: ids separated by commas or spaces; a bad id is named next to the field and nothing is sent', T, async () => {
    assert.match(await quinn.locator('#new-group-hint').textContent() ?? '', /commas or spaces/);
    await quinn.locator('#new-group-name').fill('Crew');
    await quinn.locator('#new-group-members').fill('uma; sam');
    await quinn.getByRole('button', { name: 'Create' }).click();
    await until('the error', () => visible(quinn, '#new-group-error'), (v) => v);
    assert.match(await quinn.locator('#new-group-error').textContent() ?? '', /“uma;” is not a user id/);
    assert.equal(await quinn.locator('#new-group-members').getAttribute('aria-invalid'), 'true');
    assert.equal(await quinn.locator('#new-group-members').inputValue(), 'uma; sam', 'kept to be fixed');
    assert.equal(await quinn.locator('#pane-title').textContent(), 'uma', 'no group made');
    assert.equal(await conv(quinn, 'Crew').count(), 0);
    await shot(quinn, 'group-member-error');

    await quinn.locator('#new-group-members').fill(' uma  sam,uma, quinn,');
    assert.ok(!(await visible(quinn, '#new-group-error')), 'the error goes as the field is edited');
    await quinn.getByRole('button', { name: 'Create' }).click();
    await until('the group open', () => quinn.locator('#pane-title').textContent(), (t) => t === 'Crew');
    await until('made with uma and sam', () => quinn.locator('#message-list .msg.system').first().textContent(),
      (t) => t === 'quinn created the group “Crew” with uma, sam');
  });

  test('1:1 marks: not delivered while the peer has no device online, delivered once one has it, read once read', T, async () => {
    await openDirect(quinn, 'xena');
    await send(quinn, 'are you there, xena?');
    await until('stored', () => markOf(quinn, 'are you there, xena?'), (m) => m === 'sent');
    await sleep(500);
    assert.equal(await markOf(quinn, 'are you there, xena?'), 'sent', 'nothing received yet');
    xena = await newPage();
    await logIn(xena, server.httpUrl, 'xena');
    await until('delivered', () => markOf(quinn, 'are you there, xena?'), (m) => m === 'delivered');
    assert.equal(await unread(xena, 'quinn'), 1, 'received, not read');
    await conv(xena, 'quinn').click();
    await until('read', () => markOf(quinn, 'are you there, xena?'), (m) => m === 'read');
  });

  test('group marks: "read by N" counts the other members who read it, also after a reload', T, async () => {
    await quinn.locator('#new-group-name').fill('Trio');
    await quinn.locator('#new-group-members').fill('xena pia');
    await quinn.getByRole('button', { name: 'Create' }).click();
    await until('the group open', () => quinn.locator('#pane-title').textContent(), (t) => t === 'Trio');
    await send(quinn, 'hello trio');
    await until('stored', () => markOf(quinn, 'hello trio'), (m) => m === 'sent');
    await until('Trio in xena\'s list', () => unread(xena, 'Trio'), (n) => n === 1);
    await conv(xena, 'Trio').click();
    await until('read by 1', () => markTextOf(quinn, 'hello trio'), (t) => t === '✓✓ read by 1');
    await until('Trio in pia\'s list (on her phone)', () => unread(pia, 'Trio'), (n) => n === 1);
    await conv(pia, 'Trio').click();
    await until('read by 2', () => markTextOf(quinn, 'hello trio'), (t) => t === '✓✓ read by 2');
    assert.equal(await quinn.locator('#message-list .msg.own .mark').last().getAttribute('title'), 'read by pia, xena');
    await shot(quinn, 'group-read-by-2');
    // After a reload the marks come from the group's info (each member's read mark).
    await quinn.reload();
    await until('quinn online', () => connState(quinn), (s) => s === 'online');
    await until('Trio open again', () => quinn.locator('#pane-title').textContent(), (t) => t === 'Trio');
    await until('still read by 2', () => markTextOf(quinn, 'hello trio'), (t) => t === '✓✓ read by 2');
  });

  test('a message written offline outlives its tab: the next tab of the user sends it, once', T, async () => {
    const proxy = new Proxy(server.httpPort);
    await proxy.start();
    // zoe's browser: her tabs share its storage and locks.
    const zoe = await browser.newContext({ viewport: DESKTOP });
    try {
      const tab1 = await newPage(DESKTOP, zoe);
      await logIn(tab1, proxy.url, 'zoe');
      await openDirect(tab1, 'quinn');
      proxy.cut();
      await until('tab 1 disconnected', () => connState(tab1), (s) => s !== 'online');
      const text = 'written offline, tab closed';
      await send(tab1, text);
      await until('pending', () => markOf(tab1, text), (m) => m === 'pending');
      await until('kept in the tab\'s store', () => storedOutbox(tab1, 'zoe'), (t) => t.includes(text));
      const [closedStore] = await storesOf(tab1, 'zoe');
      await tab1.close();
      proxy.restore();

      const tab2 = await newPage(DESKTOP, zoe);
      await logIn(tab2, proxy.url, 'zoe');
      await until('quinn got it', () => unread(quinn, 'zoe'), (n) => n === 1);
      await until('the closed tab\'s store deleted', () => storesOf(tab2, 'zoe'), (names) => names.length === 1 && names[0] !== closedStore);
      await conv(quinn, 'zoe').click();
      await until('quinn sees it', () => texts(quinn), (t) => t.includes(text));
      await conv(tab2, 'quinn').click();
      await until('tab 2 shows it as sent', () => markOf(tab2, text), (m) => m === 'read' || m === 'delivered' || m === 'sent');

      // A live tab's store is not adopted: a third tab leaves tab 2's alone.
      const tab3 = await newPage(DESKTOP, zoe);
      await logIn(tab3, proxy.url, 'zoe');
      await sleep(300);
      assert.equal((await storesOf(tab3, 'zoe')).length, 2, 'tab 2 and tab 3 each keep their store');
      assert.deepEqual((await texts(quinn)).filter((t) => t === text), [text], 'stored once');
      assert.equal(await unread(quinn, 'zoe'), 0);
    } finally {
      await zoe.close();
      await proxy.close();
    }
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the pages');
  });
});
