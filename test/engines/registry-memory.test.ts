import { test } from 'node:test';
import assert from 'node:assert/strict';
import { registryContract } from './registry.contract.js';
import { MemoryRegistry } from '../../src/engines/registry-memory.js';

registryContract('MemoryRegistry', () => new MemoryRegistry());

// The memory registry takes a clock, so its TTL edge is exact here.
test('MemoryRegistry: a node is live until its TTL has passed, not after', async () => {
  let now = 1_000;
  const registry = new MemoryRegistry(() => now);
  await registry.announce({ id: 'gw-1', role: 'gateway', load: 0, startedAtMs: 0 }, 100);
  now = 1_099;
  assert.equal((await registry.live('gateway')).length, 1);
  now = 1_100;
  assert.equal((await registry.live('gateway')).length, 0);
  await registry.close();
});
