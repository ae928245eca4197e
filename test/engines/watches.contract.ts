// The Watches contract (src/engines/watches.ts), run against every
// implementation. Each test gets a fresh, empty instance and closes it.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Watches } from '../../src/engines/watches.js';

export function watchesContract(name: string, factory: () => Watches): void {
  describe(`Watches contract: ${name}`, () => {
    let w: Watches;
    beforeEach(() => {
      w = factory();
    });
    afterEach(async () => {
      await w.close();
    });
    const sorted = async (p: Promise<string[]>) => (await p).sort();

    test('a user\'s watchers are the nodes set watching it and not taken out since', async () => {
      assert.deepEqual(await w.watchers('alice'), []);
      await w.set('gw-1', ['alice', 'bob'], true);
      await w.set('gw-2', ['alice'], true);
      await w.set('gw-2', ['alice'], true);
      assert.deepEqual(await sorted(w.watchers('alice')), ['gw-1', 'gw-2']);
      assert.deepEqual(await w.watchers('bob'), ['gw-1']);
      await w.set('gw-1', ['alice'], false);
      assert.deepEqual(await w.watchers('alice'), ['gw-2']);
      await w.set('gw-1', ['carol'], false);
      assert.deepEqual(await w.watchers('carol'), []);
      await w.set('gw-1', [], true);
      assert.deepEqual(await sorted(w.nodes()), ['gw-1', 'gw-2']);
    });

    test('calls are applied in order: the last word on a user wins', async () => {
      const calls: Promise<void>[] = [];
      for (let i = 0; i < 50; i++) calls.push(w.set('gw-1', ['alice'], i % 2 === 0));
      calls.push(w.set('gw-1', ['bob'], true), w.set('gw-1', ['bob'], false));
      await Promise.all(calls);
      assert.deepEqual(await w.watchers('alice'), []);
      assert.deepEqual(await w.watchers('bob'), []);
    });

    test('dropNode takes the node out of every user\'s watchers; replace leaves it watching exactly what it names', async () => {
      const many = Array.from({ length: 2500 }, (_, i) => `u${i}`);
      await w.set('gw-1', many, true);
      await w.set('gw-2', ['u7'], true);
      assert.equal(await w.dropNode('gw-1'), 2500);
      assert.deepEqual(await w.watchers('u7'), ['gw-2']);
      assert.deepEqual(await w.watchers('u2499'), []);
      assert.deepEqual(await w.nodes(), ['gw-2']);
      assert.equal(await w.dropNode('gw-9'), 0);
      await w.set('gw-2', ['a', 'b'], true);
      await w.replace('gw-2', ['b', 'c']);
      assert.deepEqual(await w.watchers('a'), []);
      assert.deepEqual(await w.watchers('u7'), []);
      assert.deepEqual(await w.watchers('b'), ['gw-2']);
      assert.deepEqual(await w.watchers('c'), ['gw-2']);
    });
  });
}
