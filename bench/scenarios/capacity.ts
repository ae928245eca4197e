// capacity: what one idle connection, one login, one heartbeat and one 1:1
// message cost each part of a cluster, measured here in about two minutes,
// and a sizing built from those costs: how many gateways, message (logic)
// nodes, Redis shards and PostgreSQL partitions and disks a target of N
// connections at R messages per second needs (bench/CAPACITY.md).
//
// The measuring run: a cluster of 4 gateways + 1 logic node on Redis and
// PostgreSQL. Users connect to gateways 1 and 2 only; 3 and 4 hold nobody, so
// what they spend beyond their idle timers is what a login elsewhere costs
// every gateway (the presence event each one reads). Windows, each read from
// /proc per process (Redis and PostgreSQL's backends included), Redis's
// INFO and PostgreSQL's statistics:
//   idle      no connection: each process's timers;
//   logins    USERS logins and the presence events they cause, until drained;
//   hold      USERS connections pinging every second (heartbeats, fast so the
//             signal is well above the timers);
//   messages  1:1 at a fixed rate on conversations that exist already (a
//             warm-up made them), 100-byte texts, every recipient online.
// Each window's CPU less the idle rate (and less the heartbeats at their
// measured cost) over what happened in it gives a cost per event per role.
// Memory per connection (gateway RSS, Redis) needs a large run to read as a
// slope: it comes from the largest `connections` section of RESULTS.md.
import { readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import pg from 'pg';
import { Fleet } from '../lib/fleet.js';
import { machineInfo } from '../lib/machine.js';
import { progress, formatNumber } from '../lib/report.js';
import { replaceSection } from '../lib/results-md.js';
import type { BenchResult, SystemResult } from '../lib/result.js';
import { cpuSeconds, startLonglinkCluster, treeCpuSeconds, type System } from '../lib/systems.js';
import { cpuOfMachine } from '../lib/machine-cpu.js';
import { PAYLOAD_BYTES, goal, seconds, withSystem, type Options } from './common.js';

const USERS = 4000;
/**
 * Faster than a client's 25 s so the heartbeats stand out of the timers in a
 * short hold, slow enough that the messages stand out of the heartbeats
 * (at 1 s, 4,000 heartbeats a second cost the gateways 8 times what 500
 * messages a second did, and the per-message figure drowned in the subtraction).
 */
const HEARTBEAT_MS = 5000;
const IDLE_S = 6;
const HOLD_S = 10;
/** Offered 1:1 messages per second: well under what this shared machine saturates at (~1,500-4,000 in cluster-p2p), so the costs are not a queue's. */
const RATE = 500;
/** The connections and message rate sized for when not given (--connections, --rate). */
const TARGET_CONNECTIONS = 10_000_000;
const TARGET_RATE = 100_000;

/** What the sizing assumes besides the measured costs (stated with the table). */
export const ASSUMPTIONS = {
  /** Share of a core a process is sized to use: the rest is headroom for bursts and a failed peer's load. */
  cpuTarget: 0.5,
  /** Connections one gateway process holds at most (file limit raised; a failure sends this many to reconnect). */
  gatewayCap: 100_000,
  /** The server's default ping interval: the SDK pings this often. */
  heartbeatS: 25,
  /** Steady reconnects: this share of all connections per minute (mobile networks, app restarts). */
  churnPerMinute: 0.01,
  /** A gateway lost: its connections come back within this many seconds (on top of the churn). */
  stormS: 60,
  /** Cores of one PostgreSQL partition (one server), and its disks. */
  pgCores: 16,
  pgDiskTb: 7.68,
  pgDisksPerPartition: 2,
  /** Fill disks to at most this share. */
  diskFill: 0.7,
  /** Days messages are kept. */
  retentionDays: 30,
  /** Memory one Redis shard may use (sessions, streams). */
  redisShardGib: 24,
};

/** CPU seconds of every part, and the counters the costs are divided by. */
interface Mark {
  at: number;
  gw: number[];
  logic: number;
  redis: number;
  postgres: number;
  load: number;
  machine: number;
  pings: number;
  redisCalls: number;
  redisMemory: number;
  wal: string;
  commits: number;
  dbBytes: number;
  messages: number;
  busDownRead: number;
  busUpPublished: number;
}

type Cluster = System & { redis: { pid: number; url: string }; postgres: { pid: number; url: string } };

async function redisInfo(url: string): Promise<{ calls: number; memory: number }> {
  const { Redis } = await import('ioredis');
  const r = new Redis(url);
  try {
    const stats = await r.info('commandstats');
    const memory = await r.info('memory');
    let calls = 0;
    for (const m of stats.matchAll(/calls=(\d+)/g)) calls += Number(m[1]);
    return { calls, memory: Number(/used_memory:(\d+)/.exec(memory)?.[1] ?? NaN) };
  } finally {
    r.disconnect();
  }
}

class Meter {
  private constructor(private readonly sys: Cluster, private readonly db: pg.Client, private fleet?: Fleet) {}

  static async open(sys: Cluster): Promise<Meter> {
    const db = new pg.Client({ connectionString: sys.postgres.url });
    await db.connect();
    return new Meter(sys, db);
  }

  watch(fleet: Fleet): void {
    this.fleet = fleet;
  }

  /** CPU and heartbeats first, then the other counters (reading them costs a little: it lands outside the window that ends here). */
  async end(): Promise<Mark> {
    const cpu = await this.cpu();
    return { ...(await this.counters()), ...cpu };
  }

  /** The other counters first (the bus counters' report runs a GC in every server), then heartbeats and CPU: a window starts after them. */
  async begin(): Promise<Mark> {
    const counters = await this.counters();
    return { ...counters, ...(await this.cpu()) };
  }

  /** CPU of every part, and the heartbeats sent, at one moment (the heartbeat count is one IPC round trip away). */
  private async cpu() {
    const gateways = this.sys.holders;
    const logics = this.sys.all.filter((c) => !gateways.includes(c));
    const pings = this.fleet ? (await this.fleet.counts()).pings : 0;
    return {
      pings,
      at: Date.now(),
      gw: gateways.map((c) => cpuSeconds(c.pid)),
      logic: logics.reduce((s, c) => s + cpuSeconds(c.pid), 0),
      redis: cpuSeconds(this.sys.redis.pid),
      postgres: treeCpuSeconds(this.sys.postgres.pid),
      load: this.fleet?.workers.reduce((s, w) => s + cpuSeconds(w.pid), 0) ?? 0,
      machine: cpuOfMachine(),
    };
  }

  private async counters() {
    const [redis, db, reports] = await Promise.all([
      redisInfo(this.sys.redis.url),
      this.db.query<{ wal: string; commits: string; bytes: string; messages: string }>(
        `SELECT pg_current_wal_lsn()::text AS wal,
                (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database())::text AS commits,
                pg_database_size(current_database())::text AS bytes,
                (SELECT count(*) FROM messages)::text AS messages`,
      ),
      this.sys.report(),
    ]);
    const row = db.rows[0]!;
    return {
      redisCalls: redis.calls,
      redisMemory: redis.memory,
      wal: row.wal,
      commits: Number(row.commits),
      dbBytes: Number(row.bytes),
      messages: Number(row.messages),
      busDownRead: reports.reduce((s, r) => s + (r.bus?.downRead ?? 0), 0),
      busUpPublished: reports.reduce((s, r) => s + (r.bus?.upPublished ?? 0), 0),
    };
  }

  async walBytes(from: string, to: string): Promise<number> {
    const r = await this.db.query<{ d: string }>('SELECT pg_wal_lsn_diff($1, $2)::text AS d', [to, from]);
    return Number(r.rows[0]!.d);
  }

  async close(): Promise<void> {
    await this.db.end().catch(() => undefined);
  }
}

/** CPU seconds per second of each part between two marks. */
function rates(a: Mark, b: Mark) {
  const dt = (b.at - a.at) / 1000;
  return {
    dt,
    gw: b.gw.map((x, i) => (x - a.gw[i]!) / dt),
    logic: (b.logic - a.logic) / dt,
    redis: (b.redis - a.redis) / dt,
    postgres: (b.postgres - a.postgres) / dt,
    load: (b.load - a.load) / dt,
    machine: (b.machine - a.machine) / dt,
  };
}

/** Costs measured here, per event, in CPU microseconds of this machine. */
export interface Costs {
  idle_gateway_pct: number;
  idle_logic_pct: number;
  idle_redis_pct: number;
  login_gateway_us: number;
  /** What a login on another gateway costs each gateway (the presence event it reads). */
  login_other_gateway_us: number;
  login_logic_us: number;
  login_redis_us: number;
  login_postgres_us: number;
  heartbeat_gateway_us: number;
  heartbeat_redis_us: number;
  msg_gateway_us: number;
  msg_logic_us: number;
  msg_redis_us: number;
  msg_postgres_us: number;
  msg_redis_commands: number;
  msg_wal_bytes: number;
  msg_stored_bytes: number;
  msg_commits: number;
  msg_bus_entries_read: number;
  /** Load processes' CPU per message (the harness's share, for the record). */
  msg_load_us: number;
  other_tenants_cpu_pct: number;
}

export interface Memory {
  gateway_kb_per_conn: number;
  redis_kb_per_conn: number;
  source: string;
}

interface Ledger {
  acked: number;
  lost: number;
  duplicated: number;
  drops: number;
}

async function measureCosts(sys: Cluster, o: Options): Promise<{ costs: Costs; log: string[]; ledger: Ledger }> {
  const log: string[] = [];
  let ledger: Ledger = { acked: 0, lost: NaN, duplicated: NaN, drops: NaN };
  const meter = await Meter.open(sys);
  // Users on gateways 1 and 2 only (urls are [tcp, ws] per gateway): 3 and 4 hold nobody.
  const urls = sys.urls.slice(0, 4);
  const fleet = await Fleet.start({ system: 'longlink', users: USERS, urls, tokenSecret: sys.tokenSecret, heartbeatMs: HEARTBEAT_MS, minProcesses: 2, concurrency: 50 });
  try {
    await new Promise((r) => setTimeout(r, 3000));
    // Idle: no connection.
    const i0 = await meter.begin();
    await new Promise((r) => setTimeout(r, IDLE_S * 1000));
    const i1 = await meter.end();
    const idle = rates(i0, i1);
    const idleGw = idle.gw.reduce((s, x) => s + x, 0) / idle.gw.length;
    log.push(`idle ${idle.dt.toFixed(1)} s: gateways ${idle.gw.map((x) => (x * 100).toFixed(1)).join('/')}%, logic ${(idle.logic * 100).toFixed(1)}%, `
      + `Redis ${(idle.redis * 100).toFixed(1)}%, PostgreSQL ${(idle.postgres * 100).toFixed(1)}%`);

    // Logins, until their presence events are through (the gateways' and logic's CPU back near idle).
    meter.watch(fleet);
    const l0 = await meter.begin();
    const c = await fleet.connect('capacity: logins');
    if (c.connected !== USERS) throw new Error(`only ${c.connected} of ${USERS} connected: ${JSON.stringify(c.errors)}`);
    await new Promise((r) => setTimeout(r, 4000));
    const l1 = await meter.end();

    // Hold: heartbeats only.
    const h0 = await meter.begin();
    await new Promise((r) => setTimeout(r, HOLD_S * 1000));
    const h1 = await meter.end();
    const hold = rates(h0, h1);
    const pingsPerS = (h1.pings - h0.pings) / hold.dt;
    const own = (r: ReturnType<typeof rates>) => r.gw[0]! + r.gw[1]!;
    const heartbeatGw = (own(hold) - 2 * idleGw) / pingsPerS;
    const heartbeatRedis = (hold.redis - idle.redis) / pingsPerS;
    log.push(`hold ${hold.dt.toFixed(1)} s: ${Math.round(pingsPerS)} heartbeats/s, gateways 1+2 ${(own(hold) * 100).toFixed(1)}%, Redis ${(hold.redis * 100).toFixed(1)}%`);

    const login = rates(l0, l1);
    const loginPings = l1.pings - l0.pings;
    const perLogin = (busy: number, idleRate: number, pingCost = 0) => ((busy - idleRate) * login.dt - pingCost * loginPings) / USERS;
    const other = (login.gw[2]! + login.gw[3]!) / 2;
    log.push(`logins: ${USERS} in ${c.seconds.toFixed(1)} s, window ${login.dt.toFixed(1)} s (with the drain): gateways `
      + `${login.gw.map((x) => (x * 100).toFixed(1)).join('/')}%, logic ${(login.logic * 100).toFixed(1)}%, Redis ${(login.redis * 100).toFixed(1)}%`);

    // Messages: a warm-up makes the conversations (each sender writes once to the next user), then the measured phase.
    const plan = {
      mode: 'rate' as const, rate: RATE, window: 0, pattern: { kind: 'p2p' as const, users: USERS, offsets: [1] },
      // Deliveries counted once none came for 3 s (a busy machine can hold a push that long).
      payloadBytes: PAYLOAD_BYTES, expectedPerMsg: 1, settleMs: 3000,
    };
    await fleet.load('capacity: warm-up', { ...plan, durationMs: (USERS / RATE) * 1000 + 1000 });
    const m0 = await meter.begin();
    const out = await fleet.load('capacity: messages', { ...plan, durationMs: seconds(o, 10, 5) * 1000 });
    const m1 = await meter.end();
    // The ledger over the whole run (warm-up included): kept as a goal (a lost message fails the run), the costs still read.
    const { drops } = await fleet.counts();
    ledger = { lost: out.lost, duplicated: out.duplicated, acked: out.acked, drops };
    if (out.lost > 0 || out.duplicated > 0 || drops > 0) log.push(`ledger: ${out.acked} acked, lost ${out.lost}, duplicated ${out.duplicated}, ${drops} connections dropped`);
    const msg = rates(m0, m1);
    const msgPings = m1.pings - m0.pings;
    const delivered = m1.messages - m0.messages;
    const perMsg = (busy: number, idleRate: number, pingCost = 0) => ((busy - idleRate) * msg.dt - pingCost * msgPings) / delivered;
    log.push(`messages: ${delivered} stored in ${msg.dt.toFixed(1)} s (offered ${RATE}/s), p99 ${out.p99_ms.toFixed(0)} ms: gateways `
      + `${msg.gw.map((x) => (x * 100).toFixed(1)).join('/')}%, logic ${(msg.logic * 100).toFixed(1)}%, Redis ${(msg.redis * 100).toFixed(1)}%, `
      + `PostgreSQL ${(msg.postgres * 100).toFixed(1)}%, load ${(msg.load * 100).toFixed(1)}%`);

    const ours = (r: ReturnType<typeof rates>) => r.gw.reduce((s, x) => s + x, 0) + r.logic + r.redis + r.postgres + r.load;
    const windows = [idle, login, hold, msg];
    const others = windows.reduce((s, r) => s + Math.max(0, r.machine - ours(r)) * r.dt, 0) / windows.reduce((s, r) => s + r.dt, 0);
    const costs: Costs = {
      idle_gateway_pct: idleGw * 100,
      idle_logic_pct: idle.logic * 100,
      idle_redis_pct: idle.redis * 100,
      login_gateway_us: (perLogin(own(login), 2 * idleGw, heartbeatGw) - 2 * perLogin(other, idleGw)) * 1e6,
      login_other_gateway_us: perLogin(other, idleGw) * 1e6,
      login_logic_us: perLogin(login.logic, idle.logic) * 1e6,
      login_redis_us: perLogin(login.redis, idle.redis, heartbeatRedis) * 1e6,
      login_postgres_us: perLogin(login.postgres, idle.postgres) * 1e6,
      heartbeat_gateway_us: heartbeatGw * 1e6,
      heartbeat_redis_us: heartbeatRedis * 1e6,
      msg_gateway_us: perMsg(msg.gw.reduce((s, x) => s + x, 0), 4 * idleGw, heartbeatGw) * 1e6,
      msg_logic_us: perMsg(msg.logic, idle.logic) * 1e6,
      msg_redis_us: perMsg(msg.redis, idle.redis, heartbeatRedis) * 1e6,
      msg_postgres_us: perMsg(msg.postgres, idle.postgres) * 1e6,
      msg_redis_commands: (m1.redisCalls - m0.redisCalls) / delivered,
      msg_wal_bytes: (await meter.walBytes(m0.wal, m1.wal)) / delivered,
      msg_stored_bytes: (m1.dbBytes - m0.dbBytes) / delivered,
      msg_commits: (m1.commits - m0.commits) / delivered,
      msg_bus_entries_read: (m1.busDownRead - m0.busDownRead) / delivered,
      msg_load_us: (msg.load * msg.dt / delivered) * 1e6,
      other_tenants_cpu_pct: others * 100,
    };
    await fleet.close();
    return { costs, log, ledger };
  } finally {
    await fleet.stop();
    await meter.close();
  }
}

/**
 * Memory per connection from the largest Longlink `connections` run kept in
 * RESULTS.md (a slope needs many connections to rise above the noise).
 */
export function memoryFromResults(file = 'bench/RESULTS.md'): Memory | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  let best: (Memory & { held: number }) | undefined;
  for (const m of text.matchAll(/<!-- bench:(connections[^>]*) -->([\s\S]*?)<!-- \/bench:/g)) {
    const body = m[2]!;
    const lines = body.split('\n');
    const header = lines.find((l) => l.startsWith('| system |'));
    const row = lines.find((l) => l.startsWith('| longlink |'));
    if (!header || !row) continue;
    const cols = header.split('|').map((x) => x.trim());
    const vals = row.split('|').map((x) => x.trim());
    const field = (name: string) => {
      const i = cols.indexOf(name);
      return i < 0 ? NaN : Number(vals[i]!.replace(/,/g, ''));
    };
    const held = field('held');
    const when = /^(\d{4}-\d\d-\d\dT[\d:]+Z)/m.exec(body)?.[1] ?? '';
    if (!Number.isFinite(held) || (best && best.held >= held)) continue;
    best = {
      held, gateway_kb_per_conn: field('rss_kb_per_conn'), redis_kb_per_conn: field('redis_kb_per_conn'),
      source: `RESULTS.md section "${m[1]}" (${when}, ${formatNumber(held)} held)`,
    };
  }
  return best;
}

export interface Row {
  tier: string;
  count: number;
  sized_by: string;
  load: string;
}

/** The sizing of `connections` at `rate` msg/s from measured costs (see ASSUMPTIONS). */
export function size(connections: number, rate: number, c: Costs, mem: Memory, a = ASSUMPTIONS, presenceToAll = true): { rows: Row[]; notes: string[] } {
  const notes: string[] = [];
  const logins = connections * a.churnPerMinute / 60 + a.gatewayCap / a.stormS;
  const heartbeats = connections / a.heartbeatS;
  const us = 1e-6;
  // Gateways: heartbeats, messages (sender's and recipient's side), logins, and (today) every login's presence on every gateway.
  const perGatewayPresence = presenceToAll ? logins * c.login_other_gateway_us * us : 0;
  const spread = heartbeats * c.heartbeat_gateway_us * us + rate * c.msg_gateway_us * us + logins * c.login_gateway_us * us;
  const byCap = Math.ceil(connections / a.gatewayCap);
  let gateways: number;
  let gatewayBy: string;
  if (perGatewayPresence >= a.cpuTarget) {
    gateways = Infinity;
    gatewayBy = `none suffices: each gateway spends ${(perGatewayPresence * 100).toFixed(0)}% of a core on the presence events of ${formatNumber(Math.round(logins))} logins/s`;
  } else {
    const byCpu = Math.ceil(spread / (a.cpuTarget - perGatewayPresence));
    gateways = Math.max(byCap, byCpu);
    gatewayBy = gateways === byCap ? `${formatNumber(a.gatewayCap)} connections each` : 'CPU';
  }
  const perGateway = connections / gateways;
  const gwCore = Number.isFinite(gateways) ? spread / gateways + perGatewayPresence : NaN;
  const gwMemGib = (perGateway * mem.gateway_kb_per_conn) / 2 ** 20;
  const rows: Row[] = [{
    tier: 'gateways', count: gateways, sized_by: gatewayBy,
    load: Number.isFinite(gateways)
      ? `${formatNumber(Math.round(perGateway))} connections, ${(gwCore * 100).toFixed(0)}% of a core, ${gwMemGib.toFixed(2)} GiB of connections`
      : '-',
  }];
  // Message nodes: the send path, pushes and acks; logins' session events (presence).
  const logicCores = rate * c.msg_logic_us * us + logins * c.login_logic_us * us;
  const logic = Math.max(1, Math.ceil(logicCores / a.cpuTarget));
  rows.push({ tier: 'message nodes', count: logic, sized_by: 'CPU', load: `${formatNumber(Math.round(rate / logic))} msg/s each, ${((logicCores / logic) * 100).toFixed(0)}% of a core` });
  // Redis: single-threaded shards; CPU and memory (the session table).
  const redisCores = rate * c.msg_redis_us * us + logins * c.login_redis_us * us + heartbeats * Math.max(0, c.heartbeat_redis_us) * us;
  const redisGib = (connections * mem.redis_kb_per_conn) / 2 ** 20;
  const redisByCpu = Math.ceil(redisCores / a.cpuTarget);
  const redisByMem = Math.ceil(redisGib / a.redisShardGib);
  const redis = Math.max(1, redisByCpu, redisByMem);
  rows.push({
    tier: 'Redis shards', count: redis, sized_by: redisByCpu >= redisByMem ? 'CPU' : 'memory',
    load: `${formatNumber(Math.round((rate * c.msg_redis_commands) / redis))} commands/s each, ${((redisCores / redis) * 100).toFixed(0)}% of a core, `
      + `${(redisGib / redis).toFixed(1)} GiB of sessions`,
  });
  // PostgreSQL: CPU per stored message, disk for the retention period, WAL written.
  const pgCores = rate * c.msg_postgres_us * us;
  const storedTb = (rate * c.msg_stored_bytes * a.retentionDays * 86_400) / 1e12;
  const pgByCpu = Math.ceil(pgCores / (a.pgCores * a.cpuTarget));
  const pgByDisk = Math.ceil(storedTb / (a.pgDiskTb * a.pgDisksPerPartition * a.diskFill));
  const partitions = Math.max(1, pgByCpu, pgByDisk);
  const walMbS = (rate * c.msg_wal_bytes) / 1e6;
  rows.push({
    tier: 'PostgreSQL partitions', count: partitions, sized_by: pgByCpu >= pgByDisk ? `CPU (${a.pgCores} cores each)` : 'disk',
    load: `${formatNumber(Math.round(rate / partitions))} msg/s each, ${(pgCores / partitions).toFixed(1)} of its ${a.pgCores} cores, `
      + `${(walMbS / partitions).toFixed(1)} MB/s of WAL, ${formatNumber(Math.round((rate * c.msg_commits) / partitions))} commits/s`,
  });
  rows.push({
    tier: 'PostgreSQL disks', count: partitions * a.pgDisksPerPartition, sized_by: `${a.retentionDays} days of messages`,
    load: `${formatNumber(Math.round(storedTb))} TB stored in all (${formatNumber(Math.round(c.msg_stored_bytes))} B a message), `
      + `${((storedTb / (partitions * a.pgDisksPerPartition * a.pgDiskTb)) * 100).toFixed(0)}% of ${a.pgDiskTb} TB disks`,
  });
  notes.push(`${formatNumber(Math.round(logins))} logins/s sized for: ${a.churnPerMinute * 100}% of the connections a minute, plus one gateway's `
    + `${formatNumber(a.gatewayCap)} coming back within ${a.stormS} s; ${formatNumber(Math.round(heartbeats))} heartbeats/s (one per ${a.heartbeatS} s).`);
  return { rows, notes };
}

export function sizingTable(rows: Row[]): string {
  const lines = ['| tier | count | sized by | each one |', '| --- | ---: | --- | --- |'];
  for (const r of rows) lines.push(`| ${r.tier} | ${Number.isFinite(r.count) ? formatNumber(r.count) : '∞'} | ${r.sized_by} | ${r.load} |`);
  return lines.join('\n');
}

export async function capacity(o: Options): Promise<BenchResult> {
  const target = o.connections ?? TARGET_CONNECTIONS;
  const rate = o.rate ?? TARGET_RATE;
  const load0 = loadavg()[0]!;
  const { costs, log, ledger } = await withSystem(
    () => startLonglinkCluster({ gateways: 4, logic: 1, routing: 'targeted', transports: ['tcp', 'ws'] }),
    (sys) => measureCosts(sys as Cluster, o),
  );
  const load1 = loadavg()[0]!;
  for (const line of log) progress(`capacity: ${line}`, true);
  const memory = memoryFromResults() ?? { gateway_kb_per_conn: 5.05, redis_kb_per_conn: 0.71, source: 'no connections section in RESULTS.md: the 100,000-connection run of 2026-11-27' };
  const today = size(target, rate, costs, memory, ASSUMPTIONS, true);
  const fixed = size(target, rate, costs, memory, ASSUMPTIONS, false);
  const results: Record<string, SystemResult> = {
    gateway: {
      idle_cpu_pct: costs.idle_gateway_pct, login_us: costs.login_gateway_us, login_elsewhere_us: costs.login_other_gateway_us,
      heartbeat_us: costs.heartbeat_gateway_us, msg_us: costs.msg_gateway_us, kb_per_conn: memory.gateway_kb_per_conn,
    },
    logic: { idle_cpu_pct: costs.idle_logic_pct, login_us: costs.login_logic_us, msg_us: costs.msg_logic_us, bus_entries_read_per_msg: costs.msg_bus_entries_read },
    redis: {
      idle_cpu_pct: costs.idle_redis_pct, login_us: costs.login_redis_us, heartbeat_us: costs.heartbeat_redis_us, msg_us: costs.msg_redis_us,
      commands_per_msg: costs.msg_redis_commands, kb_per_conn: memory.redis_kb_per_conn,
    },
    postgres: {
      login_us: costs.login_postgres_us, msg_us: costs.msg_postgres_us, wal_bytes_per_msg: costs.msg_wal_bytes,
      stored_bytes_per_msg: costs.msg_stored_bytes, commits_per_msg: costs.msg_commits,
    },
  };
  const result: BenchResult = {
    scenario: 'capacity',
    command: o.command,
    conditions: {
      machine: machineInfo(),
      measured_on: `4 gateways (users on 2; 2 hold nobody) + 1 logic, Redis (AOF everysec), PostgreSQL (fsync on); ${USERS} users, `
        + `heartbeats every ${HEARTBEAT_MS} ms, 1:1 at ${RATE} msg/s offered on existing conversations, ${PAYLOAD_BYTES}-byte texts`,
      load_average: `${load0.toFixed(1)} before, ${load1.toFixed(1)} after`,
      other_tenants_cpu_pct: Math.round(costs.other_tenants_cpu_pct),
      memory_from: memory.source,
      target: `${formatNumber(target)} connections, ${formatNumber(rate)} msg/s (1:1, one device online per user)`,
      quick: o.quick,
    },
    results,
    ratios: {},
    goals: [
      goal('messages lost = 0 (measuring run)', ledger.lost, 0, true),
      goal('messages duplicated = 0 (measuring run)', ledger.duplicated, 0, true),
      goal('connections dropped = 0 (measuring run)', ledger.drops, 0, true),
    ],
    chart: { title: 'capacity', metrics: [] },
    notes: [
      'CPU in µs of one core of this machine per event, less each process\'s idle rate; login_elsewhere_us is what a login on another gateway costs each gateway (its presence event).',
      ...log,
      `Sizing, presence sent to every gateway (today): ${today.rows.map((r) => `${r.tier} ${Number.isFinite(r.count) ? formatNumber(r.count) : '∞'}`).join(', ')}.`,
      `Sizing, presence sent only where someone watches: ${fixed.rows.map((r) => `${r.tier} ${formatNumber(r.count)}`).join(', ')}.`,
      ...today.notes,
    ],
  };
  // A measuring run whose ledger does not balance is not one to size from (its messages waited past the
  // downlink's 30 s bound on a starved machine, most likely): CAPACITY.md keeps the last good one.
  if (ledger.lost === 0 && ledger.duplicated === 0 && ledger.drops === 0) writeCapacityMd(result, target, rate, today, fixed);
  else progress('capacity: the measuring run lost or repeated messages, or dropped connections: bench/CAPACITY.md left as it was', true);
  return result;
}

/** The generated part of bench/CAPACITY.md (between its markers): the latest measured costs and the sizing tables. */
function writeCapacityMd(result: BenchResult, target: number, rate: number, today: { rows: Row[]; notes: string[] }, fixed: { rows: Row[] }, file = 'bench/CAPACITY.md'): void {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    text = '# Capacity\n';
  }
  const r = result.results;
  const f = (x: number | undefined) => (x === undefined ? '-' : formatNumber(x));
  const block = [
    '<!-- bench:capacity -->',
    `Generated ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')} by \`${result.command}\` on ${String((result.conditions.machine as Record<string, unknown>).cpu)}, `
      + `${String((result.conditions.machine as Record<string, unknown>).cores)} cores (load average ${String(result.conditions.load_average)}; `
      + `other tenants used ${String(result.conditions.other_tenants_cpu_pct)}% of a core meanwhile).`,
    '',
    `Measured on: ${String(result.conditions.measured_on)}. Memory per connection: ${String(result.conditions.memory_from)}.`,
    '',
    '| per event (µs of CPU) | gateway | message node | Redis | PostgreSQL |',
    '| --- | ---: | ---: | ---: | ---: |',
    `| idle, % of a core per process | ${f(r.gateway!.idle_cpu_pct)} | ${f(r.logic!.idle_cpu_pct)} | ${f(r.redis!.idle_cpu_pct)} | - |`,
    `| login (its own gateway) | ${f(r.gateway!.login_us)} | ${f(r.logic!.login_us)} | ${f(r.redis!.login_us)} | ${f(r.postgres!.login_us)} |`,
    `| login elsewhere, each other gateway | ${f(r.gateway!.login_elsewhere_us)} | - | - | - |`,
    `| heartbeat | ${f(r.gateway!.heartbeat_us)} | - | ${f(r.redis!.heartbeat_us)} | - |`,
    `| 1:1 message (stored, pushed, acked) | ${f(r.gateway!.msg_us)} | ${f(r.logic!.msg_us)} | ${f(r.redis!.msg_us)} | ${f(r.postgres!.msg_us)} |`,
    '',
    `Per message besides: ${f(r.redis!.commands_per_msg)} Redis commands, ${f(r.logic!.bus_entries_read_per_msg)} downlink bus entries read, `
      + `${f(r.postgres!.wal_bytes_per_msg)} B of WAL, ${f(r.postgres!.stored_bytes_per_msg)} B stored (tables and indexes), `
      + `${f(r.postgres!.commits_per_msg)} commits. Per connection: ${f(r.gateway!.kb_per_conn)} KB of gateway RSS, ${f(r.redis!.kb_per_conn)} KB of Redis.`,
    '',
    `### ${formatNumber(target)} connections at ${formatNumber(rate)} msg/s, presence sent to every gateway (the code today)`,
    '',
    sizingTable(today.rows),
    '',
    `### The same, presence sent only to gateways where someone watches the user`,
    '',
    sizingTable(fixed.rows),
    '',
    ...today.notes.map((n) => `- ${n}`),
    `- Assumed: each process sized to ${ASSUMPTIONS.cpuTarget * 100}% of one core; at most ${formatNumber(ASSUMPTIONS.gatewayCap)} connections a gateway; `
      + `a PostgreSQL partition is one server of ${ASSUMPTIONS.pgCores} cores and ${ASSUMPTIONS.pgDisksPerPartition} disks of ${ASSUMPTIONS.pgDiskTb} TB filled to `
      + `${ASSUMPTIONS.diskFill * 100}%, messages kept ${ASSUMPTIONS.retentionDays} days; a Redis shard holds at most ${ASSUMPTIONS.redisShardGib} GiB.`,
    '<!-- /bench:capacity -->',
  ].join('\n');
  writeFileSync(file, replaceSection(text, 'capacity', block));
}
