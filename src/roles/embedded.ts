// `longlink start`: every role in one process on embedded engines. Only
// wiring here: engines are made, passed to the gateway and logic, and the
// HTTP port is shared by the API and the WebSocket endpoint.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { databasePath, type ServerConfig } from '../config.js';
import { TokenService } from '../auth/tokens.js';
import { MemoryBus } from '../engines/bus-memory.js';
import { MemorySessions } from '../engines/sessions-memory.js';
import { MemoryRegistry } from '../engines/registry-memory.js';
import { SqliteStore } from '../engines/store-sqlite.js';
import { Gateway } from '../gateway/gateway.js';
import { Logic } from '../logic/logic.js';
import { HttpApi } from '../logic/http-api.js';

export interface RunningServer {
  nodeId: string;
  httpPort: number;
  tcpPort: number;
  httpUrl: string;
  tcpUrl: string;
  wsUrl: string;
  gateway: Gateway;
  stop(): Promise<void>;
}

export async function startEmbedded(config: ServerConfig): Promise<RunningServer> {
  const tokens = new TokenService(config.tokenSecret);
  const bus = new MemoryBus();
  const sessions = new MemorySessions();
  const registry = new MemoryRegistry();
  const store = new SqliteStore({ path: databasePath(config), synchronous: config.sqliteSynchronous });

  const logic = new Logic({
    nodeId: config.nodeId,
    maxTextBytes: config.limits.maxTextBytes,
    maxGroupMembers: config.limits.maxGroupMembers,
    recallWindowMs: config.recallWindowMs,
    routing: config.routing,
  }, { bus, sessions, registry, store });
  const gateway = new Gateway({
    nodeId: config.nodeId,
    loginTimeoutMs: config.loginTimeoutMs,
    pingIntervalMs: config.pingIntervalMs,
    maxFrameBytes: config.limits.maxFrameBytes,
    maxTextBytes: config.limits.maxTextBytes,
    ratePerSecond: config.limits.ratePerSecond,
    rateBurst: config.limits.rateBurst,
    maxOutboundBytes: config.limits.maxOutboundBytes,
    loginPolicy: config.loginPolicy,
  }, { bus, sessions, registry, tokens });
  const api = new HttpApi({ nodeId: config.nodeId, adminKey: config.adminKey, tokenTtlSeconds: config.tokenTtlSeconds }, {
    tokens, registry, bus, logic,
  });

  const server = http.createServer(api.handle);
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.on('clientError', (_err, socket) => {
    if (socket.writable) {
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      setTimeout(() => socket.destroy(), 1000).unref();
    } else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: config.httpPort, host: config.host, backlog: 4096 }, () => resolve());
  });
  const httpPort = (server.address() as AddressInfo).port;
  const wsUrl = `ws://${config.host}:${httpPort}/ws`;
  gateway.attachWebSocket(server, wsUrl);
  let tcpPort: number;
  try {
    tcpPort = (await gateway.listenTcp(config.tcpPort, config.host)).port;
  } catch (err) {
    server.close();
    await store.close();
    throw err;
  }
  logic.start();
  gateway.start();

  let stopped = false;
  return {
    nodeId: config.nodeId,
    httpPort,
    tcpPort,
    httpUrl: `http://${config.host}:${httpPort}`,
    tcpUrl: `tcp://${config.host}:${tcpPort}`,
    wsUrl,
    gateway,
    async stop() {
      if (stopped) return;
      stopped = true;
      await gateway.stop();
      await logic.stop();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await bus.close();
      await store.close();
    },
  };
}
