// `longlink logic`: owns a fair share of the uplink shards (leases in Redis),
// assigns seqs and stores in PostgreSQL, routes pushes, and serves the HTTP
// API (tokens, business push, gateway discovery). It also reaps the sessions
// of gateways that died without logging their users out.
import type { ServerConfig } from '../config.js';
import type { BusCounters } from '../engines/bus.js';
import { TokenService } from '../auth/tokens.js';
import { PostgresStore } from '../engines/store-postgres.js';
import { Logic } from '../logic/logic.js';
import { HttpApi } from '../logic/http-api.js';
import { Reaper } from '../logic/reaper.js';
import { closeHttp, listenHttp, loadTls } from './http-server.js';
import { logicOptions, redisEngines, requireUrl } from './wiring.js';

export interface RunningLogic {
  nodeId: string;
  httpPort: number;
  httpUrl: string;
  logic: Logic;
  /** What the bus moved (metrics, benchmarks). */
  busCounters: BusCounters;
  stop(): Promise<void>;
}

export async function startLogic(config: ServerConfig): Promise<RunningLogic> {
  const tls = loadTls(config.tls);
  const postgresUrl = requireUrl(config.postgresUrl, 'longlink logic needs LONGLINK_POSTGRES_URL (or --postgres-url)');
  const store = await PostgresStore.open({ url: postgresUrl, poolSize: config.postgresPool });
  const { bus, sessions, registry } = redisEngines(config, 'logic');
  const tokens = new TokenService(config.tokenSecret, config.previousTokenSecrets);
  const logic = new Logic(logicOptions(config), { bus, sessions, registry, store });
  const api = new HttpApi({ nodeId: config.nodeId, adminKey: config.adminKey, tokenTtlSeconds: config.tokenTtlSeconds }, {
    tokens, registry, bus, logic,
  });
  const reaper = new Reaper(Math.max(100, Math.floor(config.nodeTtlMs / 3)), { sessions, registry });
  const closeEngines = async () => {
    await bus.close();
    await sessions.close();
    await registry.close();
    await store.close();
  };

  let http: Awaited<ReturnType<typeof listenHttp>>;
  try {
    http = await listenHttp(api.handle, config.httpPort, config.host, tls);
  } catch (err) {
    await closeEngines();
    throw err;
  }
  logic.start();
  reaper.start();

  let stopped = false;
  return {
    nodeId: config.nodeId,
    httpPort: http.port,
    httpUrl: `${tls ? 'https' : 'http'}://${config.publicHost}:${http.port}`,
    logic,
    busCounters: bus.counters,
    async stop() {
      if (stopped) return;
      stopped = true;
      await closeHttp(http.server);
      // Finish and ack the batch in hand, then release the shards (RedisBus), so another node takes them at once.
      await logic.stop();
      await reaper.stop();
      await closeEngines();
    },
  };
}
