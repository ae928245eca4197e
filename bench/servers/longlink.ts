// A Longlink process for the benchmarks: the shipped server (dist/) in one
// role, configured by LONGLINK_* like `longlink start|gateway|logic` (or one
// service of the split logic tier: auth, message, group, storage, risk, push), plus an
// IPC channel so the harness can read its memory (after a full GC) and what
// its bus moved. Started by bench/lib/procs.ts with --expose-gc.
import { loadServerConfig } from '../../dist/config.js';
import { startEmbedded } from '../../dist/roles/embedded.js';
import { startGateway } from '../../dist/roles/gateway.js';
import { SERVICE_ROLES, startService, type ServiceRole } from '../../dist/roles/logic.js';
import type { BusCounters } from '../../dist/engines/bus.js';
import { memoryReport, serveIpc } from './ipc.js';

type Role = 'embedded' | 'gateway' | ServiceRole;
const role = (process.argv[2] ?? 'embedded') as Role;
if (role !== 'embedded' && role !== 'gateway' && !SERVICE_ROLES.includes(role)) throw new Error(`unknown role ${role}`);

interface Started {
  stop(): Promise<void>;
  busCounters: BusCounters;
  connections(): number;
  ready: Record<string, unknown>;
}

async function start(): Promise<Started> {
  const config = loadServerConfig({});
  if (role === 'embedded') {
    const s = await startEmbedded(config);
    return {
      stop: () => s.stop(), busCounters: s.busCounters, connections: () => s.gateway.connectionCount,
      ready: { httpUrl: s.httpUrl, tcpUrl: s.tcpUrl, wsUrl: s.wsUrl },
    };
  }
  if (role === 'gateway') {
    const s = await startGateway(config);
    return {
      stop: () => s.stop(), busCounters: s.busCounters, connections: () => s.gateway.connectionCount,
      ready: { tcpUrl: s.tcpUrl, wsUrl: s.wsUrl, nodeId: s.nodeId },
    };
  }
  const s = await startService(config, role);
  return { stop: () => s.stop(), busCounters: s.busCounters, connections: () => 0, ready: { httpUrl: s.httpUrl, nodeId: s.nodeId } };
}

const server = await start();
serveIpc({
  ready: server.ready,
  report: () => ({ ...memoryReport(), connections: server.connections(), bus: { ...server.busCounters } }),
  stop: () => server.stop(),
});
