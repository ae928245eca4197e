// The acceptance check of the groups issue, through the real binary
// (`longlink start`, `group`, `send --group`, `listen`, `conversations`, `read`).
// Needs `npm run build` first.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, startServer, type Proc } from './cli-helpers.js';

interface GroupLine { type: 'group'; group: string; conversation: string; name: string; owner: string; members: { user: string; role: string }[] }
interface MessageLine { type: 'message'; conversation: string; group?: string; seq: number; from: string; text: string }
interface MembersLine { type: 'members'; action: string; conversation: string; group?: string; seq: number; actor: string; users: string[] }
interface ReceiptLine { type: 'receipt'; conversation: string; user: string; seq: number }
interface ConversationLine {
  type: 'conversation'; conversation: string; kind: string; group?: string; name?: string; unread: number; last_seq: number;
  last: { type: string; text?: string; seq: number } | null;
}
interface AckLine { type: 'ack'; conversation: string; seq: number }

async function listen(server: string, user: string, device: string, transport = 'tcp'): Promise<Proc> {
  const p = run(['listen', '--user', user, '--device', device, '--transport', transport, '--server', server]);
  await p.waitFor(() => p.errLines.some((l) => l.includes('"type":"online"')), 15_000, `${user} listening`);
  return p;
}

/** Runs a command to completion; it must exit 0. */
async function ok(args: string[]): Promise<Proc> {
  const p = run(args);
  const code = await p.exited;
  assert.equal(code, 0, `longlink ${args.join(' ')} exited ${code}\n${p.errLines.join('\n')}`);
  return p;
}

test('acceptance: group create, bob listens, carol offline then catching up, carol removed, bob\'s conversations and read', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'longlink-groups-cli-'));
  const s = await startServer(dir);
  const listeners: Proc[] = [];
  try {
    const created = await ok(['group', 'create', '--user', 'alice', '--name', 'Weekend plans', '--members', 'bob,carol', '--server', s.http]);
    const [g, ...moreGroups] = created.json<GroupLine>('group');
    assert.ok(g, `a group line: ${created.lines.join('\n')}`);
    assert.deepEqual(moreGroups, []);
    assert.match(g.group, /^[A-Za-z0-9_.@-]+$/);
    assert.equal(g.conversation, `g:${g.group}`);
    assert.equal(g.name, 'Weekend plans');
    assert.equal(g.owner, 'alice');
    assert.deepEqual(g.members.map((m) => [m.user, m.role]), [['alice', 'owner'], ['bob', 'member'], ['carol', 'member']]);

    const bob = await listen(s.http, 'bob', 'bob-phone');
    listeners.push(bob);
    const send = await ok(['send', '--user', 'alice', '--group', g.group, '--text', 't', '--count', '5', '--server', s.http]);
    assert.deepEqual(send.json<AckLine>('ack').map((a) => [a.conversation, a.seq]), [2, 3, 4, 5, 6].map((q) => [g.conversation, q]));

    const five = ['t-1', 't-2', 't-3', 't-4', 't-5'];
    await bob.waitFor(() => bob.json('message').length >= 5, 15_000, 'bob: 5 group messages');
    const bobFirst = bob.json<MessageLine>('message');
    assert.deepEqual(bobFirst.map((m) => m.text), five, 'bob prints the 5 in order');
    assert.deepEqual(bobFirst.map((m) => m.seq), [2, 3, 4, 5, 6]);
    assert.ok(bobFirst.every((m) => m.from === 'alice' && m.conversation === g.conversation && m.group === g.group));
    assert.deepEqual(bob.json<MembersLine>('members').map((m) => [m.action, m.seq]), [['group_created', 1]]);

    // carol was offline all along: she gets the same 5, in order (over WebSocket).
    const carol = await listen(s.http, 'carol', 'carol-laptop', 'ws');
    listeners.push(carol);
    await carol.waitFor(() => carol.json('message').length >= 5, 15_000, 'carol: 5 group messages');
    const carolFirst = carol.json<MessageLine>('message');
    assert.deepEqual(carolFirst.map((m) => [m.seq, m.from, m.text]), bobFirst.map((m) => [m.seq, m.from, m.text]), 'carol gets the same 5');

    // alice removes carol and sends one more: bob gets it, carol does not.
    const removed = await ok(['group', 'remove', '--user', 'alice', '--group', g.group, '--members', 'carol', '--server', s.http]);
    assert.deepEqual(removed.json<GroupLine>('group')[0]!.members.map((m) => m.user), ['alice', 'bob']);
    for (const p of [bob, carol]) {
      await p.waitFor(() => p.json<MembersLine>('members').some((m) => m.action === 'members_removed'), 15_000, 'the removal event');
      const ev = p.json<MembersLine>('members').find((m) => m.action === 'members_removed')!;
      assert.deepEqual([ev.seq, ev.actor, ev.users], [7, 'alice', ['carol']]);
    }
    const last = await ok(['send', '--user', 'alice', '--group', g.group, '--text', 'after carol left', '--server', s.http]);
    assert.deepEqual(last.json<AckLine>('ack').map((a) => a.seq), [8]);
    await bob.waitFor(() => bob.json('message').length >= 6, 15_000, 'bob: the 6th message');
    assert.deepEqual(bob.json<MessageLine>('message').map((m) => m.text), [...five, 'after carol left']);
    await new Promise((r) => setTimeout(r, 700));
    assert.deepEqual(carol.json<MessageLine>('message').map((m) => m.text), five, 'carol gets nothing after her removal');
    const carolSend = run(['send', '--user', 'carol', '--group', g.group, '--text', 'still here?', '--server', s.http]);
    assert.equal(await carolSend.exited, 1, 'carol can no longer send');
    assert.ok(carolSend.errLines.some((l) => l.includes('NOT_MEMBER')), carolSend.errLines.join('\n'));

    // bob's conversation list: the group, its unread count, its last message; then read.
    const listed = await ok(['conversations', '--user', 'bob', '--server', s.http]);
    const lines = listed.json<ConversationLine>('conversation');
    const entry = lines.find((l) => l.conversation === g.conversation);
    assert.ok(entry, `bob lists the group: ${listed.lines.join('\n')}`);
    assert.equal(entry.kind, 'group');
    assert.equal(entry.group, g.group);
    assert.equal(entry.name, 'Weekend plans');
    assert.equal(entry.unread, 6, 'six messages from alice, none read');
    assert.equal(entry.last_seq, 8);
    assert.equal(entry.last?.type, 'message');
    assert.equal(entry.last?.text, 'after carol left');

    const read = await ok(['read', '--user', 'bob', '--conversation', g.conversation, '--server', s.http]);
    const [readLine] = read.json<{ conversation: string; read_seq: number; unread: number }>('read');
    assert.deepEqual(readLine && [readLine.conversation, readLine.read_seq, readLine.unread], [g.conversation, 8, 0]);
    const after = await ok(['conversations', '--user', 'bob', '--server', s.http]);
    const entryAfter = after.json<ConversationLine>('conversation').find((l) => l.conversation === g.conversation);
    assert.equal(entryAfter?.unread, 0, 'unread 0 after read');
    // bob's listening device hears about the read done elsewhere.
    await bob.waitFor(() => bob.json('receipt').length > 0, 15_000, 'a receipt at bob\'s listener');
    assert.deepEqual(bob.json<ReceiptLine>('receipt').map((r) => [r.conversation, r.user, r.seq]), [[g.conversation, 'bob', 8]]);
    // A new message counts again.
    await ok(['send', '--user', 'alice', '--group', g.group, '--text', 'one more', '--server', s.http]);
    const again = await ok(['conversations', '--user', 'bob', '--server', s.http]);
    assert.equal(again.json<ConversationLine>('conversation').find((l) => l.conversation === g.conversation)?.unread, 1);
  } finally {
    for (const p of listeners) await p.kill('SIGINT');
    await s.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});
