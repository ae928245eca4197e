// What every scenario shares: its options, measuring one system under load,
// and the figures every result carries.
import { Fleet, type LoadOutcome, type LoadPlan } from '../lib/fleet.js';
import { progress } from '../lib/report.js';
import { totalCpu, type System } from '../lib/systems.js';
import type { SystemName } from '../load/adapter.js';
import type { Goal, SystemResult } from '../lib/result.js';

export interface Options {
  quick: boolean;
  connections?: number;
  rate?: number;
  /** Seconds. */
  duration?: number;
  gateways?: number;
  /** cluster-p2p and group: the split layout of the logic tier beside the combined one, in the same run. */
  split?: boolean;
  /** Rounds of each layout, interleaved (--split): the figures are the rounds' medians. */
  rounds?: number;
  /** p2p: the same load with and without a 10,000-word list and a regex set loaded, in interleaved rounds. */
  rules?: boolean;
  /** p2p: the search index kept against LONGLINK_SEARCH=0. */
  search?: boolean;
  /** Write CPU profiles of the server processes' measured phase into this folder. */
  profile?: string;
  /** Only these of the scenario's systems (e.g. connections: longlink without the bare baselines); all when absent. */
  systems?: string[];
  /** The command line as typed, for the record. */
  command: string;
}

export const PAYLOAD_BYTES = 100;

export function seconds(o: Options, full: number, quick: number): number {
  return o.duration ?? (o.quick ? quick : full);
}

/**
 * The systems of a scenario that this run measures (--systems), in the
 * scenario's order; a name the scenario does not have is an error.
 */
export function chosenSystems<T extends string>(o: Options, scenario: string, all: readonly T[]): T[] {
  if (!o.systems) return [...all];
  const unknown = o.systems.filter((s) => !(all as readonly string[]).includes(s));
  if (unknown.length > 0) throw new Error(`${scenario} has no system ${unknown.join(', ')} (its systems: ${all.join(', ')})`);
  return all.filter((s) => o.systems!.includes(s));
}


export interface Measured {
  outcome: LoadOutcome;
  /** Server CPU during the measured phase, in % of one core (200% = both cores of this machine). */
  serverCpuPct: number;
}

/**
 * Connect `users` of a running system, warm up, then run the plan and count.
 * The fleet is closed and stopped before this returns; the system is not.
 */
export async function measure(
  sys: System, system: SystemName, users: number, plan: LoadPlan,
  extra: { setup?: (fleet: Fleet) => Promise<void>; minProcesses?: number; profile?: string } = {},
): Promise<Measured> {
  const { setup, minProcesses = 2, profile } = extra;
  const fleet = await Fleet.start({ system, users, urls: sys.urls, tokenSecret: sys.tokenSecret, minProcesses });
  try {
    const c = await fleet.connect(sys.name);
    if (c.connected !== users) throw new Error(`${sys.name}: only ${c.connected} of ${users} connected: ${JSON.stringify(c.errors)}`);
    await setup?.(fleet);
    // Warm-up (JIT, conversation rows, socket buffers); counted in the ledger, not in the figures.
    await fleet.load(`${sys.name} warm-up`, { ...plan, durationMs: Math.min(2000, plan.durationMs / 2) });
    // Profiles (--profile) cover the measured phase only: DIR/<scenario>/<process>.cpuprofile.
    if (profile) await Promise.all(sys.all.map((c) => c.ask({ type: 'profile-start' }, 'profile-started')));
    const cpu0 = totalCpu(sys);
    const t0 = Date.now();
    const outcome = await fleet.load(sys.name, plan);
    if (profile) {
      await Promise.all(sys.all.map((c) => c.ask({ type: 'profile-stop', file: `${profile}/${c.name}.cpuprofile` }, 'profile-stopped')));
    }
    const serverCpuPct = ((totalCpu(sys) - cpu0) / ((Date.now() - t0) / 1000)) * 100;
    progress(`${sys.name}: ${Math.round(outcome.msgs_per_s)} msg/s, p99 ${outcome.p99_ms.toFixed(2)} ms, lost ${outcome.lost}, duplicated ${outcome.duplicated}`);
    if (outcome.refused > 0) progress(`${sys.name}: refused ${JSON.stringify(outcome.refusedCodes)}`, true);
    await fleet.close();
    return { outcome, serverCpuPct };
  } finally {
    await fleet.stop();
  }
}

/** The ledger fields every message scenario reports, in the names. */
export function messageFields(m: Measured): SystemResult {
  const o = m.outcome;
  return {
    msgs_per_s: Math.round(o.msgs_per_s),
    p50_ms: o.p50_ms,
    p99_ms: o.p99_ms,
    sent: o.sent,
    acked: o.acked,
    delivered: o.delivered,
    lost: o.lost,
    duplicated: o.duplicated,
    refused: o.refused,
    ack_p99_ms: o.ack_p99_ms,
    server_cpu_pct: Math.round(m.serverCpuPct),
  };
}

export function goal(name: string, actual: number, target: number, atMost = false): Goal {
  return { name, actual, target, met: Number.isFinite(actual) && (atMost ? actual <= target : actual >= target) };
}

/** The ledger's goals for some systems together: nothing acked lost, nothing delivered twice. */
export function ledgerGoals(label: string, ...results: SystemResult[]): Goal[] {
  const total = (field: 'lost' | 'duplicated') => results.reduce((s, r) => s + (r[field] ?? NaN), 0);
  return [goal(`${label} lost = 0`, total('lost'), 0, true), goal(`${label} duplicated = 0`, total('duplicated'), 0, true)];
}

export function ratio(a: number | undefined, b: number | undefined): number {
  return a !== undefined && b !== undefined && b !== 0 ? a / b : NaN;
}

const running = new Set<System>();

/** Start a system, run `body`, always stop it. */
export async function withSystem<T>(start: () => Promise<System>, body: (sys: System) => Promise<T>): Promise<T> {
  const sys = await start();
  running.add(sys);
  try {
    return await body(sys);
  } finally {
    running.delete(sys);
    await sys.stop();
  }
}

/** Stop every system still running (Ctrl-C): their processes, Redis, PostgreSQL, temp folders. */
export async function stopSystems(): Promise<void> {
  await Promise.allSettled([...running].map((s) => s.stop()));
  running.clear();
}

/** Where a scenario's profiles go, when --profile is on. */
export function profileDir(o: Options, name: string): string | undefined {
  return o.profile ? `${o.profile}/${name}` : undefined;
}

/** The median of some figures (NaN when none). */
export function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

/** One more phase of load on a system whose users are connected (no warm-up): its outcome and the server CPU meanwhile. */
export async function measurePhase(sys: System, fleet: Fleet, label: string, plan: LoadPlan, alongside?: Promise<unknown>): Promise<Measured> {
  const cpu0 = totalCpu(sys);
  const t0 = Date.now();
  const [outcome] = await Promise.all([fleet.load(label, plan), alongside]);
  const serverCpuPct = ((totalCpu(sys) - cpu0) / ((Date.now() - t0) / 1000)) * 100;
  // A connection the server closed (these clients do not reconnect) would show as lost messages and a quiet server: say so instead.
  const { drops, dropReasons } = await fleet.counts();
  if (drops > 0) throw new Error(`${label}: ${drops} connections dropped: ${JSON.stringify(dropReasons)}`);
  progress(`${label}: ${Math.round(outcome.msgs_per_s)} msg/s, p50 ${outcome.p50_ms.toFixed(1)} ms, p99 ${outcome.p99_ms.toFixed(1)} ms, `
    + `lost ${outcome.lost}, duplicated ${outcome.duplicated}`);
  if (outcome.refused > 0) progress(`${label}: refused ${JSON.stringify(outcome.refusedCodes)}`, true);
  return { outcome, serverCpuPct };
}

/**
 * The medians of some rounds of the same load (msgs_per_s, latencies, server
 * CPU), with the ledger of the last one (its counts cover the whole run: every
 * round, warm-up included).
 */
export function medianFields(rounds: Measured[]): SystemResult {
  const last = messageFields(rounds.at(-1)!);
  const med = (f: (m: Measured) => number) => median(rounds.map(f));
  return {
    ...last,
    msgs_per_s: Math.round(med((m) => m.outcome.msgs_per_s)),
    p50_ms: med((m) => m.outcome.p50_ms),
    p99_ms: med((m) => m.outcome.p99_ms),
    ack_p99_ms: med((m) => m.outcome.ack_p99_ms),
    server_cpu_pct: Math.round(med((m) => m.serverCpuPct)),
  };
}

/**
 * Connect `users` of a running system and warm it up (as measure() does),
 * leaving the fleet connected (with a heartbeat every 20 s, as a client: it
 * may wait longer than the server's idle limit while other phases run);
 * stopped on failure.
 */
export async function connectFleet(sys: System, label: string, users: number, plan: LoadPlan | undefined, prefix?: string, minProcesses = 2): Promise<Fleet> {
  const fleet = await Fleet.start({ system: 'longlink', users, urls: sys.urls, tokenSecret: sys.tokenSecret, minProcesses, prefix, heartbeatMs: 20_000 });
  try {
    const c = await fleet.connect(label);
    if (c.connected !== users) throw new Error(`${label}: only ${c.connected} of ${users} connected: ${JSON.stringify(c.errors)}`);
    if (plan) await fleet.load(`${label} warm-up`, { ...plan, durationMs: Math.min(2000, plan.durationMs / 2) });
    return fleet;
  } catch (err) {
    await fleet.stop();
    throw err;
  }
}

/** Round r runs the layouts in this order (A B, B A, A B, …: a drift of the machine weighs on both alike). */
export function roundOrder<T>(items: T[], r: number): T[] {
  return r % 2 === 0 ? items : [...items].reverse();
}

/**
 * Systems that are up at once, each with `users` connected by its own fleet for the whole run, measured in
 * `rounds` interleaved rounds (roundOrder). Each system's rounds, by its name; the fleets are closed at the end.
 */
export async function interleavedRounds(
  systems: readonly (readonly [string, System])[], users: number, plan: LoadPlan, rounds: number,
): Promise<Record<string, Measured[]>> {
  const measured: Record<string, Measured[]> = Object.fromEntries(systems.map(([name]) => [name, []]));
  const stations: { name: string; sys: System; fleet: Fleet }[] = [];
  try {
    for (const [name, sys] of systems) stations.push({ name, sys, fleet: await connectFleet(sys, name, users, plan) });
    for (let r = 0; r < rounds; r++) {
      for (const st of roundOrder(stations, r)) measured[st.name]!.push(await measurePhase(st.sys, st.fleet, `${st.name} round ${r + 1}/${rounds}`, plan));
    }
    for (const st of stations) await st.fleet.close();
  } finally {
    for (const st of stations) await st.fleet.stop();
  }
  return measured;
}
