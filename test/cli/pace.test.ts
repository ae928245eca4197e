// `longlink send --rate N` starts its sends in order even when the process
// stalls while it schedules them (seen under load: a sender's m-31 went out
// before m-30, and the server stored them in the order they came).
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { paced } from '../../src/cli/pace.js';

test('paced sends start in order, evenly spaced, even when the clock jumps while they are scheduled', async () => {
  // A stall of 15 ms partway through: Date.now() jumps, as it does when the process is descheduled.
  const real = Date.now.bind(Date);
  const base = real();
  let calls = 0;
  const now = mock.method(Date, 'now', () => (++calls <= 30 ? base : real() + 15));
  const started: number[] = [];
  const at: number[] = [];
  try {
    const results = paced(40, 200, async (k) => {
      started.push(k);
      at.push(real());
      return k * 2;
    });
    assert.deepEqual(await Promise.all(results), Array.from({ length: 40 }, (_, k) => k * 2));
  } finally {
    now.mock.restore();
  }
  assert.deepEqual(started, Array.from({ length: 40 }, (_, k) => k), 'started in order');
  assert.ok(at[39]! - at[0]! >= 150, `spread over about 40/200 s (took ${at[39]! - at[0]!} ms)`);
});

test('rate 0 starts every send at once, in order', async () => {
  const started: number[] = [];
  const results = paced(5, 0, async (k) => {
    started.push(k);
    return k;
  });
  assert.deepEqual(await Promise.all(results), [0, 1, 2, 3, 4]);
  assert.deepEqual(started, [0, 1, 2, 3, 4]);
});
