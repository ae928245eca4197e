// The witness: a Redis outside every datacenter (LONGLINK_DC_WITNESS) that
// holds, for each datacenter's homes, a lease naming the datacenter serving
// them. It is what lets a datacenter be failed over on a timeout without two
// of them ever serving the same homes, which two datacenters alone cannot
// tell apart from a cut link between them.
//
// - Every process that writes renews the lease of each home its datacenter
//   serves, every REFRESH_MS (homes.ts, Serving), for dcFailoverAfterMs.
// - It serves such a home only while its lease is certainly held (its
//   renewal's start plus the lease, less a margin), or while it has just
//   heard every other datacenter (so none of them can be taking the homes
//   over unseen: a takeover is seen within its grace; see below). A witness
//   that is down therefore stops nothing while the datacenters see each other.
// - The sync service of each datacenter (AutoFailover below) takes a peer's
//   homes over once it has not heard the peer for dcFailoverAfterMs and the
//   peer's lease, held before (a datacenter never seen up may be starting),
//   has expired at the witness: it takes the lease (SET NX),
//   then writes the takeover record (failover.ts), which its own processes
//   act on only TAKEOVER_GRACE_MS after it was written (homes.ts), by which
//   time a peer that can still read this datacenter's store has seen it.
// - Failback stays the operator's (`longlink dc failback`): the datacenter
//   that served the homes stops renewing their lease and releases it.
import { Redis } from 'ioredis';
import { log as rootLog } from '../observability/log.js';
import { within } from './within.js';

const log = rootLog.child({ component: 'dc-witness' });

/** A takeover record is acted on this long after it was written (see above and homes.ts). */
export const TAKEOVER_GRACE_MS = 3000;

/**
 * Renew `home`'s lease for ARGV[1] if it holds it or nobody does; returns the
 * holder after the call. KEYS[2] remembers that the home was ever served (a
 * datacenter never seen up is not failed over: it may only be starting).
 * KEYS[3] is the highest epoch of the homes' record it was held under: a
 * caller whose record is older ('' back) never gets it, so a datacenter whose
 * homes were taken over while it was cut off cannot take its lease back.
 */
const RENEW = `
local newest = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[3]) < newest then return '' end
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('SET', KEYS[2], '1')
  if tonumber(ARGV[3]) > newest then redis.call('SET', KEYS[3], ARGV[3]) end
  return ARGV[1]
end
return holder`;

/** Take a free lease for ARGV[1] under epoch ARGV[3] (above every epoch it was held under); 1 if taken. */
const TAKE = `
local newest = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[3]) <= newest then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') == false then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
return 1`;

/** Delete the lease if ARGV[1] holds it. */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

export class Witness {
  private readonly redis: Redis;

  constructor(url: string, private readonly prefix: string, readonly leaseMs: number) {
    this.redis = new Redis(url, { maxRetriesPerRequest: 1 });
    this.redis.on('error', () => undefined); // unreachable: every call fails, which the callers handle
  }

  private key(home: string): string {
    return `${this.prefix}dc:lease:${home}`;
  }

  /**
   * Renew (or take, when free) `home`'s lease for `dc`. Resolves with the
   * time (performance.now(), a clock that never steps) until which `dc` certainly holds it, or undefined when another
   * datacenter holds it; rejects when the witness does not answer in time.
   */
  async renew(home: string, dc: string, epoch: number): Promise<number | undefined> {
    const started = performance.now();
    const holder = await within(1000, () => this.redis.eval(RENEW, 3, this.key(home), `${this.prefix}dc:served:${home}`, `${this.prefix}dc:epoch:${home}`,
      dc, this.leaseMs, epoch) as Promise<string>);
    return holder === dc ? started + this.leaseMs - Math.max(500, this.leaseMs / 10) : undefined;
  }

  /** Who holds `home`'s lease now (undefined: nobody, it expired). */
  async holder(home: string): Promise<string | undefined> {
    return (await within(1000, () => this.redis.get(this.key(home)))) ?? undefined;
  }

  /** Whether `home`'s lease was ever held (its datacenter, or another for it, has served it). */
  async everServed(home: string): Promise<boolean> {
    return (await within(1000, () => this.redis.exists(`${this.prefix}dc:served:${home}`))) === 1;
  }

  /** Take `home`'s lease for `dc` under a new record's epoch, if nobody holds it and the epoch is above any it was held under; whether it did. */
  async take(home: string, dc: string, epoch: number): Promise<boolean> {
    return (await within(1000, () => this.redis.eval(TAKE, 2, this.key(home), `${this.prefix}dc:epoch:${home}`, dc, this.leaseMs, epoch))) === 1;
  }

  /** Let go of `home`'s lease if `dc` holds it (its homes were handed back). */
  async release(home: string, dc: string): Promise<void> {
    await within(1000, () => this.redis.eval(RELEASE, 1, this.key(home), dc)).catch((err: unknown) => {
      log.debug({ home, reason: (err as Error).message }, 'could not release a lease; it expires');
    });
  }

  close(): void {
    this.redis.disconnect();
  }
}
