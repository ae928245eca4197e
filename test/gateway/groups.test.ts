// The gateway's large groups (src/gateway/groups.ts), alone: a fake bus that
// records the member loads asked for, a session table of fake connections,
// and GroupDeliver / GroupMembers written by hand, in the orders the cluster
// can produce (a load under way, a seq published late, a gap that never fills).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { GroupDeliverSchema, GroupMembersSchema } from '../../src/protocol/gen/longlink/internal/v1/envelope_pb.js';
import type { Bus, UpEnvelope } from '../../src/engines/bus.js';
import { GroupIndex } from '../../src/gateway/groups.js';
import { SessionTable, type Connection } from '../../src/gateway/connection.js';
import type { OutFrame } from '../../src/gateway/transport.js';

const G = 'g:big';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function harness(options: { gapHoldMs?: number; loadTimeoutMs?: number; maxBytes?: number } = {}) {
  const asked: UpEnvelope[] = [];
  const bus = { publishUp: async (up: UpEnvelope) => void asked.push(up) } as unknown as Bus;
  const table = new SessionTable();
  const got: string[] = []; // "user/device:seq"
  const index = new GroupIndex({ nodeId: 'gw-t', ...options }, {
    bus, table, send: (conn: Connection, out: OutFrame) => got.push(`${conn.userId}/${conn.deviceId}:${out.bytes[0]}`),
  });
  table.onUser = (u, here) => (here ? index.userOnline(u) : index.userOffline(u));
  let id = 0;
  const connect = (userId: string, deviceId = 'd1') => {
    const conn = { id: ++id, userId, deviceId, state: 'open' } as unknown as Connection;
    table.add(conn);
    return conn;
  };
  /** A message at seq (its frame's first byte is the seq, so deliveries name it). */
  const msg = (seq: number, extra: { joined?: string[]; left?: string[]; ended?: boolean; from?: [string, string] } = {}) => create(GroupDeliverSchema, {
    conversationId: G, seq: BigInt(seq), frame: new Uint8Array([seq]), joined: extra.joined ?? [], left: extra.left ?? [], ended: extra.ended ?? false,
    exceptUser: extra.from?.[0] ?? '', exceptDevice: extra.from?.[1] ?? '',
  });
  /** Answer the load asked `n`-th (0-based) with these windows as of lastSeq, in parts of `part`. */
  const answer = (n: number, lastSeq: number, windows: [string, number, number?][], part = 1000) => {
    const up = asked[n]!;
    for (let i = 0; i === 0 || i < windows.length; i += part) {
      index.onMembers(create(GroupMembersSchema, {
        requestId: up.origin!.connId, conversationId: G, lastSeq: BigInt(lastSeq), done: i + part >= windows.length,
        windows: windows.slice(i, i + part).map(([userId, joined, left]) => ({ userId, joinedSeq: BigInt(joined), leftSeq: BigInt(left ?? 0) })),
      }));
    }
  };
  const sinceOf = (n: number) => (asked[n]!.body.case === 'members' ? Number(asked[n]!.body.value.sinceSeq) : NaN);
  const take = () => got.splice(0).sort();
  return { index, table, asked, connect, msg, answer, sinceOf, take };
}

describe('a gateway\'s large groups', () => {
  test('the first message asks for the members and waits; the answer (in parts) delivers it to the members here, not the sender\'s device', () => {
    const h = harness();
    h.connect('ann'); h.connect('ann', 'd2'); h.connect('bob'); h.connect('zed'); // zed is no member
    h.index.onDeliver(h.msg(5, { from: ['ann', 'd1'] }));
    assert.equal(h.asked.length, 1);
    assert.equal(h.asked[0]!.partition, G);
    assert.equal(h.sinceOf(0), 4, 'windows from seq 5 on');
    assert.deepEqual(h.take(), [], 'nothing before the members are known');
    h.index.onDeliver(h.msg(6));
    h.answer(0, 5, [['ann', 1], ['bob', 1], ['cat', 2], ...Array.from({ length: 2500 }, (_, i): [string, number] => [`off${i}`, 1])], 1000);
    assert.deepEqual(h.take(), ['ann/d1:6', 'ann/d2:5', 'ann/d2:6', 'bob/d1:5', 'bob/d1:6']);
    assert.equal(h.index.stats().groups, 1);
    assert.equal(h.index.stats().held, 0);
  });

  test('changes apply in seq order: a member removed gets its removal and nothing after; one added gets its addition and nothing before', () => {
    const h = harness();
    h.connect('ann'); h.connect('bob'); h.connect('new');
    h.index.onDeliver(h.msg(3));
    h.answer(0, 3, [['ann', 1], ['bob', 1]]);
    assert.deepEqual(h.take(), ['ann/d1:3', 'bob/d1:3']);
    h.index.onDeliver(h.msg(4, { left: ['bob'] }));
    assert.deepEqual(h.take(), ['ann/d1:4', 'bob/d1:4'], 'the removal goes to the removed member too');
    h.index.onDeliver(h.msg(5));
    assert.deepEqual(h.take(), ['ann/d1:5']);
    h.index.onDeliver(h.msg(6, { joined: ['new', 'bob'] }));
    assert.deepEqual(h.take(), ['ann/d1:6', 'bob/d1:6', 'new/d1:6']);
    h.index.onDeliver(h.msg(7));
    assert.deepEqual(h.take(), ['ann/d1:7', 'bob/d1:7', 'new/d1:7']);
    // A late repeat of seq 5: by the windows, not to the newcomer, nor to bob (its earlier stay is forgotten: it syncs).
    h.index.onDeliver(h.msg(5));
    assert.deepEqual(h.take(), ['ann/d1:5']);
    h.index.onDeliver(h.msg(8, { ended: true }));
    assert.deepEqual(h.take(), ['ann/d1:8', 'bob/d1:8', 'new/d1:8'], 'the dismissal goes to every member');
    h.index.onDeliver(h.msg(9));
    assert.deepEqual(h.take(), [], 'nothing after');
  });

  test('a seq that comes late is waited for: what follows it is held, then delivered in order by the membership it changed', () => {
    const h = harness({ gapHoldMs: 5000 });
    h.connect('ann'); h.connect('bob');
    h.index.onDeliver(h.msg(2));
    h.answer(0, 2, [['ann', 1], ['bob', 1]]);
    h.take();
    // The group service's removal of bob (seq 3) is published after the message service's seq 4.
    h.index.onDeliver(h.msg(4));
    assert.deepEqual(h.take(), [], 'held behind the gap');
    h.index.onDeliver(h.msg(3, { left: ['bob'] }));
    assert.deepEqual(h.take(), ['ann/d1:3', 'ann/d1:4', 'bob/d1:3'], 'bob gets its removal, not seq 4');
    assert.equal(h.asked.length, 1, 'no second load');
  });

  test('a gap that does not fill: the members are loaded again from what was known, and what waited goes by them', async () => {
    const h = harness({ gapHoldMs: 50 });
    h.connect('ann'); h.connect('bob'); h.connect('cat');
    h.index.onDeliver(h.msg(2));
    h.answer(0, 2, [['ann', 1], ['bob', 1]]);
    h.take();
    h.index.onDeliver(h.msg(5));
    h.index.onDeliver(h.msg(6));
    await sleep(150);
    assert.equal(h.asked.length, 2, 'loaded again');
    assert.equal(h.sinceOf(1), 2);
    // Meanwhile (3) bob was removed and (4) cat added; the answer says so.
    h.answer(1, 6, [['ann', 1], ['bob', 1, 3], ['cat', 4]]);
    assert.deepEqual(h.take(), ['ann/d1:5', 'ann/d1:6', 'cat/d1:5', 'cat/d1:6']);
    assert.equal(h.index.stats().held, 0);
  });

  test('a load that fails or is not answered is asked again; one answered after its time is ignored', async () => {
    const h = harness({ loadTimeoutMs: 300 });
    h.connect('ann');
    h.index.onDeliver(h.msg(1, { joined: ['ann'] }));
    h.index.onMembers(create(GroupMembersSchema, { requestId: h.asked[0]!.origin!.connId, conversationId: G, done: true, error: 'the store did not answer' }));
    await sleep(1200); // asked again after 1 s
    assert.equal(h.asked.length, 2);
    await sleep(500); // not answered within 300 ms: asked again after 2 s more
    h.answer(1, 1, [['ann', 1]]); // too late: ignored
    assert.deepEqual(h.take(), []);
    for (const start = Date.now(); h.asked.length < 3 && Date.now() - start < 5000;) await sleep(5);
    assert.equal(h.asked.length, 3);
    h.answer(2, 1, [['ann', 1]]);
    assert.deepEqual(h.take(), ['ann/d1:1']);
  });

  test('users coming and going are found in the groups kept; groups past the byte bound are dropped least recently used first', () => {
    const h = harness({ maxBytes: 2600 });
    h.index.onDeliver(h.msg(1));
    h.answer(0, 1, [['ann', 1], ['bob', 1]]);
    const ann = h.connect('ann');
    h.index.onDeliver(h.msg(2));
    assert.deepEqual(h.take(), ['ann/d1:2'], 'ann came after the load');
    h.table.remove(ann);
    h.index.onDeliver(h.msg(3));
    assert.deepEqual(h.take(), []);
    // Another group of 20 members: over 2,600 bytes together, the older goes.
    h.index.onDeliver(create(GroupDeliverSchema, { conversationId: 'g:other', seq: 1n, frame: new Uint8Array([1]) }));
    h.index.onMembers(create(GroupMembersSchema, {
      requestId: h.asked[1]!.origin!.connId, conversationId: 'g:other', lastSeq: 1n, done: true,
      windows: Array.from({ length: 20 }, (_, i) => ({ userId: `m${i}`, joinedSeq: 1n })),
    }));
    assert.equal(h.index.stats().groups, 1);
    h.index.onDeliver(h.msg(4));
    assert.equal(h.asked.length, 3, 'the dropped group is loaded again on its next message');
  });
});
