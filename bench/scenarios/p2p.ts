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
import {
  PAYLOAD_BYTES, goal, interleavedRounds, ledgerGoals, measure, median, medianFields, messageFields, profileDir, ratio, seconds, withSystem,
  type Options,
} from './common.js';
import type { System } from '../lib/systems.js';

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
  if (o.rules) return p2pPaired(o, rulesPair());
  if (o.search) return p2pPaired(o, searchPair());
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

/** Letters for the benchmark's words: none is a look-alike of a digit (0 o, 1 i, 3 e, 4 a, 5 s, 7 t) or the payload's 'x', so no word matches a payload. */
const WORD_LETTERS = 'bcdfghjklmnpqruvwyz';

/** `n` distinct words of 6 to 10 letters, the same in every run (a fixed seed). */
function words(n: number, seed: number): string[] {
  const out = new Set<string>();
  // mulberry32: 32-bit integer steps (Math.imul), so the sequence never loses precision or falls into a short cycle.
  let x = seed >>> 0;
  const next = () => {
    x = (x + 0x6d2b79f5) >>> 0;
    let t = Math.imul(x ^ (x >>> 15), x | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  while (out.size < n) {
    const len = 6 + (next() % 5);
    let w = '';
    for (let i = 0; i < len; i++) w += WORD_LETTERS[next() % WORD_LETTERS.length];
    out.add(w);
  }
  return [...out];
}

/** What --rules loads: a 10,000-word block list, 1,000 mask words, regexes a product would have, and a link rule. */
export function benchRules(): unknown {
  return {
    block_words: words(10_000, 1),
    mask_words: words(1000, 2),
    regex_rules: [
      { id: 'card_number', pattern: '\\b\\d{4}[- ]\\d{4}[- ]\\d{4}[- ]\\d{4}\\b', action: 'block' },
      { id: 'phone', pattern: '\\+?\\d{1,3}[- ]\\d{3}[- ]\\d{3}[- ]\\d{4}', action: 'mask' },
      { id: 'email', pattern: '\\b[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}\\b', flags: 'i', action: 'mask' },
      { id: 'wire_transfer', pattern: '\\b(wire|western union|moneygram)\\b.{0,40}\\b(now|today|urgent)\\b', flags: 'i', action: 'block' },
      { id: 'iban', pattern: '\\b[A-Z]{2}\\d{2}[A-Z0-9]{11,30}\\b', action: 'block' },
    ],
    links: { mode: 'allowlist', allow_domains: ['example.com'] },
  };
}

/** Two embedded servers compared by p2p --rules or --search: the first without the feature, the second with it. */
interface Pair {
  section: string;
  names: readonly [string, string];
  servers: readonly [() => Promise<System>, () => Promise<System>];
  conditions: Record<string, string>;
  /** The ratio's name: `${label}/none` (or as given). */
  label: string;
  goal: string;
  title: string;
  notes: string[];
}

/** p2p --rules: risk rules loaded against none. */
function rulesPair(): Pair {
  return {
    section: 'p2p --rules',
    names: ['longlink', 'longlink+rules'],
    servers: [() => startEmbeddedLonglink({ transports: ['ws'] }), () => startEmbeddedLonglink({ transports: ['ws'], rules: benchRules() })],
    conditions: {
      longlink: 'embedded (`longlink start`), SQLite synchronous=FULL, acked after commit, PushAck per push, default limits; no risk rules',
      'longlink+rules': 'the same, with 10,000 block words, 1,000 mask words, 5 regex rules and a link allow-list (PUT /api/v1/risk/rules)',
    },
    label: 'rules/none',
    goal: 'throughput with rules >= 0.9x without (median of the rounds\' ratios)',
    title: 'with and without risk rules',
    notes: ['No payload matches a rule (the words use letters that are no digit\'s look-alike), so every message goes through every check and is stored as sent.'],
  };
}

/** p2p --search: the full-text index kept (the default) against LONGLINK_SEARCH=0. */
function searchPair(): Pair {
  return {
    section: 'p2p --search',
    names: ['longlink-nosearch', 'longlink'],
    servers: [() => startEmbeddedLonglink({ transports: ['ws'], env: { LONGLINK_SEARCH: '0' } }), () => startEmbeddedLonglink({ transports: ['ws'] })],
    conditions: {
      'longlink-nosearch': 'embedded (`longlink start`), SQLite synchronous=FULL, acked after commit, PushAck per push, default limits; LONGLINK_SEARCH=0 (no text index)',
      longlink: 'the same with search on (the default): every stored message indexed in SQLite FTS5 by the committed stream\'s search group, beside the send path',
    },
    label: 'search/none',
    goal: 'throughput with the search index >= 0.9x without (median of the rounds\' ratios)',
    title: 'with and without the search index',
    notes: ['Indexing is asynchronous (the committed stream\'s search group): acks and deliveries never wait for it, but it shares the process and the SQLite file with the send path.'],
  };
}

/**
 * p2p --rules / --search: the same saturation load on two embedded servers
 * up at once, one without the feature and one with it, in interleaved rounds
 * (the machine is shared: each round's ratio, and the medians).
 */
async function p2pPaired(o: Options, pair: Pair): Promise<BenchResult> {
  const users = o.connections ?? 2000;
  const plan = { ...p2pPlan(o, users), durationMs: seconds(o, 8, 3) * 1000 };
  const rounds = o.rounds ?? (o.quick ? 1 : 3);
  const [none, withIt] = pair.names;
  const measured = await withSystem(pair.servers[0], (a) => withSystem(pair.servers[1], (b) => interleavedRounds([[none, a], [withIt, b]], users, plan, rounds)));
  const results: Record<string, SystemResult> = { [none]: medianFields(measured[none]!), [withIt]: medianFields(measured[withIt]!) };
  const paired = median(measured[withIt]!.map((m, i) => ratio(m.outcome.msgs_per_s, measured[none]![i]!.outcome.msgs_per_s)));
  const ratios: Record<string, number> = {
    [`${pair.label} msgs_per_s`]: ratio(results[withIt]!.msgs_per_s, results[none]!.msgs_per_s),
    [`${pair.label} msgs_per_s, median of the rounds' ratios`]: paired,
    [`${pair.label} p99_ms`]: ratio(results[withIt]!.p99_ms, results[none]!.p99_ms),
  };
  return {
    scenario: 'p2p',
    section: pair.section,
    command: o.command,
    conditions: {
      machine: machineInfo(), users, peers_per_user: 4, payload_bytes: PAYLOAD_BYTES, transport: 'websocket',
      mode: `saturation, ${plan.window} messages in flight`, duration_s: plan.durationMs / 1000, load_processes: 2,
      ...pair.conditions,
      rounds: `${rounds} per server, interleaved (${none}, ${withIt}, then ${withIt}, ${none}, …), after one warm-up each; both servers up the whole run; figures are the rounds' medians`,
      quick: o.quick,
    },
    results,
    ratios,
    goals: [
      ...ledgerGoals('longlink', results[none]!, results[withIt]!),
      goal(pair.goal, paired, 0.9),
    ],
    chart: {
      title: `1:1 at saturation ${pair.title} (${users} users)`,
      metrics: [{ field: 'msgs_per_s', label: 'delivered msg/s' }, { field: 'p99_ms', label: 'p99 latency (ms)' }],
    },
    notes: [
      ...pair.notes,
      'sent/acked/delivered/lost/duplicated count the whole run (warm-up included); msgs_per_s and latencies are medians of the measured rounds.',
    ],
  };
}
