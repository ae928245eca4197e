// What every role sets up the same way to be observed: the logger's node id,
// role and level, a metrics registry of its own, readiness checks, and the
// /metrics, /healthz and /readyz routes on its HTTP port.
import type { ServerConfig } from '../config.js';
import type { Store } from '../engines/store.js';
import type { RedisProbe } from '../observability/redis-probe.js';
import { configureLogging, log, type Log } from '../observability/log.js';
import { Metrics } from '../observability/metrics.js';
import { Readiness } from '../observability/ready.js';
import { observabilityRoutes, type ObservabilityRoutes } from '../observability/http.js';

export type RoleName = 'embedded' | 'gateway' | 'logic' | 'auth' | 'message' | 'group' | 'storage' | 'risk' | 'push' | 'sync';

export interface RoleObservability {
  metrics: Metrics;
  readiness: Readiness;
  /** Answers /metrics, /healthz and /readyz (true), or leaves the request to the role (false). */
  routes: ObservabilityRoutes;
  /** The role's logger (component = the role). */
  logger: Log;
}

/**
 * @param health the /healthz body's extra fields; without it /healthz is left
 *   to the role (the logic HTTP API answers it on logic nodes and the embedded server).
 */
export function observeRole(config: ServerConfig, role: RoleName, health?: () => Record<string, unknown>): RoleObservability {
  configureLogging({ level: config.logLevel, node: config.nodeId, role });
  const metrics = new Metrics();
  const readiness = new Readiness();
  const routes = observabilityRoutes({
    nodeId: config.nodeId, role, metrics, readiness, metricsKey: config.metricsKey, healthz: health !== undefined, health,
  });
  return { metrics, readiness, routes, logger: log.child({ component: role }) };
}

/** Ready when the store answers a read (SQLite: open; PostgreSQL: the pool reaches the server). */
export function storeAnswers(store: Store): () => Promise<void> {
  return async () => {
    await store.isMember('readyz', 'readyz');
  };
}

/** Ready when Redis answers PING. */
export function redisAnswers(probe: RedisProbe): () => Promise<void> {
  return () => probe.ping();
}

/**
 * A logic-tier node is ready when, for each kind of shard it serves (its
 * leases' key prefixes: `lease:` the send path's, `lease:group:`,
 * `lease:committed:push:`, …), it owns one, or every shard has an owner (more
 * nodes than shards).
 */
export function shardsServed(probe: RedisProbe, shards: number, nodeId: string, prefixes: readonly string[] = ['lease:']): () => Promise<void> {
  return async () => {
    const count = (await probe.shardCount()) ?? shards; // grown since the start (`longlink admin shards --grow`)
    for (const prefix of prefixes) {
      const owners = await probe.leases(count, prefix);
      if (owners.includes(nodeId)) continue;
      const orphans = owners.flatMap((o, s) => (o === null ? [s] : []));
      if (orphans.length > 0) throw new Error(`owns no ${prefix}* shard, and shard(s) ${orphans.join(',')} have no owner`);
    }
  };
}
