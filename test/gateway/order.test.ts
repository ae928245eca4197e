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
    assert.ok(o.submit(a) && o.submit(b));
    assert.deepEqual(sent, [a.frame.id, b.frame.id]);
  });

  test('a write to another service in the same partition waits for the earlier write\'s answer; other partitions do not', () => {
    const { o, sent } = order();
    const remove = req('group', 'g:x');
    const send = req('message', 'g:x');
    const elsewhere = req('message', 'u:a:b');
    o.submit(remove);
    o.submit(send);
    assert.deepEqual(sent, [remove.frame.id], 'the send waits for the removal');
    o.submit(elsewhere);
    assert.deepEqual(sent, [remove.frame.id], 'once one waits, the later ones wait behind it, in order');
    o.answered(remove.frame.id);
    assert.deepEqual(sent, [remove.frame.id, send.frame.id, elsewhere.frame.id]);
  });

  test('a read waits for every earlier write of another service (a connection sees its own writes), not for reads', () => {
    const { o, sent } = order();
    const send = req('message', 'u:a:b');
    const sync = req('storage', 'user:a', 'read');
    o.submit(send);
    o.submit(sync);
    assert.deepEqual(sent, [send.frame.id]);
    o.answered(send.frame.id);
    assert.deepEqual(sent, [send.frame.id, sync.frame.id]);
    const history = req('storage', 'u:a:b', 'read');
    const list = req('storage', 'user:a', 'read');
    o.submit(history);
    o.submit(list);
    assert.deepEqual(sent.slice(2), [history.frame.id, list.frame.id], 'reads hold nothing up');
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

  test(`at most ${MAX_HELD} requests wait; the next is refused; a closed connection holds nothing`, () => {
    const { o, sent } = order();
    const first = req('group', 'g:x');
    o.submit(first);
    for (let i = 0; i < MAX_HELD; i++) assert.equal(o.submit(req('message', 'g:x')), true);
    assert.equal(o.submit(req('message', 'g:x')), false, 'refused past the bound');
    o.close();
    o.answered(first.frame.id);
    assert.deepEqual(sent, [first.frame.id], 'nothing released after close');
  });
});
