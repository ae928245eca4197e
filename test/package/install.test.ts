// The package as a user installs it: `npm pack` makes the tarball, which goes
// into an empty project; there `npx longlink start` serves the web page, and
// `import ... from 'longlink/client'` works in Node and in a browser bundle
// (esbuild, run in Debian's Chromium), both chatting through that server.
//
// The install runs with --ignore-scripts and then takes the repository's own
// build of better-sqlite3's native module (same version, same Node): compiling
// it from source takes a minute and a half on this machine and tests
// better-sqlite3, not this package (the README says what that build needs).
// `npm test` builds dist/ first, so the pack does not rebuild it under other tests.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { chromium, type Browser } from 'playwright-core';

const ROOT = join(import.meta.dirname, '..', '..');
const CHROMIUM = '/usr/bin/chromium';
const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const T = { timeout: 240_000 };

function run(cmd: string, args: string[], cwd: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 180_000 });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Resolves with the URLs the server printed, or rejects with its output. */
function listening(child: ChildProcess, timeoutMs: number): Promise<{ http: string; ws: string }> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`no "listening" line within ${timeoutMs} ms:\n${out}`)), timeoutMs);
    const seen = (chunk: Buffer) => {
      out += chunk.toString();
      const m = /listening http=(\S+) tcp=\S+ ws=(\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ http: m[1]!, ws: m[2]! });
      }
    };
    child.stdout!.on('data', seen);
    child.stderr!.on('data', seen);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (${code}):\n${out}`));
    });
  });
}

describe('the package, installed into an empty project', () => {
  let tmp = '';
  let app = '';
  let server: ChildProcess | undefined;
  let urls = { http: '', ws: '' };
  let browser: Browser | undefined;

  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'longlink-pack-'));
    const packed = run('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', tmp], ROOT).trim().split('\n').pop()!;
    const tarball = join(tmp, packed);
    assert.ok(existsSync(tarball), `npm pack wrote ${tarball}`);
    app = join(tmp, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    // better-sqlite3 at the repository's version, so its build below matches the JS that loads it.
    const sqlite = (JSON.parse(readFileSync(join(ROOT, 'node_modules', 'better-sqlite3', 'package.json'), 'utf8')) as { version: string }).version;
    run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--ignore-scripts', tarball, `better-sqlite3@${sqlite}`], app);
    const native = join('node_modules', 'better-sqlite3', 'build', 'Release');
    mkdirSync(join(app, native), { recursive: true });
    copyFileSync(join(ROOT, native, 'better_sqlite3.node'), join(app, native, 'better_sqlite3.node'));

    // `npx longlink start`, as the README says, from the project's folder (its data goes there).
    server = spawn('npx', ['longlink', 'start', '--http-port', '0', '--tcp-port', '0'], {
      cwd: app, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LONGLINK_LOG_LEVEL: 'warn' },
    });
    urls = await listening(server, 60_000);
  }, T);

  after(async () => {
    await browser?.close();
    if (server?.pid !== undefined) {
      try {
        process.kill(-server.pid, 'SIGTERM'); // npx and the server under it
      } catch {
        // already gone
      }
      // Until the whole group is gone: the server may still be writing to its data folder.
      for (let i = 0; i < 200 && groupAlive(server.pid); i++) await new Promise((r) => setTimeout(r, 50));
    }
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test('holds what a user runs: the CLI, the built server and web page, the SDK, the schema and the protocol doc; not the sources or tests', () => {
    const pkg = join(app, 'node_modules', 'longlink');
    for (const f of ['bin/longlink.js', 'dist/cli/main.js', 'dist/client/index.js', 'dist/client/browser.js', 'dist/client/index.d.ts', 'dist/web/index.html', 'proto/longlink/v1/longlink.proto', 'docs/protocol.md']) {
      assert.ok(existsSync(join(pkg, f)), `the package has ${f}`);
    }
    for (const f of ['src', 'test', 'bench', 'faults', 'node_modules/.bin/tsc']) assert.ok(!existsSync(join(pkg, f)), `the package leaves out ${f}`);
  });

  test('npx longlink start serves the web page, with its data in the project folder', T, async () => {
    const res = await fetch(`${urls.http}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/html/);
    assert.match(await res.text(), /<title>Longlink<\/title>/);
    assert.ok(existsSync(join(app, 'data', 'dev-secrets.json')), 'the quick start keeps its data in ./data of the project');
  });

  test('Node: import from longlink/client resolves to the installed package, and chats', T, async () => {
    writeFileSync(join(app, 'chat.mjs'), `
      import { createClient } from 'longlink/client';
      const [http, ws] = process.argv.slice(2);
      async function token(user) {
        const res = await fetch(http + '/api/v1/dev/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user_id: user, device_id: 'node' }) });
        return (await res.json()).token;
      }
      const bob = createClient({ url: ws, token: await token('bob') });
      const got = new Promise((resolve) => bob.on('message', (m) => resolve(m)));
      await bob.connect();
      const alice = createClient({ url: ws, token: await token('alice') });
      await alice.connect();
      const sent = await alice.send({ to: 'bob', text: 'hi from node' });
      const m = await got;
      console.log(JSON.stringify({ resolved: import.meta.resolve('longlink/client'), seq: sent.seq, text: m.text, from: m.fromUser }));
      await alice.close();
      await bob.close();
    `);
    const out = JSON.parse(run(process.execPath, ['chat.mjs', urls.http, urls.ws], app).trim()) as Record<string, unknown>;
    assert.equal(out.resolved, `file://${join(app, 'node_modules', 'longlink', 'dist', 'client', 'index.js')}`);
    assert.deepEqual({ seq: out.seq, text: out.text, from: out.from }, { seq: 1, text: 'hi from node', from: 'alice' });
  });

  test('browser: a bundle of longlink/client has no Node modules and chats from a page', T, async () => {
    writeFileSync(join(app, 'web.js'), `
      import { createClient, indexedDbStore } from 'longlink/client';
      async function token(user) {
        const res = await fetch('/api/v1/dev/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user_id: user, device_id: 'browser' }) });
        return (await res.json()).token;
      }
      window.chat = async (ws) => {
        const carol = createClient({ url: ws, token: await token('carol'), store: indexedDbStore('carol') });
        const got = new Promise((resolve) => carol.on('message', (m) => resolve(m.text)));
        await carol.connect();
        const dave = createClient({ url: ws, token: await token('dave') });
        await dave.connect();
        await dave.send({ to: 'carol', text: 'hi from a bundle' });
        return got;
      };
    `);
    const bundle = await build({ entryPoints: [join(app, 'web.js')], absWorkingDir: app, bundle: true, platform: 'browser', format: 'iife', write: false, logLevel: 'silent' });
    const code = bundle.outputFiles[0]!.text;
    assert.doesNotMatch(code, /require\("(node:)?(net|tls|fs|path|crypto)"\)|from "node:/, 'the browser entry pulls in no Node module');
    browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
    const page = await browser.newPage();
    // The bundle as a script of the server's own origin (which its /ws accepts and its page's CSP allows).
    await page.route(`${urls.http}/app-bundle.js`, (route) => route.fulfill({ contentType: 'text/javascript', body: code }));
    await page.goto(`${urls.http}/`);
    await page.addScriptTag({ url: `${urls.http}/app-bundle.js` });
    const text = await page.evaluate((ws) => (globalThis as unknown as { chat(ws: string): Promise<string> }).chat(ws), urls.ws);
    assert.equal(text, 'hi from a bundle');
  });

  test('the README\'s install section says how to install the tarball, start the server, and what better-sqlite3 needs', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    assert.match(readme, /npm install \S*longlink-[\d.]+\.tgz/);
    assert.match(readme, /better-sqlite3/);
    assert.match(readme, /npx longlink start/);
  });
});
