// A local cluster: Redis and PostgreSQL in a temp folder, and any number of
// `longlink gateway` and `longlink logic` processes joined by them, or (the
// split layout) a process per service of the logic tier: `longlink auth`,
// `message`, `group`, `storage`, `risk` (and `push`). Used by
// `npm run cluster` and by the distributed-mode tests, so the tests run the
// cluster a user runs.
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import {
  freePort, startPostgres, startRedis, startRedisCluster, type AppendFsync, type PostgresServer, type RedisCluster, type RedisServer,
} from './services.js';
import { spawnTied } from './tied.js';
import type { ServiceRole } from '../roles/logic.js';

const BIN = fileURLToPath(new URL('../../bin/longlink.js', import.meta.url));

export type Role = 'gateway' | ServiceRole;

/** The split layout: one process of each service (push runs in the message processes). */
export const SPLIT: Readonly<Partial<Record<ServiceRole, number>>> = { auth: 1, message: 1, group: 1, storage: 1, risk: 1 };

/** Where each service role's ports start past the base port (10 processes per role at most with fixed ports). */
const SERVICE_PORT_OFFSET: Record<Exclude<ServiceRole, 'logic'>, number> = { auth: 400, message: 410, group: 420, storage: 430, risk: 440, push: 450, sync: 460 };

export interface ClusterOptions {
  gateways: number;
  logic: number;
  /** Processes of each service role beside the combined logic ones (the split layout: SPLIT, logic 0). */
  services?: Partial<Record<Exclude<ServiceRole, 'logic'>, number>>;
  routing: 'targeted' | 'broadcast';
  /** Ports from here on (logic HTTP base+i, gateway TCP base+100+i, gateway HTTP/WS base+200+i); free ports when absent. */
  basePort?: number;
  /** Uplink shards. @default 16 */
  shards?: number;
  /** Shard lease; a dead logic node's shards move after it. @default 10000 */
  leaseMs?: number;
  /** Registry TTL; a dead gateway's sessions are dropped after it. @default 15000 */
  nodeTtlMs?: number;
  /**
   * Redis AOF fsync policy (AOF is always on); see faults/README.md for what
   * each keeps across a Redis crash. @default LONGLINK_REDIS_APPENDFSYNC, else 'everysec'
   */
  appendfsync?: AppendFsync;
  /** PostgreSQL with fsync on. @default true */
  durable?: boolean;
  /** On a Redis Cluster (3 masters, 3 replicas, free ports) instead of one Redis; nodes get LONGLINK_REDIS_CLUSTER. */
  redisCluster?: boolean;
  /** More environment for every node (LONGLINK_*). */
  env?: Record<string, string>;
  /** The cluster's secrets (several datacenters share them); new ones when absent. */
  secrets?: { adminKey: string; tokenSecret: string };
  /** Node names start with this (a datacenter's name and a dash). @default '' */
  namePrefix?: string;
  /** Called once Redis and PostgreSQL are up, before any node starts. */
  onEngines?: (redis: RedisServer, postgres: PostgresServer) => void;
  /** Where node output goes: a line callback (tests keep it), else this process's stdout/stderr, prefixed. */
  onLine?: (node: string, line: string, stream: 'out' | 'err') => void;
}

export interface NodeProcess {
  name: string;
  role: Role;
  /** Logic: the API. Gateway: tcp:// and ws:// addresses. */
  httpUrl: string;
  tcpUrl?: string;
  wsUrl?: string;
  child: ChildProcess;
  /** Resolves with the exit code (or signal name) when the process ends. */
  exited: Promise<number | string>;
  running: boolean;
}

export interface Cluster {
  /** The temp folder of Redis and PostgreSQL, removed by stop(). */
  dir: string;
  adminKey: string;
  tokenSecret: string;
  /** The one Redis (throws on a Redis Cluster: see redisCluster). */
  redis: RedisServer;
  /** The Redis Cluster, when started with `redisCluster`. */
  redisCluster: RedisCluster | undefined;
  postgres: PostgresServer;
  nodes: NodeProcess[];
  gateways(): NodeProcess[];
  logics(): NodeProcess[];
  /** The processes of one role. */
  ofRole(role: Role): NodeProcess[];
  node(name: string): NodeProcess;
  /** The HTTP API's URL: the first running logic or auth node. */
  apiUrl(): string;
  /** Send a signal and wait for the process to end. */
  kill(name: string, signal?: NodeJS.Signals): Promise<number | string>;
  /** Send a signal and return at once (SIGSTOP, SIGCONT). */
  signal(name: string, signal: NodeJS.Signals): void;
  /** Start a stopped node again with the same name, ports and settings. */
  restart(name: string): Promise<NodeProcess>;
  /** Start one more node. */
  add(role: Role): Promise<NodeProcess>;
  /** SIGTERM every node, then the engines; removes the temp folder. */
  stop(): Promise<void>;
}

interface Spec {
  name: string;
  role: Role;
  httpPort: number;
  tcpPort?: number;
}

function appendfsyncFromEnv(): AppendFsync {
  const raw = process.env.LONGLINK_REDIS_APPENDFSYNC ?? 'everysec';
  if (raw !== 'no' && raw !== 'everysec' && raw !== 'always') {
    throw new Error(`LONGLINK_REDIS_APPENDFSYNC must be no, everysec or always, got "${raw}"`);
  }
  return raw;
}

async function waitHealthy(url: string, node: NodeProcess, timeoutMs = 30_000): Promise<void> {
  const start = Date.now();
  for (;;) {
    if (!node.running) throw new Error(`${node.name} exited before it was ready`);
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) return;
    } catch {
      /* not listening yet */
    }
    if (Date.now() - start > timeoutMs) throw new Error(`${node.name} not healthy within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), 'longlink-cluster-'));
  chmodSync(dir, 0o755); // PostgreSQL may run as another user (see services.ts) and must reach its folder inside
  const base = options.basePort;
  const appendfsync = options.appendfsync ?? appendfsyncFromEnv();
  let redis: RedisServer | undefined;
  let redisCluster: RedisCluster | undefined;
  let postgres: PostgresServer;
  try {
    if (options.redisCluster) redisCluster = await startRedisCluster();
    else redis = await startRedis({ appendonly: true, appendfsync, parent: dir, port: base === undefined ? undefined : base + 300 });
    postgres = await startPostgres({ durable: options.durable ?? true, parent: dir, port: base === undefined ? undefined : base + 301 });
  } catch (err) {
    await redis?.stop();
    await redisCluster?.stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const adminKey = options.secrets?.adminKey ?? randomBytes(24).toString('base64url');
  const tokenSecret = options.secrets?.tokenSecret ?? randomBytes(32).toString('base64url');
  if (redis) options.onEngines?.(redis, postgres);
  const nodes: NodeProcess[] = [];
  const specs = new Map<string, Spec>();
  const counters: Record<Role, number> = { gateway: 0, logic: 0, auth: 0, message: 0, group: 0, storage: 0, risk: 0, push: 0, sync: 0 };

  const print = options.onLine ?? ((node: string, line: string, stream: 'out' | 'err') => {
    (stream === 'out' ? process.stdout : process.stderr).write(`[${node}] ${line}\n`);
  });

  const launch = async (spec: Spec, attempt = 1): Promise<NodeProcess> => {
    const env: Record<string, string> = {
      ...process.env as Record<string, string>,
      ...(redisCluster ? { LONGLINK_REDIS_CLUSTER: redisCluster.seeds } : { LONGLINK_REDIS_URL: redis!.url }),
      LONGLINK_POSTGRES_URL: postgres.url,
      LONGLINK_NODE_ID: spec.name,
      PGAPPNAME: spec.name, // PostgreSQL's pg_stat_activity names the node of each connection
      LONGLINK_ROUTING: options.routing,
      LONGLINK_HTTP_PORT: String(spec.httpPort),
      LONGLINK_ADMIN_KEY: adminKey,
      LONGLINK_TOKEN_SECRET: tokenSecret,
      LONGLINK_BUS_SHARDS: String(options.shards ?? 16),
      LONGLINK_LEASE_MS: String(options.leaseMs ?? 10_000),
      LONGLINK_NODE_TTL_MS: String(options.nodeTtlMs ?? 15_000),
      ...options.env,
    };
    if (spec.tcpPort !== undefined) env.LONGLINK_TCP_PORT = String(spec.tcpPort);
    // Tied to this process: a graceful stop (SIGTERM) if it dies without stopping the node.
    const child = spawnTied(process.execPath, [BIN, spec.role], { env, stdio: ['ignore', 'pipe', 'pipe'] }, 'SIGTERM');
    const node: NodeProcess = {
      name: spec.name,
      role: spec.role,
      httpUrl: `http://127.0.0.1:${spec.httpPort}`,
      tcpUrl: spec.tcpPort === undefined ? undefined : `tcp://127.0.0.1:${spec.tcpPort}`,
      wsUrl: spec.role === 'gateway' ? `ws://127.0.0.1:${spec.httpPort}/ws` : undefined,
      child,
      running: true,
      exited: once(child, 'close').then(([code, signal]) => {
        node.running = false;
        return (code as number | null) ?? (signal as string);
      }),
    };
    const tail: string[] = []; // its last lines, for the error if it exits before it is ready
    for (const [stream, name] of [[child.stdout!, 'out'], [child.stderr!, 'err']] as const) {
      let rest = '';
      stream.setEncoding('utf8').on('data', (d: string) => {
        rest += d;
        const lines = rest.split('\n');
        rest = lines.pop()!;
        for (const line of lines) {
          tail.push(line);
          if (tail.length > 20) tail.shift();
          print(spec.name, line, name);
        }
      });
    }
    const i = nodes.findIndex((n) => n.name === spec.name);
    if (i >= 0) nodes[i] = node;
    else nodes.push(node);
    try {
      await waitHealthy(node.httpUrl, node);
    } catch (err) {
      if (node.running) throw err;
      await node.exited; // its output is all read by then
      // A port drawn free was taken before the node bound it (by another test's server): draw new ones.
      if (base === undefined && attempt < 3 && tail.some((l) => l.includes('EADDRINUSE'))) {
        const fresh = { ...spec, httpPort: await freePort(), tcpPort: spec.tcpPort === undefined ? undefined : await freePort() };
        specs.set(spec.name, fresh);
        return launch(fresh, attempt + 1);
      }
      throw new Error(`${(err as Error).message}; its last lines:\n${tail.join('\n')}`);
    }
    return node;
  };

  const nextSpec = async (role: Role): Promise<Spec> => {
    const i = counters[role]++;
    const name = `${options.namePrefix ?? ''}${role === 'gateway' ? `gw-${i + 1}` : `${role}-${i + 1}`}`;
    const port = async (offset: number) => (base === undefined ? freePort() : base + offset + i);
    const spec: Spec = role === 'gateway'
      ? { name, role, tcpPort: await port(100), httpPort: await port(200) }
      : { name, role, httpPort: await port(role === 'logic' ? 0 : SERVICE_PORT_OFFSET[role]) };
    specs.set(name, spec);
    return spec;
  };

  const cluster: Cluster = {
    dir,
    adminKey,
    tokenSecret,
    get redis(): RedisServer {
      if (!redis) throw new Error('this cluster runs on a Redis Cluster (cluster.redisCluster)');
      return redis;
    },
    redisCluster,
    postgres,
    nodes,
    gateways: () => nodes.filter((n) => n.role === 'gateway'),
    logics: () => nodes.filter((n) => n.role === 'logic'),
    ofRole: (role) => nodes.filter((n) => n.role === role),
    node(name) {
      const n = nodes.find((x) => x.name === name);
      if (!n) throw new Error(`no node ${name}`);
      return n;
    },
    apiUrl() {
      const n = nodes.find((x) => (x.role === 'logic' || x.role === 'auth') && x.running);
      if (!n) throw new Error('no running logic or auth node');
      return n.httpUrl;
    },
    async kill(name, signal = 'SIGTERM') {
      const n = cluster.node(name);
      if (n.running) n.child.kill(signal);
      return n.exited;
    },
    signal(name, signal) {
      const n = cluster.node(name);
      if (n.running) n.child.kill(signal);
    },
    async restart(name) {
      const n = cluster.node(name);
      if (n.running) throw new Error(`${name} is running`);
      return launch(specs.get(name)!);
    },
    async add(role) {
      return launch(await nextSpec(role));
    },
    async stop() {
      await Promise.all(nodes.map(async (n) => {
        if (!n.running) return;
        n.child.kill('SIGCONT'); // a paused node would not see the SIGTERM
        n.child.kill('SIGTERM');
        const timer = setTimeout(() => n.child.kill('SIGKILL'), 15_000);
        await n.exited;
        clearTimeout(timer);
      }));
      await redis?.stop();
      await redisCluster?.stop();
      await postgres.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };

  try {
    const services = Object.entries(options.services ?? {}).flatMap(([role, n]) => Array<Role>(n).fill(role as Role));
    const roles: Role[] = [...Array<Role>(options.logic).fill('logic'), ...services, ...Array<Role>(options.gateways).fill('gateway')];
    await Promise.all(roles.map((role) => cluster.add(role)));
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}
