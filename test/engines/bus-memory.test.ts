import assert from 'node:assert/strict';
import { test } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { busContract } from './bus.contract.js';
import { MemoryBus } from '../../src/engines/bus-memory.js';
import { committed } from '../../src/engines/bus.js';
import { MessageSchema } from '../../src/protocol/gen/longlink/v1/longlink_pb.js';

busContract('MemoryBus', () => new MemoryBus({ unavailablePauseMaxMs: 200 }));
// Small batches: the batch boundaries fall inside the tests' message runs.
busContract('MemoryBus (maxBatch 3)', () => new MemoryBus({ maxBatch: 3, unavailablePauseMaxMs: 200 }));

// A committed-stream group that cannot keep up (a webhook receiver away, its handler retrying) holds at most
// maxCommittedBytes of entries in memory: the oldest go first, and what is kept is handed over when it is back.
test('a stuck committed group keeps at most its byte bound, the newest entries', async () => {
  const bus = new MemoryBus({ maxCommittedBytes: 1024 * 1024 });
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const seen: number[] = [];
  const sub = bus.consumeCommitted('slow', async (batch) => {
    await released;
    for (const c of batch) seen.push(Number(c.message!.seq));
  });
  try {
    const text = 'x'.repeat(10_000); // ~20 KB each as the bound counts it
    for (let seq = 1; seq <= 500; seq++) {
      await bus.publishCommitted([committed({ message: create(MessageSchema, { conversationId: 'u:a:b', seq: BigInt(seq), text }), originNode: 'n', duplicate: false, alsoNotify: [] })]);
    }
    const waiting = (await bus.consumerLag()).get('slow')!;
    assert.ok(waiting <= 60, `at most ~1 MiB waits (${waiting} entries)`);
    release();
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(seen.at(-1), 500, 'the newest is kept');
    assert.ok(seen.length <= 60 + 512);
  } finally {
    await sub.close();
    await bus.close();
  }
});
