// connections: N logged-in idle connections (half TCP, half WebSocket) held
// with heartbeats; what each costs the server (RSS and heap after a full GC,
// above what the process used before the first connection), how fast they
// open, and whether any drop. Baselines: bare `net` and bare `ws` servers
// holding the same number with the same number of processes. One process
// holds at most ~20,000 sockets here, so above 15,000 every system runs one
// server process per 15,000 connections: Longlink as a cluster (gateways on
// Redis, one logic node on PostgreSQL), the baselines as that many bare servers.
import { machineInfo } from '../lib/machine.js';
import type { BenchResult, SystemResult } from '../lib/result.js';
import { startBaseline, startEmbeddedLonglink, startLonglinkCluster, type ProcReport, type System } from '../lib/systems.js';
import { Fleet, MAX_PER_PROCESS } from '../lib/fleet.js';
import { progress } from '../lib/report.js';
import type { SystemName } from '../load/adapter.js';
import { goal, ratio, seconds, withSystem, type Options } from './common.js';

const HEARTBEAT_MS = 20_000;

const sum = (rs: ProcReport[], f: (r: ProcReport) => number) => rs.reduce((s, r) => s + f(r), 0);

/**
 * Memory per connection is a slope: what the servers use with half the
 * connections open and held `holdS` seconds (after full GCs), then the same
 * with all of them; the difference over the second half. Fixed costs
 * (start-up, buffers the first connections allocate, the TypeScript loader)
 * cancel out, and both readings come after the same idle time (V8 gives
 * memory back to the OS some seconds after a burst, not at once).
 */
async function hold(sys: System, system: SystemName, n: number, holdS: number): Promise<SystemResult> {
  const holderNames = new Set(sys.holders.map((h) => h.name));
  const holders = async () => (await sys.report()).filter((r) => holderNames.has(r.name));
  const settled = async () => {
    await new Promise((r) => setTimeout(r, 2000));
    await holders();
    return holders();
  };
  const half = Math.floor(n / 2);
  const start = (users: number, prefix: string) => Fleet.start({
    system, users, urls: sys.urls, tokenSecret: sys.tokenSecret, concurrency: 200, prefix, heartbeatMs: HEARTBEAT_MS,
  });
  const fleets: Fleet[] = [];
  try {
    fleets.push(await start(half, 'a'));
    const c1 = await fleets[0]!.connect(`${sys.name} connect (first half)`);
    const dropsNow = async () => (await Promise.all(fleets.map((f) => f.counts()))).reduce((s, c) => s + c.drops, 0);
    const holdFor = async (connected: number) => {
      const end = Date.now() + holdS * 1000;
      while (Date.now() < end) {
        await new Promise((r) => setTimeout(r, Math.min(5000, Math.max(0, end - Date.now()))));
        progress(`${sys.name} hold: ${connected - (await dropsNow())} held, ${Math.max(0, Math.round((end - Date.now()) / 1000))} s left`);
      }
    };
    await holdFor(c1.connected);
    const mid = await settled();
    const extraMid = await sys.extra?.();
    fleets.push(await start(n - half, 'b'));
    const c2 = await fleets[1]!.connect(`${sys.name} connect (second half)`);
    const connected = c1.connected + c2.connected;
    await holdFor(connected);
    const after = await settled();
    const extraAfter = await sys.extra?.();
    const counts = await Promise.all(fleets.map((f) => f.counts()));
    const drops = counts.reduce((s, c) => s + c.drops, 0);
    if (drops > 0) progress(`${sys.name}: drops ${JSON.stringify(counts.flatMap((c) => c.dropReasons))}`, true);
    const second = n - half;
    const out: SystemResult = {
      held: sum(after, (r) => r.connections),
      dropped: drops + c1.failed + c2.failed,
      rss_kb_per_conn: (sum(after, (r) => r.rss) - sum(mid, (r) => r.rss)) / 1024 / second,
      heap_kb_per_conn: (sum(after, (r) => r.heapUsed) - sum(mid, (r) => r.heapUsed)) / 1024 / second,
      connect_per_s: Math.round(connected / (c1.seconds + c2.seconds)),
      server_processes: sys.holders.length,
    };
    if (extraMid?.redis_used_memory !== undefined && extraAfter?.redis_used_memory !== undefined) {
      out.redis_kb_per_conn = (extraAfter.redis_used_memory - extraMid.redis_used_memory) / 1024 / second;
    }
    for (const f of fleets) await f.close();
    return out;
  } finally {
    for (const f of fleets) await f.stop();
  }
}

export async function connections(o: Options): Promise<BenchResult> {
  const n = o.connections ?? (o.quick ? 2000 : 100_000);
  const holdS = seconds(o, 60, 3);
  const processes = Math.ceil(n / MAX_PER_PROCESS);
  const clustered = processes > 1;
  const results: Record<string, SystemResult> = {};

  results.longlink = await withSystem(
    () => (clustered
      ? startLonglinkCluster({ gateways: processes, logic: 1, routing: 'targeted', transports: ['tcp', 'ws'] })
      : startEmbeddedLonglink({ transports: ['tcp', 'ws'] })),
    (sys) => hold(sys, 'longlink', n, holdS),
  );
  results['raw-net'] = await withSystem(() => startBaseline('raw-net', processes), (sys) => hold(sys, 'raw-net', n, holdS));
  results['raw-ws'] = await withSystem(() => startBaseline('raw-ws', processes), (sys) => hold(sys, 'raw-ws', n, holdS));

  const ll = results.longlink;
  const blendRss = ((results['raw-net'].rss_kb_per_conn ?? NaN) + (results['raw-ws'].rss_kb_per_conn ?? NaN)) / 2;
  const blendHeap = ((results['raw-net'].heap_kb_per_conn ?? NaN) + (results['raw-ws'].heap_kb_per_conn ?? NaN)) / 2;
  const ratios = {
    'longlink/bare rss_kb_per_conn': ratio(ll.rss_kb_per_conn, blendRss),
    'longlink/bare heap_kb_per_conn': ratio(ll.heap_kb_per_conn, blendHeap),
    'longlink/raw-net rss_kb_per_conn': ratio(ll.rss_kb_per_conn, results['raw-net'].rss_kb_per_conn),
    'longlink/raw-ws rss_kb_per_conn': ratio(ll.rss_kb_per_conn, results['raw-ws'].rss_kb_per_conn),
    'longlink/raw-ws connect_per_s': ratio(ll.connect_per_s, results['raw-ws'].connect_per_s),
  };
  return {
    scenario: 'connections',
    command: o.command,
    conditions: {
      machine: machineInfo(), connections: n, hold_s: `${holdS} with half connected, then ${holdS} with all`, heartbeat_s: HEARTBEAT_MS / 1000,
      transports: 'half TCP, half WebSocket (Longlink); all TCP (raw-net); all WebSocket (raw-ws)',
      server_processes: processes, load_processes: Math.ceil(n / MAX_PER_PROCESS),
      longlink: clustered
        ? `cluster: ${processes} gateways (one per ${MAX_PER_PROCESS} connections) + 1 logic on Redis (AOF everysec) and PostgreSQL`
        : 'embedded (`longlink start`), one process',
      memory: 'slope: RSS and heap (after full GCs) of the connection-holding processes with all connections held, minus the same with half, over the second half',
      quick: o.quick,
    },
    results,
    ratios,
    goals: [
      goal(`${n} connections held`, ll.held ?? NaN, n),
      goal('zero unexpected drops', ll.dropped ?? NaN, 0, true),
      goal('RSS per connection <= 1.5x the bare transports\' (half net, half ws)', ratios['longlink/bare rss_kb_per_conn'], 1.5, true),
    ],
    chart: {
      title: `${n.toLocaleString('en-US')} idle connections held ${holdS} s`,
      metrics: [
        { field: 'rss_kb_per_conn', label: 'server RSS KB/conn' },
        { field: 'heap_kb_per_conn', label: 'server heap KB/conn' },
        { field: 'connect_per_s', label: 'connects/s' },
      ],
    },
    notes: [
      'The bare-transport figure Longlink is held to is the mean of raw-net and raw-ws, since half its connections are each.',
      ...(n < 10_000 ? ['Below ~10,000 connections the RSS slope is within the noise of V8 returning memory to the OS (it can even come out negative); read the heap figures.'] : []),
      ...(clustered ? ['Longlink\'s session table lives in Redis in a cluster: redis_kb_per_conn is Redis\'s used_memory growth per connection, not counted in rss_kb_per_conn.'] : []),
    ],
  };
}
