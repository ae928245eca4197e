// The Receiver is pure state: messages in, deliverable messages out.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Receiver } from '../../src/client/receiver.js';
import type { ChatMessage } from '../../src/protocol/index.js';

const AB = 'u:alice:bob';
const AC = 'u:alice:carol';
const BC = 'u:bob:carol';

function msg(seq: number, conversationId = AB, text = `#${seq}`): ChatMessage {
  return {
    conversationId,
    seq,
    serverMsgId: `srv-${conversationId}-${seq}`,
    fromUser: 'bob',
    fromDevice: 'phone',
    clientMsgId: `c-${seq}`,
    text,
    sentAtMs: 1_700_000_000_000 + seq,
  };
}

const seqs = (messages: ChatMessage[]) => messages.map((m) => m.seq);

describe('Receiver', () => {
  test('delivers in-order messages as they come', () => {
    const r = new Receiver();
    assert.deepEqual(r.establish(AB, 0), []);
    assert.deepEqual(r.offer(msg(1)), [msg(1)]);
    assert.deepEqual(r.offer(msg(2)), [msg(2)]);
    assert.deepEqual(r.offer(msg(3)), [msg(3)]);
    assert.equal(r.base(AB), 3);
    assert.deepEqual(r.stuck(), []);
  });

  test('drops duplicates, delivered or held', () => {
    const r = new Receiver();
    r.establish(AB, 0);
    r.offer(msg(1));
    r.offer(msg(2));
    assert.deepEqual(r.offer(msg(1)), []);
    assert.deepEqual(r.offer(msg(2, AB, 'a redelivery with other text')), []);
    assert.deepEqual(r.offer(msg(4)), []);
    assert.deepEqual(r.offer(msg(4)), [], 'a second copy of a held message');
    assert.deepEqual(seqs(r.offer(msg(3))), [3, 4], 'the held message comes out once');
    assert.deepEqual(r.offer(msg(4)), []);
    assert.equal(r.base(AB), 4);
  });

  test('a held message keeps the first copy offered', () => {
    const r = new Receiver();
    r.establish(AB, 0);
    r.offer(msg(2, AB, 'first copy'));
    r.offer(msg(2, AB, 'second copy'));
    assert.deepEqual(r.offer(msg(1)).map((m) => m.text), ['#1', 'first copy']);
  });

  test('holds messages after a gap and releases them in seq order when it fills', () => {
    const r = new Receiver();
    r.establish(AB, 10);
    assert.deepEqual(r.offer(msg(14)), []);
    assert.deepEqual(r.offer(msg(12)), []);
    assert.deepEqual(r.stuck(), [AB]);
    assert.equal(r.base(AB), 10);
    assert.deepEqual(seqs(r.offer(msg(11))), [11, 12]);
    assert.deepEqual(r.stuck(), [AB], 'still a gap before 14');
    assert.deepEqual(seqs(r.offer(msg(13))), [13, 14]);
    assert.deepEqual(r.stuck(), []);
    assert.equal(r.base(AB), 14);
  });

  test('without a known base, holds everything until establish()', () => {
    const r = new Receiver();
    assert.equal(r.base(AB), undefined);
    assert.deepEqual(r.offer(msg(5)), []);
    assert.deepEqual(r.offer(msg(6)), []);
    assert.deepEqual(r.offer(msg(1)), [], 'not even seq 1: the device may have seen it');
    assert.deepEqual(r.stuck(), [AB]);
    assert.deepEqual(r.cursors(), [], 'no cursor to sync from yet');
    assert.deepEqual(seqs(r.establish(AB, 4)), [5, 6]);
    assert.equal(r.base(AB), 6);
    assert.deepEqual(r.stuck(), [], 'held messages at or below the base are dropped');
    assert.deepEqual(r.offer(msg(1)), []);
  });

  test('establish() drops held messages the base already covers', () => {
    const r = new Receiver();
    r.offer(msg(3));
    r.offer(msg(4));
    r.offer(msg(7));
    assert.deepEqual(r.establish(AB, 5), []);
    assert.equal(r.base(AB), 5);
    assert.deepEqual(r.stuck(), [AB], '7 still waits for 6');
    assert.deepEqual(seqs(r.offer(msg(6))), [6, 7]);
  });

  test('establish() does not move a known base', () => {
    const r = new Receiver();
    r.establish(AB, 3);
    assert.deepEqual(r.establish(AB, 10), []);
    assert.equal(r.base(AB), 3);
    assert.deepEqual(r.establish(AB, 1), []);
    assert.equal(r.base(AB), 3);
    assert.deepEqual(r.offer(msg(4)), [msg(4)]);
  });

  test('silent messages advance the base without being emitted', () => {
    const r = new Receiver();
    r.establish(AB, 0);
    assert.deepEqual(r.offer(msg(1), true), []);
    assert.equal(r.base(AB), 1);
    assert.deepEqual(r.offer(msg(2)), [msg(2)]);
    assert.deepEqual(r.offer(msg(1)), [], 'a later copy of the silent message is a duplicate');
  });

  test('a silent message filling a gap releases what was held behind it', () => {
    const r = new Receiver();
    r.establish(AB, 0);
    r.offer(msg(1));
    assert.deepEqual(r.offer(msg(3)), []);
    assert.deepEqual(r.offer(msg(4), true), []);
    assert.deepEqual(r.offer(msg(5)), []);
    assert.deepEqual(seqs(r.offer(msg(2), true)), [3, 5], 'neither silent message is emitted');
    assert.equal(r.base(AB), 5);
    assert.deepEqual(r.stuck(), []);
  });

  test('a held silent message is not emitted when establish() releases it', () => {
    const r = new Receiver();
    r.offer(msg(1), true);
    r.offer(msg(2));
    assert.deepEqual(seqs(r.establish(AB, 0)), [2]);
    assert.equal(r.base(AB), 2);
  });

  test('conversations are independent', () => {
    const r = new Receiver();
    r.establish(AB, 0);
    r.establish(AC, 7);
    assert.deepEqual(r.offer(msg(2, AB)), []);
    assert.deepEqual(r.offer(msg(8, AC)), [msg(8, AC)]);
    assert.deepEqual(r.stuck(), [AB]);
    assert.deepEqual(r.offer(msg(1, AC)), []);
    assert.deepEqual(seqs(r.offer(msg(1, AB))), [1, 2]);
    assert.equal(r.base(AB), 2);
    assert.equal(r.base(AC), 8);
  });

  test('stuck() lists every conversation that needs a sync, cursors() every known base', () => {
    const r = new Receiver();
    r.establish(AB, 4);
    r.offer(msg(6, AB)); // gap: 5 missing
    r.offer(msg(2, AC)); // base unknown
    r.establish(BC, 0);
    r.offer(msg(1, BC)); // in order
    assert.deepEqual([...r.stuck()].sort(), [AB, AC]);
    assert.deepEqual(
      [...r.cursors()].sort((a, b) => a[0].localeCompare(b[0])),
      [[AB, 4], [BC, 1]],
    );
  });
});
