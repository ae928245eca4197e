// `longlink cluster` (`npm run cluster`): a local cluster for development and
// trying distributed mode: Redis (AOF on) and PostgreSQL in a temp folder,
// N gateways and M logic nodes; Ctrl-C stops everything and removes the folder.
import { startCluster } from '../dev/cluster.js';
import { UsageError } from './client-commands.js';

function count(raw: string | undefined, name: string, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new UsageError(`--${name} must be an integer in 1..64`);
  return n;
}

export async function runCluster(flags: Record<string, string | undefined>): Promise<void> {
  const gateways = count(flags.gateways, 'gateways', 2);
  const logic = count(flags.logic, 'logic', 2);
  const routing = flags.routing ?? 'targeted';
  if (routing !== 'targeted' && routing !== 'broadcast') throw new UsageError('--routing must be targeted or broadcast');
  const basePort = flags['base-port'] === undefined ? 7000 : Number(flags['base-port']);
  if (!Number.isInteger(basePort) || basePort < 1024 || basePort > 65000) throw new UsageError('--base-port must be in 1024..65000');
  const appendfsync = flags.appendfsync ?? process.env.LONGLINK_REDIS_APPENDFSYNC ?? 'everysec';
  if (appendfsync !== 'everysec' && appendfsync !== 'always' && appendfsync !== 'no') throw new UsageError('--appendfsync must be everysec, always or no');
  console.log(`starting Redis, PostgreSQL, ${logic} logic and ${gateways} gateway processes (routing ${routing})…`);
  const cluster = await startCluster({ gateways, logic, routing, basePort, appendfsync });
  const api = cluster.apiUrl();
  console.log('');
  console.log('cluster up:');
  console.log(`  redis      ${cluster.redis.url} (AOF, appendfsync ${appendfsync})`);
  console.log(`  postgres   ${cluster.postgres.url}`);
  for (const n of cluster.logics()) console.log(`  ${n.name.padEnd(10)} api ${n.httpUrl}`);
  for (const n of cluster.gateways()) console.log(`  ${n.name.padEnd(10)} ${n.tcpUrl}  ${n.wsUrl}`);
  console.log('');
  console.log('try it (in another terminal):');
  console.log(`  export LONGLINK_ADMIN_KEY=${cluster.adminKey}`);
  console.log(`  longlink listen --server ${api} --user bob`);
  console.log(`  longlink send --server ${api} --user alice --to bob --text hi`);
  console.log('Ctrl-C stops the cluster.');
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    console.log('stopping the cluster…');
    cluster.stop().then(() => process.exit(0), (err: unknown) => {
      console.error('stop failed', err);
      process.exit(1);
    });
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
