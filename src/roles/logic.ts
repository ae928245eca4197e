// `longlink logic`: owns a fair share of the uplink shards (leases in Redis),
// assigns seqs and stores in PostgreSQL, routes pushes, and serves the HTTP
// API (tokens, business push, gateway discovery). It also reaps the sessions
// of gateways that died without logging their users out.
import type { ServerConfig } from '../config.js';
import type { BusCounters } from '../engines/bus.js';
import { tokenServiceFor } from '../auth/tokens.js';
import { PostgresStore } from '../engines/store-postgres.js';
import { Logic } from '../logic/logic.js';
import { HttpApi } from '../logic/http-api.js';
import { BusRequester } from '../logic/bus-requests.js';
import { Reaper } from '../logic/reaper.js';
import { closeHttp, hostAccess, listenHttp, loadTls } from './http-server.js';
import { logicOptions, redisEngines, requireUrl } from './wiring.js';
import { observeRole, redisAnswers, shardsServed, storeAnswers } from './observe.js';
import { InstrumentedStore } from '../observability/store.js';
import { RedisProbe } from '../observability/redis-probe.js';
import type { Metrics } from '../observability/metrics.js';

export interface RunningLogic {
  nodeId: string;
  httpPort: number;
  httpUrl: string;
  logic: Logic;
  /** What the bus moved (metrics, benchmarks). */
  busCounters: BusCounters;
  /** This role's metrics registry (served at /metrics). */
  metrics: Metrics;
  stop(): Promise<void>;
}

export async function startLogic(config: ServerConfig): Promise<RunningLogic> {
  const obs = observeRole(config, 'logic');
  const tls = loadTls(config.tls);
  const postgresUrl = requireUrl(config.postgresUrl, 'longlink logic needs LONGLINK_POSTGRES_URL (or --postgres-url)');
  const postgres = await PostgresStore.open({ url: postgresUrl, poolSize: config.postgresPool });
  const store = new InstrumentedStore(postgres, obs.metrics);
  const { bus, sessions, registry } = redisEngines(config, 'logic');
  const probe = new RedisProbe(requireUrl(config.redisUrl, 'longlink logic needs LONGLINK_REDIS_URL'), config.redisPrefix);
  obs.metrics.watchBus(async () => ({
    ...bus.boundsStats(), ...await probe.logicStats(config.busShards, config.nodeId), deadLetters: await bus.dead.count(),
  }), bus.counters);
  obs.readiness
    .add('redis', redisAnswers(probe))
    .add('store', storeAnswers(postgres))
    .add('shards', shardsServed(probe, config.busShards, config.nodeId));
  const tokens = tokenServiceFor(config);
  const logic = new Logic(logicOptions(config), { bus, sessions, registry, store, metrics: obs.metrics.logic });
  obs.metrics.watchReads(logic.readQueue);
  const requests = new BusRequester(bus, `${config.nodeId}.api`);
  const api = new HttpApi({ nodeId: config.nodeId, adminKey: config.adminKey, tokenTtlSeconds: config.tokenTtlSeconds, maxTextBytes: config.limits.maxTextBytes }, {
    tokens, registry, bus, requests, sessions,
  });
  const reaper = new Reaper(Math.max(100, Math.floor(config.nodeTtlMs / 3)), { sessions, registry });
  const closeEngines = async () => {
    await bus.close();
    await sessions.close();
    await registry.close();
    await store.close();
    await probe.close();
  };

  let http: Awaited<ReturnType<typeof listenHttp>>;
  try {
    http = await listenHttp((req, res) => {
      if (!obs.routes(req, res)) api.handle(req, res);
    }, config.httpPort, config.host, tls, hostAccess(config));
  } catch (err) {
    await closeEngines();
    throw err;
  }
  logic.start();
  requests.start();
  reaper.start();
  obs.logger.info({ http: http.port, routing: config.routing, shards: config.busShards }, 'started');

  let stopped = false;
  return {
    nodeId: config.nodeId,
    httpPort: http.port,
    httpUrl: `${tls ? 'https' : 'http'}://${config.publicHost}:${http.port}`,
    logic,
    busCounters: bus.counters,
    metrics: obs.metrics,
    async stop() {
      if (stopped) return;
      stopped = true;
      tokens.unwatch();
      obs.readiness.markStopping();
      await closeHttp(http.server);
      // Finish and ack the batch in hand, then release the shards (RedisBus), so another node takes them at once.
      await requests.stop();
      await logic.stop();
      await reaper.stop();
      await closeEngines();
      obs.logger.info('stopped');
    },
  };
}
