// `longlink cluster` (`npm run cluster`): a local cluster for development and
// trying distributed mode: Redis (AOF on) and PostgreSQL in a temp folder,
// N gateways and M logic nodes, or with --split a process per service (one
// each unless --message 2 etc.); Ctrl-C stops everything and removes the folder.
import { fileURLToPath } from 'node:url';
import { SPLIT, startCluster, type Cluster, type ClusterOptions } from '../dev/cluster.js';
import { UsageError } from './args.js';
import { startDatacenters, type Datacenters } from '../dev/datacenters.js';
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';

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
  if (flags.dcs !== undefined) return runDatacenters(flags);
  if (flags.status !== undefined || flags['delay-ms'] !== undefined || flags['failover-after-ms'] !== undefined) {
    throw new UsageError('--status, --delay-ms and --failover-after-ms go with --dcs');
  }
  const gateways = count(flags.gateways, 'gateways', 2);
  const services = servicesOf(flags);
  const split = Object.keys(services).length > 0;
  const logic = split ? 0 : count(flags.logic, 'logic', 2);
  const routing = flags.routing ?? 'targeted';
  if (routing !== 'targeted' && routing !== 'broadcast') throw new UsageError('--routing must be targeted or broadcast');
  const failoverAfterMs = flags['failover-after-ms'] === undefined ? 10_000 : Number(flags['failover-after-ms']);
  if (!Number.isInteger(failoverAfterMs) || failoverAfterMs < 3000) throw new UsageError('--failover-after-ms must be an integer ≥ 3000');
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

  const redisCluster = flags['redis-cluster'] !== undefined;
  if (redisCluster && basePort !== 0) throw new UsageError('--redis-cluster takes free ports: add --base-port 0');
  const layout = split ? Object.entries(services).map(([s, n]) => `${n} ${s}`).join(', ') : `${logic} logic`;
  console.log(`starting ${redisCluster ? 'a Redis Cluster (3 masters, 3 replicas)' : 'Redis'}, PostgreSQL, ${layout} and ${gateways} gateway processes (routing ${routing})…`);
  const starting = startCluster({ gateways, logic, services, routing, basePort: basePort === 0 ? undefined : basePort, appendfsync, redisCluster });

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
  if (cluster.redisCluster) console.log(`  redis      a Redis Cluster: LONGLINK_REDIS_CLUSTER=${cluster.redisCluster.seeds}`);
  else console.log(`  redis      ${cluster.redis.url} (AOF, appendfsync ${appendfsync})`);
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

/**
 * `cluster --dcs N`: N datacenters (a, b, …), each with its own Redis,
 * PostgreSQL, gateways, a combined logic node and a sync process, joined by
 * links that delay every packet --delay-ms each way. With --status FILE, what
 * was started is written there as JSON once everything is up.
 */
async function runDatacenters(flags: Record<string, string | undefined>): Promise<void> {
  const n = count(flags.dcs, 'dcs', 2, 2);
  if (n > 4) throw new UsageError('--dcs must be 2, 3 or 4');
  if (flags.split !== undefined) throw new UsageError('--dcs runs a combined logic node and a sync process per datacenter; --split is not supported with it');
  const gateways = count(flags.gateways, 'gateways', 1);
  const logic = count(flags.logic, 'logic', 1);
  const delayMs = flags['delay-ms'] === undefined ? 20 : Number(flags['delay-ms']);
  if (!Number.isInteger(delayMs) || delayMs < 0 || delayMs > 1000) throw new UsageError('--delay-ms must be an integer in 0..1000');
  const failoverAfterMs = flags['failover-after-ms'] === undefined ? 10_000 : Number(flags['failover-after-ms']);
  if (!Number.isInteger(failoverAfterMs) || failoverAfterMs < 3000) throw new UsageError('--failover-after-ms must be an integer ≥ 3000');
  const basePort = flags['base-port'] === undefined ? 7000 : Number(flags['base-port']);
  if (basePort !== 0 && (!Number.isInteger(basePort) || basePort < 1024 || basePort > 60000)) {
    throw new UsageError('--base-port must be in 1024..60000, or 0 for any free ports');
  }
  const statusFile = flags.status === undefined ? undefined : resolve(flags.status);
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);
  const names = ['a', 'b', 'c', 'd'].slice(0, n);
  console.log(`starting ${n} datacenters (${names.join(', ')}), each: Redis, PostgreSQL, ${logic} logic, 1 sync and ${gateways} gateway processes; ${delayMs} ms each way between them; a witness Redis…`);
  const starting = startDatacenters({
    names, delayMs, gateways, logic, services: { sync: 1 }, routing: 'targeted', basePort: basePort === 0 ? undefined : basePort,
    witness: true, env: { LONGLINK_DC_FAILOVER_AFTER_MS: String(failoverAfterMs) },
  });
  let stopping = false;
  const stop = (d: Datacenters) => {
    d.stop().then(() => {
      console.log('datacenters stopped; their folders removed');
      process.exit(0);
    }, (err: unknown) => {
      console.error('stop failed', err);
      process.exit(1);
    });
  };
  const onSignal = () => {
    if (stopping) return;
    stopping = true;
    console.log('stopping every datacenter…');
    void starting.then(stop, () => undefined);
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, onSignal);
  const dcs = await starting;
  if (stopping) return;
  const status = {
    delay_ms: delayMs,
    witness_url: dcs.witness?.url ?? null,
    witness_pid: dcs.witness?.pid ?? null,
    failover_after_ms: failoverAfterMs,
    admin_key_env: 'LONGLINK_ADMIN_KEY',
    supervisor_pid: process.pid,
    datacenters: dcs.dcs.map(({ name, cluster }) => ({
      name,
      api_url: cluster.apiUrl(),
      gateways: cluster.gateways().map((g) => ({ name: g.name, tcp_url: g.tcpUrl, ws_url: g.wsUrl, pid: g.child.pid })),
      pids: {
        ...Object.fromEntries(cluster.nodes.map((node) => [node.name, node.child.pid])),
        redis: cluster.redis.pid,
        postgres: cluster.postgres.pid,
      },
      redis_url: cluster.redis.url,
      postgres_url: cluster.postgres.url,
    })),
  };
  if (statusFile) writeFileSync(statusFile, `${JSON.stringify(status, null, 2)}\n`, { mode: 0o600 });
  console.log('');
  console.log('datacenters up:');
  for (const d of status.datacenters) {
    console.log(`  ${d.name}: api ${d.api_url}`);
    for (const g of d.gateways) console.log(`     ${g.name.padEnd(8)} ${g.tcp_url}  ${g.ws_url}`);
    console.log(`     redis ${d.redis_url}  postgres ${d.postgres_url}`);
  }
  console.log(`  witness ${status.witness_url}: a datacenter unheard for ${failoverAfterMs / 1000} s is failed over by the others (failback: npx longlink dc failback NAME)`);
  if (statusFile) console.log(`  status     ${statusFile}`);
  console.log('');
  console.log(`try it (in another terminal, in ${PACKAGE_ROOT}):`);
  console.log(`  export LONGLINK_ADMIN_KEY=${dcs.adminKey}`);
  console.log(`  npx longlink listen --server ${status.datacenters[1]!.api_url} --user bob`);
  console.log(`  npx longlink send --server ${status.datacenters[0]!.api_url} --user alice --to bob --text hi`);
  console.log('Ctrl-C stops every datacenter.');
}
