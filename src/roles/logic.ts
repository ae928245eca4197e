// The logic tier's roles. `longlink logic` runs every service in one process;
// at the 10M stage each service runs as its own role, scaled by running more
// processes of it (each service's shards are leased among its processes)
// and failing alone (its requests wait on its streams until it is back):
//
//   role      uplink it consumes           committed-stream group   also
//   auth      —                            —                        the HTTP API (tokens, revocation, dev login,
//                                                                   business push, discovery), the session reaper
//   message   message (send, recall),      push (fan-out), notify   the content filter on the send path
//             presence (typing, presence,
//             session events)
//   group     group (create … dismiss, info)
//   storage   storage (sync, history,      search (indexing)        retention
//             conversations, read and
//             delivered cursors, search,
//             push tokens)
//   risk      —                            risk, webhooks           spam rules and their actions; after-* webhooks
//   push      —                            push, notify             (more fan-out without more send path); offline
//                                                                   push notifications (src/push/notifier.ts)
//   sync      —                            sync-<dc> on every peer  copies the other datacenters' commits here (src/dc/sync.ts)
//             datacenter's committed stream
//   logic     all of the above but sync
//
// With several datacenters (LONGLINK_DC_PEERS), the message and group
// services forward writes to conversations homed elsewhere (src/dc/forward.ts).
//
// Every role serves /metrics, /healthz and /readyz on its HTTP port, and
// registers itself (role, services, address, load) in the registry, which
// `GET /api/v1/nodes` lists.
import { ConfigError, type ServerConfig } from '../config.js';
import { RISK_GROUP, PUSH_GROUP, SEARCH_GROUP, NOTIFY_GROUP, UP_SERVICES, type BusCounters, type Service } from '../engines/bus.js';
import type { NodeRole } from '../engines/registry.js';
import { tokenServiceFor } from '../auth/tokens.js';
import { PostgresStore } from '../engines/store-postgres.js';
import { Logic } from '../logic/logic.js';
import { HttpApi } from '../logic/http-api.js';
import { BusRequester } from '../logic/bus-requests.js';
import { Reaper } from '../logic/reaper.js';
import type { RiskService } from '../logic/risk.js';
import { riskTier } from '../risk/tier.js';
import { RedisWindows } from '../risk/spam.js';
import { WEBHOOK_GROUP } from '../risk/webhooks.js';
import { retentionFor } from '../logic/retention.js';
import { datacentersFor } from '../dc/wiring.js';
import { RedisRegistry } from '../engines/registry-redis.js';
import { closeHttp, hostAccess, listenHttp, loadTls, sendJson } from './http-server.js';
import { httpError } from '../protocol/http-errors.js';
import { logicOptions, redisEngines, requireUrl } from './wiring.js';
import { observeRole, redisAnswers, shardsServed, storeAnswers } from './observe.js';
import { announce } from './announce.js';
import { InstrumentedStore } from '../observability/store.js';
import { RedisProbe } from '../observability/redis-probe.js';
import type { Metrics } from '../observability/metrics.js';
import { DiskBlobStore, PostgresBlobStore, type BlobStore } from '../files/blobs.js';
import { FilesApi } from '../logic/files-api.js';
import { Notifier } from '../push/notifier.js';
import { pushProviders } from '../push/from-config.js';

/** A role of the logic tier. */
export type ServiceRole = 'logic' | 'auth' | 'message' | 'group' | 'storage' | 'risk' | 'push' | 'sync';

export const SERVICE_ROLES: readonly ServiceRole[] = ['logic', 'auth', 'message', 'group', 'storage', 'risk', 'push', 'sync'];

/** What a role runs. */
interface RolePlan {
  /** Uplink services it consumes. */
  up: readonly Service[];
  /** Committed-stream groups it joins. */
  committed: readonly string[];
  /** The HTTP API and the session reaper. */
  api: boolean;
  /** Message retention. */
  retention: boolean;
  /** The sync service (with peer datacenters). */
  sync: boolean;
}

export const ROLE_PLANS: Readonly<Record<ServiceRole, RolePlan>> = {
  logic: { up: UP_SERVICES, committed: [PUSH_GROUP, RISK_GROUP, WEBHOOK_GROUP, SEARCH_GROUP, NOTIFY_GROUP], api: true, retention: true, sync: false },
  auth: { up: [], committed: [], api: true, retention: false, sync: false },
  message: { up: ['message', 'presence'], committed: [PUSH_GROUP, NOTIFY_GROUP], api: false, retention: false, sync: false },
  group: { up: ['group'], committed: [], api: false, retention: false, sync: false },
  storage: { up: ['storage'], committed: [SEARCH_GROUP], api: false, retention: true, sync: false },
  risk: { up: [], committed: [RISK_GROUP, WEBHOOK_GROUP], api: false, retention: false, sync: false },
  push: { up: [], committed: [PUSH_GROUP, NOTIFY_GROUP], api: false, retention: false, sync: false },
  sync: { up: [], committed: [], api: false, retention: false, sync: true },
};

/** What a role serves, as the registry lists it. */
export function servicesOf(role: ServiceRole): string[] {
  const plan = ROLE_PLANS[role];
  return [...(plan.api ? ['auth'] : []), ...plan.up, ...plan.committed, ...(plan.retention ? ['retention'] : []), ...(plan.sync ? ['sync'] : [])];
}

export interface RunningLogic {
  nodeId: string;
  role: ServiceRole;
  httpPort: number;
  httpUrl: string;
  logic: Logic;
  /** The risk group's consumer, when the role runs it. */
  risk: RiskService | undefined;
  /** What the bus moved (metrics, benchmarks). */
  busCounters: BusCounters;
  /** This role's metrics registry (served at /metrics). */
  metrics: Metrics;
  stop(): Promise<void>;
}

/** `longlink logic`: every service in one process. */
export function startLogic(config: ServerConfig): Promise<RunningLogic> {
  return startService(config, 'logic');
}

export async function startService(config: ServerConfig, role: ServiceRole): Promise<RunningLogic> {
  const plan = ROLE_PLANS[role];
  if (plan.sync && config.dcPeers.length === 0) {
    throw new ConfigError(`longlink ${role} copies other datacenters' commits here: it needs LONGLINK_DC_PEERS (and LONGLINK_DC)`);
  }
  // The HTTP API answers /healthz where it runs; elsewhere the role does.
  const obs = observeRole(config, role, plan.api ? undefined : () => ({ services: servicesOf(role) }));
  const tls = loadTls(config.tls);
  const postgresUrl = requireUrl(config.postgresUrl, `longlink ${role} needs LONGLINK_POSTGRES_URL (or --postgres-url)`);
  const postgres = await PostgresStore.open({ url: postgresUrl, poolSize: config.postgresPool });
  const store = new InstrumentedStore(postgres, obs.metrics);
  const { bus, sessions, registry, watches } = redisEngines(config, role);
  const probe = new RedisProbe(requireUrl(config.redisUrl, `longlink ${role} needs LONGLINK_REDIS_URL or LONGLINK_REDIS_CLUSTER`), config.redisPrefix);
  const sendPath = plan.up.includes('message');
  obs.metrics.watchBus(async () => ({
    ...bus.boundsStats(),
    ...(sendPath ? await probe.logicStats(config.busShards, config.nodeId) : {}),
    deadLetters: await bus.dead.count(),
    consumerLag: await bus.consumerLag(),
  }), bus.counters);
  obs.readiness.add('redis', redisAnswers(probe)).add('store', storeAnswers(postgres));
  const leased = [...plan.up.map(leasePrefix), ...plan.committed.map((group) => `lease:committed:${group}:`)];
  if (leased.length > 0) obs.readiness.add('shards', shardsServed(probe, config.busShards, config.nodeId, leased));

  const tokens = tokenServiceFor(config);
  const redisUrl = requireUrl(config.redisUrl, `longlink ${role} needs LONGLINK_REDIS_URL or LONGLINK_REDIS_CLUSTER`);
  const riskControl = riskTier({
    nodeId: config.nodeId, maxTextBytes: config.limits.maxTextBytes,
    risk: plan.committed.includes(RISK_GROUP), webhooks: plan.committed.includes(WEBHOOK_GROUP),
    // Several risk processes each read some shards: a user's windows are shared in Redis.
    windows: () => new RedisWindows({ url: redisUrl }, config.redisPrefix),
  }, { bus, sessions, store, metrics: obs.metrics.risk });
  const risk = riskControl.service;
  const datacenters = datacentersFor(config, { bus, store, sessions, metrics: obs.metrics }, {
    forward: plan.up.includes('message') || plan.up.includes('group'), sync: plan.sync, push: plan.committed.includes(PUSH_GROUP),
  });
  const logic = new Logic({
    ...logicOptions(config), delivery: 'committed', contentFilter: plan.up.includes('message') ? riskControl.control.filter : undefined,
  }, {
    bus, sessions, registry, watches, store, metrics: obs.metrics.logic,
    datacenters: datacenters && (plan.up.includes('message') || plan.up.includes('group') || plan.committed.includes(PUSH_GROUP)) ? datacenters : undefined,
  });
  obs.metrics.watchReads(logic.readQueue);
  if (risk) obs.metrics.watchConsumerCounts(RISK_GROUP, () => bus.committedCounters(RISK_GROUP));
  const requests = plan.api ? new BusRequester(bus, `${config.nodeId}.api`) : undefined;
  // Discovery falls back to another datacenter's gateways, read from its registry.
  const peerRegistries = plan.api ? new Map(config.dcPeers.map((p) => [p.name, new RedisRegistry({ url: p.redisUrl, prefix: config.redisPrefix })])) : new Map();
  // File bytes: a folder every node shares (LONGLINK_FILES_DIR), else the cluster's PostgreSQL.
  const blobs: BlobStore | undefined = !plan.api ? undefined
    : config.files.dir ? new DiskBlobStore(config.files.dir) : await PostgresBlobStore.open({ url: postgresUrl, poolSize: Math.min(4, config.postgresPool) });
  const api = requests ? new HttpApi({
    nodeId: config.nodeId, adminKey: config.adminKey, tokenTtlSeconds: config.tokenTtlSeconds, maxTextBytes: config.limits.maxTextBytes, dc: config.dc,
  }, {
    tokens, registry, bus, requests, sessions, store, risk: riskControl.control, peerRegistries, datacenters: datacenters?.admin,
    files: blobs ? new FilesApi(config.files, { tokens, sessions, store, blobs }) : undefined,
  }) : undefined;
  const notifier = plan.committed.includes(NOTIFY_GROUP)
    ? new Notifier({ providers: pushProviders(config.push), collapseMs: config.push.collapseMs }, { bus, store, sessions }, {
      onSent: (provider, outcome, seconds) => obs.metrics.pushSent(provider, outcome, seconds),
    })
    : undefined;
  // Retention runs on every storage process: PostgreSQL lets one batch run at a time (a try-lock), the others find nothing to do.
  const retention = plan.retention ? retentionFor(config, store) : undefined;
  const reaper = plan.api ? new Reaper(Math.max(100, Math.floor(config.nodeTtlMs / 3)), { sessions, registry, watches }) : undefined;
  const closeEngines = async () => {
    await datacenters?.stop();
    await Promise.all([...peerRegistries.values()].map((r: RedisRegistry) => r.close()));
    await bus.close();
    await sessions.close();
    await watches.close();
    await registry.close();
    await blobs?.close();
    await store.close();
    await probe.close();
  };

  let http: Awaited<ReturnType<typeof listenHttp>>;
  try {
    http = await listenHttp((req, res) => {
      if (obs.routes(req, res)) return;
      if (api) return api.handle(req, res);
      const { status, body } = httpError('NOT_FOUND', `a ${role} node serves /healthz, /readyz and /metrics; the API is on auth and logic nodes`);
      sendJson(res, status, body);
    }, config.httpPort, config.host, tls, hostAccess(config));
  } catch (err) {
    await closeEngines();
    throw err;
  }
  const httpUrl = `${tls ? 'https' : 'http'}://${config.publicHost}:${http.port}`;
  // The rules are in force before the first send is handled.
  await riskControl.start();
  datacenters?.start();
  if (plan.up.length > 0) logic.start(plan.up);
  if (plan.committed.includes(PUSH_GROUP)) logic.startPush();
  if (plan.committed.includes(SEARCH_GROUP)) logic.startIndexing();
  notifier?.start();
  requests?.start();
  reaper?.start();
  retention?.start();
  const startedAtMs = Date.now();
  const registration = announce(registry, () => ({
    id: config.nodeId, role: role as NodeRole, services: servicesOf(role), httpUrl, load: logic.readQueue.waiting, startedAtMs,
  }), config.nodeTtlMs);
  obs.logger.info({ http: http.port, role, services: servicesOf(role), routing: config.routing, shards: config.busShards }, 'started');

  let stopped = false;
  return {
    nodeId: config.nodeId,
    role,
    httpPort: http.port,
    httpUrl,
    logic,
    risk,
    busCounters: bus.counters,
    metrics: obs.metrics,
    async stop() {
      if (stopped) return;
      stopped = true;
      tokens.unwatch();
      obs.readiness.markStopping();
      await registration.stop();
      await closeHttp(http.server);
      // Finish and ack the batch in hand, then release the shards (RedisBus), so another node takes them at once.
      await requests?.stop();
      await riskControl.stop();
      await notifier?.stop();
      await logic.stop();
      await reaper?.stop();
      await retention?.stop();
      await closeEngines();
      obs.logger.info('stopped');
    },
  };
}

/** The lease keys of an uplink service's shards (RedisBus's naming). */
function leasePrefix(service: Service): string {
  return service === 'message' ? 'lease:' : `lease:${service}:`;
}
