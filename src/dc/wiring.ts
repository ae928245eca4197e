// What a role of a datacenter with peers builds: a bus and (lazily) a store
// client per peer, the homes table, the forwarder of writes and, where the
// role runs it, the sync service.
import type { ServerConfig } from '../config.js';
import type { Bus } from '../engines/bus.js';
import type { Store } from '../engines/store.js';
import { RedisBus } from '../engines/bus-redis.js';
import { PostgresStore } from '../engines/store-postgres.js';
import type { Metrics } from '../observability/metrics.js';
import { Homes } from './homes.js';
import { Forwarder } from './forward.js';
import { SyncService, type SyncPeer } from './sync.js';

export interface Datacenters {
  homes: Homes;
  forwarder: Forwarder;
  sync: SyncService | undefined;
  start(): void;
  stop(): Promise<void>;
}

/** Undefined for a single datacenter (no LONGLINK_DC_PEERS). */
export function datacentersFor(
  config: ServerConfig,
  deps: { bus: Bus; store: Store; metrics: Metrics },
  runs: { forward: boolean; sync: boolean },
): Datacenters | undefined {
  if (config.dcPeers.length === 0 || (!runs.forward && !runs.sync)) return undefined;
  const buses = new Map(config.dcPeers.map((p) => [p.name, new RedisBus({
    url: p.redisUrl, prefix: config.redisPrefix, nodeId: `${config.nodeId}@${config.dc}`, shards: config.busShards, leaseMs: config.leaseMs,
    maxUpLength: config.busUpMaxLength, maxDownLength: config.busDownMaxLength,
    maxUpAgeMs: config.busUpMaxAgeMs, maxDownAgeMs: config.busDownMaxAgeMs,
    maxUpBytes: config.busUpMaxBytes, maxDownBytes: config.busDownMaxBytes,
  })]));
  const stores = new Map<string, Promise<PostgresStore>>();
  const peerStore = (name: string, url: string) => () => {
    let opening = stores.get(name);
    if (!opening) {
      opening = PostgresStore.open({ url, poolSize: 2 });
      stores.set(name, opening);
      opening.catch(() => stores.delete(name)); // tried again at the next need
    }
    return opening;
  };
  const homes = new Homes(config.dc, config.dcPeers.map((p) => p.name), deps.store);
  const forwarder = new Forwarder({ nodeId: config.nodeId, dc: config.dc }, { bus: deps.bus, peers: buses });
  const peers: SyncPeer[] = config.dcPeers.map((p) => ({ name: p.name, bus: buses.get(p.name)!, store: peerStore(p.name, p.postgresUrl) }));
  const sync = runs.sync ? new SyncService({ dc: config.dc }, { bus: deps.bus, store: deps.store, peers }) : undefined;
  deps.metrics.watchDatacenters({
    lag: sync ? () => sync.lag() : undefined,
    progress: sync ? () => sync.progress : undefined,
    forwarded: runs.forward ? () => forwarder.counters : undefined,
  });
  return {
    homes,
    forwarder,
    sync,
    start() {
      if (runs.forward) forwarder.start();
      sync?.start();
    },
    async stop() {
      await sync?.stop();
      await forwarder.stop();
      await Promise.all([...buses.values()].map((b) => b.close()));
      await Promise.all([...stores.values()].map(async (s) => (await s.catch(() => undefined))?.close()));
    },
  };
}
