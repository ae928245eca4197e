// The Bus contract (src/engines/bus.ts), run against every implementation:
// `busContract('MemoryBus', () => new MemoryBus())`. Each test gets a fresh
// bus from the factory and closes it afterwards.
//
// Uplink order and the one-batch-at-a-time rule are asserted per partition
// key; a bus is free to run different partitions in parallel.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { toBinary } from '@bufbuild/protobuf';
import { committed, down, upEnvelope, type Bus, type Committed, type Down, type UpEnvelope } from '../../src/engines/bus.js';
import { DownSchema } from '../../src/protocol/gen/longlink/internal/v1/envelope_pb.js';
import { ErrorCode, encodeFrame, makeFrame } from '../../src/protocol/index.js';
import { StoreUnavailableError } from '../../src/engines/store.js';

export type BusFactory = () => Bus | Promise<Bus>;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls until `condition` holds; fails the test after `timeoutMs`. */
async function waitFor(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** An uplink message in `partition` whose Send carries `tag` as its client message id. */
function up(tag: string, connId = 1, partition = 'u:alice:bob'): UpEnvelope {
  return upEnvelope({
    origin: { node: 'gw-1', connId: BigInt(connId), userId: 'alice', deviceId: 'd1', platform: 'ios' },
    partition, requestId: tag,
    body: { case: 'frame', value: makeFrame(connId, { case: 'send', value: { clientMsgId: tag, toUser: 'bob', text: `text of ${tag}` } }) },
  });
}

/** The same message, in another partition. */
function at(partition: string, m: UpEnvelope): UpEnvelope {
  m.partition = partition;
  return m;
}

function tagOf(m: UpEnvelope): string {
  const body = m.body.case === 'frame' ? m.body.value.body : undefined;
  return body?.case === 'send' ? body.value.clientMsgId : `<${String(body?.case)}>`;
}

/** A reply carrying `connId` and a frame whose bytes identify it. */
function reply(connId: number): Down {
  return down({ case: 'reply', value: { connId: BigInt(connId), frame: encodeFrame(makeFrame(connId, { case: 'pong', value: { serverTimeMs: BigInt(connId) } })) } });
}

/** A comparable form of a downlink message: its protobuf bytes as hex. */
function normalize(m: Down): string {
  return Buffer.from(toBinary(DownSchema, m)).toString('hex');
}

function connIdOf(m: Down): number {
  assert.equal(m.kind.case, 'reply');
  return m.kind.case === 'reply' ? Number(m.kind.value.connId) : -1;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

export function busContract(name: string, factory: BusFactory): void {
  describe(`Bus contract: ${name}`, () => {
    let bus: Bus;

    beforeEach(async () => {
      bus = await factory();
    });

    afterEach(async () => {
      await bus.close();
    });

    describe('uplink', () => {
      test('delivers one partition in publish order, each message once', async () => {
        const got: string[] = [];
        bus.consumeUp(async (batch) => {
          for (const m of batch) got.push(tagOf(m));
        });
        const sent = range(200).map((i) => `m${i}`);
        for (const tag of sent) await bus.publishUp(up(tag));
        await waitFor(() => got.length >= sent.length, '200 uplink messages');
        await sleep(50);
        assert.deepEqual(got, sent);
      });

      test('keeps call order when publishes are not awaited one by one', async () => {
        // The gateway forwards frames without waiting for each publish to settle.
        const got: string[] = [];
        bus.consumeUp(async (batch) => {
          for (const m of batch) got.push(tagOf(m));
        });
        const sent = range(100).map((i) => `q${i}`);
        await Promise.all(sent.map((tag) => bus.publishUp(up(tag))));
        await waitFor(() => got.length >= sent.length, '100 uplink messages');
        assert.deepEqual(got, sent);
      });

      test('keeps publish order within each of several interleaved partitions', async () => {
        const got: string[] = [];
        bus.consumeUp(async (batch) => {
          for (const m of batch) got.push(tagOf(m));
        });
        const partitions = ['u:a:b', 'u:a:c', 'u:b:c'];
        for (const i of range(90)) {
          const p = partitions[i % 3]!;
          await bus.publishUp(at(p, up(`${p}#${i}`)));
        }
        await waitFor(() => got.length >= 90, '90 uplink messages');
        for (const p of partitions) {
          const expected = range(90).filter((i) => i % 3 === partitions.indexOf(p)).map((i) => `${p}#${i}`);
          assert.deepEqual(got.filter((t) => t.startsWith(`${p}#`)), expected, `order of partition ${p}`);
        }
        assert.equal(got.length, 90);
      });

      test('carries the origin and the frame intact', async () => {
        const got: UpEnvelope[] = [];
        bus.consumeUp(async (batch) => {
          got.push(...batch);
        });
        const frame = makeFrame(99, { case: 'send', value: { clientMsgId: 'c-1', conversationId: 'u:bob:carol', text: 'héllo 👋', fromUser: 'carol' } });
        const message = upEnvelope({
          origin: { node: 'gw-7', connId: 1_733_000_000_000_000n, userId: 'carol', deviceId: 'tab-2', platform: 'web' },
          partition: 'u:bob:carol', requestId: 'c-1', trusted: false, publishedAtMs: 1_733_000_000_000n,
          body: { case: 'frame', value: frame },
        });
        await bus.publishUp(message);
        await waitFor(() => got.length >= 1, 'one uplink message');
        const [received] = got;
        assert.ok(received);
        assert.deepEqual(received.origin, message.origin);
        assert.equal(received.partition, 'u:bob:carol');
        assert.equal(received.requestId, 'c-1');
        assert.equal(received.publishedAtMs, 1_733_000_000_000n);
        assert.equal(received.body.case, 'frame');
        assert.deepEqual(Buffer.from(encodeFrame(received.body.value as typeof frame)), Buffer.from(encodeFrame(frame)));
      });

      test('does not deliver the next batch of a partition before the handler settles', async () => {
        const gate = deferred();
        const got: string[] = [];
        let calls = 0;
        let active = 0;
        let overlapped = false;
        bus.consumeUp(async (batch) => {
          calls++;
          active++;
          if (active > 1) overlapped = true;
          for (const m of batch) got.push(tagOf(m));
          if (calls === 1) await gate.promise;
          active--;
        });
        await bus.publishUp(up('first'));
        await waitFor(() => calls === 1, 'the first batch');
        await bus.publishUp(up('second'));
        await bus.publishUp(up('third'));
        // Nothing of this partition may arrive while the first batch is held.
        await sleep(200);
        assert.equal(calls, 1, 'a second batch was delivered while the first was still being handled');
        assert.deepEqual(got, ['first']);
        gate.resolve();
        await waitFor(() => got.length >= 3, 'the held messages');
        assert.deepEqual(got, ['first', 'second', 'third']);
        assert.equal(overlapped, false);
      });

      test('never runs two batches of one partition at once under a slow handler', async () => {
        const got: string[] = [];
        let active = 0;
        let maxActive = 0;
        bus.consumeUp(async (batch) => {
          active++;
          maxActive = Math.max(maxActive, active);
          await sleep(3);
          for (const m of batch) got.push(tagOf(m));
          active--;
        });
        const sent = range(60).map((i) => `s${i}`);
        for (const tag of sent) {
          await bus.publishUp(up(tag));
          if (Number(tag.slice(1)) % 7 === 0) await sleep(2);
        }
        await waitFor(() => got.length >= sent.length, '60 uplink messages');
        assert.equal(maxActive, 1);
        assert.deepEqual(got, sent);
      });

      test('redelivers a batch whose handler failed (at least once)', async () => {
        const attempts: string[][] = [];
        const handled = new Set<string>();
        let failures = 0;
        bus.consumeUp(async (batch) => {
          const tags = batch.map(tagOf);
          attempts.push(tags);
          if (failures === 0 && tags.includes('fails-once')) {
            failures++;
            throw new Error('simulated handler failure');
          }
          for (const t of tags) handled.add(t);
        });
        await bus.publishUp(up('fails-once'));
        await bus.publishUp(up('after'));
        await waitFor(() => handled.has('fails-once') && handled.has('after'), 'redelivery of the failed batch');
        assert.equal(failures, 1);
        const deliveries = attempts.flat().filter((t) => t === 'fails-once').length;
        assert.ok(deliveries >= 2, `the failed message was delivered ${deliveries} time(s)`);
      });

      test('an unavailable store pauses consumption: the same batch again, never counted as a failure, nothing dead-lettered', async () => {
        let unavailable = 12; // more than any bus's maxDeliveries
        const handled: string[] = [];
        bus.consumeUp(async (batch) => {
          if (unavailable > 0) {
            unavailable--;
            throw new StoreUnavailableError('connect ECONNREFUSED (simulated outage)');
          }
          for (const m of batch) handled.push(tagOf(m));
        });
        const sent = range(20).map((i) => `o${i}`);
        for (const tag of sent) await bus.publishUp(up(tag));
        await waitFor(() => handled.length >= sent.length, 'every message once the store is back', 30_000);
        assert.deepEqual(handled, sent);
        assert.equal(await bus.dead.count(), 0);
        assert.equal(bus.counters.deadLettered, 0);
      });

      test('one poison entry among many is dead-lettered alone, with its error; the rest are handled; a replay hands it again once', async () => {
        let poisonous = true;
        const handled: string[] = [];
        bus.consumeUp(async (batch) => {
          const tags = batch.map(tagOf);
          if (poisonous && tags.includes('poison')) throw new Error('cannot apply this one');
          handled.push(...tags);
        });
        const sent = range(60).map((i) => (i === 30 ? 'poison' : `p${i}`));
        await Promise.all(sent.map((tag) => bus.publishUp(up(tag))));
        const healthy = sent.filter((t) => t !== 'poison');
        await waitFor(() => healthy.every((t) => handled.includes(t)), 'every healthy message', 30_000);
        await waitFor(() => bus.counters.deadLettered >= 1, 'the dead letter', 30_000);
        assert.deepEqual(handled.filter((t) => t !== 'poison'), healthy, 'the others, in order, each once');
        const dead = await bus.dead.list(10);
        assert.equal(dead.length, 1);
        assert.equal(await bus.dead.count(), 1);
        assert.equal(dead[0]!.operation, 'send');
        assert.equal(dead[0]!.partition, 'u:alice:bob');
        assert.equal(dead[0]!.userId, 'alice');
        assert.match(dead[0]!.error, /cannot apply this one/);
        assert.ok(dead[0]!.attempts >= 1);
        // Fixed: replayed (twice at once: applied once).
        poisonous = false;
        const [a, b] = await Promise.all([bus.dead.replay([dead[0]!.id]), bus.dead.replay([dead[0]!.id])]);
        assert.equal(a.length + b.length, 1, 'one of two concurrent replays of one dead letter does it');
        await waitFor(() => handled.includes('poison'), 'the replayed entry', 10_000);
        await sleep(300);
        assert.equal(handled.filter((t) => t === 'poison').length, 1);
        assert.equal(await bus.dead.count(), 0);
      });

      test('keeps messages published while no consumer runs, for the next consumer', async () => {
        await bus.publishUp(up('early-1'));
        await bus.publishUp(up('early-2'));
        const got: string[] = [];
        bus.consumeUp(async (batch) => {
          for (const m of batch) got.push(tagOf(m));
        });
        await waitFor(() => got.length >= 2, 'messages published before the consumer');
        assert.deepEqual(got, ['early-1', 'early-2']);
      });

      test('messages still queued when a subscription closes go to the next consumer', async () => {
        const gate = deferred();
        const first: string[] = [];
        const sub = bus.consumeUp(async (batch) => {
          for (const m of batch) first.push(tagOf(m));
          await gate.promise;
        });
        await bus.publishUp(up('held'));
        await waitFor(() => first.length >= 1, 'the first batch');
        await bus.publishUp(up('queued-1'));
        await bus.publishUp(up('queued-2'));
        await sub.close();
        gate.resolve();
        const second: string[] = [];
        bus.consumeUp(async (batch) => {
          for (const m of batch) second.push(tagOf(m));
        });
        await waitFor(() => second.includes('queued-1') && second.includes('queued-2'), 'the queued messages');
        assert.deepEqual(second.filter((t) => t.startsWith('queued')), ['queued-1', 'queued-2']);
        assert.equal(first.includes('queued-1'), false, 'the closed subscription got a message');
      });

      test('a closed subscription gets nothing more; the next consumer gets the rest', async () => {
        const first: string[] = [];
        const sub = bus.consumeUp(async (batch) => {
          for (const m of batch) first.push(tagOf(m));
        });
        await bus.publishUp(up('before-close'));
        await waitFor(() => first.length >= 1, 'the first message');
        await sub.close();
        await bus.publishUp(up('after-close'));
        await sleep(100);
        assert.deepEqual(first, ['before-close']);
        const second: string[] = [];
        bus.consumeUp(async (batch) => {
          for (const m of batch) second.push(tagOf(m));
        });
        await waitFor(() => second.includes('after-close'), 'the message published between consumers');
        assert.deepEqual(first, ['before-close']);
      });
    });

    describe('downlink', () => {
      test('delivers each node its own messages in publish order', async () => {
        const got = new Map<string, number[]>([['gw-a', []], ['gw-b', []]]);
        for (const [node, list] of got) {
          bus.consumeDown(node, (batch) => {
            for (const m of batch) list.push(connIdOf(m));
          });
        }
        for (const i of range(200)) await bus.publishDown(i % 2 === 0 ? 'gw-a' : 'gw-b', reply(i));
        await waitFor(() => got.get('gw-a')!.length >= 100 && got.get('gw-b')!.length >= 100, 'both nodes');
        await sleep(50);
        assert.deepEqual(got.get('gw-a'), range(200).filter((i) => i % 2 === 0));
        assert.deepEqual(got.get('gw-b'), range(200).filter((i) => i % 2 === 1));
      });

      test('keeps call order when publishes are not awaited one by one', async () => {
        const got: number[] = [];
        bus.consumeDown('gw-a', (batch) => {
          for (const m of batch) got.push(connIdOf(m));
        });
        await Promise.all(range(100).map((i) => bus.publishDown('gw-a', reply(i))));
        await waitFor(() => got.length >= 100, '100 downlink messages');
        assert.deepEqual(got, range(100));
      });

      test('a node never sees messages for another node', async () => {
        const seen: number[] = [];
        bus.consumeDown('gw-a', (batch) => {
          for (const m of batch) seen.push(connIdOf(m));
        });
        await bus.publishDown('gw-nobody', reply(1));
        await bus.publishDown('gw-b', reply(2));
        await bus.publishDown('gw-a', reply(3));
        await waitFor(() => seen.length >= 1, 'the message for gw-a');
        await sleep(100);
        assert.deepEqual(seen, [3]);
      });

      test('carries every kind of message intact', async () => {
        const got: Down[] = [];
        bus.consumeDown('gw-a', (batch) => {
          got.push(...batch);
        });
        const frame = encodeFrame(makeFrame(0, { case: 'push', value: { messages: [{ conversationId: 'u:a:b', seq: 9n, text: 'hi' }] } }));
        const sent: Down[] = [
          reply(17),
          down({ case: 'deliver', value: { targets: [{ userId: 'alice', exceptDevice: 'd1' }, { userId: 'bob' }], frame } }),
          down({ case: 'kick', value: { userId: 'alice', deviceId: 'd1', connId: 5n, code: ErrorCode.REPLACED, reason: 'replaced' } }),
          down({ case: 'kick', value: { userId: 'bob', deviceId: 'd2', code: ErrorCode.SERVER_SHUTDOWN, reason: 'shutdown', reconnect: true } }),
          down({ case: 'watch', value: { connId: 9n, userIds: ['carol', 'dave'] } }),
          down({ case: 'presence', value: { userId: 'carol', frame } }),
          down({ case: 'announce', value: { frame } }),
          down({ case: 'revoke', value: { userId: 'alice', deviceId: '', beforeMs: 1_733_000_000_000n } }),
        ];
        for (const m of sent) await bus.publishDown('gw-a', m);
        await waitFor(() => got.length >= sent.length, 'eight downlink messages');
        assert.deepEqual(got.map(normalize), sent.map(normalize));
      });

      test('a closed subscription gets nothing more', async () => {
        const seen: number[] = [];
        const sub = bus.consumeDown('gw-a', (batch) => {
          for (const m of batch) seen.push(connIdOf(m));
        });
        await bus.publishDown('gw-a', reply(1));
        await waitFor(() => seen.length >= 1, 'the first message');
        await sub.close();
        await bus.publishDown('gw-a', reply(2));
        await sleep(100);
        assert.deepEqual(seen, [1]);
      });
    });

    describe('committed stream', () => {
      /** A committed message of `conversation` at `seq`. */
      const c = (conversation: string, seq: number, text = `${conversation}#${seq}`) => committed({
        message: { conversationId: conversation, seq: BigInt(seq), text, serverMsgId: `s-${conversation}-${seq}` }, originNode: 'logic-1',
      });
      const keyOf = (x: Committed) => `${x.message!.conversationId}#${x.message!.seq}`;

      test('each group gets every message once, in publish order within a conversation, at its own pace; a message committed again is dropped', async () => {
        const fast: string[] = [];
        const slow: string[] = [];
        const subs = [
          bus.consumeCommitted('fast', async (batch) => {
            fast.push(...batch.map(keyOf));
          }),
          bus.consumeCommitted('slow', async (batch) => {
            await sleep(20);
            slow.push(...batch.map(keyOf));
          }),
        ];
        try {
          await sleep(300); // both groups exist before the first entry (an in-process bus keeps entries from then on)
          const list = range(30).map((i) => c(i % 2 === 0 ? 'u:a:b' : 'g:team', Math.floor(i / 2) + 1));
          await bus.publishCommitted(list.slice(0, 20));
          await bus.publishCommitted([list[3]!, list[4]!]); // committed again: a redelivered send found them stored
          await bus.publishCommitted(list.slice(20));
          const want = list.map(keyOf);
          await waitFor(() => fast.length >= want.length && slow.length >= want.length, 'both groups got everything');
          await sleep(200); // a repeat would show up here
          for (const [name, seen] of [['fast', fast], ['slow', slow]] as const) {
            assert.deepEqual([...seen].sort(), [...want].sort(), `${name}: each once`);
            for (const conversation of ['u:a:b', 'g:team']) {
              const seqs = seen.filter((k) => k.startsWith(`${conversation}#`)).map((k) => Number(k.split('#')[1]));
              assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), `${name}: ${conversation} in order`);
            }
          }
        } finally {
          await Promise.all(subs.map((sub) => sub.close()));
        }
      });

      test('what a handler counts is kept with its acks; a failing batch is handed again, not counted twice; lag drops to 0', async () => {
        let failOnce = true;
        const sub = bus.consumeCommitted('counting', async (batch) => {
          if (failOnce && batch.some((x) => x.message!.seq === 3n)) {
            failOnce = false;
            throw new Error('not now');
          }
          return { counters: { messages: batch.length } };
        });
        try {
          await sleep(300);
          await bus.publishCommitted(range(5).map((i) => c('u:a:b', i + 1)));
          let counters = new Map<string, number>();
          const deadline = Date.now() + 10_000;
          while ((counters = await bus.committedCounters('counting')).get('messages') !== 5 && Date.now() < deadline) await sleep(20);
          assert.deepEqual([...counters], [['messages', 5]]);
          let lag: number | undefined;
          while ((lag = (await bus.consumerLag()).get('counting')) !== 0 && Date.now() < deadline) await sleep(20);
          assert.equal(lag, 0);
        } finally {
          await sub.close();
        }
      });
    });

    test('close stops delivery and resolves', async () => {
      const other = await factory();
      const ups: string[] = [];
      const downs: number[] = [];
      other.consumeUp(async (batch) => {
        for (const m of batch) ups.push(tagOf(m));
      });
      other.consumeDown('gw-a', (batch) => {
        for (const m of batch) downs.push(connIdOf(m));
      });
      await other.publishUp(up('before'));
      await other.publishDown('gw-a', reply(1));
      await waitFor(() => ups.length >= 1 && downs.length >= 1, 'delivery before close');
      await other.close();
      // Publishing on a closed bus may reject or be ignored, but must deliver nothing.
      await other.publishUp(up('after')).catch(() => undefined);
      await other.publishDown('gw-a', reply(2)).catch(() => undefined);
      await sleep(150);
      assert.deepEqual(ups, ['before']);
      assert.deepEqual(downs, [1]);
    });
  });
}
