// Business webhooks (src/risk/webhooks.ts) against real HTTP receivers on
// 127.0.0.1: signing and its check, before-send answers and failures under
// both policies, the after-* event of a committed message, and delivery from
// the committed stream of a real MemoryBus (order, signatures, a receiver
// that goes down and comes back, a refusal not retried).
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { MemoryBus } from '../../src/engines/bus-memory.js';
import { committed, type Committed } from '../../src/engines/bus.js';
import { messageToWire, type ChatMessage, type TimelineEventData } from '../../src/protocol/convert.js';
import {
  BEFORE_SEND_FAILED_REASON, MAX_ANSWER_BYTES, MAX_REASON_CHARS, WEBHOOK_GROUP, WebhookDeliveryError, WebhookService,
  afterEventOf, callBeforeSend, signBody, verifySignature,
  type AfterEvent, type AfterEventType, type BeforeSendConfig, type BeforeSendMessage, type WebhookTarget,
} from '../../src/risk/webhooks.js';

const SECRET = 'whsec-test-1';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function waitFor(condition: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** A request a receiver got. */
interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  at: number;
}

interface Reply {
  status: number;
  body?: string;
  delayMs?: number;
  headers?: Record<string, string>;
}

/** A webhook receiver on 127.0.0.1 answering with `respond`; it can be closed and listened again on the same port. */
class Receiver {
  readonly requests: Received[] = [];
  private server: http.Server | undefined;
  port = 0;

  constructor(public respond: (r: Received, index: number) => Reply = () => ({ status: 200 })) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  async listen(port = this.port): Promise<void> {
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const r: Received = { headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() };
        const index = this.requests.push(r) - 1;
        const reply = this.respond(r, index);
        const send = () => {
          if (res.destroyed) return;
          res.writeHead(reply.status, { 'content-type': 'application/json', ...reply.headers });
          res.end(reply.body ?? '');
        };
        if (reply.delayMs) setTimeout(send, reply.delayMs);
        else send();
      });
    });
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  /** The after-* events received, parsed, after checking each signature. */
  events(): AfterEvent[] {
    return this.requests.map((r) => {
      assert.ok(verifySignature(SECRET, headerPair(r), r.body), 'a valid signature');
      const event = JSON.parse(r.body) as AfterEvent;
      assert.equal(r.headers['x-longlink-event-id'], event.id);
      return event;
    });
  }
}

function headerPair(r: Received): { timestamp?: string; signature?: string } {
  return { timestamp: r.headers['x-longlink-timestamp'] as string | undefined, signature: r.headers['x-longlink-signature'] as string | undefined };
}

const receivers: Receiver[] = [];
async function receiver(respond?: Receiver['respond']): Promise<Receiver> {
  const r = new Receiver(respond);
  await r.listen();
  receivers.push(r);
  return r;
}
afterEach(async () => {
  await Promise.all(receivers.splice(0).map((r) => r.close()));
});

/** A port nothing listens on (listened, then closed). */
async function closedPort(): Promise<number> {
  const r = new Receiver();
  await r.listen();
  await r.close();
  return r.port;
}

function chat(conversationId: string, seq: number, extra: Partial<ChatMessage> = {}): ChatMessage {
  return {
    conversationId, seq, serverMsgId: `s-${conversationId}-${seq}`, fromUser: 'alice', fromDevice: 'phone',
    clientMsgId: `c-${seq}`, text: `hello #${seq}`, sentAtMs: 1_700_000_000_000 + seq, ...extra,
  };
}

function entry(m: ChatMessage, duplicate = false): Committed {
  return committed({ message: messageToWire(m), requestId: `r-${m.seq}`, originNode: 'logic-1', duplicate });
}

function eventEntry(conversationId: string, seq: number, event: TimelineEventData): Committed {
  return entry(chat(conversationId, seq, { text: '', event, fromUser: event.actor }));
}

describe('signing', () => {
  const body = '{"id":"x","type":"after-send"}';
  const now = 1_700_000_000;

  test('a signature verifies with the secret, within the tolerance', () => {
    const signature = signBody(SECRET, now, body);
    assert.match(signature, /^v1=[0-9a-f]{64}$/);
    assert.ok(verifySignature(SECRET, { timestamp: String(now), signature }, body, now));
    assert.ok(verifySignature(SECRET, { timestamp: String(now), signature }, body, now + 300));
    assert.equal(verifySignature(SECRET, { timestamp: String(now), signature }, body), false, 'by the real clock a 2023 timestamp is stale');
    const fresh = Math.floor(Date.now() / 1000);
    assert.ok(verifySignature(SECRET, { timestamp: String(fresh), signature: signBody(SECRET, fresh, body) }, body), 'the real clock');
  });

  test('another secret, a changed body or timestamp, a stale or future timestamp, a missing header fail', () => {
    const signature = signBody(SECRET, now, body);
    assert.equal(verifySignature('other', { timestamp: String(now), signature }, body, now), false);
    assert.equal(verifySignature(SECRET, { timestamp: String(now), signature }, body.replace('after-send', 'after-recall'), now), false);
    assert.equal(verifySignature(SECRET, { timestamp: String(now + 1), signature }, body, now), false);
    assert.equal(verifySignature(SECRET, { timestamp: String(now), signature }, body, now + 301), false, 'stale');
    assert.equal(verifySignature(SECRET, { timestamp: String(now), signature }, body, now - 301), false, 'from the future');
    assert.equal(verifySignature(SECRET, { timestamp: String(now), signature }, body, now + 60, 30), false, 'a tighter tolerance');
    assert.equal(verifySignature(SECRET, { signature }, body, now), false);
    assert.equal(verifySignature(SECRET, { timestamp: String(now) }, body, now), false);
    assert.equal(verifySignature(SECRET, { timestamp: `${now}.5`, signature }, body, now), false);
    assert.equal(verifySignature(SECRET, { timestamp: String(now), signature: signature.slice(3) }, body, now), false, 'no version');
    assert.equal(verifySignature(SECRET, { timestamp: String(now), signature: signature.slice(0, -2) }, body, now), false, 'short');
  });
});

describe('before-send', () => {
  const message: BeforeSendMessage = {
    conversation_id: 'g:team', from_user: 'alice', from_device: 'phone', client_msg_id: 'c-1', kind: 'group', text: 'hi there', sent_at_ms: 1_700_000_000_123,
  };
  const config = (url: string, onFailure: 'allow' | 'deny' = 'allow', timeoutMs = 2000): BeforeSendConfig => ({ url, timeoutMs, onFailure });
  const answer = (body: unknown): Reply => ({ status: 200, body: JSON.stringify(body) });

  test('allow: a signed JSON POST with the message', async () => {
    const r = await receiver(() => answer({ action: 'allow' }));
    const outcome = await callBeforeSend(config(r.url), SECRET, message);
    assert.deepEqual(outcome.answer, { action: 'allow' });
    assert.equal(outcome.failed, undefined);
    assert.ok(outcome.ms >= 0);
    assert.equal(r.requests.length, 1);
    const req = r.requests[0]!;
    assert.equal(req.headers['content-type'], 'application/json');
    assert.ok(verifySignature(SECRET, headerPair(req), req.body));
    const body = JSON.parse(req.body) as { id: string; type: string; created_at_ms: number; message: BeforeSendMessage };
    assert.equal(body.type, 'before-send');
    assert.match(body.id, /^[0-9a-f-]{36}$/);
    assert.equal(req.headers['x-longlink-event-id'], body.id);
    assert.ok(Math.abs(body.created_at_ms - Date.now()) < 10_000);
    assert.deepEqual(body.message, message);
  });

  test('deny carries its reason (cut to 200 chars); replace carries its text', async () => {
    let next: Reply = answer({ action: 'deny', reason: 'no links' });
    const r = await receiver(() => next);
    assert.deepEqual((await callBeforeSend(config(r.url), SECRET, message)).answer, { action: 'deny', reason: 'no links' });
    next = answer({ action: 'deny', reason: 'x'.repeat(1000) });
    const long = await callBeforeSend(config(r.url), SECRET, message);
    assert.deepEqual(long.answer, { action: 'deny', reason: 'x'.repeat(MAX_REASON_CHARS) });
    next = answer({ action: 'deny' });
    const bare = await callBeforeSend(config(r.url), SECRET, message);
    assert.equal(bare.answer.action, 'deny');
    assert.equal(bare.failed, undefined);
    next = answer({ action: 'replace', text: 'hi ***' });
    assert.deepEqual((await callBeforeSend(config(r.url), SECRET, message)).answer, { action: 'replace', text: 'hi ***' });
  });

  test('a slow endpoint times out: allow or deny per the policy, failed "timeout"', async () => {
    const r = await receiver(() => ({ status: 200, body: '{"action":"deny","reason":"late"}', delayMs: 2000 }));
    for (const onFailure of ['allow', 'deny'] as const) {
      const outcome = await callBeforeSend(config(r.url, onFailure, 150), SECRET, message);
      assert.equal(outcome.failed, 'timeout');
      assert.deepEqual(outcome.answer, onFailure === 'allow' ? { action: 'allow' } : { action: 'deny', reason: BEFORE_SEND_FAILED_REASON });
      assert.ok(outcome.ms >= 100 && outcome.ms < 1500, `timed out after ${outcome.ms} ms`);
    }
  });

  test('garbage, a 500, an unknown action, a bad replace, an oversized answer: the policy, with failed set', async () => {
    const cases: [string, Reply, 'status' | 'invalid'][] = [
      ['garbage', { status: 200, body: 'not json {' }, 'invalid'],
      ['not an object', { status: 200, body: '"allow"' }, 'invalid'],
      ['500', { status: 500, body: '{"action":"allow"}' }, 'status'],
      ['404', { status: 404 }, 'status'],
      ['a redirect', { status: 302, headers: { location: 'http://127.0.0.1:1/' } }, 'status'],
      ['unknown action', answer({ action: 'maybe' }), 'invalid'],
      ['replace without text', answer({ action: 'replace' }), 'invalid'],
      ['replace with empty text', answer({ action: 'replace', text: '' }), 'invalid'],
      ['replace with a number', answer({ action: 'replace', text: 42 }), 'invalid'],
      ['deny with a non-string reason', answer({ action: 'deny', reason: { why: 1 } }), 'invalid'],
      ['empty 204', { status: 204 }, 'invalid'],
      ['over 64 KiB', answer({ action: 'replace', text: 'y'.repeat(MAX_ANSWER_BYTES) }), 'invalid'],
    ];
    let reply: Reply = { status: 200 };
    const r = await receiver(() => reply);
    for (const [what, given, failed] of cases) {
      reply = given;
      for (const onFailure of ['allow', 'deny'] as const) {
        const outcome = await callBeforeSend(config(r.url, onFailure), SECRET, message);
        assert.equal(outcome.failed, failed, what);
        assert.deepEqual(outcome.answer, onFailure === 'allow' ? { action: 'allow' } : { action: 'deny', reason: BEFORE_SEND_FAILED_REASON }, what);
      }
    }
  });

  test('a closed port or a non-http URL is a network failure', async () => {
    const port = await closedPort();
    for (const url of [`http://127.0.0.1:${port}/hook`, 'data:application/json,{"action":"allow"}', 'not a url']) {
      const outcome = await callBeforeSend(config(url, 'deny'), SECRET, message);
      assert.equal(outcome.failed, 'network', url);
      assert.deepEqual(outcome.answer, { action: 'deny', reason: BEFORE_SEND_FAILED_REASON });
    }
  });
});

describe('afterEventOf', () => {
  test('a plain message is after-send, with its fields and a stable id', () => {
    const m = chat('u:alice:bob', 7);
    const event = afterEventOf(entry(m))!;
    assert.deepEqual(event, {
      id: 'u:alice:bob:7', type: 'after-send', created_at_ms: m.sentAtMs,
      message: {
        conversation_id: 'u:alice:bob', seq: 7, server_msg_id: 's-u:alice:bob-7', from_user: 'alice', from_device: 'phone',
        client_msg_id: 'c-7', text: 'hello #7', sent_at_ms: m.sentAtMs,
      },
    });
    // committed again (a redelivered send found it stored): the same event, byte for byte
    assert.equal(JSON.stringify(afterEventOf(entry(m, true))), JSON.stringify(event));
  });

  test('a timeline event is after-group-change; a recall is after-recall', () => {
    const added = afterEventOf(eventEntry('g:team', 3, { type: 'members_added', actor: 'alice', userIds: ['bob', 'carol'] }))!;
    assert.equal(added.type, 'after-group-change');
    assert.equal(added.id, 'g:team:3');
    assert.equal(added.message.text, '');
    assert.deepEqual(added.message.event, { type: 'members_added', actor: 'alice', user_ids: ['bob', 'carol'] });

    const created = afterEventOf(eventEntry('g:team', 1, { type: 'group_created', actor: 'alice', userIds: ['alice'], name: 'Team' }))!;
    assert.equal(created.type, 'after-group-change');
    assert.deepEqual(created.message.event, { type: 'group_created', actor: 'alice', user_ids: ['alice'], name: 'Team' });

    const role = afterEventOf(eventEntry('g:team', 4, { type: 'role_changed', actor: 'alice', userIds: ['bob'], role: 'admin' }))!;
    assert.equal(role.type, 'after-group-change');
    assert.equal(role.message.event?.role, 'admin');

    const recall = afterEventOf(eventEntry('g:team', 9, { type: 'recalled', actor: 'bob', targetSeq: 5 }))!;
    assert.equal(recall.type, 'after-recall');
    assert.deepEqual(recall.message.event, { type: 'recalled', actor: 'bob', user_ids: [], target_seq: 5 });
    assert.equal(recall.created_at_ms, recall.message.sent_at_ms);
  });

  test('an edit is after-edit with the new text and content; a delete after-delete; a delete for oneself is not sent; content travels', () => {
    const edit = afterEventOf(eventEntry('u:alice:bob', 4, {
      type: 'edited', actor: 'alice', targetSeq: 2, text: 'fixed', content: { type: 'app.card', payload: new Uint8Array([1, 2]), mentions: ['bob'] },
    }))!;
    assert.equal(edit.type, 'after-edit');
    assert.deepEqual(edit.message.event, {
      type: 'edited', actor: 'alice', user_ids: [], target_seq: 2, text: 'fixed', content: { type: 'app.card', payload: 'AQI=', mentions: ['bob'] },
    });
    const del = afterEventOf(eventEntry('g:team', 6, { type: 'deleted', actor: 'alice', targetSeq: 5 }))!;
    assert.equal(del.type, 'after-delete');
    assert.equal(afterEventOf(eventEntry('u:bob:bob', 1, { type: 'hidden', actor: 'bob', targetSeq: 2, targetConversationId: 'u:alice:bob' })), undefined);
    const custom = afterEventOf(entry({ ...chat('u:alice:bob', 8), content: { type: 'app.order', payload: new Uint8Array([123, 125]), replyToSeq: 7 } }))!;
    assert.deepEqual(custom.message.content, { type: 'app.order', payload: 'e30=', reply_to_seq: 7 });
  });

  test('an entry without a message has no event', () => {
    assert.equal(afterEventOf(committed({ requestId: 'r' })), undefined);
  });
});

describe('WebhookService', () => {
  const ALL: readonly AfterEventType[] = ['after-send', 'after-group-change', 'after-recall', 'after-edit', 'after-delete'];
  const fast = { firstBackoffMs: 20, maxBackoffMs: 100, timeoutMs: 2000 };
  const target = (r: Receiver, events: readonly AfterEventType[] = ALL): (() => WebhookTarget) => () => ({ url: r.url, events });
  const secret = async () => SECRET;

  /** The published entries of two conversations, interleaved. */
  const published = (n: number, from = 1) => Array.from({ length: n }, (_, i) => entry(chat(i % 2 === 0 ? 'u:alice:bob' : 'g:team', Math.floor(i / 2) + from)));
  const idOf = (c: Committed) => afterEventOf(c)!.id;

  function assertInOrder(events: readonly AfterEvent[]): void {
    for (const conversation of new Set(events.map((e) => e.message.conversation_id))) {
      const seqs = events.filter((e) => e.message.conversation_id === conversation).map((e) => e.message.seq);
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), `${conversation} in seq order`);
    }
  }

  test('over a MemoryBus: 20 messages arrive each once, in order, signed; counted with the acks', async () => {
    const r = await receiver();
    const bus = new MemoryBus({ maxBatch: 4 });
    const delivered: number[] = [];
    const service = new WebhookService({ target: target(r), secret, ...fast }, { bus }, { onDelivered: (_type, ms) => delivered.push(ms) });
    service.start();
    try {
      const list = published(20);
      for (let i = 0; i < list.length; i += 5) await bus.publishCommitted(list.slice(i, i + 5));
      await waitFor(() => r.requests.length >= 20, '20 requests');
      await sleep(200); // a repeat would show up here
      const events = r.events();
      assert.deepEqual(events.map((e) => e.id).sort(), list.map(idOf).sort(), 'each once');
      assertInOrder(events);
      assert.ok(events.every((e) => e.type === 'after-send'));
      assert.equal(delivered.length, 20);
      assert.equal((await bus.committedCounters(WEBHOOK_GROUP)).get('delivered'), 20);
    } finally {
      await service.stop();
      await bus.close();
    }
  });

  test('the receiver down, then back on the same port: every event arrives, repeats only with the same id and body', async () => {
    const r = await receiver();
    const port = r.port;
    await r.close();
    const bus = new MemoryBus({ maxBatch: 3 });
    const failures: string[] = [];
    const service = new WebhookService(
      { target: () => ({ url: `http://127.0.0.1:${port}/hook`, events: ALL }), secret, attempts: 4, firstBackoffMs: 100, maxBackoffMs: 400, timeoutMs: 1000 },
      { bus },
      { onFailed: (_type, reason) => failures.push(reason) },
    );
    service.start();
    try {
      const list = published(30);
      const restart = (async () => {
        await sleep(1000);
        await r.listen(port);
      })();
      for (let i = 0; i < 20; i += 2) {
        await bus.publishCommitted(list.slice(i, i + 2));
        await sleep(100);
      }
      await restart;
      await bus.publishCommitted(list.slice(20));
      const want = list.map(idOf).sort();
      await waitFor(() => new Set(r.requests.map((q) => q.headers['x-longlink-event-id'])).size >= want.length, 'every event', 20_000);
      await sleep(300);
      const events = r.events();
      assert.deepEqual([...new Set(events.map((e) => e.id))].sort(), want, 'exactly the published set');
      const bodies = new Map<string, string>();
      for (const q of r.requests) {
        const id = String(q.headers['x-longlink-event-id']);
        if (bodies.has(id)) assert.equal(q.body, bodies.get(id), `a repeat of ${id} is byte-identical`);
        else bodies.set(id, q.body);
      }
      const firsts = events.filter((e, i) => events.findIndex((x) => x.id === e.id) === i);
      assertInOrder(firsts);
      assert.equal(bus.counters.committedSkipped, 0, 'the bus gave up on nothing');
      assert.equal((await bus.committedCounters(WEBHOOK_GROUP)).get('delivered'), 30, 'counted once each, with the acks');
      assert.ok(failures.length > 0 && failures.every((f) => f === 'network'), 'the outage was reported');
    } finally {
      await service.stop();
      await bus.close();
    }
  });

  test('a 400 is not retried: reported, dropped, counted as refused', async () => {
    const r = await receiver(() => ({ status: 400, body: '{"error":"no"}' }));
    const bus = new MemoryBus();
    const failed: [AfterEventType, string][] = [];
    const service = new WebhookService({ target: target(r), secret, ...fast }, { bus }, { onFailed: (type, reason) => failed.push([type, reason]) });
    service.start();
    try {
      await bus.publishCommitted(published(3));
      await waitFor(() => r.requests.length >= 3, '3 requests');
      await sleep(400);
      assert.equal(r.requests.length, 3, 'each tried once');
      assert.deepEqual(failed, [1, 2, 3].map(() => ['after-send', 'refused']));
      const counters = await bus.committedCounters(WEBHOOK_GROUP);
      assert.equal(counters.get('refused'), 3);
      assert.equal(counters.get('delivered') ?? 0, 0);
    } finally {
      await service.stop();
      await bus.close();
    }
  });

  test('503 and 429 are retried with the same body; a receiver that keeps failing makes deliver throw', async () => {
    const r = await receiver((_q, i) => ({ status: i === 0 ? 503 : i === 1 ? 429 : 200 }));
    const bus = new MemoryBus();
    const service = new WebhookService({ target: target(r), secret, attempts: 3, ...fast }, { bus });
    const batch = published(1);
    assert.deepEqual(await service.deliver(batch), { counters: { delivered: 1, refused: 0 } });
    assert.equal(r.requests.length, 3);
    assert.equal(new Set(r.requests.map((q) => q.body)).size, 1, 'the same body each try');

    r.respond = () => ({ status: 500 });
    const failed: string[] = [];
    const failing = new WebhookService({ target: target(r), secret, attempts: 2, ...fast }, { bus }, { onFailed: (_t, reason) => failed.push(reason) });
    await assert.rejects(failing.deliver(batch), WebhookDeliveryError);
    assert.equal(r.requests.length, 5, 'two more tries');
    assert.deepEqual(failed, ['status']);
    await bus.close();
  });

  test('retries follow the target: a URL fixed meanwhile gets the event; a webhook removed meanwhile ends them', async () => {
    const good = await receiver();
    const bus = new MemoryBus();
    let current: WebhookTarget | undefined = { url: `http://127.0.0.1:${await closedPort()}/typo`, events: ALL };
    const service = new WebhookService({ target: () => current, secret, attempts: Number.POSITIVE_INFINITY, ...fast }, { bus });
    const first = published(1);
    const fixing = service.deliver(first);
    await sleep(150);
    current = { url: good.url, events: ALL };
    assert.deepEqual(await fixing, { counters: { delivered: 1, refused: 0 } });
    assert.deepEqual(good.events().map((e) => e.id), first.map(idOf), 'the event, at the fixed URL');

    current = { url: `http://127.0.0.1:${await closedPort()}/typo`, events: ALL };
    const removing = service.deliver(published(1, 2));
    await sleep(150);
    current = undefined;
    assert.deepEqual(await removing, { counters: { delivered: 0, refused: 0, unconfigured: 1 } }, 'acked, not sent');
    await good.close();
    await bus.close();
  });

  test('a batch that failed part-way is sent again whole: the delivered events again, with the same id and body', async () => {
    let down = true;
    const r = await receiver((q) => ({ status: down && q.headers['x-longlink-event-id'] === 'g:team:1' ? 503 : 200 }));
    const bus = new MemoryBus();
    const service = new WebhookService({ target: target(r), secret, attempts: 2, ...fast }, { bus });
    const batch = published(2); // u:alice:bob:1, then g:team:1
    await assert.rejects(service.deliver(batch), WebhookDeliveryError);
    down = false;
    assert.deepEqual(await service.deliver(batch), { counters: { delivered: 2, refused: 0 } });
    const ids = r.events().map((e) => e.id);
    assert.deepEqual(ids, ['u:alice:bob:1', 'g:team:1', 'g:team:1', 'u:alice:bob:1', 'g:team:1']);
    assert.equal(r.requests[0]!.body, r.requests[3]!.body, 'byte-identical');
    await bus.close();
  });

  test('stop cuts a delivery short: it throws (nothing acked), stop resolves at once, no failure reported', async () => {
    const r = await receiver(() => ({ status: 503 }));
    const bus = new MemoryBus();
    const failed: string[] = [];
    const service = new WebhookService(
      { target: target(r), secret, attempts: 6, firstBackoffMs: 5000, maxBackoffMs: 5000 }, { bus }, { onFailed: (_t, reason) => failed.push(reason) },
    );
    const delivery = service.deliver(published(3));
    await waitFor(() => r.requests.length >= 1, 'the first try');
    const started = Date.now();
    await service.stop();
    assert.ok(Date.now() - started < 1000, 'stop did not wait out the backoff');
    await assert.rejects(delivery, WebhookDeliveryError);
    assert.equal(r.requests.length, 1);
    assert.deepEqual(failed, []);
    await bus.close();
  });

  test('only subscribed events are sent; with no target the batch is acked unsent', async () => {
    const r = await receiver();
    const bus = new MemoryBus();
    const batch = [
      entry(chat('g:team', 1)),
      eventEntry('g:team', 2, { type: 'members_added', actor: 'alice', userIds: ['bob'] }),
      eventEntry('g:team', 3, { type: 'recalled', actor: 'alice', targetSeq: 1 }),
    ];
    const recalls = new WebhookService({ target: target(r, ['after-recall']), secret, ...fast }, { bus });
    assert.deepEqual(await recalls.deliver(batch), { counters: { delivered: 1, refused: 0 } });
    assert.deepEqual(r.events().map((e) => [e.id, e.type]), [['g:team:3', 'after-recall']]);

    const none = new WebhookService({ target: () => undefined, secret: () => Promise.reject(new Error('not read')) }, { bus });
    assert.deepEqual(await none.deliver(batch), { counters: { unconfigured: 3 } });
    assert.equal(r.requests.length, 1);
    await bus.close();
  });
});
