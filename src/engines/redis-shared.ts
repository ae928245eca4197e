// What the Redis engines share: Lua scripts run by SHA, and who owns the client.
import { createHash } from 'node:crypto';
import { Redis, type RedisOptions } from 'ioredis';

/** A Lua script run with EVALSHA, falling back to EVAL when Redis lost its script cache (restart, SCRIPT FLUSH). */
export class Script {
  readonly sha: string;
  constructor(readonly lua: string) {
    this.sha = createHash('sha1').update(lua).digest('hex');
  }

  async run(client: Redis, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await client.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (err instanceof Error && err.message.startsWith('NOSCRIPT')) return client.eval(this.lua, keys.length, ...keys, ...args);
      throw err;
    }
  }
}

/** Options from which an engine creates (and then owns) its client. */
export interface RedisConnectionOptions {
  url: string;
  /** Key prefix, so several clusters (or tests) can share one Redis. @default 'll:' */
  prefix?: string;
  /** Extra options for the client the engine creates. */
  redis?: RedisOptions;
}

/**
 * An engine's client: a client passed in stays the caller's (`owned` false:
 * close() leaves it open); from options the engine creates its own.
 */
export function engineClient(client: Redis | RedisConnectionOptions, prefix?: string): { client: Redis; owned: boolean; prefix: string } {
  if (typeof (client as Redis).evalsha === 'function') return { client: client as Redis, owned: false, prefix: prefix ?? 'll:' };
  const options = client as RedisConnectionOptions;
  const created = new Redis(options.url, { ...options.redis });
  created.on('error', () => {
    /* reconnects by itself; commands wait in the offline queue */
  });
  return { client: created, owned: true, prefix: options.prefix ?? prefix ?? 'll:' };
}

/** Quits the client if the engine created it. */
export async function releaseClient(client: Redis, owned: boolean): Promise<void> {
  if (owned) await client.quit().catch(() => client.disconnect());
}
