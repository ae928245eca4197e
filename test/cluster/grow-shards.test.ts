// Growing the shard count of a running cluster under load, from outside:
// `longlink admin shards --grow 32` while alice sends bob 400 messages (the
// test cluster has 8 shards). Every send is acked, bob gets each once, in
// order; `longlink admin shards` then shows 32 shards per topic, each owned
// and ready.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import {
  assertAckedInOrder, assertExactlyOnceInOrder, connectClient, sendAll, startTestCluster, texts, until, within, type TestClient,
} from './helpers.js';
import { directConversationId } from '../../src/client/index.js';

const BIN = fileURLToPath(new URL('../../bin/longlink.js', import.meta.url));
const run = promisify(execFile);

test('the shard count grows from 8 to 32 under load: all sends acked, delivered once each in order; every new shard owned and ready', { timeout: 180_000 }, async (t) => {
  const cluster = await startTestCluster({ routing: 'targeted' });
  const clients: TestClient[] = [];
  t.after(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await cluster.stop();
  });
  const admin = (...args: string[]) => run(process.execPath, [BIN, 'admin', 'shards', '--server', cluster.apiUrl(), ...args], {
    env: { ...process.env, LONGLINK_ADMIN_KEY: cluster.adminKey },
  });
  // Several conversations, so some move to new shards and some stay.
  const pairs = Array.from({ length: 6 }, (_, i) => [`gs-a${i}`, `gs-b${i}`] as const);
  const senders: TestClient[] = [];
  const receivers: TestClient[] = [];
  for (const [a, b] of pairs) {
    receivers.push(await connectClient(cluster, b, { gateway: 'gw-2' }));
    senders.push(await connectClient(cluster, a, { gateway: 'gw-1' }));
  }
  clients.push(...senders, ...receivers);
  const expected = texts('gs', 120);
  let grown: Promise<{ stdout: string }> | undefined;
  const outs = senders.map((sender, i) => sendAll(sender, expected.map((text) => ({ to: pairs[i]![1], text })), {
    perTick: 4,
    tickMs: 20,
    onAck: (acked) => {
      if (i === 0 && grown === undefined && acked >= 40) grown = admin('--grow', '32');
    },
  }));
  await until(() => grown !== undefined, 60_000, () => 'never 40 acks');
  const result = JSON.parse((await grown!).stdout.trim()) as { type: string; count: number; previous: number };
  assert.deepEqual([result.type, result.count, result.previous], ['grown', 32, 8]);
  for (const [i, out] of outs.entries()) {
    const acks = await within(out.done, 90_000, () => `sender ${i}: acked ${out.acked()}/${out.sent()}\n${cluster.logs()}`);
    assertAckedInOrder(acks, directConversationId(pairs[i]![0], pairs[i]![1]), `sender ${i}`);
  }
  for (const [i, r] of receivers.entries()) {
    const conv = directConversationId(pairs[i]![0], pairs[i]![1]);
    await until(() => r.in(conv).length >= expected.length, 60_000, () => `receiver ${i} got ${r.in(conv).length}/${expected.length}`);
    assertExactlyOnceInOrder(r.in(conv), expected, `receiver ${i}`);
  }
  // Every shard of every topic owned by a logic node and ready (its old shard drained).
  let lines: { type: string; topic?: string; owner?: string | null; state?: string; count?: number }[] = [];
  await until(async () => {
    lines = (await admin()).stdout.trim().split('\n').map((l) => JSON.parse(l) as (typeof lines)[number]);
    return lines.filter((l) => l.type === 'shard').every((l) => l.state === 'ready' && typeof l.owner === 'string');
  }, 30_000, () => JSON.stringify(lines.filter((l) => l.state !== 'ready' || !l.owner).slice(0, 5)));
  assert.equal(lines[0]!.count, 32);
  const send = lines.filter((l) => l.type === 'shard' && l.topic === 'up');
  assert.equal(send.length, 32);
  assert.ok(send.every((l) => l.owner === 'logic-1' || l.owner === 'logic-2'));
});
