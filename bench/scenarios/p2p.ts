// p2p: 1:1 messages between online users, each user talking to 4 peers.
// Longlink over WebSocket, durable (acked after SQLite commit) with delivery
// acks, against a raw `ws` relay (no storage: the floor) and Socket.IO 4
// with per-user rooms, in the same run. Without --rate it runs at
// saturation (a window of messages in flight); with it, at that offered
// rate, open loop (latency counts from when each message was due).
import { machineInfo } from '../lib/machine.js';
import type { BenchResult, SystemResult } from '../lib/result.js';
import { startBaseline, startEmbeddedLonglink } from '../lib/systems.js';
import type { LoadPlan } from '../lib/fleet.js';
import { PAYLOAD_BYTES, goal, ledgerGoals, measure, messageFields, profileDir, ratio, seconds, withSystem, type Options } from './common.js';

export function p2pPlan(o: Options, users: number): LoadPlan {
  return {
    mode: o.rate ? 'rate' : 'saturate',
    rate: o.rate ?? 0,
    window: Math.min(2000, users),
    durationMs: seconds(o, 10, 3) * 1000,
    pattern: { kind: 'p2p', users, offsets: [1, 2, Math.floor(users / 2), users - 1] },
    payloadBytes: PAYLOAD_BYTES,
    expectedPerMsg: 1,
  };
}

export async function p2p(o: Options): Promise<BenchResult> {
  const users = o.connections ?? 2000;
  const plan = p2pPlan(o, users);
  const results: Record<string, SystemResult> = {};

  results.longlink = messageFields(await withSystem(
    () => startEmbeddedLonglink({ transports: ['ws'] }),
    (sys) => measure(sys, 'longlink', users, plan, { profile: profileDir(o, `p2p/${sys.name}`) }),
  ));
  results['raw-ws'] = messageFields(await withSystem(() => startBaseline('raw-ws'), (sys) => measure(sys, 'raw-ws', users, plan, { profile: profileDir(o, `p2p/${sys.name}`) })));
  results.socketio = messageFields(await withSystem(() => startBaseline('socketio'), (sys) => measure(sys, 'socketio', users, plan, { profile: profileDir(o, `p2p/${sys.name}`) })));

  const ll = results.longlink;
  const ratios: Record<string, number> = {
    'longlink/socketio msgs_per_s': ratio(ll.msgs_per_s, results.socketio.msgs_per_s),
    'longlink/raw-ws msgs_per_s': ratio(ll.msgs_per_s, results['raw-ws'].msgs_per_s),
    'longlink/socketio p99_ms': ratio(ll.p99_ms, results.socketio.p99_ms),
  };
  const goals = [
    ...ledgerGoals('longlink', ll),
  ];
  if (o.rate) {
    goals.push(goal(`p99 at ${o.rate} msg/s <= 5 ms`, ll.p99_ms ?? NaN, 5, true));
    goals.push(goal('p99 <= 1/3 of Socket.IO\'s', ratios['longlink/socketio p99_ms']!, 1 / 3, true));
  } else {
    goals.push(goal('throughput >= 1.0x Socket.IO', ratios['longlink/socketio msgs_per_s']!, 1));
    goals.push(goal('throughput >= 0.5x raw ws relay', ratios['longlink/raw-ws msgs_per_s']!, 0.5));
  }
  return {
    scenario: 'p2p',
    section: o.rate ? `p2p --rate ${o.rate}` : 'p2p',
    command: o.command,
    conditions: {
      machine: machineInfo(), users, peers_per_user: 4, payload_bytes: PAYLOAD_BYTES, transport: 'websocket (all systems)',
      mode: o.rate ? `offered rate ${o.rate} msg/s, open loop` : `saturation, ${plan.window} messages in flight`,
      duration_s: plan.durationMs / 1000, warmup_s: Math.min(2, plan.durationMs / 2000), load_processes: 2,
      longlink: 'embedded (`longlink start`), SQLite synchronous=FULL, acked after commit, PushAck per push, default limits',
      'raw-ws': 'bare ws relay: Map user->socket, ack after forwarding, no storage',
      socketio: 'Socket.IO 4.8 (websocket transport), per-user rooms, emit with ack callback',
      quick: o.quick,
    },
    results,
    ratios,
    goals,
    chart: {
      title: o.rate ? `1:1 at ${o.rate} msg/s offered (${users} users)` : `1:1 at saturation (${users} users)`,
      metrics: o.rate
        ? [{ field: 'p50_ms', label: 'p50 latency (ms)' }, { field: 'p99_ms', label: 'p99 latency (ms)' }]
        : [{ field: 'msgs_per_s', label: 'delivered msg/s' }, { field: 'p99_ms', label: 'p99 latency (ms)' }],
    },
    notes: [
      'sent/acked/delivered/lost/duplicated count the whole run (warm-up included); msgs_per_s and latencies the measured phase.',
      'Latency: from when a message was due (rate mode) or sent (saturation) to its arrival at the recipient; all processes share the machine\'s monotonic clock.',
    ],
  };
}
