// `longlink start`: every role in one process on embedded engines. Only
// wiring here: engines are made, passed to the gateway and logic, and the
// HTTP port is shared by the API, the WebSocket endpoint and the web page.
import { databasePath, type ServerConfig } from '../config.js';
import type { BusCounters } from '../engines/bus.js';
import { TokenService } from '../auth/tokens.js';
import { MemoryBus } from '../engines/bus-memory.js';
import { MemorySessions } from '../engines/sessions-memory.js';
import { MemoryRegistry } from '../engines/registry-memory.js';
import { SqliteStore } from '../engines/store-sqlite.js';
import { Gateway } from '../gateway/gateway.js';
import { Logic } from '../logic/logic.js';
import { HttpApi } from '../logic/http-api.js';
import { closeHttp, listenHttp, loadTls } from './http-server.js';
import { gatewayOptions, logicOptions } from './wiring.js';
import { defaultWebRoot, devLoginEnabled, staticFiles } from './web.js';

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
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** Folder of the built web page, served at `/`. @default dist/web of this package */
  webRoot?: string;
}

export async function startEmbedded(config: ServerConfig, options: EmbeddedOptions = {}): Promise<RunningServer> {
  const tls = loadTls(config.tls);
  const tokens = new TokenService(config.tokenSecret, config.previousTokenSecrets);
  const bus = new MemoryBus();
  const sessions = new MemorySessions();
  const registry = new MemoryRegistry();
  const store = new SqliteStore({ path: databasePath(config), synchronous: config.sqliteSynchronous });

  const logic = new Logic(logicOptions(config), { bus, sessions, registry, store });
  const gateway = new Gateway(gatewayOptions(config), { bus, sessions, registry, tokens });
  const api = new HttpApi({
    nodeId: config.nodeId, adminKey: config.adminKey, tokenTtlSeconds: config.tokenTtlSeconds, devLogin: devLoginEnabled(config),
  }, { tokens, registry, bus, logic });
  const web = staticFiles(options.webRoot ?? defaultWebRoot());

  const { server, port: httpPort } = await listenHttp((req, res) => {
    if (web.handles(req)) web.serve(req, res);
    else api.handle(req, res);
  }, config.httpPort, config.host, tls);
  const wsUrl = `${tls ? 'wss' : 'ws'}://${config.publicHost}:${httpPort}/ws`;
  gateway.attachWebSocket(server, wsUrl);
  let tcpPort: number;
  try {
    tcpPort = (await gateway.listenTcp(config.tcpPort, config.host, config.publicHost, tls)).port;
  } catch (err) {
    server.close();
    await store.close();
    throw err;
  }
  logic.start();
  await gateway.start();

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
    async stop() {
      if (stopped) return;
      stopped = true;
      await gateway.stop();
      await logic.stop();
      await closeHttp(server);
      await bus.close();
      await store.close();
    },
  };
}
