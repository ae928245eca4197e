// `longlink start`: every role in one process on embedded engines. Only
// wiring here: engines are made, passed to the gateway and logic, and the
// HTTP port is shared by the API, the WebSocket endpoint and the web page.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { databasePath, type ServerConfig } from '../config.js';
import type { BusCounters } from '../engines/bus.js';
import { tokenServiceFor } from '../auth/tokens.js';
import { MemoryBus } from '../engines/bus-memory.js';
import { MemorySessions } from '../engines/sessions-memory.js';
import { MemoryRegistry } from '../engines/registry-memory.js';
import { MemoryWatches } from '../engines/watches.js';
import { SqliteStore } from '../engines/store-sqlite.js';
import { Gateway } from '../gateway/gateway.js';
import { riskTier } from '../risk/tier.js';
import { MemoryWindows } from '../risk/spam.js';
import { Logic } from '../logic/logic.js';
import { HttpApi } from '../logic/http-api.js';
import { BusRequester } from '../logic/bus-requests.js';
import { closeHttp, hostAccess, listenHttp, loadTls } from './http-server.js';
import { StartError, lockDataDir, type DataLock } from './data-lock.js';
import { gatewayOptions, logicOptions } from './wiring.js';
import { defaultWebRoot, devLoginEnabled, staticFiles } from './web.js';
import { observeRole, storeAnswers } from './observe.js';
import { InstrumentedStore } from '../observability/store.js';
import { retentionFor, type Retention, type RetentionOptions } from '../logic/retention.js';
import type { Metrics } from '../observability/metrics.js';
import { DiskBlobStore } from '../files/blobs.js';
import { FilesApi } from '../logic/files-api.js';
import { Notifier } from '../push/notifier.js';
import { pushProviders } from '../push/from-config.js';

export interface RunningServer {
  nodeId: string;
  httpPort: number;
  tcpPort: number;
  httpUrl: string;
  tcpUrl: string;
  wsUrl: string;
  gateway: Gateway;
  /** What the bus moved (metrics, benchmarks). */
  busCounters: BusCounters;
  /** This role's metrics registry (served at /metrics). */
  metrics: Metrics;
  /** Message retention (LONGLINK_RETENTION_DAYS; idle when 0): `runOnce()` runs a pass now. */
  retention: Retention;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** Folder of the built web page, served at `/`. @default dist/web of this package */
  webRoot?: string;
  /** Retention's timing and clock (tests); its days come from the configuration. */
  retention?: Omit<RetentionOptions, 'days'>;
}

export async function startEmbedded(config: ServerConfig, options: EmbeddedOptions = {}): Promise<RunningServer> {
  mkdirSync(config.dataDir, { recursive: true });
  const lock = lockDataDir(config.dataDir);
  try {
    return await startLocked(config, options, lock);
  } catch (err) {
    lock.release();
    throw err;
  }
}

/** A port this server was told to listen on is taken: say which and how to choose another. */
function portError(err: unknown, what: string, port: number, host: string, setting: string): unknown {
  if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') return err;
  return new StartError(`the ${what} port ${port} on ${host} is in use (another server?): choose another with ${setting}, or 0 for any free port`, { cause: err });
}

async function startLocked(config: ServerConfig, options: EmbeddedOptions, lock: DataLock): Promise<RunningServer> {
  // /healthz stays the HTTP API's; /readyz and /metrics are answered before it.
  const obs = observeRole(config, 'embedded');
  const tls = loadTls(config.tls);
  const tokens = tokenServiceFor(config);
  const bus = new MemoryBus();
  const sessions = new MemorySessions();
  const registry = new MemoryRegistry();
  const watches = new MemoryWatches();
  const sqlite = new SqliteStore({ path: databasePath(config), synchronous: config.sqliteSynchronous });
  const store = new InstrumentedStore(sqlite, obs.metrics);
  obs.metrics.watchBus(async () => ({ upLag: new Map([['0', bus.upBacklog]]), shardsOwned: 1, deadLetters: await bus.dead.count() }), bus.counters);
  let started = false;
  obs.readiness.add('store', storeAnswers(sqlite)).add('started', async () => {
    if (!started) throw new Error('starting');
  });

  const retention = retentionFor(config, store, options.retention);
  // One process: the risk service and the webhooks read the committed stream in memory, beside the direct pushes.
  const risk = riskTier({
    nodeId: config.nodeId, maxTextBytes: config.limits.maxTextBytes, risk: true, webhooks: true, windows: () => new MemoryWindows(),
  }, { bus, sessions, store, metrics: obs.metrics.risk });
  const logic = new Logic({ ...logicOptions(config), contentFilter: risk.control.filter, publishCommitted: true }, {
    bus, sessions, registry, watches, store, metrics: obs.metrics.logic,
  });
  obs.metrics.watchReads(logic.readQueue);
  const gateway = new Gateway(gatewayOptions(config), { bus, sessions, registry, watches, tokens, metrics: obs.metrics.gateway });
  obs.metrics.watchLargeGroups(() => gateway.groupStats());
  const requests = new BusRequester(bus, `${config.nodeId}.api`);
  const blobs = new DiskBlobStore(config.files.dir ?? join(config.dataDir, 'files'));
  const files = new FilesApi(config.files, { tokens, sessions, store, blobs });
  const notifier = new Notifier({ providers: pushProviders(config.push), collapseMs: config.push.collapseMs }, { bus, store, sessions }, {
    onSent: (provider, outcome, seconds) => obs.metrics.pushSent(provider, outcome, seconds),
  });
  const api = new HttpApi({
    nodeId: config.nodeId, adminKey: config.adminKey, tokenTtlSeconds: config.tokenTtlSeconds, maxTextBytes: config.limits.maxTextBytes, devLogin: devLoginEnabled(config),
  }, { tokens, registry, bus, requests, sessions, store, risk: risk.control, files });
  const web = staticFiles(options.webRoot ?? defaultWebRoot());

  let listening;
  try {
    listening = await listenHttp((req, res) => {
      if (obs.routes(req, res)) return;
      if (web.handles(req)) web.serve(req, res);
      else api.handle(req, res);
    }, config.httpPort, config.host, tls, hostAccess(config));
  } catch (err) {
    await store.close();
    throw portError(err, 'HTTP', config.httpPort, config.host, '--http-port / LONGLINK_HTTP_PORT');
  }
  const { server, port: httpPort } = listening;
  const wsUrl = `${tls ? 'wss' : 'ws'}://${config.publicHost}:${httpPort}/ws`;
  gateway.attachWebSocket(server, wsUrl);
  let tcpPort: number;
  try {
    tcpPort = (await gateway.listenTcp(config.tcpPort, config.host, config.publicHost, tls)).port;
  } catch (err) {
    server.close();
    await store.close();
    throw portError(err, 'TCP', config.tcpPort, config.host, '--tcp-port / LONGLINK_TCP_PORT');
  }
  // The rules are in force before the first send is handled.
  await risk.start();
  logic.start();
  logic.startIndexing();
  notifier.start();
  requests.start();
  await gateway.start();
  retention.start();
  started = true;
  obs.logger.info({ http: httpPort, tcp: tcpPort, data_dir: config.dataDir }, 'started');

  let stopped = false;
  return {
    nodeId: config.nodeId,
    httpPort,
    tcpPort,
    httpUrl: `${tls ? 'https' : 'http'}://${config.host}:${httpPort}`,
    tcpUrl: `${tls ? 'tls' : 'tcp'}://${config.host}:${tcpPort}`,
    wsUrl,
    gateway,
    busCounters: bus.counters,
    metrics: obs.metrics,
    retention,
    async stop() {
      if (stopped) return;
      stopped = true;
      tokens.unwatch();
      obs.readiness.markStopping();
      await retention.stop();
      await gateway.stop();
      await requests.stop();
      await risk.stop();
      await notifier.stop();
      await logic.stop();
      await closeHttp(server);
      await bus.close();
      await blobs.close();
      await store.close();
      lock.release();
      obs.logger.info('stopped');
    },
  };
}
