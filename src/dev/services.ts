// Real Redis and PostgreSQL servers, each on a free port (or a given one) in
// its own temp folder, for tests and the local cluster (`npm run cluster`).
// Installed by scripts/ensure-services.sh when missing.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, chownSync, readdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { once } from 'node:events';

export async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  server.close();
  await once(server, 'close');
  return port;
}

async function waitForPort(port: number, child: ChildProcess, what: string, timeoutMs = 20_000): Promise<void> {
  const start = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
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

export interface RedisServer {
  url: string;
  port: number;
  dir: string;
  /** Stop (SIGTERM, or SIGKILL) and start again on the same port and folder (AOF keeps the data when on). */
  restart(signal?: NodeJS.Signals): Promise<void>;
  stop(): Promise<void>;
}

export interface RedisOptions {
  /** Turn AOF persistence on. */
  appendonly?: boolean;
  /** AOF fsync policy: `everysec` loses at most ~1 s of writes to a machine crash, `always` none. @default 'everysec' */
  appendfsync?: 'everysec' | 'always';
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
  const launch = async () => {
    child = spawn('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
      '--appendonly', options.appendonly ? 'yes' : 'no', '--appendfsync', options.appendfsync ?? 'everysec',
      '--protected-mode', 'no', '--daemonize', 'no', '--loglevel', 'warning',
    ], { stdio: 'ignore' });
    await waitForPort(port, child, 'redis-server');
  };
  const halt = async (signal: NodeJS.Signals) => {
    if (child.exitCode !== null) return;
    child.kill(signal);
    await once(child, 'exit');
  };
  await launch();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    async restart(signal = 'SIGTERM') {
      await halt(signal);
      await launch();
    },
    async stop() {
      await halt('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface PostgresServer {
  url: string;
  port: number;
  stop(): Promise<void>;
  restart(): Promise<void>;
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
    child = spawn(pgBin('postgres'), [
      '-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1',
      ...(options.durable ? [] : ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off']),
      '-c', 'max_connections=200',
    ], { stdio: 'ignore', ...user });
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
  const halt = async () => {
    if (child.exitCode !== null) return;
    child.kill('SIGINT'); // fast shutdown
    await once(child, 'exit');
  };
  return {
    url: `postgres://postgres@127.0.0.1:${port}/longlink`,
    port,
    async restart() {
      await halt();
      await launch();
    },
    async stop() {
      await halt();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
