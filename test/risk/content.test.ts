// Content rules and the before-send webhook on an embedded server, over real
// sockets: what a sender is told, what recipients get pushed, what history
// holds; and the rules API (admin key, bad documents refused, the previous
// rules kept).
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { api, putRules } from './support.js';
import { ErrorCode, directConversationId } from '../../src/protocol/index.js';
import { expectError, history, online, pushed, request, sendOk, sleep, uniqueId, until, TRANSPORTS } from '../logic/support.js';
import { verifySignature } from '../../src/risk/webhooks.js';
import type { RawClient } from '../helpers/raw.js';
import { createClient } from '../../src/client/index.js';

const T = { timeout: 60_000 };


const RULES = {
  block_words: ['forbidden', '禁止'],
  mask_words: ['darn'],
  regex_rules: [{ id: 'card_number', pattern: '\\b\\d{4}[- ]\\d{4}[- ]\\d{4}[- ]\\d{4}\\b', action: 'block' }],
  links: { mode: 'allowlist', allow_domains: ['example.com'] },
};

async function createGroup(c: RawClient, members: string[]): Promise<string> {
  const reply = await request(c, { case: 'group', value: { op: { case: 'create', value: { name: 'g', memberIds: members } } } });
  assert.equal(reply.body.case, 'groupResult');
  return (reply.body.value as { group?: { conversationId: string } }).group!.conversationId;
}

const texts = (c: RawClient, conversationId: string) => pushed(c).filter((m) => m.conversationId === conversationId && !m.event).map((m) => m.text);

describe('content rules', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
    await putRules(s, RULES);
  });
  after(async () => {
    await s?.close();
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: a blocked word in a 1:1 or group send is refused CONTENT_BLOCKED naming the rule, never stored or pushed`, T, async () => {
      const [alice, bob] = [await online(s, transport, `alice-${transport}`), await online(s, transport, `bob-${transport}`)];
      try {
        const ab = directConversationId(`alice-${transport}`, `bob-${transport}`);
        const group = await createGroup(alice, [`bob-${transport}`]);
        for (const to of [{ toUser: `bob-${transport}` }, { conversationId: group }]) {
          await sendOk(alice, { ...to, text: 'before' });
          const refused = await expectError(alice, { case: 'send', value: { ...to, clientMsgId: uniqueId(), text: 'this is ForBidden stuff' } }, ErrorCode.CONTENT_BLOCKED);
          assert.match(refused.message, /block_words/);
          assert.doesNotMatch(refused.message, /forbidden/i, 'the word list is not echoed');
          await sendOk(alice, { ...to, text: 'after' });
        }
        await until(() => texts(bob, ab).includes('after') && texts(bob, group).includes('after'), 5000, () => 'bob gets "after" in both');
        assert.deepEqual(texts(bob, ab), ['before', 'after']);
        assert.deepEqual(texts(bob, group), ['before', 'after']);
        for (const conversation of [ab, group]) {
          const stored = (await history(bob, conversation)).messages;
          assert.ok(!stored.some((m) => /forbidden/i.test(m.text)), 'history does not hold it');
          const seqs = stored.map((m) => m.seq);
          assert.deepEqual(seqs, seqs.map((_, i) => seqs[0]! + i), 'the refused send took no seq');
        }
      } finally {
        alice.close();
        bob.close();
      }
    });
  }

  test('HTTP push: a blocked word is refused 422 CONTENT_BLOCKED, to one user, a list or a group, and nothing is stored', T, async () => {
    const bob = await online(s, 'tcp', 'bob-http');
    try {
      for (const target of [{ to: 'bob-http' }, { to_users: ['bob-http', 'carol-http'] }]) {
        const r = await api(s, 'POST', '/api/v1/messages', { ...target, text: 'a FORBIDDEN notice' });
        assert.equal(r.status, 422, JSON.stringify(r.body));
        assert.equal((r.body.error as { code: string }).code, 'CONTENT_BLOCKED');
      }
      const ok = await api(s, 'POST', '/api/v1/messages', { to: 'bob-http', text: 'a clean notice' });
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
      await until(() => pushed(bob).some((m) => m.text === 'a clean notice'), 5000, () => 'bob gets the clean notice');
      assert.ok(!pushed(bob).some((m) => /forbidden/i.test(m.text)));
      assert.equal(ok.body.seq, 1, 'the refused pushes took no seq');
    } finally {
      bob.close();
    }
  });

  test('look-alikes are caught: full width, digits for letters, Cyrillic letters, zero-width characters, accents; CJK inside a sentence', T, async () => {
    const alice = await online(s, 'tcp', 'alice-look');
    try {
      for (const text of ['ｆｏｒｂｉｄｄｅｎ', 'f0rb1dd3n', 'fоrbіdden' /* Cyrillic о and і */, 'for\u200bbidden', 'fórbíddèn', 'forbi🏻dden', 'forbidden🏻', '这是禁止的内容']) {
        await expectError(alice, { case: 'send', value: { toUser: 'bob-look', clientMsgId: uniqueId(), text } }, ErrorCode.CONTENT_BLOCKED);
      }
      await sendOk(alice, { toUser: 'bob-look', text: 'for bidding is fine' });
    } finally {
      alice.close();
    }
  });

  test('a masked word is stored and pushed masked, the rest of the text as written', T, async () => {
    const [alice, bob] = [await online(s, 'ws', 'alice-mask'), await online(s, 'tcp', 'bob-mask')];
    try {
      const ab = directConversationId('alice-mask', 'bob-mask');
      const ack = await sendOk(alice, { toUser: 'bob-mask', text: 'well DARN it, ｄａｒｎ' });
      assert.equal(ack.text, 'well **** it, ****', 'the sender is told the text as stored');
      assert.equal((await sendOk(alice, { toUser: 'bob-mask', text: 'clean' })).text, '', 'empty when stored as sent');
      await until(() => texts(bob, ab).length === 2, 5000, () => 'bob gets both');
      assert.deepEqual(texts(bob, ab), ['well **** it, ****', 'clean']);
      assert.deepEqual((await history(alice, ab)).messages.map((m) => m.text), ['well **** it, ****', 'clean']);
      // The SDK keeps the stored text as the result of its send.
      const sdk = createClient({ url: s.tcpUrl, token: await s.token('alice-mask', 'sdk') });
      try {
        await sdk.connect();
        assert.equal((await sdk.send({ to: 'bob-mask', text: 'darn again' })).text, '**** again');
      } finally {
        await sdk.close();
      }
    } finally {
      alice.close();
      bob.close();
    }
  });

  test('regex rules and the link allow-list', T, async () => {
    const alice = await online(s, 'tcp', 'alice-re');
    try {
      const card = await expectError(alice, { case: 'send', value: { toUser: 'bob-re', clientMsgId: uniqueId(), text: 'card 4111 1111 1111 1111 ok?' } }, ErrorCode.CONTENT_BLOCKED);
      assert.match(card.message, /card_number/);
      const link = await expectError(alice, { case: 'send', value: { toUser: 'bob-re', clientMsgId: uniqueId(), text: 'see https://evil.test/x' } }, ErrorCode.CONTENT_BLOCKED);
      assert.match(link.message, /links/);
      await sendOk(alice, { toUser: 'bob-re', text: 'see https://docs.example.com/a and www.example.com' });
    } finally {
      alice.close();
    }
  });

  test('the rules API: admin key required; a bad document refused with what is wrong, the rules in force kept', T, async () => {
    assert.equal((await api(s, 'GET', '/api/v1/risk/rules', undefined, 'wrong-key')).status, 401);
    assert.equal((await api(s, 'PUT', '/api/v1/risk/rules', RULES, 'wrong-key')).status, 401);
    const before = await api(s, 'GET', '/api/v1/risk/rules');
    assert.equal(before.status, 200);
    const bad: [unknown, RegExp][] = [
      [{ regex_rules: [{ id: 'x', pattern: '(unclosed', action: 'block' }] }, /regex_rules\[0\]\.pattern/],
      [{ block_words: [] }, /block_words/],
      [{ block_words: ['ok'], colour: 'red' }, /colour/],
      [{ before_send_webhook: { url: 'ftp://x' } }, /before_send_webhook\.url/],
      ['not an object', /object/],
    ];
    for (const [doc, why] of bad) {
      const r = await api(s, 'PUT', '/api/v1/risk/rules', doc);
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.match((r.body.error as { message: string }).message, why);
    }
    const kept = await api(s, 'GET', '/api/v1/risk/rules');
    assert.deepEqual(kept.body, before.body, 'the rules in force are the same');
    const alice = await online(s, 'tcp', 'alice-api');
    try {
      await expectError(alice, { case: 'send', value: { toUser: 'bob-api', clientMsgId: uniqueId(), text: 'forbidden' } }, ErrorCode.CONTENT_BLOCKED);
    } finally {
      alice.close();
    }
    const metrics = await (await fetch(`${s.httpUrl}/metrics`)).text();
    assert.match(metrics, /longlink_risk_blocked_total\{rule="block_words"\} [1-9]/);
    assert.match(metrics, /longlink_risk_masked_total\{rule="mask_words"\} [1-9]/);
  });
});

describe('a regex rule that a crafted text could stall', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(async () => {
    await s?.close();
  });

  test('the crafted text is refused by that rule within its budget; the others keep chatting', T, async () => {
    await putRules(s, { regex_rules: [{ id: 'slowpoke', pattern: 'a*a*a*a*b', flags: 'i', action: 'block' }] });
    const [mallory, alice, bob] = [await online(s, 'tcp', 'mallory'), await online(s, 'tcp', 'alice-calm'), await online(s, 'ws', 'bob-calm')];
    try {
      const crafted = Array.from({ length: 5 }, () => request(mallory, {
        case: 'send', value: { toUser: 'bob-calm', clientMsgId: uniqueId(), text: 'a'.repeat(12_000) },
      }, 30_000));
      const calm = await sendOk(alice, { toUser: 'bob-calm', text: 'still here' }, 30_000);
      for (const reply of await Promise.all(crafted)) {
        assert.equal(reply.body.case, 'error');
        assert.match((reply.body.value as { message: string }).message, /slowpoke/);
      }
      const ab = directConversationId('alice-calm', 'bob-calm');
      await until(() => texts(bob, ab).includes('still here'), 10_000, () => 'bob gets it');
      assert.equal(calm.seq, 1n);
      assert.ok(!pushed(bob).some((m) => m.fromUser === 'mallory'), 'nothing of mallory\'s stored or pushed');
    } finally {
      for (const c of [mallory, alice, bob]) c.close();
    }
  });
});

/** A business's before-send endpoint: denies "deny-me", replaces "replace-me", stalls on "slow", answers garbage to "garbage". */
class BeforeSendEndpoint {
  readonly bodies: { headers: Record<string, string | undefined>; body: string }[] = [];
  inFlight = 0;
  maxInFlight = 0;
  private server!: Server;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
      res.on('close', () => this.inFlight--);
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        this.bodies.push({ headers: { timestamp: req.headers['x-longlink-timestamp'] as string, signature: req.headers['x-longlink-signature'] as string }, body });
        const text = (JSON.parse(body) as { message: { text: string } }).message.text;
        const answer = (json: unknown) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(json));
        if (text.includes('deny-me')) answer({ action: 'deny', reason: 'no deny-me here' });
        else if (text.includes('replace-me')) answer({ action: 'replace', text: text.replace('replace-me', 'replaced') });
        else if (text.includes('launder')) answer({ action: 'replace', text: 'now forbidden' });
        else if (text.includes('slow')) setTimeout(() => answer({ action: 'allow' }), 1500);
        else if (text.includes('hold')) setTimeout(() => answer({ action: 'allow' }), 50);
        else if (text.includes('garbage')) res.writeHead(200).end('<html>not json');
        else answer({ action: 'allow' });
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

describe('before-send webhook', () => {
  let s: TestServer;
  const endpoint = new BeforeSendEndpoint();
  before(async () => {
    s = await startTestServer();
    await endpoint.start();
  });
  after(async () => {
    await s?.close();
    await endpoint.stop();
  });

  test('denies, replaces (the replacement checked by the rules too), and is signed with the cluster\'s webhook secret', T, async () => {
    await putRules(s, { block_words: ['forbidden'], before_send_webhook: { url: endpoint.url, timeout_ms: 500, on_failure: 'allow' } });
    const [alice, bob] = [await online(s, 'tcp', 'alice-wh'), await online(s, 'tcp', 'bob-wh')];
    try {
      const ab = directConversationId('alice-wh', 'bob-wh');
      const denied = await expectError(alice, { case: 'send', value: { toUser: 'bob-wh', clientMsgId: uniqueId(), text: 'please deny-me' } }, ErrorCode.CONTENT_BLOCKED);
      assert.match(denied.message, /before_send_webhook.*no deny-me here/);
      await sendOk(alice, { toUser: 'bob-wh', text: 'please replace-me now' });
      await expectError(alice, { case: 'send', value: { toUser: 'bob-wh', clientMsgId: uniqueId(), text: 'launder this' } }, ErrorCode.CONTENT_BLOCKED);
      await sendOk(alice, { toUser: 'bob-wh', text: 'plain' });
      await until(() => texts(bob, ab).length === 2, 5000, () => 'bob gets 2');
      assert.deepEqual(texts(bob, ab), ['please replaced now', 'plain']);
      const secret = (await api(s, 'GET', '/api/v1/risk/webhook-secret')).body.secret as string;
      assert.ok(secret.length >= 32);
      assert.ok(endpoint.bodies.length >= 4);
      for (const b of endpoint.bodies) assert.ok(verifySignature(secret, b.headers, b.body), 'each call is signed');
      assert.ok(!verifySignature('another-secret', endpoint.bodies[0]!.headers, endpoint.bodies[0]!.body));
    } finally {
      alice.close();
      bob.close();
    }
  });

  test('a flood of sends does not open a connection per send to the business: at most 64 calls in flight, every send stored', T, async () => {
    await putRules(s, { before_send_webhook: { url: endpoint.url, timeout_ms: 5000, on_failure: 'deny' } });
    const senders = await Promise.all(Array.from({ length: 4 }, (_, i) => online(s, 'tcp', `flood-${i}`)));
    try {
      endpoint.maxInFlight = 0;
      const acks = await Promise.all(senders.flatMap((c, i) => Array.from({ length: 75 }, (_, k) => request(c, {
        case: 'send', value: { toUser: `sink-${i}`, clientMsgId: uniqueId(), text: `hold ${k}` },
      }, 30_000))));
      assert.ok(acks.every((f) => f.body.case === 'sendAck'), 'all 300 stored');
      assert.ok(endpoint.maxInFlight > 1, `calls ran concurrently (${endpoint.maxInFlight})`);
      assert.ok(endpoint.maxInFlight <= 64, `at most 64 at once (${endpoint.maxInFlight})`);
    } finally {
      for (const c of senders) c.close();
    }
  });

  test('a resend of a message stored before the rules changed is answered as the duplicate it is, not refused', T, async () => {
    const alice = await online(s, 'tcp', 'alice-resend');
    try {
      await putRules(s, {});
      const clientMsgId = uniqueId();
      const first = await sendOk(alice, { toUser: 'bob-resend', clientMsgId, text: 'newly banned words' });
      await putRules(s, { block_words: ['newly banned'] });
      const again = await sendOk(alice, { toUser: 'bob-resend', clientMsgId, text: 'newly banned words' });
      assert.equal(again.seq, first.seq);
      assert.equal(again.duplicate, true);
      await expectError(alice, { case: 'send', value: { toUser: 'bob-resend', clientMsgId: uniqueId(), text: 'newly banned words' } }, ErrorCode.CONTENT_BLOCKED);
    } finally {
      alice.close();
    }
  });

  test('a timeout or a garbage answer goes by on_failure: allow stores it, deny refuses it', T, async () => {
    const alice = await online(s, 'tcp', 'alice-fail');
    try {
      await putRules(s, { before_send_webhook: { url: endpoint.url, timeout_ms: 200, on_failure: 'allow' } });
      await sendOk(alice, { toUser: 'bob-fail', text: 'slow one' });
      await sendOk(alice, { toUser: 'bob-fail', text: 'garbage one' });
      await putRules(s, { before_send_webhook: { url: endpoint.url, timeout_ms: 200, on_failure: 'deny' } });
      for (const text of ['slow two', 'garbage two']) {
        const e = await expectError(alice, { case: 'send', value: { toUser: 'bob-fail', clientMsgId: uniqueId(), text } }, ErrorCode.CONTENT_BLOCKED);
        assert.match(e.message, /before_send_webhook/);
      }
      await sendOk(alice, { toUser: 'bob-fail', text: 'fine' });
      // An endpoint that is not there at all: the same policy.
      await putRules(s, { before_send_webhook: { url: 'http://127.0.0.1:9/none', timeout_ms: 200, on_failure: 'deny' } });
      await expectError(alice, { case: 'send', value: { toUser: 'bob-fail', clientMsgId: uniqueId(), text: 'nobody home' } }, ErrorCode.CONTENT_BLOCKED);
      const stored = (await history(alice, directConversationId('alice-fail', 'bob-fail'))).messages.map((m) => m.text);
      assert.deepEqual(stored, ['slow one', 'garbage one', 'fine']);
      await sleep(0);
      const metrics = await (await fetch(`${s.httpUrl}/metrics`)).text();
      assert.match(metrics, /longlink_webhook_failures_total\{hook="before-send",reason="timeout"\} [1-9]/);
    } finally {
      alice.close();
    }
  });
});
