// The web chat page in Chromium with files and search: an image someone sent
// is shown inline (its preview, fetched with the login token), a document is
// offered for download and saves with its name and bytes; the page's attach
// button uploads with a progress bar and sends the file; the search box finds
// the messages this user may read, marks the matched words, and opens the
// conversation at the message.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import type { Browser, Page } from 'playwright-core';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { T, conv, launchBrowser, logIn, shot, texts, until } from './helpers.js';
import { createClient, type ChatMessage, type LonglinkClient } from '../../src/client/index.js';

/** What the test reads of an <img> in the page (the tests compile without the DOM's types). */
interface Img {
  complete: boolean;
  naturalWidth: number;
  width: number;
  height: number;
  src: string;
}

describe('web chat page in Chromium: files and search', () => {
  let server: TestServer;
  let browser: Browser;
  let page: Page;
  let ann: LonglinkClient;
  const annGot: ChatMessage[] = [];
  const pageErrors: string[] = [];

  before(async () => {
    server = await startTestServer({ 'dev-login': '1' });
    browser = await launchBrowser();
    page = await (await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true })).newPage();
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await logIn(page, server.httpUrl, 'ben');
    ann = createClient({ url: server.wsUrl, token: await server.token('ann', 'sdk'), reconnect: false });
    ann.on('message', (m) => annGot.push(m));
    await ann.connect();
  });

  after(async () => {
    await ann?.close();
    await browser?.close();
    await server?.close();
  });

  test('an image is shown inline and a document downloads; the attach button uploads with progress and sends', T, async () => {
    const png = await sharp({ create: { width: 400, height: 200, channels: 3, background: '#3a6' } }).png().toBuffer();
    const image = await ann.uploadFile(png, { name: 'beach.png' });
    const pdf = Buffer.from('%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n');
    const doc = await ann.uploadFile(pdf, { name: 'invoice.pdf' });
    await ann.send({ to: 'ben', text: 'the beach', attachments: [image] });
    await ann.send({ to: 'ben', text: '', attachments: [doc] });
    await until('ann in ben\'s list', () => conv(page, 'ann').count(), (n) => n === 1);
    assert.equal(await conv(page, 'ann').locator('.preview').textContent(), '[file] invoice.pdf', 'a file-only message\'s preview names the file');
    await conv(page, 'ann').click();
    await until('both messages shown', () => texts(page), (t) => t.length === 2);

    const img = page.locator('.msg img.file-image');
    await until('the image\'s preview loaded', () => img.evaluate((e) => [(e as unknown as Img).complete, (e as unknown as Img).naturalWidth, (e as unknown as Img).src.slice(0, 5)]),
      ([complete, w, scheme]) => complete === true && (w as number) > 0 && scheme === 'blob:');
    assert.equal(await img.getAttribute('alt'), 'beach.png');
    // The preview is at most 320 px wide, drawn in its box at the image's proportions.
    assert.deepEqual(await img.evaluate((e) => [(e as unknown as Img).naturalWidth, (e as unknown as Img).width, (e as unknown as Img).height]), [320, 240, 120]);

    const button = page.locator('.msg button.file.document');
    assert.equal(await button.locator('.file-name').textContent(), 'invoice.pdf');
    assert.match((await button.locator('.file-size').textContent()) ?? '', /application\/pdf/);
    const [download] = await Promise.all([page.waitForEvent('download'), button.click()]);
    assert.equal(download.suggestedFilename(), 'invoice.pdf');
    assert.deepEqual(await readFile(await download.path()), pdf);

    // ben sends a file from the page: the bar moves to 100% and ann gets it.
    await page.locator('#upload-progress').evaluate((bar) => {
      const values: number[] = [];
      (globalThis as unknown as { progress: number[] }).progress = values;
      const Observer = (globalThis as unknown as { MutationObserver: new (cb: () => void) => { observe(target: unknown, options: object): void } }).MutationObserver;
      new Observer(() => values.push(Number(bar.getAttribute('value')))).observe(bar, { attributes: true, attributeFilter: ['value'] });
    });
    const notes = Buffer.alloc(3 * 1024 * 1024, 'meeting notes, line after line\n');
    await page.locator('#composer-text').fill('notes attached');
    await page.locator('#composer-file').setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: notes });
    await until('ann gets ben\'s file', async () => annGot.filter((m) => m.content?.attachments?.length), (m) => m.length === 1);
    const got = annGot.find((m) => m.content?.attachments?.length)!;
    assert.equal(got.text, 'notes attached', 'the composer\'s text goes as its caption');
    const file = got.content!.attachments![0]!;
    assert.deepEqual([file.name, file.mime, file.size], ['notes.txt', 'text/plain', notes.length]);
    assert.deepEqual(Buffer.from((await ann.downloadFile(file.fileId)).bytes), notes);
    const progress = await page.evaluate(() => (globalThis as unknown as { progress: number[] }).progress);
    assert.equal(progress.at(-1), 100, `progress ends at 100: ${progress.join()}`);
    assert.ok(progress.every((v, i) => i === 0 || v >= progress[i - 1]!), `progress never goes back: ${progress.join()}`);
    await until('the upload bar gone', () => page.locator('#upload').isHidden(), (hidden) => hidden);
    await until('ben\'s message shows its file', () => page.locator('.msg.own .file-name').allTextContents(), (n) => n.join() === 'notes.txt');
    await shot(page, 'files');
    assert.deepEqual(pageErrors, []);
  });

  test('search finds what ben may read, marks the words, and opens the conversation at the message', T, async () => {
    const early = await ann.send({ to: 'ben', text: 'meet at the lighthouse at dawn' });
    for (let i = 0; i < 40; i++) await ann.send({ to: 'ben', text: `filler ${i}` });
    await ann.send({ to: 'cara', text: 'the lighthouse key is with me' });
    // Indexed beside the send path: found a moment after the ack.
    await page.locator('#search-query').fill('lighthouse');
    await until('one hit for ben', async () => {
      await page.locator('#search-query').press('Enter');
      await new Promise((r) => setTimeout(r, 100));
      return page.locator('#search-hits .hit').count();
    }, (n) => n === 1);
    assert.equal(await page.locator('#conversations').isHidden(), true, 'the results take the list\'s place');
    const hit = page.locator('#search-hits .hit');
    assert.equal(await hit.locator('.hit-title').textContent(), 'ann');
    assert.equal(await hit.locator('.snippet').textContent(), 'meet at the lighthouse at dawn');
    assert.deepEqual(await hit.locator('.snippet mark').allTextContents(), ['lighthouse']);
    assert.match((await page.locator('#search-summary').textContent()) ?? '', /^1 message for “lighthouse”$/);

    await hit.click();
    // The message is 41 back: older pages are loaded until it is there, and it is marked.
    const found = page.locator(`#message-list .msg.found[data-seq="${early.seq}"]`);
    await until('the message found and marked', () => found.count(), (n) => n === 1);
    assert.equal(await found.locator('.text').textContent(), 'meet at the lighthouse at dawn');
    assert.equal(await found.isVisible(), true);
    assert.ok(await found.evaluate((e) => {
      const box = e.getBoundingClientRect();
      const pane = e.ownerDocument.getElementById('messages')!.getBoundingClientRect();
      return box.top >= pane.top && box.bottom <= pane.bottom;
    }), 'scrolled into view');

    await page.locator('#search-query').fill('nothingmatchesthis');
    await page.locator('#search-query').press('Enter');
    await until('no results said', () => page.locator('#search-summary').textContent(), (t) => t === 'No messages match “nothingmatchesthis”.');
    await page.locator('#search-close').click();
    assert.equal(await page.locator('#conversations').isVisible(), true);
    await shot(page, 'search');
    assert.deepEqual(pageErrors, []);
  });
});
