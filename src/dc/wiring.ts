// What a role of a datacenter with peers builds: a bus and (lazily) a store
// client per peer, who serves which homes, the forwarder of writes, the sync
// service where the role runs it, and the operator's failover routes where
// it serves the HTTP API.
import type { ServerConfig } from '../config.js';
import type { Bus } from '../engines/bus.js';
import { StoreUnavailableError, type Store } from '../engines/store.js';
import type { Sessions } from '../engines/sessions.js';
import { RedisBus } from '../engines/bus-redis.js';
import { PostgresStore } from '../engines/store-postgres.js';
import type { Metrics } from '../observability/metrics.js';
import { HttpError } from '../protocol/http-errors.js';
import type { DatacenterAdmin } from '../logic/http-api.js';
import { Homes, Serving } from './homes.js';
import { Forwarder } from './forward.js';
import { SyncService, type SyncPeer } from './sync.js';
import { MarksCopier } from './marks.js';
import { AutoFailover, failback, failover } from './failover.js';
import { Witness } from './witness.js';
import { ReplicationWaiter, copiedChannel } from './replication.js';
import { Redis } from 'ioredis';

export interface Datacenters {
  homes: Homes;
  forwarder: Forwarder;
  /** The `replicated` acknowledgement mode's waiter (LONGLINK_DC_ACK=replicated, roles that write). */
  replication: ReplicationWaiter | undefined;
  /** The record each conversation written here is served under (the store refuses a write under an older one). */
  homeEpochs(conversationIds: readonly string[]): Promise<Map<string, { dc: string; epoch: number }>>;
  sync: SyncService | undefined;
  admin: DatacenterAdmin;
  start(): void;
  stop(): Promise<void>;
}

/** Undefined for a single datacenter (no LONGLINK_DC_PEERS). */
export function datacentersFor(
  config: ServerConfig,
  deps: { bus: Bus; store: Store; sessions: Sessions; metrics: Metrics },
  runs: { forward: boolean; sync: boolean; push?: boolean },
): Datacenters | undefined {
  if (config.dcPeers.length === 0) return undefined;
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
  const peerStores = new Map(config.dcPeers.map((p) => [p.name, peerStore(p.name, p.postgresUrl)]));
  const names = [config.dc, ...config.dcPeers.map((p) => p.name)];
  const witness = config.dcWitnessUrl === undefined ? undefined : new Witness(config.dcWitnessUrl, config.redisPrefix, config.dcFailoverAfterMs);
  const serving = new Serving(config.dc, {
    store: deps.store, peers: config.dcPeers.map((p) => ({ name: p.name, store: peerStores.get(p.name)! })), witness,
  });
  const homes = new Homes(config.dc, config.dcPeers.map((p) => p.name), deps.store, serving);
  const forwarder = new Forwarder({ nodeId: config.nodeId, dc: config.dc }, { bus: deps.bus, peers: buses });
  // The sync service tells each peer what it copied (that peer's replicated acks wait for it).
  const notifiers = runs.sync ? new Map(config.dcPeers.map((p) => {
    const r = new Redis(p.redisUrl, { maxRetriesPerRequest: 1, lazyConnect: true });
    r.on('error', () => undefined);
    return [p.name, r] as const;
  })) : new Map<string, Redis>();
  const peers: SyncPeer[] = config.dcPeers.map((p) => ({
    name: p.name, bus: buses.get(p.name)!, store: peerStores.get(p.name)!,
    notify: async (keys) => {
      const r = notifiers.get(p.name);
      if (r && keys.length > 0) await r.publish(copiedChannel(config.redisPrefix), JSON.stringify({ dc: config.dc, keys }));
    },
  }));
  const replication = (runs.forward || runs.push === true) && config.dcAck === 'replicated'
    ? new ReplicationWaiter({ redisUrl: config.redisUrl!, prefix: config.redisPrefix }, {
      serving, peers: config.dcPeers.map((p) => ({ name: p.name, store: peerStores.get(p.name)! })),
    })
    : undefined;
  const sync = runs.sync ? new SyncService({ dc: config.dc }, { bus: deps.bus, store: deps.store, peers }) : undefined;
  const marks = runs.sync ? new MarksCopier({
    store: deps.store, sessions: deps.sessions, bus: deps.bus, peers: config.dcPeers.map((p) => ({ name: p.name, store: peerStores.get(p.name)! })),
  }) : undefined;
  deps.metrics.watchDatacenters({
    lag: sync ? () => sync.lag() : undefined,
    progress: sync ? () => sync.progress : undefined,
    forwarded: runs.forward ? () => forwarder.counters : undefined,
    replication: replication ? () => replication.counters : undefined,
    marks: marks ? () => marks.progress : undefined,
  });
  const known = (dc: string) => {
    if (!names.includes(dc)) throw new HttpError('NOT_FOUND', `no datacenter ${dc}; known: ${names.join(', ')}`);
    return dc;
  };
  const failoverDeps = { dc: config.dc, store: deps.store, peers: peerStores };
  // With a witness, the sync service fails a datacenter unheard past its lease over on its own.
  const auto = runs.sync && witness ? new AutoFailover({ ...failoverDeps, serving, witness }, { afterMs: config.dcFailoverAfterMs }) : undefined;
  const admin: DatacenterAdmin = {
    async status() {
      await serving.refresh();
      return {
        datacenter: config.dc,
        datacenters: names,
        automatic_failover_after_ms: witness ? config.dcFailoverAfterMs : null,
        homes: Object.fromEntries(names.map((dc) => {
          const r = serving.recordOf(dc);
          return [dc, { served_by: r.servedBy, epoch: r.epoch, state: r.state, changed_at_ms: r.changedAtMs }];
        })),
      };
    },
    async failover(dc, to) {
      const r = await failover(failoverDeps, known(dc), to === undefined ? undefined : known(to));
      return { dc: r.dc, served_by: r.servedBy, epoch: r.epoch, written_to: r.writtenTo };
    },
    async failback(dc) {
      const r = await failback(failoverDeps, known(dc), names);
      return {
        dc: r.dc, served_by: r.servedBy, epoch: r.epoch, written_to: r.writtenTo,
        conversations: r.conversations, copied: r.copied, orphaned: r.orphaned,
      };
    },
  };
  return {
    homes,
    forwarder,
    replication,
    async homeEpochs(conversationIds) {
      const out = new Map<string, { dc: string; epoch: number }>();
      for (const [id, home] of await homes.homesOf(conversationIds)) {
        if (serving.route(home) !== config.dc) throw new StoreUnavailableError(`${id}'s home (${home}) is not served here now; the batch is handed again`);
        out.set(id, { dc: home, epoch: serving.recordOf(home).epoch });
      }
      return out;
    },
    sync,
    admin,
    start() {
      if (runs.forward || runs.push === true || auto) serving.start();
      auto?.start();
      if (runs.forward) forwarder.start();
      void replication?.start();
      sync?.start();
      marks?.start();
    },
    async stop() {
      serving.stop();
      await auto?.stop();
      witness?.close();
      await replication?.stop();
      await sync?.stop();
      await marks?.stop();
      for (const r of notifiers.values()) r.disconnect();
      await forwarder.stop();
      await Promise.all([...buses.values()].map((b) => b.close()));
      await Promise.all([...stores.values()].map(async (s) => (await s.catch(() => undefined))?.close()));
    },
  };
}
