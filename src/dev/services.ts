// Real Redis and PostgreSQL servers, each on a free port (or a given one) in
// its own temp folder, for tests and the local cluster (`npm run cluster`).
// Installed by scripts/ensure-services.sh when missing.
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, chownSync, readdirSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { once } from 'node:events';
import { spawnTied } from './tied.js';

/** The first port the kernel hands out as a connection's source port (Linux), 32768 if unknown. */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 0 ? low : 32768;
  } catch {
    return 32768;
  }
}

/** Where freePort draws from: below the source-port range, down to here. */
const LISTEN_LOW = 20_000;

async function bindable(port: number): Promise<number | undefined> {
  const server = net.createServer();
  server.listen(port, '127.0.0.1');
  try {
    await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => Promise.reject(err as Error))]);
  } catch {
    return undefined;
  }
  const bound = (server.address() as net.AddressInfo).port;
  server.close();
  await once(server, 'close');
  return bound;
}

/**
 * A port free to listen on, for a server started after this returns. It is drawn below the kernel's source-port
 * range: a port from that range (what listen(0) gives) can be taken meanwhile by any connection's source port (a
 * test opening 20,000 connections takes most of them), and the server then fails with EADDRINUSE. Another caller
 * drawing the same port is left to chance (one in thousands) and to the caller's retry.
 */
export async function freePort(): Promise<number> {
  const high = ephemeralLow();
  if (high - LISTEN_LOW >= 1000) {
    for (let i = 0; i < 50; i++) {
      const port = await bindable(LISTEN_LOW + Math.floor(Math.random() * (high - LISTEN_LOW)));
      if (port !== undefined) return port;
    }
  }
  const port = await bindable(0);
  if (port === undefined) throw new Error('no port free to listen on');
  return port;
}

/** Not exited yet: neither an exit code nor the signal that ended it (waiting for 'exit' then would wait forever). */
function running(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

async function waitForPort(port: number, child: ChildProcess, what: string, timeoutMs = 20_000): Promise<void> {
  const start = Date.now();
  for (;;) {
    if (!running(child)) throw new Error(`${what} exited with ${child.exitCode ?? child.signalCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() - start > timeoutMs) throw new Error(`${what} did not listen on ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export type AppendFsync = 'no' | 'everysec' | 'always';

export interface RedisServer {
  url: string;
  port: number;
  dir: string;
  /** The server's process id (to pause it, or to read its memory). */
  readonly pid: number;
  /** The AOF fsync policy now in force. */
  readonly appendfsync: AppendFsync;
  /**
   * Stop (SIGTERM: Redis writes and fsyncs its AOF first; SIGKILL: a crash, which
   * loses what the policy had not fsynced yet) and start again on the same port
   * and folder (AOF keeps the data when on).
   */
  restart(signal?: NodeJS.Signals): Promise<void>;
  /** SIGKILL it (a crash) and leave it down, until start(). */
  kill(): Promise<void>;
  /** Start it again on the same port and folder, after kill(). */
  start(): Promise<void>;
  /** Change the AOF fsync policy at once (CONFIG SET) and for later restarts. */
  setAppendfsync(policy: AppendFsync): Promise<void>;
  stop(): Promise<void>;
}

export interface RedisOptions {
  /** Turn AOF persistence on. */
  appendonly?: boolean;
  /**
   * AOF fsync policy: `always` fsyncs every write before replying (nothing
   * acknowledged is lost, even to a crash), `everysec` once a second (a crash of
   * Redis or the machine loses up to ~1 s of writes), `no` when the OS decides
   * (~30 s on Linux). @default 'everysec'
   */
  appendfsync?: AppendFsync;
  /** @default a free port */
  port?: number;
  /** Parent folder of the data folder. @default the OS temp folder */
  parent?: string;
}

/** A redis-server on a free port in a temp folder. */
export async function startRedis(options: RedisOptions = {}): Promise<RedisServer> {
  const dir = mkdtempSync(join(options.parent ?? tmpdir(), 'longlink-redis-'));
  const port = options.port ?? await freePort();
  let child: ChildProcess;
  let appendfsync: AppendFsync = options.appendfsync ?? 'everysec';
  const launch = async () => {
    // Tied to this process: SIGTERM (Redis writes its AOF and exits) if it dies without stopping Redis.
    child = spawnTied('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
      '--appendonly', options.appendonly ? 'yes' : 'no', '--appendfsync', appendfsync,
      '--protected-mode', 'no', '--daemonize', 'no', '--loglevel', 'warning',
    ], { stdio: 'ignore' }, 'SIGTERM');
    await waitForPort(port, child, 'redis-server');
  };
  const halt = async (signal: NodeJS.Signals) => {
    if (!running(child)) return;
    child.kill(signal);
    await once(child, 'exit');
  };
  await launch();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    get pid() {
      return child.pid!;
    },
    get appendfsync() {
      return appendfsync;
    },
    async restart(signal = 'SIGTERM') {
      await halt(signal);
      await launch();
    },
    async kill() {
      await halt('SIGKILL');
    },
    async start() {
      if (!running(child)) await launch();
    },
    async setAppendfsync(policy) {
      execFileSync('redis-cli', ['-p', String(port), 'CONFIG', 'SET', 'appendfsync', policy], { stdio: 'ignore' });
      appendfsync = policy;
    },
    async stop() {
      await halt('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** One node of a Redis Cluster started by startRedisCluster(). */
export interface RedisClusterNode {
  port: number;
  readonly pid: number;
  /** SIGKILL it (a crash); its replica is promoted after the node timeout. */
  kill(): Promise<void>;
  /** Start it again on the same port and folder (it rejoins, as a replica if it was failed over). */
  start(): Promise<void>;
  readonly running: boolean;
}

export interface RedisCluster {
  /** The address the engines take: `redis-cluster://127.0.0.1:p1,…` (LONGLINK_REDIS_CLUSTER is its host:port list). */
  url: string;
  /** `127.0.0.1:p1,127.0.0.1:p2,…`: the value of LONGLINK_REDIS_CLUSTER. */
  seeds: string;
  nodes: RedisClusterNode[];
  /** The nodes serving slots now, as the cluster sees them. */
  masters(): Promise<RedisClusterNode[]>;
  /** Until every slot is served by a reachable master and the nodes agree (after a failover, say). */
  waitHealthy(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface RedisClusterOptions {
  /** @default 3 */
  masters?: number;
  /** Replicas per master. @default 1 */
  replicas?: number;
  /** cluster-node-timeout: how long a master is unreachable before its replica takes over. @default 1000 */
  nodeTimeoutMs?: number;
}

function redisCli(port: number, ...args: string[]): string {
  return execFileSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * A Redis Cluster on free ports, each node in a temp folder of its own
 * (3 masters and 3 replicas by default), made with `redis-cli --cluster create`.
 */
export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RedisCluster> {
  const masters = options.masters ?? 3;
  const replicas = options.replicas ?? 1;
  const count = masters * (1 + replicas);
  const nodes: RedisClusterNode[] = [];
  const dirs: string[] = [];
  for (let i = 0; i < count; i++) {
    const dir = mkdtempSync(join(tmpdir(), 'longlink-redis-cluster-'));
    dirs.push(dir);
    const port = await freePort();
    const busPort = await freePort();
    let child: ChildProcess | undefined;
    const launch = async () => {
      child = spawnTied('redis-server', [
        '--port', String(port), '--cluster-port', String(busPort), '--bind', '127.0.0.1', '--dir', dir,
        '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', String(options.nodeTimeoutMs ?? 1000),
        '--cluster-replica-validity-factor', '0', '--save', '', '--appendonly', 'no',
        '--protected-mode', 'no', '--daemonize', 'no', '--loglevel', 'warning',
      ], { stdio: 'ignore' }, 'SIGTERM');
      await waitForPort(port, child, 'redis-server (cluster node)');
    };
    await launch();
    nodes.push({
      port,
      get pid() {
        return child!.pid!;
      },
      get running() {
        return child !== undefined && running(child);
      },
      async kill() {
        if (child && running(child)) {
          child.kill('SIGKILL');
          await once(child, 'exit');
        }
      },
      async start() {
        if (!child || !running(child)) await launch();
      },
    });
  }
  execFileSync('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', String(replicas), '--cluster-yes'], { stdio: 'ignore' });
  const seeds = nodes.map((n) => `127.0.0.1:${n.port}`).join(',');
  const mastersNow = async () => {
    const live = nodes.find((n) => n.running) ?? nodes[0]!;
    const lines = redisCli(live.port, 'CLUSTER', 'NODES').trim().split('\n');
    const ports = new Set<number>();
    for (const line of lines) {
      const [, address, flags, , , , , state, ...slots] = line.split(' ');
      if (!flags?.includes('master') || flags.includes('fail') || state !== 'connected' || slots.length === 0) continue;
      ports.add(Number(address!.split(':')[1]!.split('@')[0]));
    }
    return nodes.filter((n) => ports.has(n.port));
  };
  const cluster: RedisCluster = {
    url: `redis-cluster://${seeds}`,
    seeds,
    nodes,
    masters: mastersNow,
    async waitHealthy(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        let ok = false;
        try {
          // Every slot served, and every replica caught up with its master (a write can be acknowledged by it: WAIT).
          ok = nodes.filter((n) => n.running).every((n) => redisCli(n.port, 'CLUSTER', 'INFO').includes('cluster_state:ok'))
            && (await mastersNow()).length === masters
            && nodes.filter((n) => n.running).every((n) => {
              const info = redisCli(n.port, 'INFO', 'replication');
              return info.includes('role:master') || info.includes('master_link_status:up');
            });
        } catch {
          ok = false;
        }
        if (ok) return;
        if (Date.now() > deadline) throw new Error(`the Redis Cluster did not become healthy within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async stop() {
      await Promise.all(nodes.map((n) => n.kill()));
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    },
  };
  await cluster.waitHealthy();
  return cluster;
}

export interface PostgresServer {
  url: string;
  port: number;
  /** The postmaster's process id. */
  readonly pid: number;
  stop(): Promise<void>;
  /**
   * Stop and start again on the same port and folder. `fast` (SIGINT): a clean
   * shutdown; `immediate` (SIGQUIT): like a crash, the next start replays the WAL.
   * `downMs`: how long it stays down between the two (an outage).
   * @default 'fast'
   */
  restart(mode?: 'fast' | 'immediate', downMs?: number): Promise<void>;
  /**
   * Stop it at once and leave it down, until start(): an immediate shutdown
   * (SIGQUIT: no checkpoint, the next start replays the WAL, as after a
   * crash; a SIGKILL of the postmaster would leave its backends holding
   * shared memory that blocks the next start).
   */
  kill(): Promise<void>;
  start(): Promise<void>;
}

function pgBin(name: string): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).sort().reverse() : [];
  for (const v of versions) {
    const p = join(root, v, 'bin', name);
    if (existsSync(p)) return p;
  }
  throw new Error(`PostgreSQL's ${name} not found; run scripts/ensure-services.sh`);
}

/** PostgreSQL refuses to run as root: when we are root, run it as the postgres user (signals still reach it). */
function postgresUser(): { uid: number; gid: number } | Record<string, never> {
  if (process.getuid?.() !== 0) return {};
  return {
    uid: Number(execFileSync('id', ['-u', 'postgres']).toString().trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres']).toString().trim()),
  };
}

export interface PostgresOptions {
  /**
   * fsync on (a commit survives power loss). Tests turn it off for speed:
   * a killed process never loses a commit either way, only a crashed machine.
   * @default false
   */
  durable?: boolean;
  /** @default a free port */
  port?: number;
  /** Parent folder of the data folder. @default the OS temp folder */
  parent?: string;
}

/** A PostgreSQL cluster in a temp folder on a free port, database `longlink`, trust auth on loopback. */
export async function startPostgres(options: PostgresOptions = {}): Promise<PostgresServer> {
  const dir = mkdtempSync(join(options.parent ?? tmpdir(), 'longlink-pg-'));
  const data = join(dir, 'data');
  const port = options.port ?? await freePort();
  const user = postgresUser();
  if ('uid' in user) chownSync(dir, user.uid, user.gid);
  execFileSync(pgBin('initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8'], { stdio: 'ignore', ...user });
  let child: ChildProcess;
  const launch = async () => {
    // Tied to this process: SIGINT (a fast shutdown, which does not wait for clients) if it dies without stopping PostgreSQL.
    child = spawnTied(pgBin('postgres'), [
      '-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1',
      ...(options.durable ? [] : ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off']),
      '-c', 'max_connections=200',
    ], { stdio: 'ignore', ...user }, 'SIGINT');
    await waitForPort(port, child, 'postgres');
    // Accepting TCP is not yet accepting queries: wait for the database to answer.
    for (let i = 0; i < 100; i++) {
      try {
        execFileSync('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-c', 'select 1', '-qtA'], { stdio: 'ignore' });
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new Error('postgres did not answer queries');
  };
  await launch();
  execFileSync('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-c', 'CREATE DATABASE longlink', '-qtA'], { stdio: 'ignore' });
  const halt = async (signal: NodeJS.Signals = 'SIGINT') => {
    if (!running(child)) return;
    child.kill(signal); // SIGINT: fast shutdown; SIGQUIT: immediate
    await once(child, 'exit');
  };
  return {
    url: `postgres://postgres@127.0.0.1:${port}/longlink`,
    port,
    get pid() {
      return child.pid!;
    },
    async restart(mode = 'fast', downMs = 0) {
      await halt(mode === 'immediate' ? 'SIGQUIT' : 'SIGINT');
      if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
      await launch();
    },
    async kill() {
      await halt('SIGQUIT');
    },
    async start() {
      if (!running(child)) await launch();
    },
    async stop() {
      await halt();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
