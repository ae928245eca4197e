// Watches on Redis, shared by every gateway and logic node of a cluster.
//
// Key layout ({p} is the key prefix, 'll:' by default):
//   {p}watch:{user}        set: the nodes with a connection watching the user
//   {p}node-watch:{node}   set: the users a node watches (the index dropNode walks)
//   {p}watch-nodes         set: nodes that may hold watches
// Each write is one command per key, sent together (on one server they are
// one round trip; on a Redis Cluster the keys are in slots of their own, so
// no script or MULTI may name two of them). Commands of one client on one
// key are applied in the order sent, so a gateway's adds and removes of a
// user land in its order. A dropNode that died half-way leaves some users
// naming the node: a presence change then goes to a gateway that has nobody
// watching (it drops it), until the node is dropped again.
//
// Ownership: a client passed in belongs to the caller, and close() leaves it
// open; with options {url} this class creates its own client and close() quits it.
import { engineClient, releaseClient, type RedisClient, type RedisConnectionOptions } from './redis-shared.js';
import type { Watches } from './watches.js';

/** Users per command when a node's watches are written or dropped in bulk. */
const CHUNK = 1000;

export class RedisWatches implements Watches {
  private readonly client: RedisClient;
  private readonly owned: boolean;
  private readonly prefix: string;
  private closed = false;

  constructor(client: RedisClient | RedisConnectionOptions, prefix?: string) {
    ({ client: this.client, owned: this.owned, prefix: this.prefix } = engineClient(client, prefix));
  }

  private userKey(userId: string): string {
    return `${this.prefix}watch:${userId}`;
  }

  private nodeKey(node: string): string {
    return `${this.prefix}node-watch:${node}`;
  }

  private check(): void {
    if (this.closed) throw new Error('watches closed');
  }

  async set(node: string, userIds: readonly string[], watching: boolean): Promise<void> {
    this.check();
    if (userIds.length === 0) return;
    const writes: Promise<unknown>[] = [];
    if (watching) writes.push(this.client.sadd(`${this.prefix}watch-nodes`, node));
    for (let i = 0; i < userIds.length; i += CHUNK) {
      const chunk = userIds.slice(i, i + CHUNK);
      writes.push(watching ? this.client.sadd(this.nodeKey(node), ...chunk) : this.client.srem(this.nodeKey(node), ...chunk));
    }
    for (const u of userIds) writes.push(watching ? this.client.sadd(this.userKey(u), node) : this.client.srem(this.userKey(u), node));
    await Promise.all(writes);
  }

  async watchers(userId: string): Promise<string[]> {
    this.check();
    return this.client.smembers(this.userKey(userId));
  }

  async replace(node: string, userIds: readonly string[]): Promise<void> {
    await this.dropNode(node);
    await this.set(node, userIds, true);
  }

  async dropNode(node: string): Promise<number> {
    this.check();
    const users = await this.client.smembers(this.nodeKey(node));
    const writes: Promise<unknown>[] = users.map((u) => this.client.srem(this.userKey(u), node));
    for (let i = 0; i < users.length; i += CHUNK) writes.push(this.client.srem(this.nodeKey(node), ...users.slice(i, i + CHUNK)));
    await Promise.all(writes);
    // Gone from the list only once its index is empty (a node that watched again meanwhile stays listed).
    if ((await this.client.scard(this.nodeKey(node))) === 0) await this.client.srem(`${this.prefix}watch-nodes`, node);
    return users.length;
  }

  async nodes(): Promise<string[]> {
    this.check();
    return this.client.smembers(`${this.prefix}watch-nodes`);
  }

  /** Quits the client if this instance created it; a client passed in stays open (the caller's). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await releaseClient(this.client, this.owned);
  }
}
