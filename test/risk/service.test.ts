// The risk service and the after-* webhooks on an embedded server, over real
// sockets: a receiver that restarts gets every event once (by its id) with a
// valid signature; spam bursts end in the configured action, written to the
// audit trail.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { api, putRules } from './support.js';
import { ErrorCode, directConversationId } from '../../src/protocol/index.js';
import { expectError, history, online, pushed, request, sendOk, uniqueId, until } from '../logic/support.js';
import { verifySignature, type AfterEvent } from '../../src/risk/webhooks.js';
import { RawClient } from '../helpers/raw.js';

const T = { timeout: 60_000 };


interface AuditEntry { id: number; user_id: string; rule: string; action: string; detail: { messages: { conversation_id: string; seq: number }[] } }

async function audit(s: TestServer, user: string): Promise<AuditEntry[]> {
  const r = await api(s, 'GET', `/api/v1/risk/audit?user_id=${user}`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.entries as AuditEntry[];
}

/** A business's receiver of after-* events: keeps every request; can be stopped and started again on its port. */
class Receiver {
  readonly received: { id: string; event: AfterEvent; signed: boolean; body: string }[] = [];
  private server: Server | undefined;
  port = 0;
  secret = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        const signed = verifySignature(this.secret, {
          timestamp: req.headers['x-longlink-timestamp'] as string, signature: req.headers['x-longlink-signature'] as string,
        }, body);
        this.received.push({ id: req.headers['x-longlink-event-id'] as string, event: JSON.parse(body) as AfterEvent, signed, body });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => this.server!.listen(this.port, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((r) => this.server?.close(r));
  }

  /** Distinct events by id (what a receiver that drops repeats by id keeps). */
  distinct(): Map<string, AfterEvent> {
    return new Map(this.received.map((r) => [r.id, r.event]));
  }
}

describe('after-* webhooks', () => {
  let s: TestServer;
  const receiver = new Receiver();
  before(async () => {
    s = await startTestServer();
    await receiver.start();
    receiver.secret = (await api(s, 'GET', '/api/v1/risk/webhook-secret')).body.secret as string;
    await putRules(s, { webhooks: { url: `http://127.0.0.1:${receiver.port}/events` } });
  });
  after(async () => {
    await s?.close();
    await receiver.stop();
  });

  test('after-send, after-group-change and after-recall, each once by id, signed, across a restart of the receiver', T, async () => {
    const alice = await online(s, 'tcp', 'alice-hook');
    try {
      const ab = directConversationId('alice-hook', 'bob-hook');
      for (let i = 0; i < 5; i++) await sendOk(alice, { toUser: 'bob-hook', text: `m${i}` });
      const made = await request(alice, { case: 'group', value: { op: { case: 'create', value: { name: 'hooks', memberIds: ['bob-hook'] } } } });
      assert.equal(made.body.case, 'groupResult');
      const first = await sendOk(alice, { toUser: 'bob-hook', text: 'to recall' });
      await request(alice, { case: 'recall', value: { conversationId: ab, seq: first.seq } });
      await until(() => receiver.distinct().size >= 8, 10_000, () => `8 events; got ${receiver.distinct().size}`);

      await receiver.stop();
      for (let i = 5; i < 10; i++) await sendOk(alice, { toUser: 'bob-hook', text: `m${i}` });
      await new Promise((r) => setTimeout(r, 1000));
      await receiver.start();
      await until(() => receiver.distinct().size >= 13, 20_000, () => `13 events after the restart; got ${receiver.distinct().size}`);

      const events = [...receiver.distinct().values()];
      assert.ok(receiver.received.every((r) => r.signed), 'every request has a valid signature');
      assert.deepEqual(events.filter((e) => e.type === 'after-send' && e.message.conversation_id === ab).map((e) => e.message.text),
        ['m0', 'm1', 'm2', 'm3', 'm4', 'to recall', 'm5', 'm6', 'm7', 'm8', 'm9']);
      assert.deepEqual(events.filter((e) => e.type === 'after-group-change').map((e) => e.message.event?.type), ['group_created']);
      const recall = events.filter((e) => e.type === 'after-recall');
      assert.equal(recall.length, 1);
      assert.equal(recall[0]!.message.event?.target_seq, Number(first.seq));
      // A repeat, if any, is the same event: the same id and body.
      for (const r of receiver.received) assert.equal(r.body, receiver.received.find((x) => x.id === r.id)!.body);
      assert.equal(new Set(receiver.received.map((r) => r.id)).size, 13);
    } finally {
      alice.close();
    }
  });
});

describe('spam rules', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(async () => {
    await s?.close();
  });

  test('the same text into 3 conversations: flagged, the messages recalled and the sender muted in the group, in the audit trail', T, async () => {
    await putRules(s, { spam: { same_text: { conversations: 3, window_ms: 60_000 }, actions: ['flag', 'recall', 'mute'] } });
    const [spammer, bob, owner] = [await online(s, 'tcp', 'spammer-1'), await online(s, 'tcp', 'bob-spam'), await online(s, 'tcp', 'owner-spam')];
    try {
      const made = await request(owner, { case: 'group', value: { op: { case: 'create', value: { name: 'market', memberIds: ['spammer-1', 'bob-spam'] } } } });
      const group = (made.body.value as { group: { conversationId: string } }).group.conversationId;
      const text = 'BUY CHEAP WATCHES NOW';
      await sendOk(spammer, { conversationId: group, text });
      await sendOk(spammer, { toUser: 'bob-spam', text });
      await sendOk(spammer, { toUser: 'carol-spam', text: 'buy cheap watches now' });
      await sendOk(spammer, { toUser: 'bob-spam', text: 'an honest question' });
      const entries = await waitAudit(s, 'spammer-1');
      assert.equal(entries[0]!.rule, 'spam_same_text');
      assert.equal(entries[0]!.action, 'flag,recall,mute');
      assert.equal(entries[0]!.detail.messages.length, 3);
      // Recalled: bob's history no longer holds the text, and he was pushed the recall events.
      const ab = directConversationId('spammer-1', 'bob-spam');
      await until(() => pushed(bob).filter((m) => m.event?.type === 'recalled').length >= 2, 5000, () => 'bob gets 2 recalls');
      const stored = (await history(bob, ab)).messages.filter((m) => !m.event);
      assert.deepEqual(stored.map((m) => [m.text, m.recalledBy !== undefined]), [['', true], ['an honest question', false]]);
      // Muted in the group by the service.
      await expectError(spammer, { case: 'send', value: { conversationId: group, clientMsgId: uniqueId(), text: 'more' } }, ErrorCode.MUTED);
    } finally {
      for (const c of [spammer, bob, owner]) c.close();
    }
  });

  test('a burst of new conversations ends in the tokens revoked: the connection kicked, the token refused', T, async () => {
    await putRules(s, { spam: { new_conversations: { count: 4, window_ms: 60_000 }, actions: ['revoke'] } });
    const token = await s.token('spammer-2');
    const spammer = await RawClient.connect(s.tcpUrl);
    await spammer.login(token);
    for (let i = 0; i < 4; i++) await sendOk(spammer, { toUser: `stranger-${i}`, text: `hello ${i}` });
    await waitAudit(s, 'spammer-2');
    await until(() => spammer.frames.some((f) => f.body.case === 'kick' || (f.body.case === 'error' && f.body.value.code === ErrorCode.TOKEN_REVOKED)) || spammer.closed,
      5000, () => 'the spammer is kicked');
    const again = await RawClient.connect(s.tcpUrl);
    try {
      await assert.rejects(again.login(token), new RegExp(`error\\(${ErrorCode.TOKEN_REVOKED}\\)|TOKEN_REVOKED`));
    } finally {
      again.close();
      spammer.close();
    }
  });

  test('links from a new account: flagged only', T, async () => {
    await putRules(s, { spam: { links_from_new_users: { account_age_ms: 3_600_000, count: 3, window_ms: 60_000 }, actions: ['flag'] } });
    const newcomer = await online(s, 'tcp', 'newcomer');
    try {
      for (let i = 0; i < 3; i++) await sendOk(newcomer, { toUser: 'bob-links', text: `visit https://deal${i}.test/x` });
      const entries = await waitAudit(s, 'newcomer');
      assert.equal(entries[0]!.rule, 'spam_links_new_user');
      assert.equal(entries[0]!.action, 'flag');
      // Flag only: the messages stay.
      assert.equal((await history(newcomer, directConversationId('newcomer', 'bob-links'))).messages.filter((m) => m.recalledBy === undefined).length, 3);
    } finally {
      newcomer.close();
    }
  });
});

async function waitAudit(s: TestServer, user: string): Promise<AuditEntry[]> {
  let entries: AuditEntry[] = [];
  const deadline = Date.now() + 5000;
  while (entries.length === 0) {
    if (Date.now() > deadline) assert.fail(`no audit entry for ${user} within 5 s`);
    await new Promise((r) => setTimeout(r, 50));
    entries = await audit(s, user);
  }
  return entries;
}
