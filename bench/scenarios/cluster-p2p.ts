// cluster-p2p: the p2p load across 2 gateways and 2 logic nodes on Redis
// (bus, sessions, registry) and PostgreSQL (store), against the embedded
// server in the same run. With --split: the same load on the combined layout
// (2 `longlink logic`) and on the split one (auth, message ×2, group,
// storage, risk), both up for the whole run, in interleaved rounds.
import { SPLIT } from '../../dist/dev/cluster.js';
import { formatNumber } from '../lib/report.js';
import { machineInfo } from '../lib/machine.js';
import type { BenchResult, SystemResult } from '../lib/result.js';
import { startEmbeddedLonglink, startLonglinkCluster, type ClusterOptions } from '../lib/systems.js';
import { p2pPlan } from './p2p.js';
import {
  goal, interleavedRounds, ledgerGoals, measure, median, medianFields, messageFields, profileDir, ratio, seconds, withSystem,
  type Measured, type Options,
} from './common.js';

/** The split layout the benchmarks run: one process per service, the send path (and push fan-out) on 2 message processes like the combined layout's 2 logic ones. */
export const SPLIT_SERVICES = { ...SPLIT, message: 2 };

/** The two layouts of a --split run, 2 gateways each, targeted routing. */
export function layouts(transports: ('tcp' | 'ws')[]): { name: 'combined' | 'split'; options: ClusterOptions; what: string }[] {
  return [
    { name: 'combined', options: { gateways: 2, logic: 2, routing: 'targeted', transports }, what: '2 gateways + 2 `longlink logic` (every service in each)' },
    {
      name: 'split', options: { gateways: 2, logic: 0, services: SPLIT_SERVICES, routing: 'targeted', transports },
      what: `2 gateways + ${Object.entries(SPLIT_SERVICES).map(([r, n]) => `${r} ×${n}`).join(', ')}`,
    },
  ];
}


export async function clusterP2p(o: Options): Promise<BenchResult> {
  if (o.split) return clusterP2pSplit(o);
  const users = o.connections ?? 2000;
  const plan = p2pPlan(o, users);
  const results: Record<string, SystemResult> = {};
  results.longlink = messageFields(await withSystem(
    () => startLonglinkCluster({ gateways: 2, logic: 2, routing: 'targeted', transports: ['ws'] }),
    (sys) => measure(sys, 'longlink', users, plan, { profile: profileDir(o, `cluster-p2p/${sys.name}`) }),
  ));
  results['longlink-embedded'] = messageFields(await withSystem(
    () => startEmbeddedLonglink({ transports: ['ws'] }),
    (sys) => measure(sys, 'longlink', users, plan, { profile: profileDir(o, `cluster-p2p/${sys.name}`) }),
  ));
  const c = results.longlink;
  const ratios = { 'cluster/embedded msgs_per_s': ratio(c.msgs_per_s, results['longlink-embedded'].msgs_per_s) };
  return {
    scenario: 'cluster-p2p',
    section: o.rate ? `cluster-p2p --rate ${o.rate}` : 'cluster-p2p',
    command: o.command,
    conditions: {
      machine: machineInfo(), users, transport: 'websocket', peers_per_user: 4, gateways: 2, logic_nodes: 2, routing: 'targeted',
      mode: o.rate ? `offered rate ${o.rate} msg/s, open loop` : `saturation, ${plan.window} messages in flight`,
      duration_s: plan.durationMs / 1000,
      engines: 'cluster: Redis 7 (AOF everysec) + PostgreSQL 15 (fsync on); embedded: in-process bus, SQLite synchronous=FULL',
      quick: o.quick,
    },
    results,
    ratios,
    goals: [
      ...ledgerGoals('cluster', c),
      goal('cluster throughput >= 0.5x embedded', ratios['cluster/embedded msgs_per_s'], 0.5),
    ],
    chart: {
      title: `1:1 across a cluster vs embedded (${users} users)`,
      metrics: [{ field: 'msgs_per_s', label: 'delivered msg/s' }, { field: 'p99_ms', label: 'p99 latency (ms)' }],
    },
    notes: ['Every process (2 gateways, 2 logic, Redis, PostgreSQL, 2 load generators) shares this machine\'s 2 cores.'],
  };
}

async function clusterP2pSplit(o: Options): Promise<BenchResult> {
  const users = o.connections ?? 2000;
  const plan = { ...p2pPlan(o, users), durationMs: seconds(o, 8, 3) * 1000 };
  const rounds = o.rounds ?? (o.quick ? 1 : 3);
  const ls = layouts(['ws']);
  // Both clusters stay up (each with its users connected) for the whole run; the rounds alternate between them.
  const measured = await withSystem(() => startLonglinkCluster(ls[0]!.options), (combined) => withSystem(() => startLonglinkCluster(ls[1]!.options),
    (split) => interleavedRounds([['combined', combined], ['split', split]], users, plan, rounds)));
  const results: Record<string, SystemResult> = { combined: medianFields(measured.combined!), split: medianFields(measured.split!) };
  const c = results.combined!;
  const sp = results.split!;
  const paired = (f: (m: Measured) => number) => median(measured.split!.map((m, i) => ratio(f(m), f(measured.combined![i]!))));
  const ratios = {
    'split/combined msgs_per_s': ratio(sp.msgs_per_s, c.msgs_per_s),
    'split/combined p99_ms': ratio(sp.p99_ms, c.p99_ms),
    'split/combined msgs_per_s, median of the rounds\' ratios': paired((m) => m.outcome.msgs_per_s),
    'split/combined p99_ms, median of the rounds\' ratios': paired((m) => m.outcome.p99_ms),
  };
  const perRound = (name: string) => measured[name]!.map((m) => `${formatNumber(Math.round(m.outcome.msgs_per_s))} msg/s p99 ${formatNumber(m.outcome.p99_ms)} ms`).join('; ');
  return {
    scenario: 'cluster-p2p',
    section: o.rate ? `cluster-p2p --split --rate ${o.rate}` : 'cluster-p2p --split',
    command: o.command,
    conditions: {
      machine: machineInfo(), users, transport: 'websocket', peers_per_user: 4, routing: 'targeted',
      combined: ls[0]!.what, split: ls[1]!.what,
      mode: o.rate ? `offered rate ${o.rate} msg/s, open loop` : `saturation, ${plan.window} messages in flight`,
      duration_s: plan.durationMs / 1000,
      rounds: `${rounds} per layout, interleaved (combined, split, then split, combined, …), after one warm-up each; figures are the rounds' medians`,
      engines: 'each layout its own Redis 7 (AOF everysec) + PostgreSQL 15 (fsync on); both clusters up for the whole run',
      quick: o.quick,
    },
    results,
    ratios,
    goals: [...ledgerGoals('combined', c), ...ledgerGoals('split', sp)],
    chart: {
      title: `1:1 across a cluster: split vs combined logic tier (${users} users)`,
      metrics: [{ field: 'msgs_per_s', label: 'delivered msg/s' }, { field: 'p99_ms', label: 'p99 latency (ms)' }],
    },
    notes: [
      `Rounds, combined: ${perRound('combined')}.`,
      `Rounds, split: ${perRound('split')}.`,
      'sent/acked/delivered/lost/duplicated count every round of the layout (warm-up included); msgs_per_s, latencies and server_cpu_pct are the rounds\' medians.',
      'Every process (2 clusters: 4 + 8 server processes, 2 Redis, 2 PostgreSQL; 2 load generators per layout) shares this machine\'s 2 cores; the idle cluster\'s upkeep (lease renewals, stream trims) runs during the other\'s rounds.',
    ],
  };
}
