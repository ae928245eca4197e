// Group membership under interleaved, pipelined writes, as a property
// (fast-check) on a cluster of 2 gateways and 2 logic nodes (real Redis and
// PostgreSQL, targeted routing).
//
// Each run: the owner makes a group (with an admin, a second admin "bea" who
// is also in the pool, and a random part of the pool), then three connections
// — the owner on gw-1, the admin on gw-2, bea on gw-1 — issue a random
// sequence of sends, adds and removes of the pool's users, pipelined (nothing
// waits for a reply; runs of frames go out in one socket write, so they reach
// logic together). Every pool user stays connected (half on each gateway),
// and so does a second device of the owner; all record their pushes.
//
// The owner's synced timeline is the truth; replaying its membership events
// gives every user's membership intervals (from the add event to the removal
// event, inclusive). Checked against it:
// - the timeline: seqs 1..N, each entry made by exactly one request that was
//   answered as having made it (a SendAck with that seq, a GroupResult);
// - every answer as the group's rules give it at the moment the request was
//   applied: a request is applied after the earlier writes of its connection
//   and before the later ones, so a refusal (NOT_MEMBER, NOT_ADMIN) or a no-op
//   must match the state at some point of that window, and an entry the state
//   just before it (a send only by a member, an add names exactly the users who
//   were not members, …); a GroupResult lists the members as they were;
// - pushes, deduplicated by seq as a client does: each device gets exactly the
//   entries inside its user's intervals (its own sends excepted), in seq order;
// - a sync by each device (paged): exactly its user's intervals (a rejoined
//   member also gets what was stored during its earlier memberships), or FORBIDDEN
//   for a user who never was a member.
// The same property runs again on large groups (210 offline members more):
// their messages go once per gateway, which keeps the membership itself
// (src/gateway/groups.ts).
// A failure reports fast-check's seed and the operations; LONGLINK_FUZZ_SEED
// replays it, LONGLINK_FUZZ_SCALE scales the number of runs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RawClient } from '../helpers/raw.js';
import { startTestCluster, type TestCluster } from './helpers.js';
import { requestToken } from '../../src/client/index.js';
import {
  GroupRole, encodeFrame, errorName, lengthPrefixed, makeFrame, messageFromWire, roleFromWire,
  type ChatMessage, type Frame, type FrameBodyInit, type Group, type GroupRoleName,
} from '../../src/protocol/index.js';

const OWNER = 'owner';
const ADMIN = 'admin';
/** The users the operations add and remove; bea starts as an admin and also issues requests. */
const POOL = ['bea', 'cal', 'dan', 'eve'] as const;
const REPLY_MS = 20_000;
/** Members that make a group large (more than CHANGE_FANOUT_MAX, src/engines/store.ts). */
const LARGE = 210;
const SEED = Number(process.env.LONGLINK_FUZZ_SEED ?? 7_654_321);
const RUNS = Math.max(1, Math.round(6 * Number(process.env.LONGLINK_FUZZ_SCALE ?? 1)));

type Kind = 'send' | 'add' | 'remove';
interface Op {
  /** The issuing connection: 0 the owner, 1 the admin, 2 bea. */
  by: 0 | 1 | 2;
  kind: Kind;
  users: string[];
  /** After queuing this frame: queue more for the same write, write everything queued, or write and pause (ms). */
  then: 'more' | 'write' | number;
}

interface Device {
  name: string;
  user: string;
  device: string;
  gateway: 1 | 2;
  c: RawClient;
}

type Roles = Map<string, GroupRoleName>;

/** What a request got, as far as the timeline is concerned. */
type Observed =
  | { kind: 'entry'; seq: number; members?: Roles }
  | { kind: 'noop'; members: Roles }
  | { kind: 'refused'; code: string };

/** What the group's rules give for a request in a state. */
type Predicted = { kind: 'entry'; users: string[] } | { kind: 'noop' } | { kind: 'refused'; code: string };

interface Issued {
  i: number;
  op: Op;
  dev: Device;
  id: number;
  /** The key its timeline entry is stored under (a send's client_msg_id, `op:` + a group request's id). */
  key: string;
  text: string;
  observed?: Observed;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const show = (v: unknown) => JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? String(x) : x instanceof Map ? Object.fromEntries(x) : x));

function rolesOf(g: Group | undefined): Roles {
  return new Map((g?.members ?? []).map((m) => [m.userId, roleFromWire(m.role) ?? 'member']));
}

function sameRoles(a: Roles, b: Roles): boolean {
  return a.size === b.size && [...a].every(([u, r]) => b.get(u) === r);
}

/** The group's rules (src/logic/groups.ts, pipeline.ts) for one request by `user` in state `s`. */
function predict(s: Roles, user: string, op: Op): Predicted {
  const role = s.get(user);
  if (op.kind === 'send') return role ? { kind: 'entry', users: [] } : { kind: 'refused', code: 'NOT_MEMBER' };
  if (!role) return { kind: 'refused', code: 'NOT_MEMBER' };
  if (role === 'member') return { kind: 'refused', code: 'NOT_ADMIN' };
  const users = [...new Set(op.users)];
  if (op.kind === 'add') {
    const added = users.filter((u) => !s.has(u));
    return added.length > 0 ? { kind: 'entry', users: added } : { kind: 'noop' };
  }
  const removed: string[] = [];
  for (const u of users) {
    const target = s.get(u);
    if (!target) continue;
    if (target === 'owner' || (target === 'admin' && role !== 'owner')) return { kind: 'refused', code: 'NOT_ADMIN' };
    removed.push(u);
  }
  return removed.length > 0 ? { kind: 'entry', users: removed } : { kind: 'noop' };
}

/** Membership after one timeline entry. */
function applyEntry(s: Roles, m: ChatMessage): void {
  const e = m.event;
  if (!e) return;
  switch (e.type) {
    case 'group_created':
      s.set(e.actor, 'owner');
      for (const u of e.userIds ?? []) s.set(u, 'member');
      return;
    case 'members_added':
      for (const u of e.userIds ?? []) s.set(u, 'member');
      return;
    case 'members_removed':
      for (const u of e.userIds ?? []) s.delete(u);
      return;
    case 'role_changed':
      for (const u of e.userIds ?? []) s.set(u, e.role!);
      return;
    default:
      assert.fail(`unexpected timeline event ${e.type} at seq ${m.seq}`);
  }
}

/** The state after each seq (states[0]: before the group) and each user's membership intervals [join, leave] (leave undefined: still in). */
function replay(timeline: readonly ChatMessage[]): { states: Roles[]; intervals: Map<string, [number, number | undefined][]> } {
  const states: Roles[] = [new Map()];
  const intervals = new Map<string, [number, number | undefined][]>();
  for (const m of timeline) {
    const before = states[m.seq - 1]!;
    const s = new Map(before);
    applyEntry(s, m);
    states.push(s);
    for (const u of new Set([...before.keys(), ...s.keys()])) {
      if (!before.has(u) && s.has(u)) intervals.set(u, [...(intervals.get(u) ?? []), [m.seq, undefined]]);
      if (before.has(u) && !s.has(u)) intervals.get(u)!.at(-1)![1] = m.seq;
    }
  }
  return { states, intervals };
}

function inside(seq: number, spans: readonly [number, number | undefined][] | undefined): boolean {
  return (spans ?? []).some(([from, to]) => seq >= from && (to === undefined || seq <= to));
}

/** What a device's pushes deliver in one conversation, deduplicated by seq as a client does, and any out-of-order arrival. */
function delivered(c: RawClient, conversationId: string): { messages: ChatMessage[]; disorder: string[] } {
  const messages: ChatMessage[] = [];
  const disorder: string[] = [];
  const seen = new Set<number>();
  for (const f of c.frames) {
    if (f.body.case !== 'push') continue;
    for (const w of f.body.value.messages) {
      const m = messageFromWire(w);
      if (m.conversationId !== conversationId || seen.has(m.seq)) continue;
      if (messages.length > 0 && m.seq < messages.at(-1)!.seq) disorder.push(`${m.seq} after ${messages.at(-1)!.seq}`);
      seen.add(m.seq);
      messages.push(m);
    }
  }
  return { messages, disorder };
}

async function request(c: RawClient, body: FrameBodyInit, requestId = ''): Promise<Frame> {
  const from = c.frames.length;
  const id = c.send(body, undefined, requestId);
  return c.next((f) => f.id === id, REPLY_MS, from);
}

/** A full sync of one conversation from a fresh device cursor, paged; or the error code it got. */
async function syncAll(c: RawClient, conversationId: string, limit: number): Promise<ChatMessage[] | string> {
  const out: ChatMessage[] = [];
  let cursors: { conversationId: string; seq: bigint }[] = [];
  for (let page = 0; page < 100; page++) {
    const reply = await request(c, { case: 'sync', value: { cursors, conversationIds: [conversationId], limit } });
    if (reply.body.case === 'error') return errorName(reply.body.value.code);
    assert.equal(reply.body.case, 'syncResult');
    if (reply.body.case !== 'syncResult') return out;
    out.push(...reply.body.value.messages.map(messageFromWire));
    cursors = reply.body.value.cursors.map((x) => ({ conversationId: x.conversationId, seq: x.seq }));
    if (!reply.body.value.hasMore) return out;
  }
  assert.fail('sync did not end within 100 pages');
}

const entryText = (m: ChatMessage) => (m.event ? `${m.event.type}(${m.event.actor}:${(m.event.userIds ?? []).join(',')})` : `${m.fromUser}/${m.fromDevice}:${m.text}`);

/** The same entry: every field a device shows. */
function assertSameEntry(got: ChatMessage, want: ChatMessage, what: string): void {
  assert.deepEqual(
    { seq: got.seq, conversationId: got.conversationId, serverMsgId: got.serverMsgId, fromUser: got.fromUser, fromDevice: got.fromDevice, clientMsgId: got.clientMsgId, text: got.text, event: got.event },
    { seq: want.seq, conversationId: want.conversationId, serverMsgId: want.serverMsgId, fromUser: want.fromUser, fromDevice: want.fromDevice, clientMsgId: want.clientMsgId, text: want.text, event: want.event },
    `${what}: seq ${want.seq}`,
  );
}

const opArb: fc.Arbitrary<Op> = fc.record({
  by: fc.constantFrom<0 | 1 | 2>(0, 1, 2),
  kind: fc.oneof(
    { arbitrary: fc.constant<Kind>('send'), weight: 5 },
    { arbitrary: fc.constant<Kind>('add'), weight: 3 },
    { arbitrary: fc.constant<Kind>('remove'), weight: 3 },
  ),
  users: fc.subarray([...POOL], { minLength: 1, maxLength: 2 }),
  then: fc.oneof(
    { arbitrary: fc.constant<'more'>('more'), weight: 4 },
    { arbitrary: fc.constant<'write'>('write'), weight: 3 },
    { arbitrary: fc.integer({ min: 2, max: 40 }), weight: 1 },
  ),
});

describe('group membership under pipelined writes from 3 connections on 2 gateways + 2 logic nodes', () => {
  let cluster: TestCluster;
  const devices: Device[] = [];
  let issuers: [Device, Device, Device];
  let runs = 0;
  /** What the runs went through (reported, and checked so the property is not vacuous). */
  const seen = { entries: 0, refused: new Map<string, number>(), noops: 0, removals: 0, rejoins: 0, multiFrameWrites: 0 };

  async function connect(name: string, user: string, device: string, gateway: 1 | 2): Promise<Device> {
    const c = await RawClient.connect(cluster.node(`gw-${gateway}`).tcpUrl!);
    const token = (await requestToken(cluster.apiUrl(), cluster.adminKey, { user_id: user, device_id: device })).token;
    // RawClient.login waits 5 s at most; a busy machine may need longer.
    const login = await request(c, { case: 'login', value: { token } });
    assert.equal(login.body.case, 'loginResult', `${name}: ${c.describe()}`);
    const d = { name, user, device, gateway, c };
    devices.push(d);
    return d;
  }

  /** Pings every device: the cluster closes a connection silent for 3 ping intervals (1 s here). */
  let keepalive: NodeJS.Timeout | undefined;

  before(async () => {
    cluster = await startTestCluster({ routing: 'targeted', shards: 8 });
    keepalive = setInterval(() => {
      for (const d of devices) if (!d.c.closed) d.c.send({ case: 'ping', value: {} });
    }, 400);
    const owner = await connect('owner/d1@gw-1', OWNER, 'd1', 1);
    const admin = await connect('admin/d1@gw-2', ADMIN, 'd1', 2);
    const bea = await connect('bea/d1@gw-1', 'bea', 'd1', 1);
    await connect('owner/d2@gw-2', OWNER, 'd2', 2);
    for (const [i, u] of POOL.entries()) if (u !== 'bea') await connect(`${u}/d1@gw-${(i % 2) + 1}`, u, 'd1', ((i % 2) + 1) as 1 | 2);
    issuers = [owner, admin, bea];
  });

  after(async () => {
    clearInterval(keepalive);
    for (const d of devices) d.c.close();
    await cluster?.stop();
  });

  /**
   * One run of the property: a new group, the operations, then every check.
   * `filler` more members (offline, never acting) make it a large group:
   * pushed once per gateway, its membership kept by the gateways.
   */
  async function scenario(initial: string[], ops: Op[], filler = 0): Promise<void> {
    const run = ++runs;
    const tag = `r${run}`;
    const [owner] = issuers;
    const crowd = Array.from({ length: filler }, (_, k) => `${tag}-filler-${k}`);
    const created = await request(owner.c, { case: 'group', value: { op: { case: 'create', value: { name: `prop ${run}`, memberIds: [ADMIN, 'bea', ...initial, ...crowd] } } } }, `${tag}-create`);
    assert.equal(created.body.case, 'groupResult', owner.c.describe());
    const groupId = (created.body.value as { group?: Group }).group!.groupId;
    const conversationId = `g:${groupId}`;
    for (const user of [ADMIN, 'bea']) {
      const r = await request(owner.c, { case: 'group', value: { op: { case: 'setRole', value: { groupId, userId: user, role: GroupRole.ADMIN } } } }, `${tag}-role-${user}`);
      assert.equal(r.body.case, 'groupResult', owner.c.describe());
    }

    // The operations, pipelined: frames queued per connection, written in runs.
    const from = new Map(issuers.map((d) => [d, d.c.frames.length]));
    const issued: Issued[] = [];
    const queued = new Map<Device, Buffer[]>();
    const write = () => {
      for (const [d, frames] of queued) {
        if (frames.length > 1) seen.multiFrameWrites++;
        d.c.sendRaw(Buffer.concat(frames));
      }
      queued.clear();
    };
    for (const [i, op] of ops.entries()) {
      const dev = issuers[op.by];
      const id = 1_000_000 + run * 1000 + i;
      const text = `${tag} message ${i}`;
      let frame: Frame;
      let key: string;
      if (op.kind === 'send') {
        key = `${tag}-m${i}`;
        frame = makeFrame(id, { case: 'send', value: { clientMsgId: key, conversationId, text } });
      } else {
        const op2 = { groupId, userIds: op.users };
        frame = makeFrame(id, { case: 'group', value: { op: op.kind === 'add' ? { case: 'add', value: op2 } : { case: 'remove', value: op2 } } });
        frame.requestId = `${tag}-op${i}`;
        key = `op:${frame.requestId}`;
      }
      issued.push({ i, op, dev, id, key, text });
      queued.set(dev, [...(queued.get(dev) ?? []), lengthPrefixed(encodeFrame(frame))]);
      if (op.then !== 'more') write();
      if (typeof op.then === 'number') await sleep(op.then);
    }
    write();

    // Every request answered: a SendAck or GroupResult, or a refusal.
    await Promise.all(issued.map(async (x) => {
      const reply = await x.dev.c.next((f) => f.id === x.id, REPLY_MS, from.get(x.dev)!);
      const b = reply.body;
      if (b.case === 'sendAck') x.observed = { kind: 'entry', seq: Number(b.value.seq) };
      else if (b.case === 'groupResult') x.observed = { kind: 'noop', members: rolesOf(b.value.group) };
      else if (b.case === 'error') x.observed = { kind: 'refused', code: errorName(b.value.code) };
      else assert.fail(`op ${x.i} (${show(x.op)}) answered with ${b.case}`);
    }));

    // The truth: the owner's timeline, seq 1..N.
    const ownerSync = await syncAll(owner.c, conversationId, 0);
    if (typeof ownerSync === 'string') assert.fail(`the owner's sync was refused: ${ownerSync}`);
    const timeline: ChatMessage[] = ownerSync;
    const N = timeline.length;
    assert.deepEqual(timeline.map((m) => m.seq), Array.from({ length: N }, (_, k) => k + 1), 'the timeline is seq 1..N');
    const setupEnd = 3;
    assert.deepEqual(timeline.slice(0, setupEnd).map((m) => m.event?.type), ['group_created', 'role_changed', 'role_changed'], 'the setup');
    const { states, intervals } = replay(timeline);
    const story = () => timeline.map((m) => `${m.seq} ${entryText(m)}`).join('\n');

    // Each entry after the setup was made by exactly one request, answered as having made it.
    const byKey = new Map<string, ChatMessage>();
    for (const m of timeline.slice(setupEnd)) {
      assert.ok(!byKey.has(m.clientMsgId), `two entries under ${m.clientMsgId}:\n${story()}`);
      byKey.set(m.clientMsgId, m);
    }
    for (const x of issued) {
      const m = byKey.get(x.key);
      byKey.delete(x.key);
      const o = x.observed!;
      if (x.op.kind === 'send') {
        if (o.kind === 'entry') {
          assert.ok(m && m.seq === o.seq, `op ${x.i}: acked with seq ${o.seq}, stored at ${m?.seq}`);
        } else assert.equal(m, undefined, `op ${x.i}: refused (${show(o)}) but stored at seq ${m?.seq}`);
        continue;
      }
      if (m) {
        assert.equal(o.kind, 'noop', `op ${x.i}: stored at seq ${m.seq} but answered ${show(o)}`);
        x.observed = { kind: 'entry', seq: m.seq, members: o.kind === 'noop' ? o.members : undefined };
      }
    }
    assert.deepEqual([...byKey.values()].map(entryText), [], 'entries no request made');

    // Every answer as the rules give it, at a moment its connection's order allows.
    for (const dev of issuers) {
      const mine = issued.filter((x) => x.dev === dev);
      const seqs = mine.flatMap((x) => (x.observed!.kind === 'entry' ? [x.observed!.seq] : []));
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), `${dev.name}: its writes are stored in the order it sent them`);
      for (const [j, x] of mine.entries()) {
        const o = x.observed!;
        const what = `op ${x.i} ${show(x.op)} by ${dev.name}, answered ${show(o)}\n${story()}`;
        if (o.kind === 'entry') {
          const m: ChatMessage = timeline[o.seq - 1]!;
          const p = predict(states[o.seq - 1]!, dev.user, x.op);
          assert.equal(p.kind, 'entry', `${what}\nbut the rules say ${show(p)} just before seq ${o.seq}`);
          if (x.op.kind === 'send') {
            assert.deepEqual([m.event, m.fromUser, m.fromDevice, m.text], [undefined, dev.user, dev.device, x.text], what);
          } else {
            assert.equal(m.event?.type, x.op.kind === 'add' ? 'members_added' : 'members_removed', what);
            assert.equal(m.event?.actor, dev.user, what);
            assert.deepEqual([...(m.event?.userIds ?? [])].sort(), [...(p.kind === 'entry' ? p.users : [])].sort(), `${what}: the users it changed`);
            assert.ok(o.members && sameRoles(o.members, states[o.seq]!), `${what}: the GroupResult lists ${show(o.members)}, the group then was ${show(states[o.seq])}`);
          }
          continue;
        }
        // Not in the timeline: applied after the connection's previous entry and before its next one.
        const lo = mine.slice(0, j).reduce((a, y) => (y.observed!.kind === 'entry' ? Math.max(a, y.observed!.seq) : a), setupEnd);
        const hi = mine.slice(j + 1).find((y) => y.observed!.kind === 'entry')?.observed;
        const end = hi?.kind === 'entry' ? hi.seq - 1 : N;
        let fits = false;
        for (let p = lo; p <= end && !fits; p++) {
          const want = predict(states[p]!, dev.user, x.op);
          fits = o.kind === 'refused' ? want.kind === 'refused' && want.code === o.code : want.kind === 'noop' && sameRoles(o.members, states[p]!);
        }
        assert.ok(fits, `${what}\nmatches the rules at no moment between seq ${lo} and ${end}`);
      }
    }

    for (const x of issued) {
      const o = x.observed!;
      if (o.kind === 'entry') seen.entries++;
      else if (o.kind === 'noop') seen.noops++;
      else seen.refused.set(`${x.op.kind} ${o.code}`, (seen.refused.get(`${x.op.kind} ${o.code}`) ?? 0) + 1);
    }
    seen.removals += timeline.filter((m) => m.event?.type === 'members_removed').length;
    seen.rejoins += [...intervals.values()].filter((spans) => spans.length > 1).length;

    // Pushes: each device gets exactly the entries of its user's intervals (not its own sends), in seq order.
    const expectedPushes = (d: Device) => timeline.filter((m) => inside(m.seq, intervals.get(d.user))
      && !(m.event === undefined && m.fromUser === d.user && m.fromDevice === d.device));
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      const done = devices.every((d) => {
        const got = new Set(delivered(d.c, conversationId).messages.map((m) => m.seq));
        return expectedPushes(d).every((m) => got.has(m.seq));
      });
      if (done) break;
      await sleep(50);
    }
    await sleep(300); // anything that should not come would have by now
    for (const d of devices) {
      assert.equal(d.c.closed, false, `${d.name} was disconnected: ${d.c.describe()}`);
      const { messages, disorder } = delivered(d.c, conversationId);
      const want = expectedPushes(d);
      const spans = show(intervals.get(d.user) ?? []);
      assert.deepEqual(disorder, [], `${d.name}: pushes out of seq order`);
      assert.deepEqual(messages.map((m) => m.seq), want.map((m) => m.seq), `${d.name} (intervals ${spans}): pushed seqs\n${story()}`);
      for (const [k, m] of messages.entries()) assertSameEntry(m, want[k]!, `${d.name}: push`);
    }

    // Sync, paged, from each device's fresh cursor: every interval of the user (a rejoined member gets
    // what was stored during its earlier memberships too, never what was stored while it was out), or FORBIDDEN.
    for (const d of devices) {
      const spans = intervals.get(d.user);
      const synced = await syncAll(d.c, conversationId, 7);
      if (!spans) {
        assert.equal(synced, 'FORBIDDEN', `${d.name}, never a member: sync`);
        continue;
      }
      const want: ChatMessage[] = timeline.filter((m) => inside(m.seq, spans));
      if (typeof synced === 'string') assert.fail(`${d.name} (intervals ${show(spans)}): sync refused ${synced}`);
      assert.deepEqual(synced.map((m) => m.seq), want.map((m) => m.seq), `${d.name} (intervals ${show(spans)}): synced seqs\n${story()}`);
      for (const [k, m] of synced.entries()) assertSameEntry(m, want[k]!, `${d.name}: sync`);
    }
  }

  test('every member gets exactly the messages of its membership intervals, pushed and synced; every answer fits the rules and its connection\'s order', { timeout: 110_000 }, async (t) => {
    const others = POOL.filter((u) => u !== 'bea');
    await fc.assert(
      fc.asyncProperty(fc.subarray(others), fc.array(opArb, { minLength: 20, maxLength: 40 }), async (initial, ops) => {
        try {
          await scenario(initial, ops);
        } catch (err) {
          // What the nodes warned of meanwhile (a lease lost, a batch retried) goes with the failure.
          // fast-check reports the error's stack, which holds its message as it was made.
          if (err instanceof Error) err.stack = `${err.stack ?? err.message}\nthe nodes' last lines at info level and above:\n${cluster.warnings()}`;
          throw err;
        }
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true, includeErrorInReport: true },
    );
    assert.equal(runs, RUNS);
    t.diagnostic(`seed ${SEED}, ${RUNS} runs: ${show(seen)}`);
    // Not vacuous: the runs removed and re-added members and refused their sends, from frames written together.
    assert.ok(seen.removals > 0 && seen.rejoins > 0 && (seen.refused.get('send NOT_MEMBER') ?? 0) > 0 && seen.multiFrameWrites > 0, show(seen));
  });

  test(`the same in large groups (${LARGE} members and more: each message goes once per gateway, which keeps the membership)`, { timeout: 110_000 }, async (t) => {
    const others = POOL.filter((u) => u !== 'bea');
    const before = runs;
    Object.assign(seen, { entries: 0, refused: new Map<string, number>(), noops: 0, removals: 0, rejoins: 0, multiFrameWrites: 0 });
    await fc.assert(
      fc.asyncProperty(fc.subarray(others), fc.array(opArb, { minLength: 20, maxLength: 40 }), (initial, ops) => scenario(initial, ops, LARGE)),
      { numRuns: RUNS, seed: SEED + 1, endOnFailure: true, includeErrorInReport: true },
    );
    assert.equal(runs - before, RUNS);
    t.diagnostic(`seed ${SEED + 1}, ${RUNS} runs: ${show(seen)}`);
    // They went the large groups' way: each gateway loaded their members (once per group, or again after a gap).
    for (const gw of cluster.gateways()) {
      const text = await (await fetch(`${gw.httpUrl}/metrics`)).text();
      const loads = Number(/^longlink_gateway_large_group_loads_total (\d+)/m.exec(text)?.[1] ?? 0);
      t.diagnostic(`${gw.name}: ${loads} member loads`);
      assert.ok(loads >= RUNS, `${gw.name} loaded ${loads} large groups' members (${RUNS} groups)`);
    }
    assert.ok(seen.removals > 0 && seen.rejoins > 0 && (seen.refused.get('send NOT_MEMBER') ?? 0) > 0, show(seen));
  });
});
