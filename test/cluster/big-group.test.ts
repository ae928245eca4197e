// A 100,000-member group with 20,000 members online across 4 gateways, on a
// real cluster (4 gateway processes, 1 logic node, Redis, PostgreSQL),
// through real sockets: 2 load processes of 10,000 connections each
// (test/helpers/group-load.ts; user i on gateway i % 4, so 5,000 a gateway
// and no process near its 20,000 descriptors).
//
// - Every online member but the sender gets each of the group's messages
//   once, in order (its own ledger, kept by the load process), and the
//   sender's device gets none of its own.
// - What a message costs Redis and the bus does not depend on the members:
//   a group of 20,000 (every member online) and one of 100,000 (the same
//   20,000 online, 80,000 offline) get the same messages; Redis commands
//   per message (INFO commandstats, less what Redis does by the clock,
//   watched idle before each phase), XADDs, downlink entries, PushAck
//   entries and HGETALLs per message stay within 2x of each other (5 times
//   the members, the per-member way, would be 5 times the lookups); no
//   member is looked up per message (HGETALL less the clock's, logins' and
//   a gateway rejoin's, each counted), at most one downlink entry per gateway
//   and the sender's ack, PushAcks gathered (far fewer entries than acks).
//
// The groups are made through the fast path: one store append each (the
// group's creation event and its 20,000 or 100,000 member rows in one
// PostgreSQL transaction, as the group service writes it), straight into
// the cluster's PostgreSQL before anyone connects; the protocol's way is
// 1,000 members a request.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { startTestCluster, sleep, type TestCluster } from './helpers.js';
import { PostgresStore } from '../../src/engines/store-postgres.js';
import { ACK_BUCKETS } from '../../src/engines/bus.js';
import { ACK_FLUSH_MS } from '../../src/gateway/inbound.js';
import { groupConversationId } from '../../src/protocol/index.js';
import type { Status } from '../helpers/group-load.js';

const GATEWAYS = 4;
const ONLINE = 20_000;
const LOAD_PROCESSES = 2;
const SIZES = [20_000, 100_000] as const;
const MESSAGES = 15;
const WINDOW = 4;
const SHARDS = 8;
const IDLE_MS = 2000;
const PREFIX = 'bg';

interface Child {
  proc: ChildProcess;
  ask<T>(message: Record<string, unknown>, reply: string, timeoutMs: number): Promise<T>;
}

function startLoad(name: string): Child {
  const proc = fork(fileURLToPath(new URL('../helpers/group-load.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx', '--max-old-space-size=1024'], stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  const tail: string[] = [];
  proc.stderr?.on('data', (d: Buffer) => {
    tail.push(d.toString('utf8'));
    if (tail.length > 20) tail.shift();
  });
  return {
    proc,
    ask<T>(message: Record<string, unknown>, reply: string, timeoutMs: number): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => done(new Error(`${name}: no ${reply} within ${timeoutMs} ms`)), timeoutMs);
        const onMessage = (m: { type: string; message?: string }) => {
          if (m.type === 'error') done(new Error(`${name}: ${m.message}`));
          else if (m.type === reply) done(undefined, m as T);
        };
        const onExit = (code: number | null) => done(new Error(`${name} exited (${code}): ${tail.join('').slice(-2000)}`));
        const done = (err: Error | undefined, value?: T) => {
          clearTimeout(timer);
          proc.off('message', onMessage);
          proc.off('exit', onExit);
          if (err) reject(err);
          else resolve(value!);
        };
        proc.on('message', onMessage);
        proc.on('exit', onExit);
        proc.send(message);
      });
    },
  };
}

/** Calls per command since Redis started (INFO commandstats); the test's own INFO and XINFO left out. */
async function commandStats(redis: Redis): Promise<Map<string, number>> {
  const by = new Map<string, number>();
  for (const line of (await redis.info('commandstats')).split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
    if (m && m[1] !== 'info' && !m[1]!.startsWith('xinfo')) by.set(m[1]!, Number(m[2]));
  }
  return by;
}

/**
 * What the gateways looked up in the session registry for reasons other than a message, summed from their /metrics:
 * logins (one HGETALL each, in the login script) and a rejoin's lookups (one HGETALL a user; a gateway that missed part
 * of the cluster binds its sessions again). Both are counted apart, so a phase's HGETALLs less these are the messages'.
 */
async function gatewayLookups(urls: readonly string[]): Promise<{ logins: number; rejoins: number; rejoinLookups: number }> {
  const out = { logins: 0, rejoins: 0, rejoinLookups: 0 };
  for (const url of urls) {
    const lines = (await (await fetch(`${url}/metrics`)).text()).split('\n');
    const value = (name: string) => Number(lines.find((l) => l.startsWith(`${name} `))?.split(' ')[1] ?? 0);
    out.logins += value('longlink_logins_total{result="ok"}');
    out.rejoins += value('longlink_gateway_rejoins_total{kind="rejoin"}') + value('longlink_gateway_rejoins_total{kind="check"}');
    out.rejoinLookups += value('longlink_gateway_rejoin_lookups_total');
  }
  return out;
}

/** Entries ever added to some streams (XINFO STREAM entries-added: trimming does not lower it), summed. */
async function entriesAdded(redis: Redis, keys: readonly string[]): Promise<number> {
  let n = 0;
  for (const key of keys) {
    try {
      const info = (await redis.call('XINFO', 'STREAM', key)) as unknown[];
      n += Number(info[info.indexOf('entries-added') + 1] ?? 0);
    } catch {
      /* not made yet */
    }
  }
  return n;
}

/** Entries some streams' consumer groups have not handled yet (lag + pending). */
async function backlog(redis: Redis, keys: readonly string[]): Promise<number> {
  let n = 0;
  for (const key of keys) {
    try {
      for (const g of (await redis.call('XINFO', 'GROUPS', key)) as unknown[][]) {
        for (let i = 0; i + 1 < g.length; i += 2) if (g[i] === 'lag' || g[i] === 'pending') n += Number(g[i + 1] ?? 0);
      }
    } catch {
      /* not made yet */
    }
  }
  return n;
}

let cluster: TestCluster;
let redis: Redis;
const loads: Child[] = [];

before(async () => {
  cluster = await startTestCluster({
    gateways: GATEWAYS, logic: 1, routing: 'targeted', shards: SHARDS,
    // Liveness as in production (the test cluster's 1.5 s would take a gateway busy writing 5,000 pushes a message on
    // this shared machine for dead: logic then skips it, and its clients are told to sync what it missed).
    nodeTtlMs: 15_000, leaseMs: 10_000,
    env: {
      LONGLINK_MAX_GROUP_MEMBERS: String(Math.max(...SIZES)),
      // Clients ping every 20 s here; the server closes a connection silent for 3 of these.
      LONGLINK_PING_INTERVAL_MS: '25000',
      // 20,000 logins from one address, many at once.
      LONGLINK_MAX_CONNECTIONS_PER_ADDRESS: '1000000', LONGLINK_MAX_PENDING_LOGINS: '1000000',
      LONGLINK_LOG_LEVEL: 'warn',
    },
  });
  redis = new Redis(cluster.redis.url);
});

after(async () => {
  await Promise.allSettled(loads.map((l) => l.ask({ type: 'close' }, 'closed', 10_000)));
  for (const l of loads) l.proc.kill('SIGKILL');
  redis?.disconnect();
  await cluster?.stop();
});

test(`a 100,000-member group with 20,000 online over 4 gateways: each online member gets each message once, in order; Redis commands and bus entries as at 20,000 members`, { timeout: 420_000 }, async (t) => {
  const t0 = Date.now();
  const online = Array.from({ length: ONLINE }, (_, i) => `${PREFIX}${i}`);
  const owner = online[0]!; // the sender too

  // 20,000 connections: 2 load processes of 10,000, user i on gateway i % 4; they log in while the groups are made.
  const urls = cluster.gateways().map((g) => g.tcpUrl!);
  const per = ONLINE / LOAD_PROCESSES;
  for (let p = 0; p < LOAD_PROCESSES; p++) loads.push(startLoad(`load-${p + 1}`));
  const connecting = Promise.all(loads.map((l, p) => l.ask<{ connected: number; failed: number; errors: [string, number][] }>(
    { type: 'init', first: p * per, count: per, prefix: PREFIX, urls, tokenSecret: cluster.tokenSecret, sends: p === 0 }, 'connected', 180_000)));
  connecting.catch(() => undefined); // awaited below

  // The fast path: one append per group (its creation event and every member row in one transaction, as the group
  // service writes it), into the cluster's PostgreSQL. Nothing is pushed: the gateways load the members on the first message.
  const store = await PostgresStore.open({ url: cluster.postgres.url, poolSize: SIZES.length });
  let groups: { size: number; conversationId: string }[];
  try {
    groups = await Promise.all(SIZES.map(async (size) => {
      const groupId = `big-${size}`;
      const members = [...online.slice(1), ...Array.from({ length: size - ONLINE }, (_, i) => `${PREFIX}off${i}`)];
      const name = `${size} members`;
      await store.append([{
        conversationId: groupConversationId(groupId), kind: 'group', members: [], fromUser: owner, fromDevice: 'setup',
        clientMsgId: `setup-${groupId}`, serverMsgId: randomUUID(), text: '', sentAtMs: Date.now(),
        event: { type: 'group_created', actor: owner, name, userIds: members },
        effect: { op: 'create-group', groupId, name, owner, members },
      }]);
      return { size, conversationId: groupConversationId(groupId) };
    }));
    assert.deepEqual([...await store.largeGroups(groups.map((g) => g.conversationId))].sort(), groups.map((g) => g.conversationId).sort(),
      'both groups are marked large');
    for (const g of groups) assert.equal((await store.members(g.conversationId)).length, g.size, `${g.conversationId}: every member stored`);
  } finally {
    await store.close();
  }
  const madeMs = Date.now() - t0;
  const connected = await connecting;
  const connectMs = Date.now() - t0;
  assert.deepEqual(connected.map((c) => c.connected), loads.map(() => per), `every connection logged in: ${JSON.stringify(connected)}`);

  const streams = {
    down: [...cluster.gateways().map((g) => `ll:down:${g.name}`), 'll:down:*'],
    acks: Array.from({ length: SHARDS }, (_, s) => `ll:up:storage:${s}`),
    committed: Array.from({ length: SHARDS }, (_, s) => `ll:committed:${s}`),
    sends: Array.from({ length: SHARDS }, (_, s) => `ll:up:${s}`),
  };
  /** Until logic has handled every send, committed entry and PushAck (60 s at most). */
  const drained = async () => {
    const keys = [...streams.acks, ...streams.committed, ...streams.sends];
    for (const start = Date.now(); Date.now() - start < 60_000; await sleep(200)) if (await backlog(redis, keys) === 0) return;
    assert.fail('the consumer groups still had a backlog after 60 s');
  };
  /** Sends `texts` from the owner and waits until every online member has them all (or something is wrong). */
  const deliver = async (conversationId: string, texts: string[], what: string) => {
    await Promise.all(loads.map((l) => l.ask({ type: 'expect', conversationId, texts }, 'expecting', 10_000)));
    const sent = await loads[0]!.ask<{ acks: number[]; refused: string[] }>({ type: 'send', conversationId, texts, window: WINDOW }, 'sent', 60_000);
    assert.deepEqual(sent.refused, [], `${what}: every send acked`);
    for (let i = 1; i < sent.acks.length; i++) assert.ok(sent.acks[i]! > sent.acks[i - 1]!, `${what}: acks in send order`);
    let statuses: Status[] = [];
    for (const start = Date.now(); ; await sleep(250)) {
      statuses = await Promise.all(loads.map((l) => l.ask<Status>({ type: 'status', conversationId }, 'status', 10_000)));
      const behind = statuses.reduce((s, x) => s + x.behind, 0);
      if (behind === 0 || statuses.some((x) => x.wrong > 0 || x.toSender > 0)) break;
      if (Date.now() - start > 90_000) break;
    }
    const sum = (k: 'complete' | 'behind' | 'wrong' | 'toSender' | 'dropped') => statuses.reduce((s, x) => s + x[k], 0);
    assert.deepEqual({ wrong: sum('wrong'), toSender: sum('toSender'), behind: sum('behind'), dropped: sum('dropped') },
      { wrong: 0, toSender: 0, behind: 0, dropped: 0 }, `${what}: ${statuses.flatMap((s) => s.samples).join('; ')}\n${cluster.warnings()}`);
    assert.equal(sum('complete'), ONLINE - 1, `${what}: every online member but the sender has all ${texts.length}, once each, in order`);
  };

  const measured: {
    size: number; commands: number; raw: number; xadd: number; down: number; acks: number; hgetall: number; committed: number; deliveryMs: number; phaseMs: number;
    logins: number; rejoins: number; rejoinLookups: number;
  }[] = [];
  for (const g of groups) {
    const what = `${g.size.toLocaleString('en')} members`;
    // Warm-up: each gateway loads the group's membership once (not measured).
    await deliver(g.conversationId, [`warm-${g.size}`], `${what}, warm-up`);
    await drained();
    // What Redis does by the clock alone (leases, registry, blocking reads), taken out kind by kind.
    const idle0 = await commandStats(redis);
    const idleStart = Date.now();
    await sleep(IDLE_MS);
    const idle1 = await commandStats(redis);
    const idleMs = Date.now() - idleStart;
    const gatewayUrls = cluster.gateways().map((gw) => gw.httpUrl);
    const lookups0 = await gatewayLookups(gatewayUrls);
    const before = { by: idle1, down: await entriesAdded(redis, streams.down), acks: await entriesAdded(redis, streams.acks), committed: await entriesAdded(redis, streams.committed) };
    const phaseStart = Date.now();
    // The ledger starts again here: a warm-up message pushed again now would be a text not sent in this phase.
    const deliveryStart = Date.now();
    await deliver(g.conversationId, Array.from({ length: MESSAGES }, (_, i) => `m${g.size}-${i + 1}`), what);
    const deliveryMs = Date.now() - deliveryStart;
    await drained();
    // Nothing came twice meanwhile (a repeat after the last text would have been missed by the wait above).
    const again = await Promise.all(loads.map((l) => l.ask<Status>({ type: 'status', conversationId: g.conversationId }, 'status', 10_000)));
    assert.deepEqual(again.map((x) => [x.complete, x.wrong, x.toSender]).reduce((a, b) => [a[0]! + b[0]!, a[1]! + b[1]!, a[2]! + b[2]!]),
      [ONLINE - 1, 0, 0], `${what}: still every message once each, in order, once the acks were handled: ${again.flatMap((x) => x.samples).join('; ')}`);
    const phaseMs = Date.now() - phaseStart;
    const lookups1 = await gatewayLookups(gatewayUrls);
    const after = { by: await commandStats(redis), down: await entriesAdded(redis, streams.down), acks: await entriesAdded(redis, streams.acks), committed: await entriesAdded(redis, streams.committed) };
    const messages = after.committed - before.committed;
    assert.equal(messages, MESSAGES, `${what}: the phase committed its ${MESSAGES} messages and nothing else`);
    let net = 0;
    let raw = 0;
    for (const [kind, v] of after.by) {
      const d = v - (before.by.get(kind) ?? 0);
      raw += d;
      net += Math.max(0, d - (((idle1.get(kind) ?? 0) - (idle0.get(kind) ?? 0)) / idleMs) * phaseMs);
    }
    const call = (kind: string) => (after.by.get(kind) ?? 0) - (before.by.get(kind) ?? 0);
    /** Calls of `kind` less what the clock alone makes in as long (the buses read the shard map once a second each). */
    const clockless = (kind: string) => Math.max(0, call(kind) - (((idle1.get(kind) ?? 0) - (idle0.get(kind) ?? 0)) / idleMs) * phaseMs);
    measured.push({
      size: g.size, commands: net / messages, raw: raw / messages, xadd: call('xadd') / messages, down: (after.down - before.down) / messages,
      acks: (after.acks - before.acks) / messages, committed: messages, deliveryMs, phaseMs,
      // Logins and rejoins meanwhile (none, unless the loaded machine held a gateway past its registry TTL) are not the messages'.
      hgetall: (clockless('hgetall') - (lookups1.logins - lookups0.logins) - (lookups1.rejoinLookups - lookups0.rejoinLookups)) / messages,
      logins: lookups1.logins - lookups0.logins, rejoins: lookups1.rejoins - lookups0.rejoins, rejoinLookups: lookups1.rejoinLookups - lookups0.rejoinLookups,
    });
  }

  for (const m of measured) {
    t.diagnostic(`${m.size.toLocaleString('en')} members, ${ONLINE.toLocaleString('en')} online on ${GATEWAYS} gateways, ${MESSAGES} messages: `
      + `${m.commands.toFixed(1)} Redis commands per message less the clock's (${m.raw.toFixed(1)} in all), ${m.xadd.toFixed(1)} XADD, `
      + `${m.down.toFixed(2)} downlink entries, ${m.acks.toFixed(1)} PushAck entries, ${m.hgetall.toFixed(2)} HGETALL per message `
      + `(less ${m.logins} logins and ${m.rejoinLookups} users looked up by ${m.rejoins} gateway rejoins meanwhile); `
      + `${((ONLINE - 1) * MESSAGES / (m.deliveryMs / 1000)).toFixed(0)} deliveries/s; `
      + `${(m.commands * m.committed / (m.phaseMs / 1000)).toFixed(0)} Redis commands per second of the ${(m.phaseMs / 1000).toFixed(1)} s phase`);
  }
  t.diagnostic(`setup: groups made in ${madeMs} ms (one append each, side by side), ${ONLINE.toLocaleString('en')} logged in ${connectMs} ms from the start (meanwhile); test ${Math.round((Date.now() - t0) / 1000)} s`);
  const [small, big] = measured as [typeof measured[0], typeof measured[0]];
  for (const m of measured) {
    // The per-member way looked every member up at every message (20,000 HGETALL a message, online or not). Left out:
    // the clock's (the shard map's reads), logins and a gateway's rejoin meanwhile (counted on the gateways' /metrics).
    assert.ok(m.hgetall <= GATEWAYS + 1, `${m.size}: no session lookup per member (HGETALL ${m.hgetall.toFixed(2)} per message)\n${cluster.warnings()}`);
    // A GroupDeliver per gateway and the SendAck to the sender's (entries of one turn to a gateway shared).
    assert.ok(m.down <= GATEWAYS + 1, `${m.size}: at most one downlink entry per gateway per message, and the sender's ack (${m.down.toFixed(2)})`);
    // One entry per PushAck would be 19,999 a message: they go up gathered, per gateway and bucket of users.
    assert.ok(m.acks < (ONLINE - 1) / 10, `${m.size}: PushAcks gathered (${m.acks.toFixed(1)} entries per message)`);
  }
  // Five times the members, the per-member way, would be five times the lookups and entries: 100,000 HGETALLs and
  // 20,000 PushAck entries a message. Downlink entries and lookups are counted per message and stay flat.
  const flat = (what: string, a: number, b: number, slack: number) =>
    assert.ok(b <= a * 2 + slack, `${what} at 100,000 members (${b.toFixed(1)}) within 2x of 20,000 (${a.toFixed(1)})`);
  flat('downlink entries per message', small.down, big.down, 0.5);
  flat('HGETALLs per message', small.hgetall, big.hgetall, 1);
  // PushAck entries (and so XADDs and Redis commands) are clocked, not counted per member: each gateway sends up at
  // most one entry per bucket of users every ACK_FLUSH_MS. How many flushes find acks waiting depends on how the
  // phase's deliveries spread over time, which the machine's load decides (in CI, 64 entries a message in one phase
  // and 234 in the next, of the same 20,000 online members). So they are held to that ceiling, which does not
  // grow with the members, and to far below one per online member.
  for (const m of measured) {
    const ceiling = GATEWAYS * ACK_BUCKETS * (m.phaseMs / ACK_FLUSH_MS + 2);
    assert.ok(m.acks * m.committed <= ceiling,
      `${m.size}: ${Math.round(m.acks * m.committed)} PushAck entries in the ${(m.phaseMs / 1000).toFixed(1)} s phase, at most one per gateway, bucket and flush (${Math.round(ceiling)})`);
    assert.ok(m.commands < ONLINE / 10, `${m.size}: ${m.commands.toFixed(0)} Redis commands per message, far below one per online member`);
  }
});
