// dc-p2p: 1:1 chat between users of two datacenters of this machine (each its
// own Redis, PostgreSQL, gateway, logic and sync processes; 20 ms each way
// between them), against one single-datacenter cluster of the same shape in
// the same run. Senders are in datacenter a, receivers in b; half the
// conversations are homed in a (the sender's), half in b (the other one:
// every send is forwarded there). Each acknowledgement mode (local,
// replicated) runs on its own pair of datacenters. Closed loop: each sender
// keeps `window` messages in flight. Figures: sends acked per second, ack
// latency (send → its ack at the sender) and delivery latency (send → the
// receiver's push; one clock: the load runs in this process), p50 and p99.
import { createClient, gatewayPicker, requestToken, type LonglinkClient } from '../../dist/client/index.js';
import { directConversationId } from '../../dist/protocol/index.js';
import { directHome } from '../../dist/dc/homes.js';
import { startDatacenters } from '../../dist/dev/datacenters.js';
import { startCluster } from '../../dist/dev/cluster.js';
import { machineInfo } from '../lib/machine.js';
import type { BenchResult, SystemResult } from '../lib/result.js';
import { goal, ratio, seconds, type Options } from './common.js';

const DELAY_MS = 20;

interface Run {
  acked: number;
  delivered: number;
  lost: number;
  ackMs: number[];
  deliverMs: number[];
  durationMs: number;
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return 0;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Throughput from the saturating run; latency from the run at a fixed rate (and at saturation, for comparison). */
function fields(saturated: Run, paced: Run): SystemResult {
  return {
    msgs_per_s: Math.round((saturated.acked / saturated.durationMs) * 1000),
    acked: saturated.acked + paced.acked, delivered: saturated.delivered + paced.delivered, lost: saturated.lost + paced.lost,
    ack_p50_ms: percentile(paced.ackMs, 50), ack_p99_ms: percentile(paced.ackMs, 99), p50_ms: percentile(paced.deliverMs, 50), p99_ms: percentile(paced.deliverMs, 99),
    saturated_ack_p99_ms: percentile(saturated.ackMs, 99),
  };
}

async function client(apis: string[], adminKey: string, user: string): Promise<LonglinkClient> {
  const c = createClient({
    url: gatewayPicker(apis, 'tcp'), clientVersion: 'bench-dc', resendAfterMs: 5000,
    token: async () => (await requestToken(apis[0]!, adminKey, { user_id: user, device_id: 'd1', platform: 'cli' })).token,
  });
  await c.connect();
  return c;
}

/**
 * `pairs` senders (through `senderApis`) each writing to its receiver (through
 * `receiverApis`) for `durationMs`: `{ window }`, closed loop with `window` in
 * flight each (throughput at saturation); `{ rate }`, open loop at `rate`
 * messages a second in all, evenly spread (latency under the same offered load
 * whatever the layout).
 */
async function load(senderApis: string[], receiverApis: string[], adminKey: string, pairs: readonly [string, string][], shape: { window: number } | { rate: number }, durationMs: number): Promise<Run> {
  const senders: LonglinkClient[] = [];
  const receivers: LonglinkClient[] = [];
  const sentAt = new Map<string, number>();
  const run: Run = { acked: 0, delivered: 0, lost: 0, ackMs: [], deliverMs: [], durationMs };
  const ackedTexts = new Set<string>();
  const got = new Set<string>();
  try {
    for (const [x, y] of pairs) {
      senders.push(await client(senderApis, adminKey, x));
      const r = await client(receiverApis, adminKey, y);
      await r.sync();
      r.on('message', (m) => {
        const t0 = sentAt.get(m.text);
        if (t0 === undefined || got.has(m.text)) return;
        got.add(m.text);
        run.deliverMs.push(Date.now() - t0);
      });
      receivers.push(r);
    }
    // Warm-up: one message per pair.
    await Promise.all(pairs.map(([, y], i) => senders[i]!.send({ to: y, text: `warm-${i}` })));
    const started = Date.now();
    const end = started + durationMs;
    let n = 0;
    const sendOne = async (i: number, y: string) => {
      const text = `m-${i}-${n++}`;
      const t0 = Date.now();
      sentAt.set(text, t0);
      await senders[i]!.send({ to: y, text });
      run.ackMs.push(Date.now() - t0);
      ackedTexts.add(text);
    };
    if ('window' in shape) {
      await Promise.all(pairs.map(async ([, y], i) => {
        const lane = async () => {
          while (Date.now() < end) await sendOne(i, y);
        };
        await Promise.all(Array.from({ length: shape.window }, lane));
      }));
    } else {
      // Open loop: the k-th send of all at started + k/rate, round robin over the pairs.
      const inFlight: Promise<void>[] = [];
      for (let k = 0; ; k++) {
        const at = started + (k * 1000) / shape.rate;
        if (at >= end) break;
        const wait = at - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const i = k % pairs.length;
        inFlight.push(sendOne(i, pairs[i]![1]));
      }
      await Promise.all(inFlight);
    }
    run.acked = ackedTexts.size;
    const settle = Date.now() + 15_000;
    while (Date.now() < settle && [...ackedTexts].some((t) => !got.has(t))) await new Promise((r) => setTimeout(r, 100));
    run.delivered = [...ackedTexts].filter((t) => got.has(t)).length;
    run.lost = run.acked - run.delivered;
    return run;
  } finally {
    await Promise.all([...senders, ...receivers].map((c) => c.close().catch(() => undefined)));
  }
}

/** Pairs (sender, receiver) whose conversation is homed in `home`. */
function pairsHomedIn(home: string, n: number, tag: string): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; out.length < n; i++) {
    const x = `${tag}-s${i}`;
    const y = `${tag}-r${i}`;
    if (directHome(directConversationId(x, y), ['a', 'b']) === home) out.push([x, y]);
  }
  return out;
}

const SHAPE = { gateways: 1, logic: 1, routing: 'targeted' as const, shards: 8, durable: true, onLine: () => undefined };
const ENV = { LONGLINK_RATE_LIMIT: '100000', LONGLINK_RATE_BURST: '100000', LONGLINK_USER_MESSAGES_PER_SECOND: '100000' };

export async function dcP2p(o: Options): Promise<BenchResult> {
  const pairs = o.connections ?? (o.quick ? 6 : 20);
  const window = 4;
  const rate = o.quick ? 100 : 200;
  const durationMs = seconds(o, 15, 4) * 1000;
  const results: Record<string, SystemResult> = {};
  /** Both runs, each with pairs of its own whose conversations are homed in `home`. */
  const both = async (from: string[], to: string[], adminKey: string, home: string, tag: string) => {
    // Paced first: measured on a layout not still copying what a saturating run left behind.
    const paced = await load(from, to, adminKey, pairsHomedIn(home, pairs, `${tag}p`), { rate }, durationMs);
    const saturated = await load(from, to, adminKey, pairsHomedIn(home, pairs, `${tag}s`), { window }, durationMs);
    return fields(saturated, paced);
  };
  // One datacenter, the same shape: the baseline.
  {
    const cluster = await startCluster({ ...SHAPE, env: ENV });
    try {
      const api = [cluster.apiUrl()];
      results['one-dc'] = await both(api, api, cluster.adminKey, 'a', 'one');
    } finally {
      await cluster.stop();
    }
  }
  for (const ack of ['local', 'replicated'] as const) {
    const dcs = await startDatacenters({ ...SHAPE, names: ['a', 'b'], delayMs: DELAY_MS, services: { sync: 1 }, env: { ...ENV, LONGLINK_DC_ACK: ack } });
    try {
      const a = [dcs.dc('a').cluster.apiUrl()];
      const b = [dcs.dc('b').cluster.apiUrl()];
      results[`${ack}/home-sender`] = await both(a, b, dcs.adminKey, 'a', `${ack}-h`);
      results[`${ack}/home-other`] = await both(a, b, dcs.adminKey, 'b', `${ack}-o`);
    } finally {
      await dcs.stop();
    }
  }
  const one = results['one-dc']!;
  const local = results['local/home-sender']!;
  const ratios = {
    'local/home-sender vs one-dc ack_p99_ms': ratio(local.ack_p99_ms, one.ack_p99_ms),
    'local/home-sender vs one-dc msgs_per_s': ratio(local.msgs_per_s, one.msgs_per_s),
    'local/home-other vs one-dc ack_p99_ms': ratio(results['local/home-other']!.ack_p99_ms, one.ack_p99_ms),
    'replicated/home-sender vs one-dc ack_p99_ms': ratio(results['replicated/home-sender']!.ack_p99_ms, one.ack_p99_ms),
  };
  return {
    scenario: 'dc-p2p',
    command: o.command,
    conditions: {
      machine: machineInfo(), pairs, window_per_sender: window, paced_rate_per_s: rate, duration_s: durationMs / 1000,
      link: `${DELAY_MS} ms each way between the datacenters (a delaying TCP proxy in front of each one's Redis and PostgreSQL)`,
      layout: 'each datacenter: 1 gateway, 1 logic, 1 sync, its own Redis 7 (AOF everysec) and PostgreSQL 15 (fsync on); one-dc: the same without sync',
      senders: 'in datacenter a', receivers: 'in datacenter b (one-dc: the same cluster)',
      quick: o.quick,
    },
    results,
    ratios,
    goals: [
      goal('local acks, conversations homed in the sender\'s datacenter: ack p99 <= 1.2x one datacenter', ratios['local/home-sender vs one-dc ack_p99_ms'], 1.2, true),
      ...Object.entries(results).map(([name, r]) => goal(`${name}: nothing acked lost`, r.lost ?? 0, 0, true)),
    ],
    chart: {
      title: `1:1 across two datacenters ${DELAY_MS} ms apart (${pairs} pairs)`,
      metrics: [{ field: 'msgs_per_s', label: 'acked msg/s' }, { field: 'ack_p99_ms', label: 'ack p99 (ms)' }, { field: 'p99_ms', label: 'delivery p99 (ms)' }],
    },
    notes: [
      `Each system runs twice: open loop at ${rate} msg/s in all, then closed loop (${window} in flight per sender) for msgs_per_s and saturated_ack_p99_ms; the open loop `
        + 'gives the latencies (ack_p50/p99, delivery p50/p99): under the same offered load, the latency a layout adds, not how much sooner it saturates '
        + '(two datacenters on this one machine share its 2 cores: at saturation each message costs them twice the work, copies included).',
      'home-sender: each conversation homed in the sender\'s datacenter (seq assigned there; copied to the receiver\'s by its sync service). '
        + 'home-other: homed in the receiver\'s (every send forwarded across the link and answered back).',
      'Delivery latency to a receiver in the other datacenter includes the copy by its sync service (reads of the home\'s committed stream across the link).',
      'Every process (two datacenters: 6 server processes, 2 Redis, 2 PostgreSQL, 4 link proxies in this process; and the load) shares this machine\'s 2 cores.',
    ],
  };
}
