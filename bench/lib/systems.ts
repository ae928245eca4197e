// The servers a scenario measures, each as a set of processes the harness
// forked: Longlink embedded (one process), a Longlink cluster (gateways and
// logic nodes on Redis and PostgreSQL), and the baselines (one or more bare
// server processes). A system answers where to connect and what its
// processes use (memory after GC, CPU time, bus counters).
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startPostgres, startRedis, type PostgresServer, type RedisServer } from '../../dist/dev/services.js';
import { forkTs, type Child, type Msg } from './procs.js';

export interface ProcReport {
  name: string;
  rss: number;
  heapUsed: number;
  connections: number;
  bus?: { upPublished: number; upRead: number; downPublished: number; downRead: number; downMessagesRead: number };
}

export interface System {
  name: string;
  /** Where users connect; user g uses urls[g % urls.length]. */
  urls: string[];
  tokenSecret?: string;
  /** Longlink: a gateway's tcp:// address, for setting up state (groups) before the load. */
  setupUrl?: string;
  /** The processes that hold connections (gateways, or the one server). */
  holders: Child[];
  /** Every server process (for CPU time). */
  all: Child[];
  /** Memory and counters of the connection-holding processes. */
  /** Memory and counters of the connection-holding processes; each has `timeoutMs` to answer (default 60 s). */
  report(timeoutMs?: number): Promise<ProcReport[]>;
  /** Extra per-system figures (e.g. Redis memory). */
  extra?(): Promise<Record<string, number>>;
  /** CPU seconds the engines (Redis, PostgreSQL and its backends) have used so far; 0 without any. */
  engineCpu?(): number;
  stop(): Promise<void>;
}

/** CPU seconds (user + system) a process has used, from /proc. */
export function cpuSeconds(pid: number, reapedChildren = false): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    // utime, stime in clock ticks (100/s on Linux); cutime, cstime: children that exited and were waited for
    const own = Number(fields[11]) + Number(fields[12]);
    return (reapedChildren ? own + Number(fields[13]) + Number(fields[14]) : own) / 100;
  } catch {
    return 0;
  }
}

/**
 * CPU seconds of a process and all its children, those running and those
 * gone (PostgreSQL's backends come and go with its clients' pools: summing
 * only the running ones made the sum go down, and a per-message cost negative).
 */
export function treeCpuSeconds(pid: number): number {
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch {
    // gone, or no children file: the process alone
  }
  return cpuSeconds(pid, true) + children.reduce((s, c) => s + cpuSeconds(c), 0);
}

export function totalCpu(sys: System): number {
  return sys.all.reduce((s, c) => s + cpuSeconds(c.pid), 0);
}

async function reportOf(children: Child[], timeoutMs = 60_000): Promise<ProcReport[]> {
  return Promise.all(children.map(async (c) => {
    const m = await c.ask<Msg & Omit<ProcReport, 'name'>>({ type: 'report' }, 'report', timeoutMs);
    return { name: c.name, rss: m.rss, heapUsed: m.heapUsed, connections: m.connections, bus: m.bus };
  }));
}

export type BaselineKind = 'raw-ws' | 'raw-net' | 'socketio';

/** `processes` bare servers of one kind (one per ~18,000 connections). */
export async function startBaseline(kind: BaselineKind, processes = 1): Promise<System> {
  const children: Child[] = [];
  const urls: string[] = [];
  for (let i = 0; i < processes; i++) children.push(forkTs(`${kind}-${i + 1}`, 'servers/baseline.ts', ['--kind', kind, '--port', '0', '--host', '127.0.0.1']));
  try {
    for (const ready of await Promise.all(children.map((c) => c.next<Msg & { port: number }>('ready', 60_000)))) {
      urls.push(kind === 'raw-net' ? `tcp://127.0.0.1:${ready.port}` : kind === 'raw-ws' ? `ws://127.0.0.1:${ready.port}/` : `http://127.0.0.1:${ready.port}`);
    }
  } catch (err) {
    await Promise.all(children.map((c) => c.stop()));
    throw err;
  }
  return {
    name: kind, urls, holders: children, all: children,
    report: (t) => reportOf(children, t),
    stop: async () => {
      await Promise.all(children.map((c) => c.stop()));
    },
  };
}

export interface LonglinkOptions {
  /** Which transports users get, alternating by user: ['tcp', 'ws'] gives half of each. */
  transports: ('tcp' | 'ws')[];
  /** More LONGLINK_* settings. */
  env?: Record<string, string>;
  /** Node flags for the server processes (e.g. --cpu-prof). */
  nodeArgs?: string[];
  /** Risk rules to put (PUT /api/v1/risk/rules) once the server is up; embedded only. */
  rules?: unknown;
}

/** Every benchmark client comes from 127.0.0.1, up to 18,000 per process: no per-address or pending-login cap for this load. */
const LOOPBACK_LOAD = { LONGLINK_MAX_CONNECTIONS_PER_ADDRESS: '10000000', LONGLINK_MAX_PENDING_LOGINS: '10000000' };

function secrets(): { LONGLINK_TOKEN_SECRET: string; LONGLINK_ADMIN_KEY: string } {
  return { LONGLINK_TOKEN_SECRET: randomBytes(32).toString('base64url'), LONGLINK_ADMIN_KEY: randomBytes(24).toString('base64url') };
}

/** `longlink start` (embedded engines, SQLite in a temp folder) as one process. */
export async function startEmbeddedLonglink(options: LonglinkOptions): Promise<System> {
  const dir = mkdtempSync(join(tmpdir(), 'longlink-bench-'));
  const env = {
    ...secrets(), LONGLINK_DATA_DIR: dir, LONGLINK_HTTP_PORT: '0', LONGLINK_TCP_PORT: '0', LONGLINK_HOST: '127.0.0.1',
    LONGLINK_NODE_ID: 'bench-1', LONGLINK_GROUP_ADD_POLICY: 'anyone', ...LOOPBACK_LOAD, ...options.env,
  };
  const c = forkTs('longlink', 'servers/longlink.ts', ['embedded'], { env, nodeArgs: options.nodeArgs });
  const ready = await c.next<Msg & { tcpUrl: string; wsUrl: string; httpUrl: string }>('ready', 60_000);
  if (options.rules !== undefined) {
    const res = await fetch(`${ready.httpUrl}/api/v1/risk/rules`, {
      method: 'PUT', headers: { authorization: `Bearer ${env.LONGLINK_ADMIN_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(options.rules),
    });
    if (res.status !== 200) {
      await c.stop();
      throw new Error(`putting the risk rules: ${res.status} ${await res.text()}`);
    }
  }
  return {
    name: 'longlink', holders: [c], all: [c], tokenSecret: env.LONGLINK_TOKEN_SECRET, setupUrl: ready.tcpUrl,
    urls: options.transports.map((t) => (t === 'tcp' ? ready.tcpUrl : ready.wsUrl)),
    report: (t) => reportOf([c], t),
    stop: async () => {
      await c.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Services of the split logic tier (src/roles/logic.ts), each its own process. */
export type SplitService = 'auth' | 'message' | 'group' | 'storage' | 'risk' | 'push';

export interface ClusterOptions extends LonglinkOptions {
  gateways: number;
  /** `longlink logic` processes (every service in each). */
  logic: number;
  /** Processes per service of the split layout, beside (usually instead of: logic 0) the combined ones; named auth-1, message-1, … */
  services?: Partial<Record<SplitService, number>>;
  routing: 'targeted' | 'broadcast';
  /** @default 16 */
  shards?: number;
}

/**
 * Gateways and logic nodes (or the split layout's service processes) on a
 * Redis and a PostgreSQL the harness starts in a temp folder (like `npm run cluster`).
 */
export async function startLonglinkCluster(options: ClusterOptions): Promise<System & { redis: RedisServer; postgres: PostgresServer }> {
  const dir = mkdtempSync(join(tmpdir(), 'longlink-bench-cluster-'));
  chmodSync(dir, 0o755);
  // Durable like `npm run cluster`: Redis AOF fsync every second, PostgreSQL fsync on.
  const redis = await startRedis({ appendonly: true, appendfsync: 'everysec', parent: dir });
  const postgres = await startPostgres({ durable: true, parent: dir });
  const base = {
    ...secrets(), LONGLINK_REDIS_URL: redis.url, LONGLINK_POSTGRES_URL: postgres.url, LONGLINK_ROUTING: options.routing,
    LONGLINK_BUS_SHARDS: String(options.shards ?? 16), LONGLINK_HOST: '127.0.0.1', LONGLINK_HTTP_PORT: '0', LONGLINK_TCP_PORT: '0',
    LONGLINK_GROUP_ADD_POLICY: 'anyone', ...LOOPBACK_LOAD, ...options.env,
  };
  const logics: Child[] = [];
  const gateways: Child[] = [];
  const stopAllNodes = async () => {
    await Promise.all(gateways.map((c) => c.stop()));
    await Promise.all(logics.map((c) => c.stop()));
    await redis.stop();
    await postgres.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  const urls: string[] = [];
  let setupUrl = '';
  try {
    const roles: [string, number][] = [['logic', options.logic], ...Object.entries(options.services ?? {})];
    for (const [role, count] of roles) {
      for (let i = 0; i < count; i++) {
        const name = `${role}-${i + 1}`;
        logics.push(forkTs(name, 'servers/longlink.ts', [role], { env: { ...base, LONGLINK_NODE_ID: name }, nodeArgs: options.nodeArgs }));
      }
    }
    await Promise.all(logics.map((c) => c.next('ready', 60_000)));
    // Gateways start together (17 of them at 250,000 connections: one after the other took a second each).
    for (let i = 0; i < options.gateways; i++) {
      gateways.push(forkTs(`gw-${i + 1}`, 'servers/longlink.ts', ['gateway'], { env: { ...base, LONGLINK_NODE_ID: `gw-${i + 1}` }, nodeArgs: options.nodeArgs }));
    }
    const readies = await Promise.all(gateways.map((c) => c.next<Msg & { tcpUrl: string; wsUrl: string }>('ready', 180_000)));
    setupUrl = readies[0]?.tcpUrl ?? '';
    const perGateway = readies.map((ready) => options.transports.map((t) => (t === 'tcp' ? ready.tcpUrl : ready.wsUrl)));
    // Transport alternates fastest, then the gateway: user g -> transport g % T, gateway floor(g / T) % G.
    for (const list of perGateway) urls.push(...list);
  } catch (err) {
    await stopAllNodes();
    throw err;
  }
  return {
    name: `longlink-${options.routing}`, urls, holders: gateways, all: [...gateways, ...logics], tokenSecret: base.LONGLINK_TOKEN_SECRET,
    redis, postgres, setupUrl,
    report: (t) => reportOf([...gateways, ...logics], t),
    extra: async () => ({ redis_used_memory: await redisUsedMemory(redis.url) }),
    engineCpu: () => cpuSeconds(redis.pid) + treeCpuSeconds(postgres.pid),
    stop: stopAllNodes,
  };
}

async function redisUsedMemory(url: string): Promise<number> {
  const { Redis } = await import('ioredis');
  const r = new Redis(url, { lazyConnect: false });
  try {
    const info = await r.info('memory');
    return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? NaN);
  } finally {
    r.disconnect();
  }
}
