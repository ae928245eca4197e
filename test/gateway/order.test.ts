// A connection's requests across services (src/gateway/order.ts): what goes
// up at once, what waits for which answer, and the bounds. Pure state; the
// same rules are exercised end to end by test/cluster/write-order.test.ts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnectionOrder, HOLD_MAX_MS, MAX_HELD, type Routed } from '../../src/gateway/order.js';
import { makeFrame } from '../../src/protocol/index.js';
import type { Service } from '../../src/protocol/operations.js';

let nextId = 1;
function req(service: Service, partition: string, access: 'read' | 'write' = 'write'): Routed {
  const id = nextId++;
  return { frame: makeFrame(id, { case: 'ping', value: {} }), service, partition, access, requestId: `r${id}` };
}

function order(): { o: ConnectionOrder; sent: number[] } {
  const sent: number[] = [];
  return { o: new ConnectionOrder((r) => sent.push(r.frame.id)), sent };
}

describe('ConnectionOrder', () => {
  test('requests of one service go up at once, however many are unanswered', () => {
    const { o, sent } = order();
    const a = req('message', 'g:x');
    const b = req('message', 'g:x');
    o.submit(a);
    o.submit(b);
    assert.deepEqual(sent, [a.frame.id, b.frame.id]);
  });

  test('a write to another service in the same partition waits for the earlier write\'s answer; other partitions do not', () => {
    const { o, sent } = order();
    const remove = req('group', 'g:x');
    const send = req('message', 'g:x');
    const again = req('message', 'g:x');
    const elsewhere = req('message', 'u:a:b');
    o.submit(remove);
    o.submit(send);
    o.submit(again);
    assert.deepEqual(sent, [remove.frame.id], 'the sends wait for the removal, in order');
    o.submit(elsewhere);
    assert.deepEqual(sent, [remove.frame.id, elsewhere.frame.id], 'another partition goes on');
    o.answered(remove.frame.id);
    assert.deepEqual(sent, [remove.frame.id, elsewhere.frame.id, send.frame.id, again.frame.id]);
    assert.equal(o.waiting, 0);
  });

  test('a read waits for every earlier write of another service (a connection sees its own writes); a held read holds no write', () => {
    const { o, sent } = order();
    const send = req('message', 'u:a:b');
    const sync = req('storage', 'user:a', 'read');
    const next = req('message', 'u:a:b');
    o.submit(send);
    o.submit(sync);
    o.submit(next);
    assert.deepEqual(sent, [send.frame.id, next.frame.id], 'the sync waits; the next send does not wait for it');
    o.answered(send.frame.id);
    assert.deepEqual(sent, [send.frame.id, next.frame.id], 'the sync also waits for the later send, sent before it was answered');
    o.answered(next.frame.id);
    assert.deepEqual(sent, [send.frame.id, next.frame.id, sync.frame.id]);
    const history = req('storage', 'u:a:b', 'read');
    const list = req('storage', 'user:a', 'read');
    o.submit(history);
    o.submit(list);
    assert.deepEqual(sent.slice(3), [history.frame.id, list.frame.id], 'reads hold nothing up');
  });

  test('a held write holds the later reads and the later requests of its partition', () => {
    const { o, sent } = order();
    const remove = req('group', 'g:x');
    const send = req('message', 'g:x');
    const mark = req('storage', 'g:x');
    const sync = req('storage', 'user:a', 'read');
    o.submit(remove);
    o.submit(send);
    o.submit(mark);
    o.submit(sync);
    assert.deepEqual(sent, [remove.frame.id]);
    o.answered(remove.frame.id);
    assert.deepEqual(sent, [remove.frame.id, send.frame.id], 'the mark waits for the send now, the sync behind it');
    o.answered(send.frame.id);
    // The sync and the mark are storage's: the bus orders them from here.
    assert.deepEqual(sent, [remove.frame.id, send.frame.id, mark.frame.id, sync.frame.id]);
  });

  test('an answer to something else releases nothing; a write never answered stops holding others after HOLD_MAX_MS', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
    const { o, sent } = order();
    const lost = req('group', 'g:x');
    const send = req('message', 'g:x');
    o.submit(lost);
    o.submit(send);
    o.answered(9999);
    assert.deepEqual(sent, [lost.frame.id]);
    t.mock.timers.tick(HOLD_MAX_MS + 1);
    assert.deepEqual(sent, [lost.frame.id, send.frame.id]);
  });

  test(`at most ${MAX_HELD} requests wait: past it a request goes up at once; a closed connection holds nothing`, () => {
    const { o, sent } = order();
    const first = req('group', 'g:x');
    o.submit(first);
    for (let i = 0; i < MAX_HELD; i++) o.submit(req('message', 'g:x'));
    assert.equal(o.waiting, MAX_HELD);
    const over = req('message', 'g:x');
    o.submit(over);
    assert.deepEqual(sent, [first.frame.id, over.frame.id], 'sent rather than refused or kept');
    o.close();
    o.answered(first.frame.id);
    assert.equal(sent.length, 2, 'nothing released after close');
  });
});
