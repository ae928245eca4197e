// `longlink gateway`: holds client connections (TCP, and WebSocket at /ws on
// the HTTP port) and nothing else. Requests go up the Redis bus to logic;
// pushes come down its own stream (targeted routing) or the shared one
// (broadcast). Sessions and its registry entry live in Redis.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ServerConfig } from '../config.js';
import type { BusCounters } from '../engines/bus.js';
import { tokenServiceFor } from '../auth/tokens.js';
import { Gateway } from '../gateway/gateway.js';
import { closeHttp, hostAccess, listenHttp, loadTls, sendJson } from './http-server.js';
import { httpError } from '../protocol/http-errors.js';
import { gatewayOptions, redisEngines, requireUrl } from './wiring.js';
import { observeRole, redisAnswers } from './observe.js';
import { RedisProbe } from '../observability/redis-probe.js';
import type { Metrics } from '../observability/metrics.js';

export interface RunningGateway {
  nodeId: string;
  httpPort: number;
  tcpPort: number;
  tcpUrl: string;
  wsUrl: string;
  gateway: Gateway;
  /** What the bus moved (metrics, benchmarks). */
  busCounters: BusCounters;
  /** This role's metrics registry (served at /metrics). */
  metrics: Metrics;
  stop(): Promise<void>;
}

export async function startGateway(config: ServerConfig): Promise<RunningGateway> {
  // (the health closure runs on requests, once the gateway below exists)
  const obs = observeRole(config, 'gateway', () => ({ connections: gateway.connectionCount }));
  const tls = loadTls(config.tls);
  const { bus, sessions, registry, watches } = redisEngines(config, 'gateway');
  const probe = new RedisProbe(requireUrl(config.redisUrl, 'longlink gateway needs LONGLINK_REDIS_URL or LONGLINK_REDIS_CLUSTER'), config.redisPrefix);
  obs.metrics.watchBus(async () => ({ ...bus.boundsStats(), ...await probe.gatewayStats(config.nodeId) }), bus.counters);
  obs.readiness.add('redis', redisAnswers(probe)).add('registry', async () => {
    if (!(await registry.live('gateway')).some((n) => n.id === config.nodeId)) throw new Error('not registered (yet) in the registry');
  });
  const closeEngines = async () => {
    await bus.close();
    await sessions.close();
    await watches.close();
    await registry.close();
    await probe.close();
  };
  // A previous process with this node id may have died without logging its
  // users out, and come back before the reaper noticed: those sessions are ghosts.
  let stale: number;
  try {
    stale = await sessions.dropNode(config.nodeId);
    await watches.dropNode(config.nodeId);
  } catch (err) {
    await closeEngines();
    throw err;
  }
  if (stale > 0) obs.logger.info({ sessions: stale }, 'dropped the sessions a previous process of this node id left');
  const tokens = tokenServiceFor(config);
  const gateway = new Gateway(gatewayOptions(config), { bus, sessions, registry, watches, tokens, metrics: obs.metrics.gateway });
  obs.metrics.watchLargeGroups(() => gateway.groupStats());

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    if (obs.routes(req, res)) return;
    const { status, body } = httpError('NOT_FOUND', 'a gateway serves /ws, /healthz, /readyz and /metrics; the API is on logic nodes');
    sendJson(res, status, body);
  };
  let http: Awaited<ReturnType<typeof listenHttp>>;
  let tcpPort: number;
  try {
    http = await listenHttp(handle, config.httpPort, config.host, tls, hostAccess(config));
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
  obs.logger.info({ http: http.port, tcp: tcpPort, routing: config.routing }, 'started');

  let stopped = false;
  return {
    nodeId: config.nodeId,
    httpPort: http.port,
    tcpPort,
    tcpUrl: `${tls ? 'tls' : 'tcp'}://${config.publicHost}:${tcpPort}`,
    wsUrl,
    gateway,
    busCounters: bus.counters,
    metrics: obs.metrics,
    async stop() {
      if (stopped) return;
      stopped = true;
      tokens.unwatch();
      obs.readiness.markStopping();
      await gateway.stop();
      await closeHttp(http.server);
      await closeEngines();
      obs.logger.info('stopped');
    },
  };
}
