// `longlink send --rate`: sends started in order, evenly spaced.

/**
 * Starts `start(0)` … `start(count - 1)` in that order, the k-th no sooner
 * than k/rate seconds after the first (rate 0: all at once); returns their
 * promises. Each wait is measured when the one before it ended: timers made
 * all at once in a loop could fire out of order when the process stalls
 * between two of them (their durations come from Date.now(), which moves
 * while the loop runs, and Node's timers from a clock that does not).
 */
export function paced<T>(count: number, rate: number, start: (k: number) => Promise<T>): Promise<T>[] {
  const startedAt = Date.now();
  const out: Promise<T>[] = [];
  let turn = Promise.resolve();
  for (let k = 0; k < count; k++) {
    if (rate > 0 && k > 0) {
      turn = turn.then(() => new Promise((r) => setTimeout(r, Math.max(0, startedAt + (k * 1000) / rate - Date.now()))));
    }
    out.push(turn.then(() => start(k)));
  }
  return out;
}
