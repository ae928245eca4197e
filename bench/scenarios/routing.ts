// routing: the same 1:1 load on a cluster of G gateways (2 logic nodes,
// Redis bus, PostgreSQL store), once with broadcast downlink (one stream
// every gateway reads, each keeps what it holds) and once targeted (the
// session registry names the gateway; each reads only its own stream).
// Measures throughput and how many downlink bus entries gateways read per
// delivered message.
import { machineInfo } from '../lib/machine.js';
import type { BenchResult, SystemResult } from '../lib/result.js';
import { startLonglinkCluster } from '../lib/systems.js';
import { p2pPlan } from './p2p.js';
import { goal, ledgerGoals, measure, messageFields, profileDir, ratio, withSystem, type Options } from './common.js';

export async function routing(o: Options): Promise<BenchResult> {
  const gateways = o.gateways ?? 4;
  const users = o.connections ?? (o.quick ? 1000 : 2000);
  const plan = p2pPlan(o, users);
  const results: Record<string, SystemResult> = {};
  for (const mode of ['broadcast', 'targeted'] as const) {
    results[`longlink-${mode}`] = await withSystem(
      () => startLonglinkCluster({ gateways, logic: 2, routing: mode, transports: ['tcp'] }),
      async (sys) => {
        const m = await measure(sys, 'longlink', users, plan, { profile: profileDir(o, `routing/${sys.name}`) });
        const reports = await sys.report();
        const gatewayNames = new Set(sys.holders.map((h) => h.name));
        const gw = reports.filter((r) => gatewayNames.has(r.name));
        const downRead = gw.reduce((s, r) => s + (r.bus?.downRead ?? 0), 0);
        const downMessagesRead = gw.reduce((s, r) => s + (r.bus?.downMessagesRead ?? 0), 0);
        const downPublished = reports.reduce((s, r) => s + (r.bus?.downPublished ?? 0), 0);
        return {
          ...messageFields(m),
          // Over the whole run (warm-up included), like the delivered count it is divided by.
          bus_reads_per_delivery: downRead / m.outcome.delivered,
          bus_msgs_read_per_delivery: downMessagesRead / m.outcome.delivered,
          bus_writes_per_delivery: downPublished / m.outcome.delivered,
        };
      },
    );
  }
  const b = results['longlink-broadcast']!;
  const t = results['longlink-targeted']!;
  const ratios = {
    'targeted/broadcast msgs_per_s': ratio(t.msgs_per_s, b.msgs_per_s),
    'targeted/broadcast bus_reads_per_delivery': ratio(t.bus_reads_per_delivery, b.bus_reads_per_delivery),
    'targeted/broadcast bus_msgs_read_per_delivery': ratio(t.bus_msgs_read_per_delivery, b.bus_msgs_read_per_delivery),
  };
  const goals = [
    ...ledgerGoals('both modes', b, t),
    goal('targeted bus reads per delivery <= ~1', t.bus_reads_per_delivery ?? NaN, 1.1, true),
  ];
  if (gateways >= 8) goals.push(goal('targeted throughput >= 2x broadcast at 8 gateways', ratios['targeted/broadcast msgs_per_s'], 2));
  return {
    scenario: 'routing',
    section: `routing --gateways ${gateways}`,
    command: o.command,
    conditions: {
      machine: machineInfo(), gateways, logic_nodes: 2, users, transport: 'tcp', peers_per_user: 4,
      mode: o.rate ? `offered rate ${o.rate} msg/s, open loop` : `saturation, ${plan.window} messages in flight`,
      duration_s: plan.durationMs / 1000,
      engines: 'Redis 7 bus/sessions/registry (AOF everysec), PostgreSQL store (fsync on), 16 uplink shards',
      quick: o.quick,
    },
    results,
    ratios,
    goals,
    chart: {
      title: `Downlink routing with ${gateways} gateways`,
      metrics: [
        { field: 'msgs_per_s', label: 'delivered msg/s' },
        { field: 'bus_reads_per_delivery', label: 'bus entries read / delivery' },
        { field: 'bus_msgs_read_per_delivery', label: 'bus messages decoded / delivery' },
      ],
    },
    notes: [
      'bus_reads_per_delivery: downlink stream entries read by all gateways divided by messages delivered; an entry carries everything one logic turn published for a gateway (pushes, acks), so it is below 1 under load.',
      'bus_msgs_read_per_delivery: downlink messages those entries carried (pushes, acks, presence), per delivery: with broadcast every gateway decodes every push.',
      `All ${gateways + 2} server processes, Redis, PostgreSQL and the load generators share this machine's 2 cores.`,
    ],
  };
}
