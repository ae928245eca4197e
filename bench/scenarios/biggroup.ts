// biggroup: what one message to a large group costs the bus, as the group
// grows and the online count stays. One cluster (G gateways, one
// `longlink logic`, Redis and PostgreSQL, targeted routing); O users online
// (default 20,000, spread over the gateways, several load processes); groups
// of 10,000 and 100,000 members holding the same 10,000 of them (the smaller
// group cannot hold more; the other online users are members of neither,
// connected to the same gateways), and another group of 100,000 holding all
// 20,000 (measured first). Each group gets the same load (4 online members
// send, saturation); around each phase Redis is read: INFO commandstats (every command, Lua
// scripts' own calls included, less what Redis does by the clock, watched
// idle before the phase) and, per stream, entries ever added (XINFO STREAM
// entries-added: the readers trim what they read, so lengths alone say
// little). Per message: Redis commands, downlink entries (what fan-out writes
// for the gateways), uplink entries of the storage service (the members'
// PushAcks, gathered per gateway), session lookups (HGETALL: one per member
// per message, the way before large groups), and the deliveries per second.
import { Redis } from 'ioredis';
import { machineInfo } from '../lib/machine.js';
import { formatNumber, progress } from '../lib/report.js';
import type { BenchResult, SystemResult } from '../lib/result.js';
import { startLonglinkCluster } from '../lib/systems.js';
import { createGroup } from '../lib/longlink-setup.js';
import type { LoadPlan } from '../lib/fleet.js';
import { MAX_PER_PROCESS } from '../lib/fleet.js';
import { PAYLOAD_BYTES, connectFleet, goal, ledgerGoals, measurePhase, messageFields, ratio, seconds, withSystem, type Options } from './common.js';

const SENDERS = 4;
/** How long Redis is watched idle before each phase (its clock-driven commands per second are taken out). */
const IDLE_MS = 10_000;
const SHARDS = 16;
const PREFIX = 'b';

/** Calls per command since Redis started, and their sum. */
async function commandStats(redis: Redis): Promise<{ total: number; by: Map<string, number> }> {
  const by = new Map<string, number>();
  let total = 0;
  for (const line of (await redis.info('commandstats')).split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
    if (!m) continue;
    by.set(m[1]!, Number(m[2]));
    // The harness's own reads (INFO, XINFO and its subcommands) are not the system's.
    if (!harness(m[1]!)) total += Number(m[2]);
  }
  return { total, by };
}

/** Commands the harness itself sends (INFO, XINFO|STREAM, XINFO|GROUPS). */
const harness = (kind: string): boolean => kind === 'info' || kind === 'xinfo' || kind.startsWith('xinfo|');

/**
 * Commands of a phase less what Redis does by the clock: per kind, the
 * phase's count less the idle rate of that kind times the phase's length
 * (at least 0), summed. A kind the load makes more of (a blocking read that
 * returns sooner) counts its extra calls.
 */
function netCommands(before: Map<string, number>, after: Map<string, number>, idle0: Map<string, number>, idle1: Map<string, number>, idleMs: number, phaseMs: number): number {
  let net = 0;
  for (const [kind, v] of after) {
    if (harness(kind)) continue;
    const idleRate = ((idle1.get(kind) ?? 0) - (idle0.get(kind) ?? 0)) / idleMs;
    net += Math.max(0, v - (before.get(kind) ?? 0) - idleRate * phaseMs);
  }
  return net;
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
      const groups = (await redis.call('XINFO', 'GROUPS', key)) as unknown[][];
      let n = 0;
      for (const g of groups) {
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
  commands: number;
  by: Map<string, number>;
  down: number;
  acks: number;
  committed: number;
  sends: number;
}

export async function biggroup(o: Options): Promise<BenchResult> {
  const online = o.connections ?? (o.quick ? 1000 : 20_000);
  const sizes = o.quick ? [2000, 10_000] : [10_000, 100_000];
  const gateways = o.gateways ?? (o.quick ? 2 : 4);
  const durationS = seconds(o, 30, 4);
  // The compared groups have the same members online (the smaller group cannot hold more); the other users online are
  // connected to the same gateways, members of neither. Then the larger group once more with every online user a member.
  const onlineMembers = Math.min(online, sizes[0]!);
  const runs: { size: number; onlineMembers: number }[] = sizes.map((size) => ({ size, onlineMembers }));
  // (First: the fleet's ledger expects each message of the run at as many members as this phase's, the most.)
  if (onlineMembers < online && online <= sizes[1]!) runs.unshift({ size: sizes[1]!, onlineMembers: online });
  const compared = runs.filter((r) => r.onlineMembers === onlineMembers);
  const labelOf = (r: { size: number; onlineMembers: number }) => `${formatNumber(r.size)} members, ${formatNumber(r.onlineMembers)} online`;
  const streams = {
    down: [...Array.from({ length: gateways }, (_, i) => `ll:down:gw-${i + 1}`), 'll:down:*'],
    acks: Array.from({ length: SHARDS }, (_, s) => `ll:up:storage:${s}`),
    committed: Array.from({ length: SHARDS }, (_, s) => `ll:committed:${s}`),
    sends: Array.from({ length: SHARDS }, (_, s) => `ll:up:${s}`),
  };
  const plan = (groupId: string, durationMs: number, members: number): LoadPlan => ({
    mode: 'saturate', rate: 0, window: SENDERS, durationMs, pattern: { kind: 'group', group: groupId }, senders: SENDERS,
    payloadBytes: PAYLOAD_BYTES, expectedPerMsg: members - 1,
    // A message's fan-out to 20,000 connections can end seconds after its ack on a busy machine.
    settleMs: 2000,
  });
  const results: Record<string, SystemResult> = {};
  const setupSeconds: Record<string, number> = {};
  /** Per run: the commands of its phase by kind, per message (not net of the clock), the most frequent first. */
  const byKind: string[] = [];

  let redisUrl = '';
  await withSystem(async () => {
    const cluster = await startLonglinkCluster({
      gateways, logic: 1, routing: 'targeted', transports: ['tcp'], shards: SHARDS,
      env: { LONGLINK_MAX_GROUP_MEMBERS: String(Math.max(...sizes) + 1), LONGLINK_LOG_LEVEL: 'warn' },
    });
    redisUrl = cluster.redis.url;
    return cluster;
  }, async (sys) => {
    const redis = new Redis(redisUrl);
    const snapshot = async (): Promise<Snapshot> => {
      const { total, by } = await commandStats(redis);
      const [down, acks, committed, sends] = await Promise.all([
        entriesAdded(redis, streams.down), entriesAdded(redis, streams.acks), entriesAdded(redis, streams.committed), entriesAdded(redis, streams.sends),
      ]);
      return { commands: total, by, down, acks, committed, sends };
    };
    /** Until the consumer groups of the send, committed and storage streams have handled everything (3 minutes at most). */
    const drained = async () => {
      for (const start = Date.now(); Date.now() - start < 180_000;) {
        if (await backlog(redis, [...streams.acks, ...streams.committed, ...streams.sends]) === 0) return;
        await new Promise((r) => setTimeout(r, 250));
      }
      progress('the consumer groups still had a backlog after 3 minutes', true);
    };
    // The groups first, with nobody online: each of their membership changes (an add per 1,000 members) would go to
    // every online member, which is not what is measured.
    const groupIds: string[] = [];
    for (const [n, run] of runs.entries()) {
      const t0 = Date.now();
      const members = [
        ...Array.from({ length: run.onlineMembers }, (_, i) => `${PREFIX}${i}`),
        ...Array.from({ length: run.size - run.onlineMembers }, (_, i) => `off${n}-${i}`),
      ];
      progress(`${labelOf(run)}: making the group`);
      groupIds.push(await createGroup(sys.setupUrl!, sys.tokenSecret!, `${PREFIX}0`, members, `big ${run.size}`, 300_000));
      setupSeconds[labelOf(run)] = Math.round((Date.now() - t0) / 1000);
    }
    // Users b0 … b{online-1}, user g on gateway g % G; several load processes (one holds at most ~15,000).
    const fleet = await connectFleet(sys, `${formatNumber(online)} online`, online, undefined, PREFIX, Math.max(2, Math.ceil(online / (MAX_PER_PROCESS / 2))));
    try {
      for (const [n, run] of runs.entries()) {
        const label = labelOf(run);
        const groupId = groupIds[n]!;
        // Warm-up: every gateway loads the group's members once (not measured).
        await measurePhase(sys, fleet, `${label} warm-up`, plan(groupId, 2000, run.onlineMembers));
        // What Redis does by the clock alone (leases, registry, blocking reads, trims), taken out of the phase's count:
        // watched once the warm-up's work is done.
        await drained();
        await new Promise((r) => setTimeout(r, 1000));
        const idle0 = await snapshot();
        const idleStart = Date.now();
        await new Promise((r) => setTimeout(r, IDLE_MS));
        const idle1 = await snapshot();
        const idleMs = Date.now() - idleStart;
        const idlePerMs = (idle1.commands - idle0.commands) / idleMs;
        const before = await snapshot();
        const phaseStart = Date.now();
        const m = await measurePhase(sys, fleet, label, plan(groupId, durationS * 1000, run.onlineMembers));
        // The phase's work includes its PushAcks and committed entries handled after its last delivery: counted once they are.
        await drained();
        const after = await snapshot();
        const phaseMs = Date.now() - phaseStart;
        // The phase's messages: what was committed in it (nothing else is sent meanwhile).
        const messages = (after.committed - before.committed) || 1;
        const per = (a: number, b: number) => (a - b) / messages;
        const call = (name: string) => (after.by.get(name) ?? 0) - (before.by.get(name) ?? 0);
        results[label] = {
          ...messageFields(m),
          messages,
          redis_cmds_per_msg: netCommands(before.by, after.by, idle0.by, idle1.by, idleMs, phaseMs) / messages,
          redis_cmds_per_msg_raw: per(after.commands, before.commands),
          idle_redis_cmds_per_s: idlePerMs * 1000,
          xadd_per_msg: call('xadd') / messages,
          down_entries_per_msg: per(after.down, before.down),
          ack_entries_per_msg: per(after.acks, before.acks),
          hgetall_per_msg: call('hgetall') / messages,
        };
        const kinds = [...after.by].map(([k, v]) => [k, (v - (before.by.get(k) ?? 0)) / messages] as const)
          .filter(([k, v]) => v >= 0.5 && !harness(k)).sort((x, y) => y[1] - x[1]).slice(0, 10);
        byKind.push(`${label}, Redis commands per message by kind (the phase's, the clock's included): ${kinds.map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}.`);
        progress(`${label}: ${results[label]!.redis_cmds_per_msg!.toFixed(1)} Redis commands, ${results[label]!.down_entries_per_msg!.toFixed(2)} downlink entries, `
          + `${results[label]!.ack_entries_per_msg!.toFixed(0)} PushAck entries, ${results[label]!.hgetall_per_msg!.toFixed(1)} HGETALL per message`);
      }
      await fleet.close();
    } finally {
      await fleet.stop();
      redis.disconnect();
    }
  });

  const [small, large] = compared.map((r) => results[labelOf(r)]!);
  const ratios = {
    'large/small redis_cmds_per_msg': ratio(large!.redis_cmds_per_msg, small!.redis_cmds_per_msg),
    'large/small down_entries_per_msg': ratio(large!.down_entries_per_msg, small!.down_entries_per_msg),
    'large/small msgs_per_s': ratio(large!.msgs_per_s, small!.msgs_per_s),
  };
  const [a, b] = sizes.map((s) => formatNumber(s));
  return {
    scenario: 'biggroup',
    section: o.quick ? 'biggroup --quick' : 'biggroup',
    command: o.command,
    conditions: {
      machine: machineInfo(),
      cluster: `${gateways} gateways, 1 longlink logic, targeted routing, ${SHARDS} shards; Redis 7 (AOF everysec), PostgreSQL (fsync on)`,
      online: `${formatNumber(online)} users online (TCP, ${Math.max(2, Math.ceil(online / (MAX_PER_PROCESS / 2)))} load processes), user g on gateway g % ${gateways}`,
      groups: `${a} and ${b} members, ${formatNumber(onlineMembers)} of them online (the same users); the other online users are members of neither`
        + (runs.length > 2 ? `; and (measured first) another ${b}-member group with all ${formatNumber(online)} online users members` : ''),
      load: `${SENDERS} online members send, ${SENDERS} messages in flight (saturation), ${durationS} s per group after a 2 s warm-up`,
      setup_s: setupSeconds,
      measured: 'Redis INFO commandstats and XINFO STREAM entries-added around each phase, divided by the messages committed in it',
      quick: o.quick,
    },
    results,
    ratios,
    goals: [
      ...ledgerGoals('every group', ...Object.values(results)),
      goal(`Redis commands per message at ${b} members <= 1.2x at ${a}`, ratios['large/small redis_cmds_per_msg'], 1.2, true),
      goal(`downlink entries per message at ${b} members <= 1.2x at ${a}`, ratios['large/small down_entries_per_msg'], 1.2, true),
      goal('no session lookup per member (HGETALL per message < 1)', Math.max(...Object.values(results).map((r) => r.hgetall_per_msg!)), 1, true),
    ],
    chart: {
      title: `One message to a group, ${formatNumber(onlineMembers)} members online: cost by group size`,
      metrics: [{ field: 'redis_cmds_per_msg', label: 'Redis commands per message' }, { field: 'down_entries_per_msg', label: 'downlink entries per message' }],
    },
    notes: [
      'msgs_per_s counts deliveries (messages x online members); p50_ms/p99_ms are per message, to the last member that got it.',
      'redis_cmds_per_msg: the Redis commands of the phase (INFO commandstats; a Lua script\'s own calls included; not the harness\'s INFO and XINFO) '
        + 'less what Redis did by the clock (leases, registry, blocking reads, trims; idle_redis_cmds_per_s in all), kind by kind: each kind\'s idle rate, '
        + `watched ${IDLE_MS / 1000} s before the phase, times the phase's length (to its backlog handled), taken out of its count (at least 0), `
        + 'over the messages committed in it (redis_cmds_per_msg_raw: without taking the clock out). It holds the send and its ack, the committed stream, '
        + 'the fan-out (down_entries_per_msg: one entry per gateway per message at most, fewer when a gateway\'s messages of one turn share an entry) and the '
        + 'members\' PushAcks (ack_entries_per_msg: gathered by each gateway every 100 ms into one uplink entry per bucket of users, by user).',
      'Stream lengths alone say little here (each reader trims what it read): entries are counted as added (XINFO STREAM entries-added).',
      'hgetall_per_msg: session lookups; the per-member way looked every member up at every message (one HGETALL each).',
      ...byKind,
    ],
  };
}
