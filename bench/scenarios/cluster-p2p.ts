// cluster-p2p: the p2p load across 2 gateways and 2 logic nodes on Redis
// (bus, sessions, registry) and PostgreSQL (store), against the embedded
// server in the same run.
import { machineInfo } from '../lib/machine.js';
import type { BenchResult, SystemResult } from '../lib/result.js';
import { startEmbeddedLonglink, startLonglinkCluster } from '../lib/systems.js';
import { p2pPlan } from './p2p.js';
import { goal, ledgerGoals, measure, messageFields, profileDir, ratio, withSystem, type Options } from './common.js';

export async function clusterP2p(o: Options): Promise<BenchResult> {
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
