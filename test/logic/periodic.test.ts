// Periodic (src/periodic.ts): work every so often, one pass at a time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Periodic } from '../../src/periodic.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('one pass at a time: ticks while a pass runs are skipped, a caller joins the running pass, stop() waits for it', async () => {
  let running = 0;
  let most = 0;
  let passes = 0;
  let release: () => void = () => undefined;
  const periodic = new Periodic(10, async () => {
    running++;
    most = Math.max(most, running);
    passes++;
    await new Promise<void>((r) => (release = r));
    running--;
    return passes;
  }, (err) => assert.fail(String(err)));
  periodic.start();
  await sleep(80); // several ticks while the first pass waits
  assert.equal(passes, 1, 'the ticks during a pass start none');
  const joined = periodic.now();
  release();
  assert.equal(await joined, 1, 'now() during a pass gets that pass');
  await sleep(40);
  assert.ok(passes >= 2, 'ticks start passes again once one ended');
  const stopping = periodic.stop();
  let stopped = false;
  void stopping.then(() => (stopped = true));
  await sleep(20);
  assert.equal(stopped, false, 'stop() waits for the pass running');
  release();
  await stopping;
  const after = passes;
  await sleep(40);
  assert.equal(passes, after, 'no pass after stop()');
  assert.equal(most, 1);
});

test('a failed pass started by the timer goes to onError; one asked for by now() rejects to its caller', async () => {
  const errors: unknown[] = [];
  const periodic = new Periodic(10, async () => {
    throw new Error('boom');
  }, (err) => errors.push(err));
  await assert.rejects(periodic.now(), /boom/);
  periodic.start();
  await sleep(50);
  await periodic.stop();
  assert.ok(errors.length >= 1 && errors.every((e) => (e as Error).message === 'boom'));
});
