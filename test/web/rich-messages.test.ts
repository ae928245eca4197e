// The web chat page in Chromium with rich messages: a custom payload shown by
// its type, a reply with its quote, a forward, an edit replacing the text in
// place, a deleted message's tombstone, a mention marked, and reactions both
// ways (the page shows the ones others make, and its 👍 button reacts).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, Page } from 'playwright-core';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { T, conv, launchBrowser, logIn, shot, texts, until } from './helpers.js';
import { createClient, type LonglinkClient, type ReactionsInfo } from '../../src/client/index.js';

describe('web chat page in Chromium: rich messages', () => {
  let server: TestServer;
  let browser: Browser;
  let page: Page;
  let ann: LonglinkClient;
  const reactions: ReactionsInfo[] = [];
  const pageErrors: string[] = [];

  before(async () => {
    server = await startTestServer({ 'dev-login': '1' });
    browser = await launchBrowser();
    page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await logIn(page, server.httpUrl, 'ben');
    ann = createClient({ url: server.wsUrl, token: await server.token('ann', 'sdk'), reconnect: false });
    ann.on('reactions', (r) => reactions.push(r));
    await ann.connect();
  });

  after(async () => {
    await ann?.close();
    await browser?.close();
    await server?.close();
  });

  test('custom payload, reply, forward, edit, delete and mention are shown; reactions both ways; display names', T, async () => {
    await ann.setProfile({ name: 'Ann Archer' });
    const order = await ann.send({ to: 'ben', text: 'new order', type: 'app.order', payload: { id: 7 } });
    await ann.send({ to: 'ben', text: 'see above', replyTo: order.seq });
    const typo = await ann.send({ to: 'ben', text: 'teh end' });
    await ann.send({ to: 'carl', text: 'for carl' });
    await ann.send({ to: 'ben', forward: { conversationId: 'u:ann:carl', seq: 1 } });
    await until('ann in ben\'s list', () => conv(page, 'ann').count(), (n) => n === 1);
    await until('ann\'s name in the list', () => conv(page, 'ann').locator('.title').textContent(), (t) => t === 'Ann Archer');
    await conv(page, 'ann').click();
    await until('the messages shown', () => texts(page), (t) => t.length === 4);
    assert.equal(await page.locator('#pane-title').textContent(), 'Ann Archer (ann)');
    const custom = page.locator('.msg .custom[data-content-type="app.order"]');
    assert.equal(await custom.textContent(), '[app.order] {"id":7}');
    assert.equal(await page.locator('.msg blockquote.quote').textContent(), 'ann: new order');
    assert.equal(await page.locator('.msg .forwarded').textContent(), 'Forwarded from ann');

    await ann.edit('u:ann:ben', typo.seq, { text: 'the end' });
    await until('the edit replaces the text', () => texts(page), (t) => t.includes('the end') && !t.includes('teh end'));
    assert.equal(await page.locator(`.msg[data-seq="${typo.seq}"] .edited`).textContent(), ' (edited)');
    await ann.deleteMessage('u:ann:ben', order.seq);
    await until('the delete leaves a tombstone', () => page.locator(`.msg[data-seq="${order.seq}"] .text`).textContent(), (t) => t === 'message deleted');
    assert.equal(await page.locator('.msg .custom').count(), 0, 'the payload is gone with it');
    assert.equal(await page.locator('.msg blockquote.quote').textContent(), 'ann: new order', 'the quote shown stays until the page reloads');

    await ann.react('u:ann:ben', typo.seq, '🎉');
    await until('ann\'s reaction shown', () => page.locator(`.msg[data-seq="${typo.seq}"] .reaction`).allTextContents(), (r) => r.join() === '🎉 1');
    await page.locator(`.msg[data-seq="${typo.seq}"]`).hover();
    await page.locator(`.msg[data-seq="${typo.seq}"] button.react`).click();
    await until('ben\'s 👍 reaches ann', async () => reactions.at(-1)?.reactions.map((r) => `${r.emoji}${r.count}`).join() ?? '', (r) => r === '🎉1,👍1');
    await until('and is shown as his', () => page.locator(`.msg[data-seq="${typo.seq}"] .reaction.mine`).allTextContents(), (r) => r.join() === '👍 1');

    const g = await ann.createGroup('crew', ['ben']);
    await ann.send({ groupId: g.groupId, text: '@ben your turn', mentions: ['ben'] });
    await until('the group in ben\'s list', () => conv(page, 'crew').count(), (n) => n === 1);
    await conv(page, 'crew').click();
    await until('the mention is marked', () => page.locator('.msg.mentioned .text').allTextContents(), (t) => t.join() === '@ben your turn');
    assert.equal(await page.locator('.msg.mentioned .from').textContent(), 'Ann Archer', 'a group message shows its sender\'s name');
    await shot(page, 'rich-messages');
    assert.deepEqual(pageErrors, []);
  });
});
