// group: fan-out to one group whose members are all online. Longlink stores
// each message once, encodes its push once and writes the same bytes to
// every member's connection; the baseline is a raw `ws` server looping over
// the members' sockets with one prepared buffer (the floor).
// With --split: 1:1 pairs chat at a fixed rate while a large group (most of
// its members online) gets a burst, on the combined layout and on the split
// one (both clusters up for the whole run): the 1:1 p99 with and without the
// burst, in interleaved rounds.
import { machineInfo } from '../lib/machine.js';
import { formatNumber } from '../lib/report.js';
import type { BenchResult, SystemResult } from '../lib/result.js';
import { startBaseline, startEmbeddedLonglink, startLonglinkCluster, type System } from '../lib/systems.js';
import { createGroup } from '../lib/longlink-setup.js';
import type { Fleet, LoadPlan } from '../lib/fleet.js';
import {
  PAYLOAD_BYTES, connectFleet, goal, ledgerGoals, measure, measurePhase, median, medianFields, messageFields, profileDir, ratio, roundOrder, seconds, withSystem,
  type Measured, type Options,
} from './common.js';
import { layouts } from './cluster-p2p.js';

const SENDERS = 4;

export async function group(o: Options): Promise<BenchResult> {
  if (o.split) return groupSplit(o);
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

/** Members of the --split group online (connected); the rest are offline members (stored for, not pushed to). */
const ONLINE_SHARE = 0.9;
/** The burst: this many group messages, sent over BURST_MS by the group's senders, starting BURST_AFTER_MS into a 1:1 phase. */
const BURST_MESSAGES = 12;
const BURST_MS = 1000;
const BURST_AFTER_MS = 1000;

async function groupSplit(o: Options): Promise<BenchResult> {
  const members = o.connections ?? (o.quick ? 1000 : 3000);
  const online = Math.round(members * ONLINE_SHARE);
  const pairUsers = o.quick ? 400 : 1000;
  const p2pRate = o.rate ?? 300;
  const rounds = o.rounds ?? (o.quick ? 1 : 2);
  const chat: LoadPlan = {
    mode: 'rate', rate: p2pRate, window: 0, durationMs: seconds(o, 10, 4) * 1000,
    pattern: { kind: 'p2p', users: pairUsers, offsets: [1, 2, Math.floor(pairUsers / 2), pairUsers - 1] },
    payloadBytes: PAYLOAD_BYTES, expectedPerMsg: 1,
  };
  const burst = (groupId: string, messages: number): LoadPlan => ({
    mode: 'rate', rate: messages / (BURST_MS / 1000), window: 0, durationMs: BURST_MS,
    pattern: { kind: 'group', group: groupId }, senders: SENDERS, payloadBytes: PAYLOAD_BYTES, expectedPerMsg: online - 1,
    // The fan-out of a whole burst can start seconds after its acks when the machine is busy: count once nothing arrived for 3 s.
    settleMs: 3000,
  });
  const ls = layouts(['ws']);
  type Phase = 'alone' | 'during' | 'burst';
  const measured: Record<string, Record<Phase, Measured[]>> = {
    combined: { alone: [], during: [], burst: [] }, split: { alone: [], during: [], burst: [] },
  };
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  await withSystem(() => startLonglinkCluster(ls[0]!.options), (combined) => withSystem(() => startLonglinkCluster(ls[1]!.options), async (split) => {
    const stations: { name: string; sys: System; pairs?: Fleet; crowd?: Fleet; groupId: string }[] = [];
    try {
      for (const [name, sys] of [['combined', combined], ['split', split]] as const) {
        const st: (typeof stations)[number] = { name, sys, groupId: '' };
        stations.push(st);
        st.pairs = await connectFleet(sys, `${name} 1:1`, pairUsers, chat);
        st.crowd = await connectFleet(sys, `${name} group`, online, undefined, 'g');
        st.groupId = await createGroup(sys.setupUrl!, sys.tokenSecret!, 'g0', Array.from({ length: members }, (_, i) => `g${i}`));
        // Warm-up of the fan-out path (a few messages, not measured).
        await st.crowd.load(`${name} group warm-up`, burst(st.groupId, 4));
      }
      for (let r = 0; r < rounds; r++) {
        for (const st of roundOrder(stations, r)) {
          const m = measured[st.name]!;
          const label = `${st.name} round ${r + 1}/${rounds}`;
          m.alone.push(await measurePhase(st.sys, st.pairs!, `${label}: 1:1 alone`, chat));
          let b: Promise<Measured> | undefined;
          m.during.push(await measurePhase(st.sys, st.pairs!, `${label}: 1:1 during the burst`, chat, (async () => {
            await sleep(BURST_AFTER_MS);
            b = measurePhase(st.sys, st.crowd!, `${label}: group burst`, burst(st.groupId, BURST_MESSAGES));
            return b;
          })()));
          m.burst.push(await b!);
        }
      }
      for (const st of stations) {
        await st.pairs?.close();
        await st.crowd?.close();
      }
    } finally {
      for (const st of stations) {
        await st.pairs?.stop();
        await st.crowd?.stop();
      }
    }
  }));

  const results: Record<string, SystemResult> = {};
  for (const name of ['combined', 'split']) {
    const m = measured[name]!;
    const alone = medianFields(m.alone);
    // The 1:1 ledger covers both phases (one fleet): shown once, on the "during burst" row.
    results[`${name}: 1:1 alone`] = {
      msgs_per_s: alone.msgs_per_s!, p50_ms: alone.p50_ms!, p99_ms: alone.p99_ms!, ack_p99_ms: alone.ack_p99_ms!, server_cpu_pct: alone.server_cpu_pct!,
    };
    results[`${name}: 1:1 during burst`] = medianFields(m.during);
    results[`${name}: group burst`] = medianFields(m.burst);
  }
  const get = (row: string, f: string) => results[row]![f]!;
  const ratios = {
    'combined: 1:1 p99 during burst / alone': ratio(get('combined: 1:1 during burst', 'p99_ms'), get('combined: 1:1 alone', 'p99_ms')),
    'split: 1:1 p99 during burst / alone': ratio(get('split: 1:1 during burst', 'p99_ms'), get('split: 1:1 alone', 'p99_ms')),
    'split/combined 1:1 p99 alone': ratio(get('split: 1:1 alone', 'p99_ms'), get('combined: 1:1 alone', 'p99_ms')),
    'split/combined 1:1 p99 during burst': ratio(get('split: 1:1 during burst', 'p99_ms'), get('combined: 1:1 during burst', 'p99_ms')),
    'split/combined 1:1 p99 during burst, median of the rounds\' ratios':
      median(measured.split!.during.map((x, i) => ratio(x.outcome.p99_ms, measured.combined!.during[i]!.outcome.p99_ms))),
    'split/combined group deliveries/s': ratio(get('split: group burst', 'msgs_per_s'), get('combined: group burst', 'msgs_per_s')),
    'split/combined group p99 to the last member': ratio(get('split: group burst', 'p99_ms'), get('combined: group burst', 'p99_ms')),
  };
  const perRound = (name: string) => measured[name]!.alone.map((a, i) => {
    const d = measured[name]!.during[i]!;
    const b = measured[name]!.burst[i]!;
    return `1:1 p99 ${formatNumber(a.outcome.p99_ms)} → ${formatNumber(d.outcome.p99_ms)} ms, `
      + `burst ${formatNumber(Math.round(b.outcome.msgs_per_s))} deliveries/s p99 ${formatNumber(b.outcome.p99_ms)} ms`;
  }).join('; ');
  return {
    scenario: 'group',
    section: 'group --split',
    command: o.command,
    conditions: {
      machine: machineInfo(),
      combined: ls[0]!.what, split: ls[1]!.what, routing: 'targeted', transport: 'websocket',
      group: `${formatNumber(members)} members, ${formatNumber(online)} online (the rest offline: stored for, not pushed to), ${SENDERS} of them send`,
      burst: `${BURST_MESSAGES} group messages over ${BURST_MS / 1000} s (${formatNumber(BURST_MESSAGES * (online - 1))} deliveries), `
        + `from ${BURST_AFTER_MS / 1000} s into the 1:1 phase`,
      chat: `${formatNumber(pairUsers)} other users, 1:1 (4 peers each), offered ${p2pRate} msg/s open loop, ${chat.durationMs / 1000} s per phase`,
      rounds: `${rounds} per layout, interleaved; each round: 1:1 alone, then 1:1 with the burst; figures are the rounds' medians`,
      engines: 'each layout its own Redis 7 (AOF everysec) + PostgreSQL 15 (fsync on); both clusters up for the whole run',
      quick: o.quick,
    },
    results,
    ratios,
    goals: [
      ...ledgerGoals('combined', results['combined: 1:1 during burst']!, results['combined: group burst']!),
      ...ledgerGoals('split', results['split: 1:1 during burst']!, results['split: group burst']!),
    ],
    chart: {
      title: `1:1 p99 while a ${formatNumber(members)}-member group gets a burst`,
      metrics: [{ field: 'p99_ms', label: 'p99 (ms): 1:1 delivery / group to last member' }],
    },
    notes: [
      'Rows "1:1": msgs_per_s and latencies of the 1:1 deliveries (from when each message was due). Row "group burst": msgs_per_s counts deliveries '
        + '(messages x online members), p50_ms/p99_ms to the last member that got each message.',
      'The 1:1 ledger (sent … duplicated) covers both 1:1 phases of every round, warm-up included, and is shown on the "during burst" row; '
        + 'the group row\'s covers the warm-up and every burst.',
      `Rounds, combined: ${perRound('combined')}.`,
      `Rounds, split: ${perRound('split')}.`,
      'Every process (2 clusters: 4 + 8 server processes, 2 Redis, 2 PostgreSQL; 4 load generators per layout) shares this machine\'s 2 cores.',
    ],
  };
}
