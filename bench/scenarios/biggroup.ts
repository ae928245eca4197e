// biggroup: what one message to a large group costs Redis and the bus, as the
// group grows and the online count stays. One cluster (G gateways, one
// `longlink logic`, Redis and PostgreSQL, targeted routing); O users online
// (default 20,000; user g on gateway g % G; load processes of at most 18,000
// connections). Groups (made before anyone connects, through the store: one
// append each, the creation event and every member row in one transaction,
// as the group service writes it; the protocol adds 1,000 members a request):
//
// - the headline group: 100,000 members, every online user one of them
//   (measured once, first);
// - the compared groups: 10,000 and 100,000 members holding the same online
//   users (10,000 of them: the smaller group cannot hold more; the other
//   online users are members of neither, connected to the same gateways),
//   measured in R interleaved rounds (A B, B A, A B: a drift of the machine
//   weighs on both); the figures are the rounds' medians, the ratios those of
//   the medians.
//
// Each phase: 4 online members send (4 in flight, saturation) for D seconds.
// Around it, Redis is read: INFO commandstats (every command, Lua scripts'
// own calls included; less what Redis does by the clock, watched idle before
// the phase, kind by kind) and each stream's entries ever added (XINFO STREAM
// entries-added: the readers trim what they read, so lengths alone say
// little). Per message: Redis commands, XADDs, downlink entries (what fan-out
// writes for the gateways, and the sender's SendAck), PushAck entries (the storage service's uplink:
// the members' acks, gathered per gateway), session lookups (HGETALL: one per
// member per message, the way before large groups), and deliveries per second.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { machineInfo } from '../lib/machine.js';
import { formatNumber, progress } from '../lib/report.js';
import type { BenchResult, SystemResult } from '../lib/result.js';
import { startLonglinkCluster } from '../lib/systems.js';
import { MAX_PER_PROCESS, type LoadPlan } from '../lib/fleet.js';
import { PostgresStore } from '../../src/engines/store-postgres.js';
import { groupConversationId } from '../../src/protocol/index.js';
import {
  PAYLOAD_BYTES, connectFleet, goal, ledgerGoals, measurePhase, median, messageFields, ratio, roundOrder, seconds, withSystem, type Measured, type Options,
} from './common.js';

const SENDERS = 4;
/** How long Redis is watched idle before each phase (its clock-driven commands per second are taken out). */
const IDLE_MS = 5000;
const SHARDS = 16;
const PREFIX = 'b';
/** A phase's backlog (sends, committed entries, PushAcks) is waited for this long at most. */
const DRAIN_MS = 120_000;

/** Calls per command since Redis started; the harness's own INFO and XINFO left out. */
async function commandStats(redis: Redis): Promise<Map<string, number>> {
  const by = new Map<string, number>();
  for (const line of (await redis.info('commandstats')).split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
    if (m && m[1] !== 'info' && m[1] !== 'xinfo' && !m[1]!.startsWith('xinfo|')) by.set(m[1]!, Number(m[2]));
  }
  return by;
}

/** Entries ever added to each stream of a family (XINFO STREAM entries-added), summed. */
async function entriesAdded(redis: Redis, keys: readonly string[]): Promise<number> {
  const counts = await Promise.all(keys.map(async (key) => {
    try {
      const info = (await redis.call('XINFO', 'STREAM', key)) as unknown[];
      const i = info.indexOf('entries-added');
      return i >= 0 ? Number(info[i + 1]) : 0;
    } catch {
      return 0; // not made yet
    }
  }));
  return counts.reduce((s, n) => s + n, 0);
}

/** Entries not handled yet by the consumer groups of some streams (XINFO GROUPS: lag + pending). */
async function backlog(redis: Redis, keys: readonly string[]): Promise<number> {
  const counts = await Promise.all(keys.map(async (key) => {
    try {
      let n = 0;
      for (const g of (await redis.call('XINFO', 'GROUPS', key)) as unknown[][]) {
        for (let i = 0; i + 1 < g.length; i += 2) if (g[i] === 'lag' || g[i] === 'pending') n += Number(g[i + 1] ?? 0);
      }
      return n;
    } catch {
      return 0;
    }
  }));
  return counts.reduce((s, n) => s + n, 0);
}

interface Snapshot {
  by: Map<string, number>;
  down: number;
  acks: number;
  committed: number;
}

/** One phase's figures per message. */
interface Costs {
  messages: number;
  redis_cmds_per_msg: number;
  redis_cmds_per_msg_raw: number;
  idle_redis_cmds_per_s: number;
  xadd_per_msg: number;
  down_entries_per_msg: number;
  ack_entries_per_msg: number;
  hgetall_per_msg: number;
}

const COST_FIELDS = [
  'messages', 'redis_cmds_per_msg', 'redis_cmds_per_msg_raw', 'idle_redis_cmds_per_s', 'xadd_per_msg', 'down_entries_per_msg', 'ack_entries_per_msg', 'hgetall_per_msg',
] as const;

interface Group {
  label: string;
  size: number;
  onlineMembers: number;
  conversationId: string;
}

export async function biggroup(o: Options): Promise<BenchResult> {
  const online = o.connections ?? (o.quick ? 1000 : 20_000);
  const sizes = o.quick ? [2000, 10_000] as const : [10_000, 100_000] as const;
  const gateways = o.gateways ?? (o.quick ? 2 : 4);
  const durationS = seconds(o, 10, 4);
  const rounds = o.rounds ?? (o.quick ? 1 : 3);
  const loadProcesses = Math.max(2, Math.ceil(online / MAX_PER_PROCESS));
  if (online < SENDERS + 1) throw new Error(`biggroup needs at least ${SENDERS + 1} users online`);
  if (online > sizes[1]) throw new Error(`biggroup: ${online} online do not fit a group of ${sizes[1]}`);
  const onlineMembers = Math.min(online, sizes[0]);
  const [a, b] = sizes.map((s) => formatNumber(s));
  const labelOf = (size: number, members: number) => `${formatNumber(size)} members, ${formatNumber(members)} online`;
  const compared: Group[] = sizes.map((size) => ({ label: labelOf(size, onlineMembers), size, onlineMembers, conversationId: groupConversationId(`big-${size}`) }));
  // The headline: the larger group with every online user a member (when that differs from the compared ones).
  const headline: Group | undefined = onlineMembers < online
    ? { label: labelOf(sizes[1], online), size: sizes[1], onlineMembers: online, conversationId: groupConversationId(`big-${sizes[1]}-all`) }
    : undefined;
  const streams = {
    down: [...Array.from({ length: gateways }, (_, i) => `ll:down:gw-${i + 1}`), 'll:down:*'],
    acks: Array.from({ length: SHARDS }, (_, s) => `ll:up:storage:${s}`),
    committed: Array.from({ length: SHARDS }, (_, s) => `ll:committed:${s}`),
    sends: Array.from({ length: SHARDS }, (_, s) => `ll:up:${s}`),
  };
  const plan = (g: Group, durationMs: number): LoadPlan => ({
    mode: 'saturate', rate: 0, window: SENDERS, durationMs, pattern: { kind: 'group', group: g.conversationId.slice(2) }, senders: SENDERS,
    payloadBytes: PAYLOAD_BYTES, expectedPerMsg: g.onlineMembers - 1,
    // A message's fan-out to 20,000 connections can end seconds after its ack on a busy machine.
    settleMs: 2000,
  });

  let redisUrl = '';
  let postgresUrl = '';
  const setup: Record<string, number> = {};
  const perRound = new Map<string, { m: Measured; c: Costs }[]>();
  /** Per group: its commands per message by kind in its last phase (the clock's included), the most frequent first. */
  const byKind = new Map<string, string>();

  await withSystem(async () => {
    const cluster = await startLonglinkCluster({
      gateways, logic: 1, routing: 'targeted', transports: ['tcp'], shards: SHARDS,
      env: { LONGLINK_MAX_GROUP_MEMBERS: String(sizes[1]), LONGLINK_LOG_LEVEL: 'warn' },
    });
    redisUrl = cluster.redis.url;
    postgresUrl = cluster.postgres.url;
    return cluster;
  }, async (sys) => {
    // The groups first, through the store (one append each), with nobody online.
    const t0 = Date.now();
    const store = await PostgresStore.open({ url: postgresUrl, poolSize: 3 });
    try {
      await Promise.all([...(headline ? [headline] : []), ...compared].map(async (g, n) => {
        const owner = `${PREFIX}0`;
        const members = [
          ...Array.from({ length: g.onlineMembers - 1 }, (_, i) => `${PREFIX}${i + 1}`),
          ...Array.from({ length: g.size - g.onlineMembers }, (_, i) => `off${n}-${i}`),
        ];
        const groupId = g.conversationId.slice(2);
        await store.append([{
          conversationId: g.conversationId, kind: 'group', members: [], fromUser: owner, fromDevice: 'setup', clientMsgId: `setup-${groupId}`,
          serverMsgId: randomUUID(), text: '', sentAtMs: Date.now(),
          event: { type: 'group_created', actor: owner, name: g.label, userIds: members },
          effect: { op: 'create-group', groupId, name: g.label, owner, members },
        }]);
      }));
    } finally {
      await store.close();
    }
    setup.groups_made_s = Math.round((Date.now() - t0) / 100) / 10;
    progress(`groups made in ${setup.groups_made_s} s`);

    const redis = new Redis(redisUrl);
    const snapshot = async (): Promise<Snapshot> => {
      const [by, down, acks, committed] = await Promise.all([
        commandStats(redis), entriesAdded(redis, streams.down), entriesAdded(redis, streams.acks), entriesAdded(redis, streams.committed),
      ]);
      return { by, down, acks, committed };
    };
    /** Until the consumer groups of the send, committed and storage streams have handled everything (bounded). */
    const drained = async () => {
      for (const start = Date.now(); Date.now() - start < DRAIN_MS;) {
        if (await backlog(redis, [...streams.acks, ...streams.committed, ...streams.sends]) === 0) return;
        await new Promise((r) => setTimeout(r, 250));
      }
      throw new Error(`the consumer groups still had a backlog after ${DRAIN_MS / 1000} s`);
    };
    const t1 = Date.now();
    const fleet = await connectFleet(sys, `${formatNumber(online)} online`, online, undefined, PREFIX, loadProcesses);
    setup.connect_s = Math.round((Date.now() - t1) / 100) / 10;
    try {
      const phase = async (g: Group, label: string) => {
        // What Redis does by the clock alone (leases, registry, blocking reads, trims): watched once the last phase's work is done.
        await drained();
        await new Promise((r) => setTimeout(r, 1000));
        const idle0 = await snapshot();
        const idleStart = Date.now();
        await new Promise((r) => setTimeout(r, IDLE_MS));
        const before = await snapshot();
        const idleMs = Date.now() - idleStart;
        const phaseStart = Date.now();
        const m = await measurePhase(sys, fleet, label, plan(g, durationS * 1000));
        // The phase's work includes its PushAcks and committed entries handled after its last delivery: counted once they are.
        await drained();
        const after = await snapshot();
        const phaseMs = Date.now() - phaseStart;
        // The phase's messages: what was committed in it (nothing else is sent meanwhile).
        const messages = after.committed - before.committed;
        if (messages <= 0) throw new Error(`${label}: nothing committed`);
        let net = 0;
        let raw = 0;
        for (const [kind, v] of after.by) {
          const d = v - (before.by.get(kind) ?? 0);
          raw += d;
          net += Math.max(0, d - (((before.by.get(kind) ?? 0) - (idle0.by.get(kind) ?? 0)) / idleMs) * phaseMs);
        }
        let idle = 0;
        for (const [kind, v] of before.by) idle += v - (idle0.by.get(kind) ?? 0);
        const call = (name: string) => (after.by.get(name) ?? 0) - (before.by.get(name) ?? 0);
        const c: Costs = {
          messages,
          redis_cmds_per_msg: net / messages,
          redis_cmds_per_msg_raw: raw / messages,
          idle_redis_cmds_per_s: (idle / idleMs) * 1000,
          xadd_per_msg: call('xadd') / messages,
          down_entries_per_msg: (after.down - before.down) / messages,
          ack_entries_per_msg: (after.acks - before.acks) / messages,
          hgetall_per_msg: call('hgetall') / messages,
        };
        const kinds = [...after.by].map(([k, v]) => [k, (v - (before.by.get(k) ?? 0)) / messages] as const)
          .filter(([, v]) => v >= 0.5).sort((x, y) => y[1] - x[1]).slice(0, 10);
        byKind.set(g.label, kinds.map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', '));
        progress(`${label}: ${messages} messages, ${c.redis_cmds_per_msg.toFixed(1)} Redis commands (${c.redis_cmds_per_msg_raw.toFixed(1)} with the clock's), `
          + `${c.down_entries_per_msg.toFixed(2)} downlink entries, ${c.ack_entries_per_msg.toFixed(1)} PushAck entries, ${c.hgetall_per_msg.toFixed(2)} HGETALL per message`);
        if (!perRound.has(g.label)) perRound.set(g.label, []);
        perRound.get(g.label)!.push({ m, c });
      };
      // A 2 s warm-up per group (every gateway loads its members then; not measured). The headline goes first, whole: the
      // load processes' ledger checks every message sent so far against the current phase's online members, the most there.
      const warmUp = (g: Group) => measurePhase(sys, fleet, `${g.label} warm-up`, plan(g, 2000));
      if (headline) {
        await warmUp(headline);
        await phase(headline, headline.label);
      }
      for (const g of compared) await warmUp(g);
      for (let r = 0; r < rounds; r++) {
        for (const g of roundOrder(compared, r)) await phase(g, `${g.label}, round ${r + 1}/${rounds}`);
      }
      await fleet.close();
    } finally {
      await fleet.stop();
      redis.disconnect();
    }
  });

  const results: Record<string, SystemResult> = {};
  for (const [label, list] of perRound) {
    const last = messageFields(list.at(-1)!.m);
    const med = (f: (x: { m: Measured; c: Costs }) => number) => median(list.map(f));
    const r: SystemResult = {
      ...last,
      msgs_per_s: Math.round(med((x) => x.m.outcome.msgs_per_s)),
      p50_ms: med((x) => x.m.outcome.p50_ms),
      p99_ms: med((x) => x.m.outcome.p99_ms),
      ack_p99_ms: med((x) => x.m.outcome.ack_p99_ms),
      server_cpu_pct: Math.round(med((x) => x.m.serverCpuPct)),
      rounds: list.length,
    };
    for (const f of COST_FIELDS) r[f] = med((x) => x.c[f]);
    results[label] = r;
  }
  const [small, large] = compared.map((g) => results[g.label]!);
  /** The median over the rounds of round r's large/small ratio of a field (each round's pair ran back to back). */
  const roundRatio = (f: keyof Costs) => median(Array.from({ length: rounds }, (_, r) =>
    ratio(perRound.get(compared[1]!.label)![r]!.c[f], perRound.get(compared[0]!.label)![r]!.c[f])));
  const ratios: Record<string, number> = {
    [`${b}/${a} redis_cmds_per_msg`]: ratio(large!.redis_cmds_per_msg, small!.redis_cmds_per_msg),
    [`${b}/${a} redis_cmds_per_msg (median of the rounds' ratios)`]: roundRatio('redis_cmds_per_msg'),
    [`${b}/${a} xadd_per_msg`]: ratio(large!.xadd_per_msg, small!.xadd_per_msg),
    [`${b}/${a} down_entries_per_msg`]: ratio(large!.down_entries_per_msg, small!.down_entries_per_msg),
    [`${b}/${a} ack_entries_per_msg`]: ratio(large!.ack_entries_per_msg, small!.ack_entries_per_msg),
    [`${b}/${a} msgs_per_s`]: ratio(large!.msgs_per_s, small!.msgs_per_s),
  };
  return {
    scenario: 'biggroup',
    section: o.quick ? 'biggroup --quick' : 'biggroup',
    command: o.command,
    conditions: {
      machine: machineInfo(),
      cluster: `${gateways} gateways, 1 longlink logic, targeted routing, ${SHARDS} shards; Redis (AOF everysec), PostgreSQL (fsync on)`,
      online: `${formatNumber(online)} users online (TCP, ${loadProcesses} load processes, ${formatNumber(Math.ceil(online / loadProcesses))} connections each at most), user g on gateway g % ${gateways}, a heartbeat every 20 s`,
      groups: (headline ? `${headline.label} (every online user a member; measured once, first); ` : '')
        + `${a} and ${b} members with the same ${formatNumber(onlineMembers)} online (the other online users members of neither), ${rounds} interleaved round(s) (A B, B A, ...)`,
      made_by: 'one store append per group (its creation event and every member row in one PostgreSQL transaction, as the group service writes it), before anyone connected',
      load: `${SENDERS} online members send, ${SENDERS} messages in flight (saturation), ${durationS} s per phase, after one 2 s warm-up per group (each gateway loads its members then)`,
      measured: `Redis INFO commandstats (less the clock's: each kind's rate over ${IDLE_MS / 1000} s idle before the phase) and XINFO STREAM entries-added around each phase, up to its backlog handled, divided by the messages committed in it; the rounds' medians`,
      setup_s: setup,
      quick: o.quick,
    },
    results,
    ratios,
    goals: [
      ...ledgerGoals('every group', ...Object.values(results)),
      goal(`Redis commands per message at ${b} members <= 1.2x at ${a}`, ratios[`${b}/${a} redis_cmds_per_msg`]!, 1.2, true),
      goal(`downlink entries per message at ${b} members <= 1.2x at ${a}`, ratios[`${b}/${a} down_entries_per_msg`]!, 1.2, true),
      goal('no session lookup per member (HGETALL per message <= the gateways + 1)', Math.max(...Object.values(results).map((r) => r.hgetall_per_msg!)), gateways + 1, true),
    ],
    chart: {
      title: `One message to a group, ${formatNumber(onlineMembers)} members online: cost by group size`,
      metrics: [{ field: 'redis_cmds_per_msg', label: 'Redis commands per message' }, { field: 'down_entries_per_msg', label: 'downlink entries per message' }],
    },
    notes: [
      'msgs_per_s counts deliveries (messages x online members but the sender); p50_ms/p99_ms are per message, to the last member that got it; each a median of the rounds.',
      'redis_cmds_per_msg: the Redis commands of the phase (INFO commandstats; a Lua script\'s own calls included; not the harness\'s INFO and XINFO) '
        + 'less what Redis did by the clock (leases, registry, blocking reads, trims; idle_redis_cmds_per_s in all), kind by kind: each kind\'s idle rate, '
        + `watched ${IDLE_MS / 1000} s before the phase, times the phase's length (to its backlog handled), taken out of its count (at least 0), `
        + 'over the messages committed in it (redis_cmds_per_msg_raw: without taking the clock out). It holds the send and its ack, the committed stream, '
        + 'the fan-out (down_entries_per_msg: one GroupDeliver entry per gateway per message at most, fewer when a gateway\'s messages of one turn share an entry, '
        + 'and the SendAck to the sender\'s gateway, likewise) and the '
        + 'members\' PushAcks (ack_entries_per_msg: gathered by each gateway every 100 ms into one uplink entry per bucket of users, by user), which '
        + 'follow the flushes during a message\'s fan-out, not the members.',
      'Stream lengths alone say little here (each reader trims what it read): entries are counted as added (XINFO STREAM entries-added).',
      `hgetall_per_msg: the push group's read of the live gateways (the registry's script: one HGETALL per gateway) per push batch; the per-member way looked every member up at every message (${a} to ${b} HGETALL a message).`,
      ...[...byKind].map(([label, kinds]) => `${label}, Redis commands per message by kind in its last phase (the clock's included): ${kinds}.`),
    ],
  };
}
