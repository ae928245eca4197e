// The forwarder keeps a connection's writes of a conversation in order when a
// hand-off to the conversation's home datacenter fails: the write refused
// (and the ones after it in its batch) are answered UNAVAILABLE, and the
// connection's later writes of that conversation, arriving in later batches,
// are refused too until the first refused one is sent again. Stored first,
// they would overtake it (seen: after a datacenter failed over, a resent
// message was stored after the ones its client had sent behind it).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { Forwarder, type PeerBus } from '../../src/dc/forward.js';
import { MemoryBus } from '../../src/engines/bus-memory.js';
import { upEnvelope, type UpEnvelope } from '../../src/engines/bus.js';
import { FrameSchema, decodeFrame, errorName } from '../../src/protocol/index.js';

const CONVERSATION = 'u:alice:bob';

/** alice's send number k on connection `conn` of gw-1. */
function send(k: number, conn = 7n): UpEnvelope {
  return upEnvelope({
    origin: { node: 'gw-1', connId: conn, userId: 'alice', deviceId: 'd1', platform: 'ios' },
    partition: CONVERSATION,
    body: { case: 'frame', value: create(FrameSchema, { id: k, body: { case: 'send', value: { conversationId: CONVERSATION, clientMsgId: `m${k}`, text: `hi ${k}` } } }) },
  });
}

function syncRequest(id: number): UpEnvelope {
  return upEnvelope({
    origin: { node: 'gw-1', connId: 7n, userId: 'alice', deviceId: 'd1', platform: 'ios' },
    partition: CONVERSATION,
    body: { case: 'frame', value: create(FrameSchema, { id, body: { case: 'sync', value: { conversationIds: [CONVERSATION] } } }) },
  });
}

const local = new MemoryBus();
const home = new MemoryBus();
let linkDown = false;
const peer: PeerBus = {
  publishUp: (up) => (linkDown ? Promise.reject(new Error('the link to datacenter a is down')) : home.publishUp(up)),
  consumeDown: (node, handler, options) => home.consumeDown(node, handler, options),
  close: () => home.close(),
};
const forwarder = new Forwarder({ nodeId: 'logic-b', dc: 'b', timeoutMs: 60_000 }, { bus: local, peers: new Map([['a', peer]]) });
forwarder.start();
/** Replies the gateway got, by frame id: the error's code name, or the body's kind. */
const replies = new Map<number, string>();
const sub = local.consumeDown('gw-1', async (batch) => {
  for (const d of batch) {
    if (d.kind.case !== 'reply') continue;
    const f = decodeFrame(d.kind.value.frame);
    replies.set(f.id, f.body.case === 'error' ? errorName(f.body.value.code) : String(f.body.case));
  }
});
after(async () => {
  await sub.close();
  await forwarder.stop();
  await Promise.all([local.close(), home.close()]);
});

async function replyTo(id: number): Promise<string> {
  const deadline = Date.now() + 5000;
  while (!replies.has(id)) {
    if (Date.now() > deadline) assert.fail(`no reply to frame ${id}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return replies.get(id)!;
}

test('a write refused in a hand-off holds back its connection\'s later writes of the conversation until it is sent again', async () => {
  linkDown = true;
  await forwarder.forward('a', [send(1), send(2)]);
  assert.deepEqual([await replyTo(1), await replyTo(2)], ['UNAVAILABLE', 'UNAVAILABLE']);

  // The link is back (or the home moved here): a later batch brings send 3, sent before the client heard of the refusals.
  linkDown = false;
  const next = await forwarder.admit([send(3), send(40, 8n), syncRequest(41)]);
  assert.equal(await replyTo(3), 'UNAVAILABLE', 'send 3 would overtake send 1');
  assert.deepEqual(next.map((up) => up.body.case === 'frame' ? up.body.value.id : 0), [40, 41], 'another connection\'s write and a read go on');

  // The client sends again, in order: send 1 lifts the hold, and everything goes on.
  const resent = await forwarder.admit([send(1), send(2), send(3)]);
  assert.deepEqual(resent.map((up) => up.body.case === 'frame' ? up.body.value.id : 0), [1, 2, 3]);
  assert.deepEqual((await forwarder.admit([send(4)])).length, 1, 'nothing is held any more');
});

test('a batch with no refused write before it goes on whole', async () => {
  const batch = [send(10, 9n), send(11, 9n)];
  assert.equal((await forwarder.admit(batch)).length, 2);
});
