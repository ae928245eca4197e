// `longlink chat` driven through piped stdin, against a real server and the real binary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, Proc, freePort, run, startServer } from './cli-helpers.js';
import { ADMIN_KEY } from '../helpers/server.js';
import { createClient, requestToken } from '../../src/client/index.js';

interface MessageLine { conversation: string; seq: number; from: string; text: string }
interface ConversationLine { conversation: string; unread: number }

/** `longlink chat` with a pipe for stdin: `say` writes lines to it as a user would type them. */
class Chat extends Proc {
  say(...lines: string[]): void {
    this.child.stdin!.write(lines.map((l) => `${l}\n`).join(''));
  }

  has(pattern: RegExp): boolean {
    return this.lines.some((l) => pattern.test(l));
  }

  async expect(pattern: RegExp, what = String(pattern), timeoutMs = 10_000): Promise<string> {
    await this.waitFor(() => this.has(pattern), timeoutMs, what);
    return this.lines.find((l) => pattern.test(l))!;
  }
}

function chat(server: string, user: string): Chat {
  return new Chat(spawn(process.execPath, [BIN, 'chat', '--user', user, '--server', server], {
    env: { ...process.env, LONGLINK_ADMIN_KEY: ADMIN_KEY },
    stdio: ['pipe', 'pipe', 'pipe'],
  }));
}

async function listen(server: string, user: string): Promise<Proc> {
  const p = run(['listen', '--user', user, '--device', 'listen', '--server', server]);
  await p.waitFor(() => p.errLines.some((l) => l.includes('"type":"online"')), 15_000, 'listen online');
  return p;
}

async function exitsWith(p: Proc, code: number, timeoutMs = 15_000): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const got = await Promise.race([p.exited, new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), timeoutMs); })]);
  clearTimeout(timer);
  if (got === 'timeout') await p.kill('SIGKILL');
  assert.equal(got, code, `exit code\nstdout:\n${p.lines.join('\n')}\nstderr:\n${p.errLines.join('\n')}`);
}

async function unreadOf(server: string, user: string): Promise<Map<string, number>> {
  const p = run(['conversations', '--user', user, '--server', server]);
  assert.equal(await p.exited, 0, p.errLines.join('\n'));
  return new Map(p.json<ConversationLine>('conversation').map((c) => [c.conversation, c.unread]));
}

async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('chat: list with unread, open, send, receive inline, notices, typing, read marks, /quit', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'longlink-chat-'));
  const s = await startServer(dir);
  const procs: Proc[] = [];
  try {
    const before = run(['send', '--user', 'bob', '--to', 'alice', '--text', 'hi alice', '--count', '2', '--server', s.http]);
    assert.equal(await before.exited, 0, before.errLines.join('\n'));
    const bobListen = await listen(s.http, 'bob');
    procs.push(bobListen);

    const alice = chat(s.http, 'alice');
    procs.push(alice);
    // The list, before anything is opened: bob's conversation with its two unread messages.
    await alice.expect(/^\s+1\. bob\s+2 unread\s+\d\d:\d\d bob: hi alice-2$/, 'bob with 2 unread in the list');

    alice.say('/open bob');
    await alice.expect(/^── bob/, 'the conversation header');
    await alice.expect(/^#2 \d\d:\d\d bob: hi alice-2$/, 'history');
    assert.ok(alice.has(/^#1 \d\d:\d\d bob: hi alice-1$/));

    alice.say('first line', 'second line');
    const fromAlice = () => bobListen.json<MessageLine>('message').filter((m) => m.from === 'alice');
    await bobListen.waitFor(() => fromAlice().length >= 2, 10_000, 'two messages at bob');
    await new Promise((r) => setTimeout(r, 200)); // nothing else may arrive
    assert.deepEqual(fromAlice().map((m) => [m.text, m.seq]), [['first line', 3], ['second line', 4]]);
    await alice.expect(/^#4 \d\d:\d\d alice: second line$/, 'own message acked');
    assert.ok(alice.has(/^#3 \d\d:\d\d alice: first line$/));

    // Bob in a second chat: alice's two lines are unread for him; opening marks them read (alice sees it).
    const bob = chat(s.http, 'bob');
    procs.push(bob);
    await bob.expect(/^\s+1\. alice\s+2 unread\s+\d\d:\d\d alice: second line$/, 'alice with 2 unread at bob');
    bob.say('/open alice');
    await bob.expect(/^#4 \d\d:\d\d alice: second line$/, 'history at bob');
    await alice.expect(/✓ seen by bob/, 'read mark at alice');

    // Bob replies: it prints inline in alice's open conversation, which she marks read.
    bob.say('hello back');
    await alice.expect(/^#5 \d\d:\d\d bob: hello back$/, 'the reply, inline');
    await eventually(async () => (await unreadOf(s.http, 'alice')).get('u:alice:bob') === 0, 'alice read the reply');

    // Another conversation: a one-line notice with its unread count, not inline.
    const carol = run(['send', '--user', 'carol', '--to', 'alice', '--text', 'ping from carol', '--server', s.http]);
    assert.equal(await carol.exited, 0, carol.errLines.join('\n'));
    await alice.expect(/^• carol: ping from carol\s+\[1 unread, \/open carol\]$/, 'notice of carol');
    assert.ok(!alice.has(/^#1 .*ping from carol/), 'not inline');
    assert.equal((await unreadOf(s.http, 'alice')).get('u:alice:carol'), 1);

    // Bob types (through the SDK): alice's open conversation shows it.
    const sdk = createClient({
      url: s.tcp,
      autoSync: false,
      token: async () => (await requestToken(s.http, ADMIN_KEY, { user_id: 'bob', device_id: 'sdk' })).token,
    });
    await sdk.connect();
    sdk.typing('u:alice:bob');
    await alice.expect(/^… bob is typing$/, 'typing indicator');
    await sdk.close();

    // Commands that need something: a clear message, the chat goes on.
    alice.say('/recall x', '/nope');
    await alice.expect(/^usage: \/recall SEQ/, 'usage of /recall');
    await alice.expect(/^unknown command \/nope/, 'unknown command');

    alice.say('/quit');
    await exitsWith(alice, 0);
    // Bob's chat ends with its input.
    bob.child.stdin!.end();
    await exitsWith(bob, 0);
    assert.equal(bob.lines.filter((l) => /hello back$/.test(l)).length, 1, 'bob sees his message once');
  } finally {
    for (const p of procs) await p.kill('SIGKILL');
    await s.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('chat: one line when the connection is lost (not "signed out", not one per retry), "reconnected" within seconds of the server\'s return; a line typed offline is sent then', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'longlink-chat-'));
  const httpPort = await freePort();
  const tcpPort = await freePort();
  let s = await startServer(dir, httpPort, tcpPort);
  const procs: Proc[] = [];
  try {
    const alice = chat(s.http, 'alice');
    procs.push(alice);
    await alice.expect(/^no conversations yet/, 'empty list');
    alice.say('/to bob');
    await alice.expect(/^\s+\(no messages yet/, 'empty conversation');
    const before = alice.lines.length;

    // A graceful stop kicks clients with SERVER_SHUTDOWN (reconnect allowed): a lost connection, not a sign-out.
    await s.proc.kill('SIGTERM');
    await alice.expect(/^! connection lost( \(SERVER_SHUTDOWN\))?, reconnecting…$/, 'reconnecting');
    alice.say('typed while offline');
    await alice.expect(/^… offline: "typed while offline" is sent when the connection is back$/, 'queued notice');
    // Down long enough for several retries (the first ones come within a second).
    await new Promise((r) => setTimeout(r, 4000));

    s = await startServer(dir, httpPort, tcpPort);
    const backAt = Date.now();
    await alice.expect(/^✓ reconnected$/, 'reconnected', 6000);
    assert.ok(Date.now() - backAt < 6000, `reconnected ${Date.now() - backAt} ms after the server was back`);
    await alice.expect(/^#1 \d\d:\d\d alice: typed while offline$/, 'sent after reconnect');

    const during = alice.lines.slice(before);
    assert.equal(during.filter((l) => /connection lost|reconnecting|offline:|still offline/.test(l) && !l.startsWith('… offline: "')).length, 1,
      `one line for the whole outage:\n${during.join('\n')}`);
    assert.ok(!during.some((l) => /signed out/.test(l)), `not "signed out":\n${during.join('\n')}`);
    assert.equal(during.filter((l) => /reconnected/.test(l)).length, 1, during.join('\n'));

    const bob = await listen(s.http, 'bob');
    procs.push(bob);
    await bob.waitFor(() => bob.json('message').length >= 1, 10_000, 'the message at bob');
    assert.deepEqual(bob.json<MessageLine>('message').map((m) => m.text), ['typed while offline']);

    alice.child.stdin!.end();
    await exitsWith(alice, 0);
  } finally {
    for (const p of procs) await p.kill('SIGKILL');
    await s.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('rich messages from the command line: custom payload, reply, edit, reaction and block as the acceptance runs them; the chat shows and makes them', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'longlink-chat-'));
  const s = await startServer(dir);
  const procs: Proc[] = [];
  try {
    const bobListen = await listen(s.http, 'bob');
    procs.push(bobListen);
    const ok = async (args: string[]) => {
      const p = run([...args, '--server', s.http]);
      assert.equal(await p.exited, 0, `${args.join(' ')}: ${p.errLines.join('\n')}`);
      return p;
    };
    await ok(['send', '--user', 'alice', '--to', 'bob', '--text', 'hello bob']);
    await ok(['send', '--user', 'alice', '--to', 'bob', '--payload-type', 'app.order', '--payload', '{"id":7}', '--text', '[order]']);
    await ok(['send', '--user', 'alice', '--to', 'bob', '--text', 'about that', '--reply-to', '2']);
    await ok(['edit', '--user', 'alice', '--conversation', 'u:alice:bob', '--seq', '1', '--text', 'hello bob (edited)']);
    await ok(['react', '--user', 'alice', '--conversation', 'u:alice:bob', '--seq', '2', '--emoji', '👍']);
    const kinds = () => bobListen.lines.map((l) => JSON.parse(l) as { type: string; seq: number; content_type?: string; payload?: unknown; reply_to?: number; text?: string; target_seq?: number; reactions?: { emoji: string; count: number }[] });
    await bobListen.waitFor(() => kinds().some((k) => k.type === 'reaction'), 10_000, 'the reaction at bob');
    const seen = kinds();
    assert.deepEqual(seen.find((k) => k.type === 'custom'), { ...seen.find((k) => k.type === 'custom'), seq: 2, content_type: 'app.order', payload: { id: 7 } });
    assert.equal(seen.find((k) => k.type === 'reply')?.reply_to, 2);
    assert.deepEqual([seen.find((k) => k.type === 'edit')?.target_seq, seen.find((k) => k.type === 'edit')?.text], [1, 'hello bob (edited)']);
    assert.deepEqual(seen.find((k) => k.type === 'reaction')?.reactions?.map((r) => [r.emoji, r.count]), [['👍', 1]]);
    assert.deepEqual(seen.map((k) => k.type), ['message', 'custom', 'reply', 'edit', 'reaction']);

    const blocked = await ok(['block', '--user', 'bob', '--peer', 'alice']);
    assert.deepEqual(blocked.json<{ blocked: string[] }>('blocked')[0]?.blocked, ['alice']);
    const refused = run(['send', '--user', 'alice', '--to', 'bob', '--text', 'still there?', '--server', s.http]);
    assert.equal(await refused.exited, 1);
    assert.ok(refused.errLines.some((l) => l.includes('"code":"BLOCKED"')), refused.errLines.join('\n'));

    // The terminal chat: names, the custom message, the quote, the edit and the reaction; /reply, /react, /name.
    await ok(['profile', '--user', 'alice', '--name', 'Alice L']);
    const bob = chat(s.http, 'bob');
    procs.push(bob);
    bob.say('/open alice');
    await bob.expect(/^#2 \d\d:\d\d Alice L \(alice\): \[app\.order\] \{"id":7\} \[order\] \[👍 1\]$/, 'the custom message with its reaction');
    assert.ok(bob.has(/^#1 \d\d:\d\d Alice L \(alice\): hello bob \(edited\) \(edited\)$/), bob.lines.join('\n'));
    assert.ok(bob.has(/^#3 \d\d:\d\d Alice L \(alice\): \(↩ #2 alice: \[order\]\) about that$/), bob.lines.join('\n'));
    bob.say('/reply 3 got it', '/react 3 🎉', '/name Bob B');
    await bob.expect(/^#\d+ \d\d:\d\d bob: \(↩ #3 alice: about that\) got it$|^#\d+ \d\d:\d\d bob: got it$/, 'bob\'s reply');
    await bob.expect(/^\* #3 reactions: \[🎉 1\]$/, 'the reaction event');
    await bob.expect(/^\* your name: Bob B$/, 'the name set');
    bob.say('/quit');
    await exitsWith(bob, 0);
  } finally {
    for (const p of procs) await p.kill('SIGKILL');
    await s.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});
