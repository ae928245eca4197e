// The Bus contract (src/engines/bus.ts), run against every implementation:
// `busContract('MemoryBus', () => new MemoryBus())`. Each test gets a fresh
// bus from the factory and closes it afterwards.
//
// Uplink order and the one-batch-at-a-time rule are asserted per partition
// key; a bus is free to run different partitions in parallel.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Bus, DownMessage, UpMessage } from '../../src/engines/bus.js';
import { encodeFrame, makeFrame } from '../../src/protocol/index.js';

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

/** An uplink message whose Send carries `tag` as its client message id. */
function up(tag: string, connId = 1): UpMessage {
  return {
    origin: { node: 'gw-1', connId, userId: 'alice', deviceId: 'd1', platform: 'ios' },
    frame: makeFrame(connId, { case: 'send', value: { clientMsgId: tag, toUser: 'bob', text: `text of ${tag}` } }),
  };
}

function tagOf(m: UpMessage): string {
  return m.frame.body.case === 'send' ? m.frame.body.value.clientMsgId : `<${String(m.frame.body.case)}>`;
}

/** A reply carrying `connId` and a frame whose bytes identify it. */
function reply(connId: number): DownMessage {
  return { kind: 'reply', connId, frame: encodeFrame(makeFrame(connId, { case: 'pong', value: { serverTimeMs: BigInt(connId) } })) };
}

/** A comparable form of a downlink message: frame bytes as hex, absent optionals dropped. */
function normalize(m: DownMessage): unknown {
  const plain = m.kind === 'kick' || m.kind === 'watch' || m.kind === 'revoke' ? m : { ...m, frame: Buffer.from(m.frame).toString('hex') };
  return JSON.parse(JSON.stringify(plain)) as unknown;
}

function connIdOf(m: DownMessage): number {
  assert.equal(m.kind, 'reply');
  return m.kind === 'reply' ? m.connId : -1;
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
        for (const tag of sent) await bus.publishUp('u:alice:bob', up(tag));
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
        await Promise.all(sent.map((tag) => bus.publishUp('u:alice:bob', up(tag))));
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
          await bus.publishUp(p, up(`${p}#${i}`));
        }
        await waitFor(() => got.length >= 90, '90 uplink messages');
        for (const p of partitions) {
          const expected = range(90).filter((i) => i % 3 === partitions.indexOf(p)).map((i) => `${p}#${i}`);
          assert.deepEqual(got.filter((t) => t.startsWith(`${p}#`)), expected, `order of partition ${p}`);
        }
        assert.equal(got.length, 90);
      });

      test('carries the origin and the frame intact', async () => {
        const got: UpMessage[] = [];
        bus.consumeUp(async (batch) => {
          got.push(...batch);
        });
        const message: UpMessage = {
          origin: { node: 'gw-7', connId: 4242, userId: 'carol', deviceId: 'tab-2', platform: 'web' },
          frame: makeFrame(99, { case: 'send', value: { clientMsgId: 'c-1', conversationId: 'u:bob:carol', text: 'héllo 👋', fromUser: 'carol' } }),
        };
        await bus.publishUp('u:bob:carol', message);
        await waitFor(() => got.length >= 1, 'one uplink message');
        const [received] = got;
        assert.ok(received);
        assert.deepEqual(received.origin, message.origin);
        assert.deepEqual(Buffer.from(encodeFrame(received.frame)), Buffer.from(encodeFrame(message.frame)));
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
        await bus.publishUp('u:alice:bob', up('first'));
        await waitFor(() => calls === 1, 'the first batch');
        await bus.publishUp('u:alice:bob', up('second'));
        await bus.publishUp('u:alice:bob', up('third'));
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
          await bus.publishUp('u:alice:bob', up(tag));
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
        await bus.publishUp('u:alice:bob', up('fails-once'));
        await bus.publishUp('u:alice:bob', up('after'));
        await waitFor(() => handled.has('fails-once') && handled.has('after'), 'redelivery of the failed batch');
        assert.equal(failures, 1);
        const deliveries = attempts.flat().filter((t) => t === 'fails-once').length;
        assert.ok(deliveries >= 2, `the failed message was delivered ${deliveries} time(s)`);
      });

      test('keeps messages published while no consumer runs, for the next consumer', async () => {
        await bus.publishUp('u:alice:bob', up('early-1'));
        await bus.publishUp('u:alice:bob', up('early-2'));
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
        await bus.publishUp('u:alice:bob', up('held'));
        await waitFor(() => first.length >= 1, 'the first batch');
        await bus.publishUp('u:alice:bob', up('queued-1'));
        await bus.publishUp('u:alice:bob', up('queued-2'));
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
        await bus.publishUp('u:alice:bob', up('before-close'));
        await waitFor(() => first.length >= 1, 'the first message');
        await sub.close();
        await bus.publishUp('u:alice:bob', up('after-close'));
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
        const got: DownMessage[] = [];
        bus.consumeDown('gw-a', (batch) => {
          got.push(...batch);
        });
        const frame = encodeFrame(makeFrame(0, { case: 'push', value: { messages: [{ conversationId: 'u:a:b', seq: 9n, text: 'hi' }] } }));
        const sent: DownMessage[] = [
          reply(17),
          { kind: 'deliver', targets: [{ userId: 'alice', exceptDevice: 'd1' }, { userId: 'bob' }], frame },
          { kind: 'kick', userId: 'alice', deviceId: 'd1', connId: 5, code: 400, reason: 'replaced' },
          { kind: 'kick', userId: 'bob', deviceId: 'd2', code: 401, reason: 'shutdown' },
        ];
        for (const m of sent) await bus.publishDown('gw-a', m);
        await waitFor(() => got.length >= sent.length, 'four downlink messages');
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
      await other.publishUp('u:alice:bob', up('before'));
      await other.publishDown('gw-a', reply(1));
      await waitFor(() => ups.length >= 1 && downs.length >= 1, 'delivery before close');
      await other.close();
      // Publishing on a closed bus may reject or be ignored, but must deliver nothing.
      await other.publishUp('u:alice:bob', up('after')).catch(() => undefined);
      await other.publishDown('gw-a', reply(2)).catch(() => undefined);
      await sleep(150);
      assert.deepEqual(ups, ['before']);
      assert.deepEqual(downs, [1]);
    });
  });
}
