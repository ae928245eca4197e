// `longlink gateway`: holds client connections (TCP, and WebSocket at /ws on
// the HTTP port) and nothing else. Requests go up the Redis bus to logic;
// pushes come down its own stream (targeted routing) or the shared one
// (broadcast). Sessions and its registry entry live in Redis.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ServerConfig } from '../config.js';
import type { BusCounters } from '../engines/bus.js';
import { TokenService } from '../auth/tokens.js';
import { Gateway } from '../gateway/gateway.js';
import { closeHttp, listenHttp, loadTls, sendJson } from './http-server.js';
import { gatewayOptions, redisEngines } from './wiring.js';

export interface RunningGateway {
  nodeId: string;
  httpPort: number;
  tcpPort: number;
  tcpUrl: string;
  wsUrl: string;
  gateway: Gateway;
  /** What the bus moved (metrics, benchmarks). */
  busCounters: BusCounters;
  stop(): Promise<void>;
}

export async function startGateway(config: ServerConfig): Promise<RunningGateway> {
  const tls = loadTls(config.tls);
  const { bus, sessions, registry } = redisEngines(config, 'gateway');
  // A previous process with this node id may have died without logging its
  // users out, and come back before the reaper noticed: those sessions are ghosts.
  const stale = await sessions.dropNode(config.nodeId);
  if (stale > 0) console.log(`[gateway] dropped ${stale} sessions left by a previous ${config.nodeId}`);
  const tokens = new TokenService(config.tokenSecret, config.previousTokenSecrets);
  const gateway = new Gateway(gatewayOptions(config), { bus, sessions, registry, tokens });
  const closeEngines = async () => {
    await bus.close();
    await sessions.close();
    await registry.close();
  };

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz' && req.method === 'GET') {
      sendJson(res, 200, { status: 'ok', node: config.nodeId, role: 'gateway', connections: gateway.connectionCount });
    } else sendJson(res, 404, { error: { code: 'NOT_FOUND', message: 'a gateway serves /ws and /healthz; the API is on logic nodes' } });
  };
  let http: Awaited<ReturnType<typeof listenHttp>>;
  let tcpPort: number;
  try {
    http = await listenHttp(handle, config.httpPort, config.host, tls);
  } catch (err) {
    await closeEngines();
    throw err;
  }
  const wsUrl = `${tls ? 'wss' : 'ws'}://${config.publicHost}:${http.port}/ws`;
  gateway.attachWebSocket(http.server, wsUrl);
  try {
    tcpPort = (await gateway.listenTcp(config.tcpPort, config.host, config.publicHost, tls)).port;
  } catch (err) {
    await closeHttp(http.server);
    await closeEngines();
    throw err;
  }
  await gateway.start();

  let stopped = false;
  return {
    nodeId: config.nodeId,
    httpPort: http.port,
    tcpPort,
    tcpUrl: `${tls ? 'tls' : 'tcp'}://${config.publicHost}:${tcpPort}`,
    wsUrl,
    gateway,
    busCounters: bus.counters,
    async stop() {
      if (stopped) return;
      stopped = true;
      await gateway.stop();
      await closeHttp(http.server);
      await closeEngines();
    },
  };
}
