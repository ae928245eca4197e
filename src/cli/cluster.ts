// `longlink cluster` (`npm run cluster`): a local cluster for development and
// trying distributed mode: Redis (AOF on) and PostgreSQL in a temp folder,
// N gateways and M logic nodes, or with --split a process per service (one
// each unless --message 2 etc.); Ctrl-C stops everything and removes the folder.
import { fileURLToPath } from 'node:url';
import { SPLIT, startCluster, type Cluster, type ClusterOptions } from '../dev/cluster.js';
import { UsageError } from './args.js';

/** The package's folder: where the printed `npx longlink ...` commands run (bin `longlink` in its package.json). */
const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url)).replace(/\/$/, '');

function count(raw: string | undefined, name: string, fallback: number, least = 1): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < least || n > 64) throw new UsageError(`--${name} must be an integer in ${least}..64`);
  return n;
}

const SERVICE_FLAGS = ['auth', 'message', 'group', 'storage', 'risk', 'push'] as const;

/** With --split: the processes of each service (SPLIT, changed by --message 2 etc.); else none. */
function servicesOf(flags: Record<string, string | undefined>): NonNullable<ClusterOptions['services']> {
  const split = flags.split !== undefined;
  const given = SERVICE_FLAGS.filter((s) => flags[s] !== undefined);
  if (!split && given.length > 0) throw new UsageError(`--${given[0]} needs --split`);
  if (!split) return {};
  if (flags.logic !== undefined) throw new UsageError('--logic and --split: the split layout runs a process per service instead');
  const services: NonNullable<ClusterOptions['services']> = {};
  for (const s of SERVICE_FLAGS) {
    const n = count(flags[s], s, SPLIT[s] ?? 0, s === 'push' ? 0 : 1);
    if (n > 10) throw new UsageError(`--${s} must be at most 10`);
    if (n > 0) services[s] = n;
  }
  return services;
}

export async function runCluster(flags: Record<string, string | undefined>): Promise<void> {
  const gateways = count(flags.gateways, 'gateways', 2);
  const services = servicesOf(flags);
  const split = Object.keys(services).length > 0;
  const logic = split ? 0 : count(flags.logic, 'logic', 2);
  const routing = flags.routing ?? 'targeted';
  if (routing !== 'targeted' && routing !== 'broadcast') throw new UsageError('--routing must be targeted or broadcast');
  const basePort = flags['base-port'] === undefined ? 7000 : Number(flags['base-port']);
  if (basePort !== 0 && (!Number.isInteger(basePort) || basePort < 1024 || basePort > 65000)) {
    throw new UsageError('--base-port must be in 1024..65000, or 0 for any free ports');
  }
  const appendfsync = flags.appendfsync ?? process.env.LONGLINK_REDIS_APPENDFSYNC ?? 'everysec';
  if (appendfsync !== 'everysec' && appendfsync !== 'always' && appendfsync !== 'no') throw new UsageError('--appendfsync must be everysec, always or no');

  // Output may go to a pipe whose reader is gone: `npm run cluster | tee log`,
  // where Ctrl-C ends tee too. A write then fails (EPIPE), and unhandled that
  // error would end this process before it stopped the cluster, leaving the
  // nodes and the temp folder behind. Without a reader, carry on silently.
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);

  const layout = split ? Object.entries(services).map(([s, n]) => `${n} ${s}`).join(', ') : `${logic} logic`;
  console.log(`starting Redis, PostgreSQL, ${layout} and ${gateways} gateway processes (routing ${routing})…`);
  const starting = startCluster({ gateways, logic, services, routing, basePort: basePort === 0 ? undefined : basePort, appendfsync });

  // Stop on Ctrl-C, kill, or the terminal closing; during start-up, once the
  // cluster is up (its parts are not all known before).
  const stop = (c: Cluster) => {
    c.stop().then(() => {
      console.log(`cluster stopped; ${c.dir} removed`);
      process.exit(0);
    }, (err: unknown) => {
      console.error('stop failed', err);
      process.exit(1);
    });
  };
  let stopping = false;
  const onSignal = () => {
    if (!stopping) {
      stopping = true;
      console.log('stopping the cluster… (Ctrl-C again: do not wait for the nodes to finish)');
      void starting.then(stop, () => undefined);
      return;
    }
    // Again while stopping: do not wait for the nodes' graceful stop. Redis,
    // PostgreSQL and the folder are still stopped and removed after them.
    void starting.then((c) => {
      for (const n of c.nodes) c.signal(n.name, 'SIGKILL');
    }, () => undefined);
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, onSignal);

  const cluster = await starting;
  if (stopping) return;
  const api = cluster.apiUrl();
  console.log('');
  console.log('cluster up:');
  console.log(`  redis      ${cluster.redis.url} (AOF, appendfsync ${appendfsync})`);
  console.log(`  postgres   ${cluster.postgres.url}`);
  for (const n of cluster.nodes) {
    if (n.role === 'gateway') continue;
    console.log(`  ${n.name.padEnd(10)} ${n.role === 'logic' || n.role === 'auth' ? 'api' : 'http'} ${n.httpUrl}`);
  }
  for (const n of cluster.gateways()) console.log(`  ${n.name.padEnd(10)} ${n.tcpUrl}  ${n.wsUrl}`);
  console.log(`  folder     ${cluster.dir} (removed at stop)`);
  console.log('');
  // Commands that run as printed, in another terminal in the package's folder
  // (npx finds the package's own `longlink` bin there).
  console.log(`try it (in another terminal, in ${PACKAGE_ROOT}):`);
  console.log(`  export LONGLINK_ADMIN_KEY=${cluster.adminKey}`);
  console.log(`  npx longlink listen --server ${api} --user bob`);
  console.log(`  npx longlink send --server ${api} --user alice --to bob --text hi`);
  console.log('Ctrl-C stops the cluster.');
}
