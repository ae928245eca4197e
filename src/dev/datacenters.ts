// Several datacenters on one machine: each a whole cluster (its own Redis,
// PostgreSQL, gateways and logic; src/dev/cluster.ts) with LONGLINK_DC set,
// and between each pair a delaying link (src/dev/link.ts) in front of the
// other's Redis and PostgreSQL, so every call across datacenters pays the
// delay each way and a test can cut the link.
import { randomBytes } from 'node:crypto';
import { startCluster, type Cluster, type ClusterOptions } from './cluster.js';
import { DelayLink } from './link.js';
import { startRedis, type RedisServer } from './services.js';

export interface DatacentersOptions extends Omit<ClusterOptions, 'secrets' | 'namePrefix' | 'onEngines' | 'basePort'> {
  /** The datacenters' names. @default ['a', 'b'] */
  names?: string[];
  /** Added to each direction between two datacenters. @default 20 */
  delayMs?: number;
  /** Datacenter i's ports from basePort + 1000·i (see ClusterOptions.basePort); free ports when absent. */
  basePort?: number;
  /**
   * Start a witness Redis beside them (outside every datacenter and every
   * link: a cut between two datacenters leaves each its witness), so a
   * datacenter unheard past LONGLINK_DC_FAILOVER_AFTER_MS is failed over on
   * its own (src/dc/witness.ts). @default false: by the operator's command
   */
  witness?: boolean;
}

export interface Datacenter {
  name: string;
  cluster: Cluster;
}

export interface Datacenters {
  dcs: Datacenter[];
  dc(name: string): Datacenter;
  /** The links `from` uses to reach `to` (its Redis and its PostgreSQL). */
  links(from: string, to: string): DelayLink[];
  /** Cut (or heal) both directions between two datacenters. */
  cut(a: string, b: string): void;
  heal(a: string, b: string): void;
  adminKey: string;
  tokenSecret: string;
  delayMs: number;
  /** The witness Redis, when started. */
  witness: RedisServer | undefined;
  stop(): Promise<void>;
}

export async function startDatacenters(options: DatacentersOptions): Promise<Datacenters> {
  const names = options.names ?? ['a', 'b'];
  const delayMs = options.delayMs ?? 20;
  const secrets = { adminKey: randomBytes(24).toString('base64url'), tokenSecret: randomBytes(32).toString('base64url') };
  // links[from][to]: from's way to to's Redis and PostgreSQL.
  const links = new Map<string, Map<string, { redis: DelayLink; postgres: DelayLink }>>();
  const all: DelayLink[] = [];
  for (const from of names) {
    const row = new Map<string, { redis: DelayLink; postgres: DelayLink }>();
    for (const to of names) {
      if (to === from) continue;
      const pair = { redis: new DelayLink(delayMs), postgres: new DelayLink(delayMs) };
      await pair.redis.listen();
      await pair.postgres.listen();
      all.push(pair.redis, pair.postgres);
      row.set(to, pair);
    }
    links.set(from, row);
  }
  const dcs: Datacenter[] = [];
  let witness: RedisServer | undefined;
  const stopAll = async () => {
    for (const d of dcs.reverse()) await d.cluster.stop().catch(() => undefined);
    await Promise.all(all.map((l) => l.close()));
    await witness?.stop().catch(() => undefined);
  };
  try {
    if (options.witness) witness = await startRedis({ appendonly: true, appendfsync: 'always', port: options.basePort === undefined ? undefined : options.basePort - 1 });
    for (const [i, name] of names.entries()) {
      const peers = [...links.get(name)!].map(([to, l]) =>
        `${to}=redis://127.0.0.1:${l.redis.port} ${to}=postgres://postgres@127.0.0.1:${l.postgres.port}/longlink`).join(' ');
      const cluster = await startCluster({
        ...options,
        basePort: options.basePort === undefined ? undefined : options.basePort + 1000 * i,
        secrets,
        namePrefix: `${name}-`,
        env: { ...options.env, LONGLINK_DC: name, LONGLINK_DC_PEERS: peers, ...(witness ? { LONGLINK_DC_WITNESS: witness.url } : {}) },
        onEngines: (redis, postgres) => {
          for (const from of names) {
            if (from === name) continue;
            const l = links.get(from)!.get(name)!;
            l.redis.setTarget(redis.port);
            l.postgres.setTarget(postgres.port);
          }
        },
      });
      dcs.push({ name, cluster });
    }
  } catch (err) {
    await stopAll();
    throw err;
  }
  const dc = (name: string) => {
    const d = dcs.find((x) => x.name === name);
    if (!d) throw new Error(`no datacenter ${name}`);
    return d;
  };
  const linksOf = (from: string, to: string) => {
    const l = links.get(from)?.get(to);
    if (!l) throw new Error(`no link from ${from} to ${to}`);
    return [l.redis, l.postgres];
  };
  return {
    dcs,
    dc,
    links: linksOf,
    cut(a, b) {
      for (const l of [...linksOf(a, b), ...linksOf(b, a)]) l.cut();
    },
    heal(a, b) {
      for (const l of [...linksOf(a, b), ...linksOf(b, a)]) l.heal();
    },
    ...secrets,
    delayMs,
    witness,
    stop: stopAll,
  };
}
