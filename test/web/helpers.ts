// What the browser tests of the web page share: Debian's chromium launched by
// playwright-core, a TCP proxy that takes a browser's network away, polling,
// and the page's controls as the tests read and drive them.
import assert from 'node:assert/strict';
import net from 'node:net';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import { ADMIN_KEY } from '../helpers/server.js';

const CHROMIUM = '/usr/bin/chromium';
const ROOT = join(import.meta.dirname, '..', '..');
export const ARTIFACTS = join(ROOT, 'test-artifacts', 'web');
/** The flags this machine needs (its network is closed: no background traffic). */
const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
export const T = { timeout: 120_000 };

/** Checks chromium and the built page are there, makes the artifacts folder, and launches the browser. */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: run scripts/ensure-services.sh (as root; npm test runs it first) to install Debian's chromium`);
  }
  if (!existsSync(join(ROOT, 'dist', 'web', 'index.html'))) {
    throw new Error('the web page is not built (dist/web/index.html is missing): run npm run build (npm test runs it first)');
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  // Playwright makes a fresh, empty user-data-dir in a temp folder for this browser and removes it on close.
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
}

/**
 * A TCP proxy in front of the server for one browser, so the test can take
 * its network away: `cut()` drops every connection and refuses new ones
 * until `restore()`. Pages loaded through it have their own origin (so
 * their own IndexedDB and Web Locks).
 */
export class Proxy {
  private readonly sockets = new Set<net.Socket>();
  private blocked = false;
  private server: net.Server | undefined;
  port = 0;

  constructor(private readonly targetPort: number) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}/`;
  }

  async start(): Promise<void> {
    this.server = net.createServer((client) => {
      if (this.blocked) {
        client.destroy();
        return;
      }
      const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort });
      for (const [a, b] of [[client, upstream], [upstream, client]] as const) {
        this.sockets.add(a);
        a.on('error', () => b.destroy());
        a.on('close', () => {
          this.sockets.delete(a);
          b.destroy();
        });
        a.pipe(b);
      }
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server!.address() as net.AddressInfo).port;
  }

  cut(): void {
    this.blocked = true;
    for (const s of this.sockets) s.destroy();
  }

  restore(): void {
    this.blocked = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }
}

/** Polls `read` until `ok` holds; fails with what it saw last. */
export async function until<V>(what: string, read: () => Promise<V>, ok: (v: V) => boolean, timeoutMs = 15_000): Promise<V> {
  const start = Date.now();
  let last: V | undefined;
  for (;;) {
    try {
      last = await read();
      if (ok(last)) return last;
    } catch (err) {
      if (Date.now() - start > timeoutMs) throw err;
    }
    if (Date.now() - start > timeoutMs) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}; last seen: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const conv = (page: Page, title: string): Locator => page.locator(`#conversations .conv[data-title="${title}"]`);
export const texts = (page: Page): Promise<string[]> => page.locator('#message-list .msg:not(.system) .text').allTextContents();
export const unread = async (page: Page, title: string): Promise<number> => {
  // One read, no waiting: the badge may go away between a count and a text read.
  const [badge] = await conv(page, title).locator('.unread').allTextContents();
  return badge === undefined ? 0 : Number(badge);
};
export const connState = (page: Page): Promise<string | null> => page.locator('#conn').getAttribute('data-state');
const ownMessage = (page: Page, text: string): Locator =>
  page.locator('#message-list .msg.own', { has: page.locator('.text', { hasText: new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) }) });
/** The mark on our own message with this text. */
export const markOf = (page: Page, text: string): Promise<string | null> => ownMessage(page, text).locator('.mark').getAttribute('data-mark');
/** The mark's text on our own message with this text (e.g. "✓✓ read by 2"). */
export const markTextOf = async (page: Page, text: string): Promise<string> => (await ownMessage(page, text).locator('.mark').textContent()) ?? '';
export const peerOnline = (page: Page, title: string): Promise<string | null> => conv(page, title).locator('.dot').getAttribute('data-online');

/** Open the page at `url` and log in as `user`; waits until online. */
export async function logIn(page: Page, url: string, user: string): Promise<void> {
  await page.goto(url);
  await page.locator('#login-user').fill(user);
  await page.getByRole('button', { name: 'Log in' }).click();
  await until(`${user} online`, () => connState(page), (s) => s === 'online');
  assert.equal(await page.locator('#me-name').textContent(), user);
}

export async function send(page: Page, text: string): Promise<void> {
  await page.locator('#composer-text').fill(text);
  await page.locator('#composer-text').press('Enter');
}

/** Open (or start) the 1:1 chat with `peer` from the sidebar's form. */
export async function openDirect(page: Page, peer: string): Promise<void> {
  await page.locator('#new-direct-user').fill(peer);
  await page.locator('#new-direct-user').press('Enter');
  await until(`the chat with ${peer} open`, () => page.locator('#pane-title').textContent(), (t) => t === peer);
}

export async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
}

/** Post a message through the HTTP API (as a backend would): quick history for a test. */
export async function postMessage(httpUrl: string, from: string, to: string, text: string): Promise<void> {
  const res = await fetch(`${httpUrl}/api/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}` },
    body: JSON.stringify({ from, to, text }),
  });
  assert.equal(res.status, 200, await res.text());
}
