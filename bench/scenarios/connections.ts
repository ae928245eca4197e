// connections: N logged-in idle connections (half TCP, half WebSocket) held
// with heartbeats; what each costs the server (RSS and heap after a full GC,
// above what the process used before the first connection), how fast they
// open, and whether any drop. Baselines: bare `net` and bare `ws` servers
// holding the same number with the same number of processes. One process
// holds at most 20,000 files here (sockets included), so above 18,000 every
// system runs one server process per 18,000 connections: Longlink as a
// cluster (gateways on Redis, one logic node on PostgreSQL), the baselines as
// that many bare servers. CPU per login and per heartbeat is read from /proc.
import { machineInfo } from '../lib/machine.js';
import type { BenchResult, SystemResult } from '../lib/result.js';
import { cpuSeconds, startBaseline, startEmbeddedLonglink, startLonglinkCluster, totalCpu, type ProcReport, type System } from '../lib/systems.js';
import { Fleet, MAX_PER_PROCESS } from '../lib/fleet.js';
import { progress } from '../lib/report.js';
import { cpuOfMachine } from '../lib/machine-cpu.js';
import type { SystemName } from '../load/adapter.js';
import { chosenSystems, goal, ratio, seconds, withSystem, type Options } from './common.js';

/**
 * As the SDK: a Ping every pingIntervalMs the server gives at login (25 s by
 * default). At 250,000 connections that is 10,000 heartbeats a second, each
 * ~60 µs of server CPU and as much again in the load processes: a 20 s
 * interval (12,500 a second) left this 2-core machine little to spare.
 */
const HEARTBEAT_MS = 25_000;

const sum = (rs: ProcReport[], f: (r: ProcReport) => number) => rs.reduce((s, r) => s + f(r), 0);

/**
 * Login attempts in flight at once over one fleet's load processes: enough
 * to keep the servers busy, few enough that a login waiting its turn on a
 * busy machine stays far inside the server's 10 s login deadline.
 */
const CONNECTS_IN_FLIGHT = 300;

/**
 * Each system's whole turn (start, both halves, both holds, stop) is fitted
 * into this many seconds, so that a run of Longlink alone ends within 15
 * minutes whatever the servers' login rate (with the build and the loading
 * before it). What is left after the holds, the readings and the stop is
 * shared by the two connect phases; no attempt starts after its phase's
 * share, and what was not opened in time is counted (not_opened) and fails
 * the goal of holding all.
 */
const BUDGET_S = 760;
/**
 * Reserved after the last hold: the readings (two reports, Redis), closing,
 * stopping the servers and the engines. On this machine busy with other
 * tenants' work (load average 30-50) that took over two minutes at 250,000.
 */
const AFTER_S = 150;
/** Reserved between the halves: the readings. */
const BETWEEN_S = 45;
/** Past the deadline, each server still gets this long to report its memory. */
const LAST_REPORT_S = 10;

/** CPU seconds used so far: the servers (gateways and logic, or the bare servers), the engines (Redis, PostgreSQL), the load processes. */
interface CpuMark {
  at: number;
  server: number;
  engines: number;
  load: number;
  /** The whole machine's busy CPU (every tenant's). */
  machine: number;
  pings: number;
}

function reportConnect(name: string, half: string, withinS: number, c: { connected: number; failed: number; unstarted: number; seconds: number; errors: [string, number][] }): void {
  progress(`${name} ${half}: ${c.connected} open in ${c.seconds.toFixed(0)} s (${Math.round(c.connected / c.seconds)}/s)`
    + `${c.failed > 0 ? `, ${c.failed} failed: ${JSON.stringify(c.errors)}` : ''}`
    + `${c.unstarted > 0 ? `, ${c.unstarted} not tried (its ${withinS.toFixed(0)} s were up)` : ''}`, true);
}

/**
 * Memory per connection is a slope: what the servers use with half the
 * connections open and held `holdS` seconds (after full GCs), then the same
 * with all of them; the difference over the second half. Fixed costs
 * (start-up, buffers the first connections allocate, the TypeScript loader)
 * cancel out, and both readings come after the same idle time (V8 gives
 * memory back to the OS some seconds after a burst, not at once).
 *
 * CPU is read from /proc around each phase: per heartbeat from the last
 * hold (everything open, nothing but heartbeats and the servers' timers, all
 * of it charged to the heartbeats), per login from the two connect phases
 * less what the heartbeats sent meanwhile cost at that rate.
 */
async function hold(sys: System, system: SystemName, n: number, holdS: number, deadline: number): Promise<SystemResult> {
  const holderNames = new Set(sys.holders.map((h) => h.name));
  const leftS = () => (deadline - Date.now()) / 1000;
  // Each reading waits at most what is left of the budget, less the stop (60 s at most).
  const holders = async () => (await sys.report(Math.min(60, Math.max(LAST_REPORT_S, leftS() - AFTER_S / 2)) * 1000))
    .filter((r) => holderNames.has(r.name));
  // The servers' memory after GCs. A server starved of CPU (a machine busy with other work) may not
  // answer in time: the run then goes on without its memory (NaN) rather than failing as a whole.
  const settled = async (): Promise<ProcReport[] | undefined> => {
    await new Promise((r) => setTimeout(r, 2000));
    try {
      await holders();
      return await holders();
    } catch (err) {
      progress(`${sys.name}: no memory reading (${(err as Error).message.split('\n')[0]})`, true);
      return undefined;
    }
  };
  const half = Math.floor(n / 2);
  const start = (users: number, prefix: string) => {
    const workers = Math.ceil(users / MAX_PER_PROCESS);
    return Fleet.start({
      system, users, urls: sys.urls, tokenSecret: sys.tokenSecret, prefix, heartbeatMs: HEARTBEAT_MS,
      concurrency: Math.min(200, Math.ceil(CONNECTS_IN_FLIGHT / workers)),
    });
  };
  const fleets: Fleet[] = [];
  const mark = async (): Promise<CpuMark> => {
    const pings = (await Promise.all(fleets.map((f) => f.counts()))).reduce((s, c) => s + c.pings, 0);
    return {
      at: Date.now(), server: totalCpu(sys), engines: sys.engineCpu?.() ?? 0,
      load: fleets.reduce((s, f) => s + f.workers.reduce((t, w) => t + cpuSeconds(w.pid), 0), 0), machine: cpuOfMachine(), pings,
    };
  };
  try {
    // Both halves' load processes start now, together (the second's stay idle until its connect): on a
    // machine busy with the first half's connections, 7 more processes took over a minute to load.
    fleets.push(...await Promise.all([start(half, 'a'), start(n - half, 'b')]));
    // The time left, less the holds and what comes between and after them, halved (at least 20 s).
    const within1 = Math.max(20, (leftS() - 2 * holdS - BETWEEN_S - AFTER_S) / 2);
    const m0 = await mark();
    const c1 = await fleets[0]!.connect(`${sys.name} connect (first half)`, within1 * 1000);
    reportConnect(sys.name, 'first half', within1, c1);
    const dropsNow = async () => (await Promise.all(fleets.map((f) => f.counts()))).reduce((s, c) => s + c.drops, 0);
    const holdFor = async (connected: number, seconds: number) => {
      const end = Date.now() + seconds * 1000;
      while (Date.now() < end) {
        await new Promise((r) => setTimeout(r, Math.min(5000, Math.max(0, end - Date.now()))));
        progress(`${sys.name} hold: ${connected - (await dropsNow())} held, ${Math.max(0, Math.round((end - Date.now()) / 1000))} s left`);
      }
    };
    // Each hold in two halves: CPU is read over the second, once what the logins left (presence
    // events still queued for logic and the gateways) has had the first to drain.
    await holdFor(c1.connected, holdS / 2);
    const m1h = await mark();
    await holdFor(c1.connected, holdS / 2);
    const m1b = await mark();
    const mid = await settled();
    const extraMid = await sys.extra?.();
    const within2 = Math.max(20, leftS() - holdS - AFTER_S);
    const m2 = await mark();
    const c2 = await fleets[1]!.connect(`${sys.name} connect (second half)`, within2 * 1000);
    reportConnect(sys.name, 'second half', within2, c2);
    const connected = c1.connected + c2.connected;
    await holdFor(connected, holdS / 2);
    const m3h = await mark();
    await holdFor(connected, holdS / 2);
    const m4 = await mark();
    const after = await settled();
    const extraAfter = await sys.extra?.();
    const counts = await Promise.all(fleets.map((f) => f.counts()));
    const drops = counts.reduce((s, c) => s + c.drops, 0);
    if (drops > 0) progress(`${sys.name}: drops ${JSON.stringify(counts.flatMap((c) => c.dropReasons))}`, true);
    // The memory slope needs the second half to have added enough (a few hundred read as noise: 266 KB a connection).
    const added = after && mid ? sum(after, (r) => r.connections) - sum(mid, (r) => r.connections) : c2.connected;
    const second = added >= Math.max(1000, (n - half) / 10) ? added : NaN;
    if (Number.isNaN(second)) progress(`${sys.name}: the second half added ${added} connections, too few for a memory slope`, true);
    // Per heartbeat: a slope, like memory: CPU per second (servers and engines together) with all
    // connections held, less the same with half held, over the heartbeats per second added. What the
    // cluster spends with none (timers, stream trims, lease renewals) is what is left at zero.
    const cpuOf = (m: CpuMark) => m.server + m.engines;
    const rate = (a: CpuMark, b: CpuMark) => ({
      cpu: (cpuOf(b) - cpuOf(a)) / ((b.at - a.at) / 1000),
      pings: (b.pings - a.pings) / ((b.at - a.at) / 1000),
    });
    const r1 = rate(m1h, m1b);
    const r2 = rate(m3h, m4);
    // (a slope needs the heartbeat rate to have grown by a third at least)
    const heartbeatCpu = r2.pings > r1.pings * 1.3 ? (r2.cpu - r1.cpu) / (r2.pings - r1.pings) : NaN;
    const idleCpu = r2.cpu - (Number.isFinite(heartbeatCpu) ? heartbeatCpu * r2.pings : 0);
    // Per login: each connect phase and the first half of the hold after it (where its presence
    // events finish), less what the cluster spends idle and on heartbeats over that time.
    const loginWindows: [CpuMark, CpuMark][] = [[m0, m1h], [m2, m3h]];
    const overhead = loginWindows.reduce((s, [a, b]) => s + idleCpu * ((b.at - a.at) / 1000) + (Number.isFinite(heartbeatCpu) ? heartbeatCpu * (b.pings - a.pings) : 0), 0);
    const logins = c1.connected + c2.connected;
    const windowCpu = (f: (m: CpuMark) => number) => loginWindows.reduce((s, [a, b]) => s + f(b) - f(a), 0);
    const loginCpu = (windowCpu(cpuOf) - overhead) / logins;
    const out: SystemResult = {
      // What the servers hold; without their reading, what the clients hold.
      held: after ? sum(after, (r) => r.connections) : c1.connected + c2.connected - drops,
      dropped: drops + c1.failed + c2.failed,
      ...(c1.unstarted + c2.unstarted > 0 ? { not_opened: c1.unstarted + c2.unstarted } : {}),
      rss_kb_per_conn: after && mid ? (sum(after, (r) => r.rss) - sum(mid, (r) => r.rss)) / 1024 / second : NaN,
      heap_kb_per_conn: after && mid ? (sum(after, (r) => r.heapUsed) - sum(mid, (r) => r.heapUsed)) / 1024 / second : NaN,
      connect_per_s: Math.round(connected / (c1.seconds + c2.seconds)),
      server_processes: sys.holders.length,
      login_cpu_ms: loginCpu * 1000,
      load_cpu_ms_per_login: (windowCpu((m) => m.load) / logins) * 1000,
      heartbeat_cpu_us: heartbeatCpu * 1e6,
      hold_cpu_pct: r2.cpu * 100,
      idle_cpu_pct: idleCpu * 100,
      // Everyone else on this machine meanwhile (from the first connect to the end of the last hold), % of one core.
      others_cpu_pct: ((m4.machine - m0.machine - (cpuOf(m4) + m4.load - cpuOf(m0) - m0.load)) / ((m4.at - m0.at) / 1000)) * 100,
    };
    if (extraMid?.redis_used_memory !== undefined && extraAfter?.redis_used_memory !== undefined && !Number.isNaN(second)) {
      out.redis_kb_per_conn = (extraAfter.redis_used_memory - extraMid.redis_used_memory) / 1024 / second;
    }
    progress(`${sys.name}: CPU over the logins (connect + first half-hold) ${windowCpu(cpuOf).toFixed(1)} s servers+engines, of which idle and `
      + `heartbeats ${overhead.toFixed(1)} s; load processes ${windowCpu((m) => m.load).toFixed(1)} s. Holds (second halves): `
      + `${(r1.cpu * 100).toFixed(1)}% at ${r1.pings.toFixed(0)} heartbeats/s, ${(r2.cpu * 100).toFixed(1)}% at ${r2.pings.toFixed(0)}/s`, true);
    for (const f of fleets) await f.close();
    return out;
  } finally {
    for (const f of fleets) await f.stop();
  }
}

const SYSTEMS = ['longlink', 'raw-net', 'raw-ws'] as const;
const DEFAULT_CONNECTIONS = 100_000;

export async function connections(o: Options): Promise<BenchResult> {
  const n = o.connections ?? (o.quick ? 2000 : DEFAULT_CONNECTIONS);
  const holdS = seconds(o, 60, 3);
  // One server process per 18,000 connections, or more with --gateways (what a connection costs as the cluster grows).
  const processes = Math.max(Math.ceil(n / MAX_PER_PROCESS), o.gateways ?? 1);
  const clustered = processes > 1;
  const systems = chosenSystems(o, 'connections', SYSTEMS);
  const results: Record<string, SystemResult> = {};

  for (const system of systems) {
    const deadline = Date.now() + BUDGET_S * 1000;
    results[system] = system === 'longlink'
      ? await withSystem(
        () => (clustered
          ? startLonglinkCluster({ gateways: processes, logic: 1, routing: 'targeted', transports: ['tcp', 'ws'] })
          : startEmbeddedLonglink({ transports: ['tcp', 'ws'] })),
        (sys) => hold(sys, 'longlink', n, holdS, deadline),
      )
      : await withSystem(() => startBaseline(system, processes), (sys) => hold(sys, system, n, holdS, deadline));
  }

  const ll = results.longlink;
  const net = results['raw-net'];
  const ws = results['raw-ws'];
  const blendRss = ((net?.rss_kb_per_conn ?? NaN) + (ws?.rss_kb_per_conn ?? NaN)) / 2;
  const blendHeap = ((net?.heap_kb_per_conn ?? NaN) + (ws?.heap_kb_per_conn ?? NaN)) / 2;
  const ratios: Record<string, number> = {};
  if (ll && net && ws) {
    ratios['longlink/bare rss_kb_per_conn'] = ratio(ll.rss_kb_per_conn, blendRss);
    ratios['longlink/bare heap_kb_per_conn'] = ratio(ll.heap_kb_per_conn, blendHeap);
  }
  if (ll && net) ratios['longlink/raw-net rss_kb_per_conn'] = ratio(ll.rss_kb_per_conn, net.rss_kb_per_conn);
  if (ll && ws) {
    ratios['longlink/raw-ws rss_kb_per_conn'] = ratio(ll.rss_kb_per_conn, ws.rss_kb_per_conn);
    ratios['longlink/raw-ws connect_per_s'] = ratio(ll.connect_per_s, ws.connect_per_s);
  }
  const goals = Object.entries(results).flatMap(([system, r]) => [
    goal(`${system}: ${n} connections held`, r.held ?? NaN, n),
    goal(`${system}: zero unexpected drops`, r.dropped ?? NaN, 0, true),
  ]);
  if (ratios['longlink/bare rss_kb_per_conn'] !== undefined) {
    goals.push(goal('RSS per connection <= 1.5x the bare transports\' (half net, half ws)', ratios['longlink/bare rss_kb_per_conn'], 1.5, true));
  }
  // A run of another size, or of some of the systems, is kept in a section of its own (the default run's stays).
  const sectionParts = ['connections'];
  if (n !== (o.quick ? 2000 : DEFAULT_CONNECTIONS)) sectionParts.push(`--connections ${n}`);
  if (o.gateways !== undefined) sectionParts.push(`--gateways ${o.gateways}`);
  if (systems.length < SYSTEMS.length) sectionParts.push(`--systems ${systems.join(',')}`);
  const loadProcesses = 2 * Math.ceil(Math.ceil(n / 2) / MAX_PER_PROCESS);
  return {
    scenario: 'connections',
    section: sectionParts.join(' '),
    command: o.command,
    conditions: {
      machine: machineInfo(), connections: n, systems: systems.join(', '),
      hold_s: `${holdS} with half connected, then ${holdS} with all`, heartbeat_s: HEARTBEAT_MS / 1000,
      transports: 'half TCP, half WebSocket (Longlink); all TCP (raw-net); all WebSocket (raw-ws)',
      server_processes: processes, load_processes: loadProcesses,
      longlink: clustered
        ? `cluster: ${processes} gateways (${o.gateways ? '--gateways' : `one per ${MAX_PER_PROCESS} connections`}) + 1 logic on Redis (AOF everysec) and PostgreSQL`
        : 'embedded (`longlink start`), one process',
      memory: 'slope: RSS and heap (after full GCs) of the connection-holding processes with all connections held, minus the same with half, over the second half',
      quick: o.quick,
    },
    results,
    ratios,
    goals,
    chart: {
      title: `${n.toLocaleString('en-US')} idle connections held ${holdS} s`,
      metrics: [
        { field: 'rss_kb_per_conn', label: 'server RSS KB/conn' },
        { field: 'heap_kb_per_conn', label: 'server heap KB/conn' },
        { field: 'connect_per_s', label: 'connects/s' },
      ],
    },
    notes: [
      ...(ll && net && ws ? ['The bare-transport figure Longlink is held to is the mean of raw-net and raw-ws, since half its connections are each.'] : []),
      ...(n < 10_000 ? ['Below ~10,000 connections the RSS slope is within the noise of V8 returning memory to the OS (it can even come out negative); read the heap figures. '
        + 'The CPU figures are noise too at that size (a few hundred heartbeats).'] : []),
      'heartbeat_cpu_us: CPU of the servers and engines (Redis, PostgreSQL) per heartbeat, a slope over the second half of each hold '
        + '(CPU/s with all held minus with half held, over the heartbeats/s added); idle_cpu_pct: what is left at zero heartbeats (timers); '
        + 'login_cpu_ms: their CPU per login over each connect phase and the half-hold after it (presence events drain there), less idle and heartbeats; '
        + 'load_cpu_ms_per_login: the load processes\' CPU over the same windows, per login (the harness\'s share of the machine); '
        + 'others_cpu_pct: what everyone else on this shared machine used meanwhile (% of one core, of 200).',
      ...(clustered && ll ? ['Longlink\'s session table lives in Redis in a cluster: redis_kb_per_conn is Redis\'s used_memory growth per connection, not counted in rss_kb_per_conn.'] : []),
    ],
  };
}
