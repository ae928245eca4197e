// The home of a 1:1 conversation: every datacenter computes the same one from
// its id alone, whatever order it lists the datacenters in, and ids spread
// evenly over them (ids that differ only in a counter included).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { directHome } from '../../src/dc/homes.js';
import { directConversationId } from '../../src/protocol/index.js';

test('1:1 homes: the same from any datacenter list order, spread evenly over 2 and 3 datacenters', () => {
  for (const dcs of [['a', 'b'], ['a', 'b', 'c']]) {
    const counts = new Map<string, number>();
    const n = 3000;
    for (let i = 0; i < n; i++) {
      const id = directConversationId(`user-a${i}`, `user-b${i}`);
      const home = directHome(id, dcs);
      assert.equal(directHome(id, [...dcs].reverse()), home);
      counts.set(home, (counts.get(home) ?? 0) + 1);
    }
    for (const dc of dcs) {
      const share = (counts.get(dc) ?? 0) / n;
      assert.ok(Math.abs(share - 1 / dcs.length) < 0.05, `${dc} homes ${(share * 100).toFixed(1)}% of ${dcs.length} datacenters' conversations`);
    }
  }
});
