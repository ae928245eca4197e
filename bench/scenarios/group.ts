// group: fan-out to one group whose members are all online. Longlink stores
// each message once, encodes its push once and writes the same bytes to
// every member's connection; the baseline is a raw `ws` server looping over
// the members' sockets with one prepared buffer (the floor).
import { machineInfo } from '../lib/machine.js';
import type { BenchResult, SystemResult } from '../lib/result.js';
import { startBaseline, startEmbeddedLonglink } from '../lib/systems.js';
import { createGroup } from '../lib/longlink-setup.js';
import type { LoadPlan } from '../lib/fleet.js';
import { PAYLOAD_BYTES, goal, ledgerGoals, measure, messageFields, profileDir, ratio, seconds, withSystem, type Options } from './common.js';

const SENDERS = 4;

export async function group(o: Options): Promise<BenchResult> {
  const members = o.connections ?? (o.quick ? 500 : 1000);
  const plan = (groupId: string): LoadPlan => ({
    mode: o.rate ? 'rate' : 'saturate',
    rate: o.rate ?? 0,
    window: SENDERS * 4,
    durationMs: seconds(o, 10, 3) * 1000,
    pattern: { kind: 'group', group: groupId },
    senders: SENDERS,
    payloadBytes: PAYLOAD_BYTES,
    expectedPerMsg: members - 1,
  });
  const results: Record<string, SystemResult> = {};
  const users = Array.from({ length: members }, (_, i) => `u${i}`);

  results.longlink = messageFields(await withSystem(
    () => startEmbeddedLonglink({ transports: ['ws'] }),
    async (sys) => {
      const groupId = await createGroup(sys.setupUrl!, sys.tokenSecret!, 'u0', users);
      return measure(sys, 'longlink', members, plan(groupId), { profile: profileDir(o, `group/${sys.name}`) });
    },
  ));
  results['raw-ws'] = messageFields(await withSystem(() => startBaseline('raw-ws'), (sys) => (
    measure(sys, 'raw-ws', members, plan('room'), { setup: (fleet) => fleet.join('room'), profile: profileDir(o, `group/${sys.name}`) })
  )));

  const ll = results.longlink;
  const raw = results['raw-ws'];
  const ratios = {
    'longlink/raw-ws msgs_per_s': ratio(ll.msgs_per_s, raw.msgs_per_s),
    'longlink/raw-ws p99_ms': ratio(ll.p99_ms, raw.p99_ms),
  };
  return {
    scenario: 'group',
    section: o.rate ? `group --rate ${o.rate}` : 'group',
    command: o.command,
    conditions: {
      machine: machineInfo(), members, online: members, senders: SENDERS, payload_bytes: PAYLOAD_BYTES, transport: 'websocket',
      mode: o.rate ? `offered rate ${o.rate} msg/s, open loop` : `saturation, ${SENDERS * 4} messages in flight`,
      duration_s: seconds(o, 10, 3), load_processes: 2,
      longlink: 'embedded, SQLite synchronous=FULL, stored once, acked after commit, PushAck per push',
      'raw-ws': 'bare ws server, one Buffer written to every member socket in a loop, ack after the loop',
      quick: o.quick,
    },
    results,
    ratios,
    goals: [
      ...ledgerGoals('longlink', ll),
      goal('deliveries/s >= 1.0x the raw loop', ratios['longlink/raw-ws msgs_per_s'], 1),
      goal('p99 to the last member <= the raw loop\'s', ratios['longlink/raw-ws p99_ms'], 1, true),
    ],
    chart: {
      title: `Fan-out to ${members} online members`,
      metrics: [{ field: 'msgs_per_s', label: 'deliveries/s' }, { field: 'p99_ms', label: 'p99 to last member (ms)' }],
    },
    notes: [
      'msgs_per_s counts deliveries (messages x recipients); p50_ms/p99_ms are per message, to the last member that got it.',
      `${SENDERS} members send; the other ${members - SENDERS} only receive.`,
    ],
  };
}
