// Risk control on the split layout (auth, 2 message processes, group,
// storage, risk; 2 gateways; real Redis and PostgreSQL): rules put through
// one node's API are in force on both message processes within a second;
// with the risk process down chat goes on, and when it is back it catches up:
// the spam rule trips on what was sent meanwhile, and the after-send webhooks
// of those messages arrive.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SPLIT } from '../../src/dev/cluster.js';
import { ErrorCode, LonglinkError, directConversationId } from '../../src/protocol/index.js';
import { verifySignature } from '../../src/risk/webhooks.js';
import { connectClient, sleep, startTestCluster, until, within, type TestClient, type TestCluster } from './helpers.js';

const T = { timeout: 120_000 };

let cluster: TestCluster;

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${cluster.apiUrl()}${path}`, {
    method, headers: { authorization: `Bearer ${cluster.adminKey}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function putRules(rules: unknown): Promise<void> {
  const r = await api('PUT', '/api/v1/risk/rules', rules);
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

async function metric(url: string, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

async function online(user: string, gateway: string): Promise<TestClient> {
  const c = await connectClient(cluster, user, { gateway });
  await within(c.client.sync(), 30_000, () => `${user}'s sync\n${cluster.logs()}`);
  return c;
}

/** Resolves with the error code a send was refused with, or 0 when it was acked. */
async function refusal(c: TestClient, to: string, text: string): Promise<number> {
  try {
    await within(c.client.send({ to, text }), 30_000, () => `the send to ${to}`);
    return 0;
  } catch (err) {
    if (err instanceof LonglinkError) return err.code;
    throw err;
  }
}

before(async () => {
  cluster = await startTestCluster({ routing: 'targeted', logic: 0, services: { ...SPLIT, message: 2 }, shards: 8 });
});

after(async () => {
  await cluster?.stop();
});

describe('risk control on the split layout', () => {
  test('rules put through the API are in force on both message processes within a second', T, async () => {
    const alice = await online('alice-rules', 'gw-1');
    try {
      // 16 conversations: their shards spread over both message processes.
      const peers = Array.from({ length: 16 }, (_, i) => `peer-rules-${i}`);
      for (const p of peers) assert.equal(await refusal(alice, p, 'contraband talk'), 0, 'no rule yet');
      await putRules({ block_words: ['contraband'] });
      await sleep(1000);
      for (const p of peers) assert.equal(await refusal(alice, p, 'more contraband'), ErrorCode.CONTENT_BLOCKED, `to ${p}, a second after the put`);
      for (const node of ['message-1', 'message-2']) {
        const blocked = await metric(cluster.node(node).httpUrl, 'longlink_risk_blocked_total', 'rule="block_words"');
        assert.ok(blocked > 0, `${node} blocked some (${blocked})`);
      }
      await putRules({});
      await sleep(1000);
      assert.equal(await refusal(alice, peers[0]!, 'contraband again'), 0, 'the rules taken away are gone too');
    } finally {
      await alice.close();
    }
  });

  test('the risk process down: chat goes on; back, it catches up (the spam rule trips, the after-send webhooks arrive)', T, async () => {
    const received = new Map<string, boolean>();
    let secret = '';
    const receiver: Server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        const signed = verifySignature(secret, { timestamp: req.headers['x-longlink-timestamp'] as string, signature: req.headers['x-longlink-signature'] as string }, body);
        received.set(req.headers['x-longlink-event-id'] as string, signed);
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    secret = (await api('GET', '/api/v1/risk/webhook-secret')).body.secret as string;
    const spammer = await online('spammer-c', 'gw-1');
    const bob = await online('bob-c', 'gw-2');
    let restarted = false;
    try {
      await putRules({
        webhooks: { url: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/e`, events: ['after-send'] },
        spam: { same_text: { conversations: 3, window_ms: 120_000 }, actions: ['flag', 'recall'] },
      });
      await sleep(1000);
      await cluster.kill('risk-1', 'SIGKILL');
      const text = 'FREE CRYPTO GIVEAWAY CLICK';
      const acked = [];
      for (const to of ['bob-c', 'carol-c', 'dave-c']) acked.push({ to, ack: await within(spammer.client.send({ to, text }), 30_000, () => `send to ${to}`) });
      const ab = directConversationId('spammer-c', 'bob-c');
      await until(() => bob.in(ab).some((m) => m.text === text), 10_000, () => 'bob gets it while risk is down');
      await sleep(1500);
      assert.deepEqual(((await api('GET', '/api/v1/risk/audit?user_id=spammer-c')).body.entries as unknown[]), [], 'nothing acted on while risk is down');
      assert.equal(received.size, 0, 'no webhook while risk is down');

      await cluster.restart('risk-1');
      restarted = true;
      await until(async () => ((await api('GET', '/api/v1/risk/audit?user_id=spammer-c')).body.entries as unknown[]).length > 0, 30_000,
        () => `the spam rule trips after the restart\n${cluster.logs('risk-1')}`);
      await until(() => bob.in(ab).some((m) => m.event?.type === 'recalled'), 10_000, () => 'bob is pushed the recall');
      await until(() => received.size >= 3, 30_000, () => `3 after-send events; got ${received.size}`);
      for (const { ack } of acked) assert.equal(received.get(`${ack.conversationId}:${ack.seq}`), true, 'each message\'s event, signed');
    } finally {
      if (!restarted) await cluster.restart('risk-1');
      receiver.closeAllConnections();
      await new Promise((r) => receiver.close(r));
      await spammer.close();
      await bob.close();
    }
  });
});
