import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { registryContract } from './registry.contract.js';
import { MemoryRegistry } from '../../src/engines/registry-memory.js';
import type { NodeInfo, Registry } from '../../src/engines/registry.js';
import { announce } from '../../src/roles/announce.js';
import type { Log } from '../../src/observability/log.js';

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

// announce() (src/roles/announce.ts): how every role keeps its entry, here on the memory registry.
describe('announce(): a process keeping its registry entry', () => {
  const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
  async function until(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
    for (const start = Date.now(); !(await check());) {
      if (Date.now() - start > 10_000) assert.fail(`timed out waiting for ${what}`);
      await sleep(10);
    }
  }

  /** A logger that records what it was asked to write. */
  function recorder() {
    const lines: { level: string; msg: string }[] = [];
    const at = (level: string) => (a: object | string, msg?: string) => void lines.push({ level, msg: typeof a === 'string' ? a : msg ?? '' });
    const logger = { warn: at('warn'), info: at('info'), error: at('error'), debug: at('debug') } as unknown as Log;
    return { lines, logger };
  }

  const node = (load: number): NodeInfo => ({ id: 'msg-1', role: 'message', services: ['message', 'presence', 'push'], httpUrl: 'http://127.0.0.1:8081', load, startedAtMs: 1 });

  test('announces at once, refreshes every ttl/3 with what info() says now, and removes the node on stop', async () => {
    const registry = new MemoryRegistry();
    let load = 0;
    let calls = 0;
    const entry = announce(registry, () => (calls++, node(load)), 900);
    await entry.first;
    assert.deepEqual(await registry.live('message'), [node(0)]);
    load = 7;
    // Well past the TTL: only the refreshes keep it live, and they carry the new load.
    await sleep(1500);
    assert.deepEqual(await registry.all(), [node(7)]);
    assert.ok(calls >= 3, `refreshed every 300 ms (${calls} announces)`);
    await entry.stop();
    assert.deepEqual(await registry.all(), []);
    const after = calls;
    await sleep(250);
    assert.equal(calls, after, 'no announce after stop');
    assert.deepEqual(await registry.all(), []);
    await entry.stop();
  });

  test('a failing registry is warned about at most once per interval, and its recovery once', async () => {
    const registry = new MemoryRegistry();
    let failing = true;
    const flaky: Registry = {
      announce: (n, ttl) => (failing ? Promise.reject(new Error('registry down')) : registry.announce(n, ttl)),
      remove: (id) => registry.remove(id),
      live: (role) => registry.live(role),
      all: () => registry.all(),
      close: () => registry.close(),
    };
    const { lines, logger } = recorder();
    const entry = announce(flaky, () => node(1), 300, { logger, warnEveryMs: 10_000 });
    await entry.first;
    await sleep(450); // about five failed announces
    assert.deepEqual(lines.map((l) => l.level), ['warn'], JSON.stringify(lines));
    assert.match(lines[0]!.msg, /announce failed/);
    failing = false;
    await until(() => lines.length > 1, 'the recovery line');
    await sleep(250);
    assert.deepEqual(lines.map((l) => l.level), ['warn', 'info'], JSON.stringify(lines));
    assert.deepEqual(await registry.live('message'), [node(1)]);
    await entry.stop();
    assert.deepEqual(await registry.all(), []);
  });

  test('stop waits for an announce in flight, so a late refresh cannot bring the node back', async () => {
    const registry = new MemoryRegistry();
    const slow: Registry = {
      announce: async (n, ttl) => {
        await sleep(150);
        return registry.announce(n, ttl);
      },
      remove: (id) => registry.remove(id),
      live: (role) => registry.live(role),
      all: () => registry.all(),
      close: () => registry.close(),
    };
    const entry = announce(slow, () => node(2), 60_000);
    await entry.stop();
    assert.deepEqual(await registry.all(), []);
    await sleep(200);
    assert.deepEqual(await registry.all(), []);
  });

  test('info() throwing counts as a failed announce: logged, never thrown', async () => {
    const registry = new MemoryRegistry();
    const { lines, logger } = recorder();
    const entry = announce(registry, () => {
      throw new Error('not listening yet');
    }, 300, { logger });
    await entry.first;
    assert.deepEqual(lines.map((l) => l.level), ['warn']);
    await entry.stop();
  });
});
