// heartbeat: what one application heartbeat costs, the server's CPU and the
// load generator's, for Longlink over TCP and over WebSocket (embedded) and
// for the bare `net` and `ws` servers (a 1-byte ping answered with 1 byte).
// At 250,000 connections and the SDK's 25 s interval a cluster answers
// 10,000 heartbeats a second: this is the figure that decides how many idle
// connections a core holds.
//
// Per system and round: N connections open, then the server's CPU is read
// over a quiet stretch (timers alone) and over a stretch where every
// connection pings once a second, spread as clients are (a tenth of them every
// 100 ms); per heartbeat = (CPU while pinging - the quiet rate over the same
// time) / heartbeats. Rounds interleave the systems; the figure kept is the
// median of the rounds.
import { machineInfo } from '../lib/machine.js';
import type { BenchResult, SystemResult } from '../lib/result.js';
import { startBaseline, startEmbeddedLonglink, totalCpu, type System } from '../lib/systems.js';
import { longlinkAdapter } from '../load/longlink.js';
import { rawNetAdapter, rawWsAdapter } from '../load/baselines.js';
import { BenchTokens } from '../load/tokens.js';
import type { Adapter, BenchConn } from '../load/adapter.js';
import { progress } from '../lib/report.js';
import { chosenSystems, goal, ratio, seconds, withSystem, type Options } from './common.js';

const SYSTEMS = ['longlink-tcp', 'longlink-ws', 'raw-net', 'raw-ws'] as const;
type Name = (typeof SYSTEMS)[number];

/** Each connection pings once in this long; a tenth of them every SLICE_MS. */
const PERIOD_MS = 1000;
const SLICE_MS = 100;
const CONNECTS_IN_FLIGHT = 100;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function start(name: Name): Promise<System> {
  switch (name) {
    case 'longlink-tcp': return startEmbeddedLonglink({ transports: ['tcp'] });
    case 'longlink-ws': return startEmbeddedLonglink({ transports: ['ws'] });
    default: return startBaseline(name);
  }
}

function adapterOf(name: Name): Adapter {
  return name === 'raw-net' ? rawNetAdapter : name === 'raw-ws' ? rawWsAdapter : longlinkAdapter;
}

/** This process's CPU seconds (the load generator's side). */
function ownCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function once(name: Name, sys: System, n: number, quietS: number, pingS: number): Promise<{ server_us: number; load_us: number; dropped: number }> {
  const tokens = sys.tokenSecret ? new BenchTokens(sys.tokenSecret) : undefined;
  const adapter = adapterOf(name);
  let dropped = 0;
  const events = { onAck() {}, onDeliver() {}, onDrop() { dropped++; } };
  const conns: BenchConn[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: CONNECTS_IN_FLIGHT }, async () => {
    while (next < n) {
      const i = next++;
      const user = `hb${i}`;
      conns.push(await adapter.connect({ url: sys.urls[0]!, token: tokens?.issue(user, 'd1', 'bench', 3600) }, user, events));
    }
  }));
  try {
    await sleep(2000); // logins' after-effects (presence, cursors) settle
    const q0 = { server: totalCpu(sys), load: ownCpu(), at: performance.now() };
    await sleep(quietS * 1000);
    const q1 = { server: totalCpu(sys), load: ownCpu(), at: performance.now() };
    const quietSecs = (q1.at - q0.at) / 1000;
    const slices = PERIOD_MS / SLICE_MS;
    let pings = 0;
    const end = q1.at + pingS * 1000;
    for (let tick = 0; performance.now() < end; tick++) {
      for (let i = tick % slices; i < conns.length; i += slices) {
        conns[i]!.ping();
        pings++;
      }
      await sleep(SLICE_MS);
    }
    await sleep(300); // the last pongs
    const p1 = { server: totalCpu(sys), load: ownCpu(), at: performance.now() };
    const secs = (p1.at - q1.at) / 1000;
    const perPing = (busy: number, quiet: number) => ((busy - (quiet / quietSecs) * secs) / pings) * 1e6;
    return {
      server_us: perPing(p1.server - q1.server, q1.server - q0.server),
      load_us: perPing(p1.load - q1.load, q1.load - q0.load),
      dropped,
    };
  } finally {
    for (const c of conns) c.close();
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export async function heartbeat(o: Options): Promise<BenchResult> {
  const systems = chosenSystems(o, 'heartbeat', SYSTEMS);
  const n = o.connections ?? (o.quick ? 500 : 4000);
  const pingS = seconds(o, 8, 3);
  const quietS = o.quick ? 2 : 4;
  const rounds = o.rounds ?? (o.quick ? 1 : 3);
  const runs = new Map<Name, { server_us: number; load_us: number; dropped: number }[]>(systems.map((s) => [s, []]));
  for (let r = 0; r < rounds; r++) {
    for (const name of systems) {
      const m = await withSystem(() => start(name), (sys) => once(name, sys, n, quietS, pingS));
      progress(`heartbeat round ${r + 1}/${rounds} ${name}: server ${m.server_us.toFixed(1)} µs, load ${m.load_us.toFixed(1)} µs per heartbeat`);
      runs.get(name)!.push(m);
    }
  }
  const results: Record<string, SystemResult> = {};
  for (const [name, ms] of runs) {
    results[name] = {
      connections: n,
      heartbeats_per_s: n * (1000 / PERIOD_MS),
      server_us_per_heartbeat: median(ms.map((m) => m.server_us)),
      load_us_per_heartbeat: median(ms.map((m) => m.load_us)),
      dropped: ms.reduce((s, m) => s + m.dropped, 0),
    };
  }
  const ratios: Record<string, number> = {};
  const goals = [];
  const pairs = [['longlink-tcp', 'raw-net'], ['longlink-ws', 'raw-ws']] as const;
  for (const [ll, bare] of pairs) {
    if (!results[ll] || !results[bare]) continue;
    const key = `${ll}/${bare} server_us_per_heartbeat`;
    ratios[key] = ratio(results[ll]!.server_us_per_heartbeat, results[bare]!.server_us_per_heartbeat);
    goals.push(goal(`${ll}: server CPU per heartbeat <= 1.5x ${bare}'s`, ratios[key]!, 1.5, true));
  }
  for (const name of systems) goals.push(goal(`${name}: zero unexpected drops`, results[name]!.dropped!, 0, true));
  return {
    scenario: 'heartbeat',
    command: o.command,
    conditions: {
      machine: machineInfo(), connections: n, heartbeat: `each connection every ${PERIOD_MS} ms, a tenth of them every ${SLICE_MS} ms`,
      stretches_s: `${quietS} quiet, then ${pingS} pinging`, rounds, servers: 'Longlink embedded (one process, SQLite); bare net and ws servers',
      load: 'this process (one), the same adapters as the other scenarios', quick: o.quick,
    },
    results,
    ratios,
    goals,
    chart: {
      title: 'CPU per heartbeat',
      metrics: [
        { field: 'server_us_per_heartbeat', label: 'server µs / heartbeat' },
        { field: 'load_us_per_heartbeat', label: 'load generator µs / heartbeat' },
      ],
    },
    notes: [
      'server_us_per_heartbeat: the server process\'s CPU (from /proc) while pinging, less its quiet rate over the same time, over the heartbeats; the median of the rounds.',
      'load_us_per_heartbeat: the same for the load generator (this process): the harness\'s side of each heartbeat.',
      'Longlink answers a Ping frame with a Pong carrying the server time; the bare servers answer a 1-byte ping with 1 byte.',
    ],
  };
}
